"""Revocations survive Redis losing its data (issue 11 §1): logout, refresh-token reuse and
disabled users and tenants stay refused after a flush of the deployment's keys and after
a restart of a Redis without persistence, with one hub process and with two."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from api.keys import REDIS, REDIS_KEYS
from storage.cache import Keys
from storage.revocations import Revocations
from tests.helpers import Account, Api, call, eventually, login

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
PROFILE = "/api/v1/auth/profile"
REVOKED = (401, 40101)
DISABLED = (403, 40302)
BURST = 10  # concurrent requests per hub right after the loss


class PrefixFlush:
    """Deletes every key of the test's prefix on the shared Redis (never FLUSHALL: other
    tests use that server)."""

    url = None  # the settings' own

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._keys = Keys(prefix)

    async def lose(self) -> None:
        keys = [key async for key in self._client.scan_iter(match=f"{self._keys.prefix}*")]
        await self._client.delete(*keys)

    async def rebuilt(self) -> bool:
        return bool(await self._client.exists(self._keys.revocations_ready()))


class RestartedServer:
    """A redis-server of the test's own, without persistence: a restart empties it."""

    def __init__(self, prefix: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self._port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self._port}/0"
        self._keys = Keys(prefix)
        self._process: asyncio.subprocess.Process | None = None
        self._client = redis.Redis.from_url(self.url)

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self._port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await eventually(self._answers, what="the private redis-server answering")

    async def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        await self._process.wait()

    async def lose(self) -> None:
        await self.stop()
        await self.start()

    async def rebuilt(self) -> bool:
        return bool(await self._client.exists(self._keys.revocations_ready()))

    async def close(self) -> None:
        await self.stop()
        await self._client.aclose()

    async def _answers(self) -> bool:
        try:
            return bool(await self._client.ping())
        except redis.ConnectionError:
            return False


# Tests take this fixture first, so their hubs stop before the private server does.
@pytest.fixture(params=["flush", "restart"])
async def redis_loss(request: pytest.FixtureRequest, redis_client: redis.Redis,
                     redis_prefix: str) -> AsyncIterator[Any]:
    if request.param == "flush":
        yield PrefixFlush(redis_client, redis_prefix)
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here")
    server = RestartedServer(redis_prefix)
    await server.start()
    yield server
    await server.close()


async def _hubs(make_app: Any, aiohttp_client: Any, count: int, loss: Any) -> list[TestClient]:
    overrides = {"redis_url": loss.url} if loss.url else {}
    return [await aiohttp_client(make_app(**overrides)) for _ in range(count)]


async def _answer(hub: TestClient, token: str) -> tuple[int, int]:
    """The hub's verdict on ``token`` (after a restart, the first use of each pooled Redis
    connection answers 503 while it reconnects)."""
    async def verdict() -> tuple[int, int] | None:
        status, body = await call(hub, "GET", PROFILE, token=token)
        return None if status == 503 else (status, body["code"])
    return await eventually(verdict, what="an answer other than 503")


async def _verdicts_through_a_loss(loss: Any, hubs: list[TestClient], token: str
                                   ) -> set[tuple[int, int]]:
    """Every verdict on ``token`` from every hub: right after Redis lost its data (a burst
    of concurrent requests, before the markers are rebuilt), and after the rebuild."""
    await loss.lose()
    verdicts = await asyncio.gather(*[_answer(hub, token) for hub in hubs
                                      for _ in range(BURST)])
    await eventually(loss.rebuilt, what="the markers rebuilt")
    verdicts += [await _answer(hub, token) for hub in hubs]
    return set(verdicts)


@pytest.mark.parametrize("hubs", [1, 2])
async def test_a_logged_out_token_stays_refused_after_redis_loses_its_data(
        redis_loss, make_app, aiohttp_client, accounts, hubs):
    first, *others = await _hubs(make_app, aiohttp_client, hubs, redis_loss)
    tokens = await login(first, await accounts.user("root-admin"))
    status, _ = await call(first, "POST", LOGOUT, token=tokens["access_token"], json={})
    assert status == 200
    assert await _verdicts_through_a_loss(redis_loss, [*others, first],
                                          tokens["access_token"]) == {REVOKED}


