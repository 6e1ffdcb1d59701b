"""Registering the fleet through the admin API, and the tokens file."""

from __future__ import annotations

import stat

import aiohttp
import orjson
import pytest

from agent_mock.fleet import fleet
from agent_mock.options import AgentMockError
from agent_mock.registration import read_tokens, register, write_tokens


async def _register(options):
    async with aiohttp.ClientSession() as session:
        return await register(session, options, fleet(options.id_prefix, options.machines))


async def test_registration_creates_every_machine_and_saves_the_tokens(
        fake_hub, make_options, tokens_file):
    outcome = await _register(make_options(machines=30, register_concurrency=4))

    assert sorted(fake_hub.created) == [f"sim-{i:05d}" for i in range(1, 31)]
    assert (outcome.created, outcome.reused, outcome.rotated) == (30, 0, 0)
    assert fake_hub.logins == 1
    saved = orjson.loads(tokens_file.read_bytes())
    assert saved == outcome.tokens
    assert {fake_hub.agent_tokens[token] for token in saved.values()} == set(saved)
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    assert [p.name for p in tokens_file.parent.iterdir()] == [tokens_file.name]


async def test_a_second_run_reuses_saved_tokens_and_rotates_the_lost_ones(
        fake_hub, make_options, tokens_file):
    first = await _register(make_options(machines=5))
    saved = read_tokens(tokens_file)
    del saved["sim-00002"]
    write_tokens(tokens_file, saved)

    second = await _register(make_options(machines=6))

    assert fake_hub.created == [f"sim-{i:05d}" for i in range(1, 7)]
    assert fake_hub.rotated == ["sim-00002"]
    assert (second.created, second.reused, second.rotated) == (1, 4, 1)
    for machine_id in ("sim-00001", "sim-00003", "sim-00004", "sim-00005"):
        assert second.tokens[machine_id] == first.tokens[machine_id]
    assert second.tokens["sim-00002"] != first.tokens["sim-00002"]
    assert read_tokens(tokens_file) == second.tokens
    assert all(fake_hub.agent_tokens[t] == mid for mid, t in second.tokens.items())


async def test_the_tokens_file_alone_needs_no_admin_account(fake_hub, make_options,
                                                            tokens_file):
    await _register(make_options(machines=4))
    before = tokens_file.read_bytes()

    outcome = await _register(make_options(machines=4, admin_user=None, admin_password=None))

    assert fake_hub.logins == 1
    assert outcome.reused == 4
    assert outcome.tokens == read_tokens(tokens_file)
    assert tokens_file.read_bytes() == before


async def test_the_tokens_file_alone_must_cover_every_machine(fake_hub, make_options):
    await _register(make_options(machines=2))
    with pytest.raises(AgentMockError, match="no agent token for 1 of 3 machines"):
        await _register(make_options(machines=3, admin_user=None, admin_password=None))


async def test_no_tokens_file_and_no_admin_account_is_an_error(make_options):
    with pytest.raises(AgentMockError, match="no agent token for 3 of 3"):
        await _register(make_options(admin_user=None, admin_password=None))


async def test_a_refused_login_is_an_error(fake_hub, make_options, tokens_file):
    with pytest.raises(AgentMockError, match="login as 'admin' refused: HTTP 401, code 40103"):
        await _register(make_options(admin_password="wrong-password"))
    assert fake_hub.created == []
    assert not tokens_file.exists()


async def test_another_prefix_keeps_the_other_fleets_tokens(fake_hub, make_options,
                                                            tokens_file):
    await _register(make_options(machines=2))
    await _register(make_options(machines=2, id_prefix="lab-"))
    assert sorted(read_tokens(tokens_file)) == ["lab-00001", "lab-00002", "sim-00001",
                                                "sim-00002"]


def test_a_corrupt_tokens_file_is_reported(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("[1, 2]")
    with pytest.raises(AgentMockError, match="expected an object"):
        read_tokens(path)
    path.write_text("{")
    with pytest.raises(AgentMockError, match="not JSON"):
        read_tokens(path)
