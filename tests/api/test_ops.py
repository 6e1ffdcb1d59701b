"""Liveness, readiness, metrics, and how the API answers when a dependency is gone."""

from __future__ import annotations

import asyncio
import logging

import orjson

from services.logs import JsonFormatter
from tests.helpers import call, eventually, login


async def test_healthz_answers_ok(client):
    status, body = await call(client, "GET", "/healthz")
    assert (status, body["code"], body["data"]) == (200, 0, {"status": "ok"})


def _dependencies(data: dict) -> dict:
    return {name: data[name] for name in ("database", "redis")}


async def test_readyz_reports_both_dependencies_ok(client):
    status, body = await call(client, "GET", "/readyz")
    assert (status, _dependencies(body["data"])) == (200, {"database": "ok", "redis": "ok"})


async def test_readyz_is_503_naming_redis_when_redis_is_gone(make_app, aiohttp_client,
                                                            redis_proxy):
    proxy, url = redis_proxy
    client = await aiohttp_client(make_app(redis_url=url))
    await proxy.cut()
    status, body = await call(client, "GET", "/readyz")
    assert (status, body["code"]) == (503, 50301)
    assert _dependencies(body["data"]) == {"database": "ok", "redis": "unavailable"}


async def test_readyz_is_503_naming_the_database_when_postgres_is_gone(make_app, aiohttp_client,
                                                                      pg_proxy):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url))
    await proxy.cut()
    status, body = await call(client, "GET", "/readyz")
    assert (status, body["code"]) == (503, 50301)
    assert _dependencies(body["data"]) == {"database": "unavailable", "redis": "ok"}


# A partition holds packets instead of refusing them: without bounds on every wait, a
# request would hang as long as it lasts. Each call below must be answered while the
# partition still holds (the outer wait is only a guard, several times the bounds).
PARTITION_GUARD_S = 20.0


async def test_readyz_answers_while_postgres_is_partitioned(make_app, aiohttp_client,
                                                           pg_proxy):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url))
    proxy.hold()
    for _ in range(3):  # again and again: the probe still in flight is not duplicated
        async with asyncio.timeout(PARTITION_GUARD_S):
            status, body = await call(client, "GET", "/readyz")
        assert (status, _dependencies(body["data"])) == (
            503, {"database": "unavailable", "redis": "ok"})
    proxy.release()
    status, _ = await call(client, "GET", "/readyz")
    assert status == 200


async def test_requests_get_503_while_postgres_is_partitioned_and_200_after(
        make_app, aiohttp_client, pg_proxy, accounts):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, db_command_timeout_s=1.0,
                                           db_acquire_timeout_s=1.0,
                                           db_connect_timeout_s=1.0))
    tokens = await login(client, await accounts.user("root-admin"))
    proxy.hold()
    # more requests than the pool has connections: those waiting for one give up too
    async with asyncio.timeout(PARTITION_GUARD_S):
        answers = await asyncio.gather(*(call(client, "GET", "/api/v1/admin/audit-logs",
                                              token=tokens["access_token"])
                                         for _ in range(15)))
    assert {(status, body["code"]) for status, body in answers} == {(503, 50301)}
    proxy.release()
    await eventually(lambda: _ok(client, tokens["access_token"]), what="answers again")


async def _ok(client, token: str) -> bool:
    status, _ = await call(client, "GET", "/api/v1/admin/audit-logs", token=token)
    return status == 200


async def test_authenticated_request_without_redis_is_503_not_500(make_app, aiohttp_client,
                                                                 redis_proxy, accounts):
    proxy, url = redis_proxy
    client = await aiohttp_client(make_app(redis_url=url))
    tokens = await login(client, await accounts.user("root-admin"))
    await proxy.cut()
    status, body = await call(client, "GET", "/api/v1/auth/profile",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]) == (503, 50301, {"dependency": "redis"})


async def test_request_without_postgres_is_503_and_recovers(make_app, aiohttp_client, pg_proxy,
                                                           accounts):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url))
    tokens = await login(client, await accounts.user("root-admin"))
    await proxy.cut()
    status, body = await call(client, "GET", "/api/v1/admin/audit-logs",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]) == (503, 50301, {"dependency": "database"})
    await proxy.restore()
    for _ in range(50):
        status, _ = await call(client, "GET", "/api/v1/admin/audit-logs",
                               token=tokens["access_token"])
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200


async def test_metrics_count_requests_by_route_template_and_status(client, scrape):
    await client.get("/healthz")
    await client.get("/nowhere/at/all")
    text = await scrape(client)
    assert 'remotegpu_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "remotegpu_http_request_duration_seconds_bucket" in text
    assert "remotegpu_audit_dropped_total" in text


async def test_request_log_line_is_json_with_the_trace_id(client, caplog):
    caplog.set_level(logging.INFO, logger="remotegpu.http")
    resp = await client.get("/healthz")
    record = [r for r in caplog.records if r.name == "remotegpu.http"][-1]
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["msg"] == "request"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/healthz", 200)
    assert entry["trace_id"] == resp.headers["X-Trace-Id"]
    assert entry["level"] == "INFO" and entry["ts"].endswith("Z")