@pytest.mark.parametrize("hubs", [1, 2])
async def test_a_login_revoked_for_refresh_token_reuse_stays_refused_after_redis_loses_its_data(
        redis_loss, make_app, aiohttp_client, accounts, hubs):
    first, *others = await _hubs(make_app, aiohttp_client, hubs, redis_loss)
    tokens = await login(first, await accounts.user("root-admin"))
    _, body = await call(first, "POST", REFRESH, json={"refresh_token": tokens["refresh_token"]})
    newer = body["data"]
    status, _ = await call(first, "POST", REFRESH,
                           json={"refresh_token": tokens["refresh_token"]})
    assert status == 401
    assert await _verdicts_through_a_loss(redis_loss, [*others, first],
                                          newer["access_token"]) == {REVOKED}


@pytest.mark.parametrize("hubs", [1, 2])
async def test_a_disabled_users_token_stays_refused_after_redis_loses_its_data(
        redis_loss, make_app, aiohttp_client, accounts, db, hubs):
    first, *others = await _hubs(make_app, aiohttp_client, hubs, redis_loss)
    user = await accounts.user("root-admin")
    tokens = await login(first, user)
    # No endpoint disables a user yet: the same two steps a disable takes.
    await db.execute("UPDATE users SET status = 'disabled' WHERE id = $1", user.id)
    await Revocations(first.app[REDIS], first.app[REDIS_KEYS]).set_user_disabled(user.id, True)
    assert await _answer(first, tokens["access_token"]) == DISABLED
    assert await _verdicts_through_a_loss(redis_loss, [*others, first],
                                          tokens["access_token"]) == {DISABLED}


@pytest.mark.parametrize("hubs", [1, 2])
async def test_a_disabled_tenants_token_stays_refused_after_redis_loses_its_data(
        redis_loss, make_app, aiohttp_client, accounts, hubs):
    first, *others = await _hubs(make_app, aiohttp_client, hubs, redis_loss)
    admin = await Api.login(first, await accounts.user("root-admin"))
    customer: Account = await accounts.customer("alice")
    tokens = await login(first, customer)
    status, _ = await admin.post(f"/api/v1/admin/customers/{customer.tenant_id}/disable")
    assert status == 200
    assert await _verdicts_through_a_loss(redis_loss, [*others, first],
                                          tokens["access_token"]) == {DISABLED}


@pytest.mark.parametrize("hubs", [1, 2])
async def test_a_live_token_is_accepted_before_and_after_the_rebuild(
        redis_loss, make_app, aiohttp_client, accounts, hubs):
    first, *others = await _hubs(make_app, aiohttp_client, hubs, redis_loss)
    user = await accounts.user("root-admin")
    gone, live = await login(first, user), await login(first, user)
    await call(first, "POST", LOGOUT, token=gone["access_token"], json={})
    assert await _verdicts_through_a_loss(redis_loss, [*others, first],
                                          live["access_token"]) == {(200, 0)}


async def test_a_tenant_enabled_again_is_let_back_in_after_the_rebuild(
        make_app, aiohttp_client, accounts, redis_client, redis_prefix):
    client = await aiohttp_client(make_app())
    admin = await Api.login(client, await accounts.user("root-admin"))
    customer = await accounts.customer("alice")
    await admin.post(f"/api/v1/admin/customers/{customer.tenant_id}/disable")
    await admin.post(f"/api/v1/admin/customers/{customer.tenant_id}/enable")
    flush = PrefixFlush(redis_client, redis_prefix)
    await flush.lose()
    tokens = await login(client, customer)
    assert await _answer(client, tokens["access_token"]) == (200, 0)
    await eventually(flush.rebuilt, what="the markers rebuilt")
    assert await _answer(client, tokens["access_token"]) == (200, 0)
