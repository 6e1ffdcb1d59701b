"""services/revocations.py: PostgreSQL answers while the Redis markers are not trusted,
and rebuilds (one or several at once) restore them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from services.revocations import RevocationCheck
from storage import sessions
from storage.cache import Keys
from storage.revocations import DISABLED, REVOKED, Revocations
from tests.helpers import eventually

ACCESS_TTL_S = 3600


@pytest.fixture
def keys(redis_prefix):
    return Keys(redis_prefix)


@pytest.fixture
async def checks(db, redis_client, keys) -> AsyncIterator[list[RevocationCheck]]:
    """Two checks on one database and Redis, as two hub processes have."""
    made = [RevocationCheck(db, Revocations(redis_client, keys), ACCESS_TTL_S)
            for _ in range(2)]
    yield made
    for check in made:
        await check.close()


async def _login(db, user_id: int) -> uuid.UUID:
    sid = uuid.uuid4()
    await sessions.insert(db, session_id=sid, user_id=user_id, token_hash=os.urandom(32),
                          ttl_s=ACCESS_TTL_S)
    return sid


async def test_postgresql_refuses_a_revoked_login_while_redis_is_not_trusted(
        checks, accounts, db):
    user = await accounts.user("root-admin")
    sid = await _login(db, user.id)
    await sessions.revoke_session(db, sid, "logout")  # no marker in Redis: only PostgreSQL
    assert await checks[0].state(sid=str(sid), user_id=user.id, tenant_id=0) == REVOKED


async def test_postgresql_refuses_a_disabled_tenant_while_redis_is_not_trusted(
        checks, accounts, db):
    customer = await accounts.customer("alice")
    sid = await _login(db, customer.id)
    await db.execute("UPDATE tenants SET status = 'disabled' WHERE id = $1", customer.tenant_id)
    assert await checks[0].state(sid=str(sid), user_id=customer.id,
                                 tenant_id=customer.tenant_id) == DISABLED


async def test_postgresql_refuses_a_deleted_user_while_redis_is_not_trusted(checks, accounts,
                                                                            db):
    user = await accounts.user("root-admin")
    sid = await _login(db, user.id)
    await db.execute("DELETE FROM users WHERE id = $1", user.id)
    assert await checks[0].state(sid=str(sid), user_id=user.id, tenant_id=0) == REVOKED


async def test_the_first_check_after_a_loss_rebuilds_the_markers_in_the_background(
        checks, accounts, db, redis_client, keys):
    user = await accounts.user("root-admin")
    sid = await _login(db, user.id)
    await sessions.revoke_session(db, sid, "logout")
    live = await _login(db, user.id)
    assert await checks[0].state(sid=str(live), user_id=user.id, tenant_id=0) is None
    await eventually(lambda: redis_client.exists(keys.revocations_ready()),
                     what="the markers rebuilt")
    assert await redis_client.exists(keys.revoked_session(str(sid)))
    assert not await redis_client.exists(keys.revoked_session(str(live)))


async def test_concurrent_rebuilds_all_succeed_and_leave_every_marker(
        checks, accounts, db, redis_client, keys):
    user = await accounts.user("root-admin")
    gone = await accounts.user("gone-admin", status="disabled")
    tenant_id = await accounts.tenant("Suspended Inc", status="disabled")
    revoked = [await _login(db, user.id) for _ in range(20)]
    for sid in revoked:
        await sessions.revoke_session(db, sid, "logout")
    assert await asyncio.gather(*[check.rebuild() for check in checks for _ in range(3)]) \
        == [True] * 6
    assert await redis_client.exists(*[keys.revoked_session(str(sid)) for sid in revoked]) \
        == len(revoked)
    assert await redis_client.exists(keys.disabled_user(gone.id),
                                     keys.disabled_tenant(tenant_id)) == 2
    assert await redis_client.exists(keys.revocations_ready())


async def test_a_rebuild_forgets_logins_revoked_longer_than_an_access_token_lifetime_ago(
        checks, accounts, db, redis_client, keys):
    user = await accounts.user("root-admin")
    old = await _login(db, user.id)
    await db.execute("UPDATE refresh_tokens SET revoked_at = now() - make_interval(secs => $2) "
                     "WHERE session_id = $1", old, float(ACCESS_TTL_S + 60))
    assert await checks[0].rebuild()
    assert not await redis_client.exists(keys.revoked_session(str(old)))
