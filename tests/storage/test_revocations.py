"""storage/revocations.py: the markers are trusted only once a rebuild marked them ready
within the data epoch it started in."""

from __future__ import annotations

import pytest

from storage.cache import Keys
from storage.revocations import REVOKED, UNKNOWN, Revocations

SID = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def revocations(redis_client, redis_prefix) -> Revocations:
    return Revocations(redis_client, Keys(redis_prefix))


async def _lose_everything(redis_client, redis_prefix) -> None:
    await redis_client.delete(*[key async for key in redis_client.scan_iter(
        match=f"{redis_prefix}*")])


async def test_markers_are_not_trusted_before_a_rebuild_marks_them_ready(revocations):
    await revocations.revoke([SID], 60)
    assert await revocations.state(sid=SID, user_id=1, tenant_id=1) == UNKNOWN
    assert await revocations.mark_ready(await revocations.epoch())
    assert await revocations.state(sid=SID, user_id=1, tenant_id=1) == REVOKED


async def test_markers_are_not_trusted_after_redis_loses_its_data(revocations, redis_client,
                                                                 redis_prefix):
    assert await revocations.mark_ready(await revocations.epoch())
    await _lose_everything(redis_client, redis_prefix)
    assert await revocations.state(sid=SID, user_id=1, tenant_id=1) == UNKNOWN


async def test_a_rebuild_overtaken_by_a_data_loss_does_not_mark_them_ready(
        revocations, redis_client, redis_prefix):
    epoch = await revocations.epoch()
    await _lose_everything(redis_client, redis_prefix)
    assert not await revocations.mark_ready(epoch)
    assert await revocations.state(sid=SID, user_id=1, tenant_id=1) == UNKNOWN


async def test_a_rebuild_overtaken_by_a_loss_and_a_new_epoch_does_not_mark_them_ready(
        revocations, redis_client, redis_prefix):
    epoch = await revocations.epoch()
    await _lose_everything(redis_client, redis_prefix)
    await revocations.epoch()  # written again at once, e.g. by the liveness monitor
    assert not await revocations.mark_ready(epoch)
