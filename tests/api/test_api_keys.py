"""API keys (CONTRACT.md §3a): created with a login, limited to a subset of the user's
permissions, accepted on REST and ``/ws/connect``, expiring, revoked at once on every hub
process, never shown twice, never logged, named in the audit trail, and used without a
database write (or read) per request."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from aiohttp import WSMsgType

from api.keys import API_KEYS, AUDIT
from services.api_keys import SHOWN_PREFIX_CHARS
from storage.cache import Keys
from tests.helpers import Api, call, eventually, login

KEYS = "/api/v1/auth/api-keys"
PROFILE = "/api/v1/auth/profile"
MACHINES = "/api/v1/admin/machines"
AUDIT_LOGS = "/api/v1/admin/audit-logs"
WS = "/ws/connect"
REVOKED = (401, 40101)
DEADLINE_S = 8.0


async def _create(api: Api, **fields) -> dict:
    return await api.ok("POST", KEYS, {"name": "ci", **fields})


async def _as_key(client, method: str, path: str, key: str, **kwargs) -> tuple[int, int]:
    status, body = await call(client, method, path, token=key, **kwargs)
    return status, body["code"]


async def _welcome(ws) -> dict:
    msg = await ws.receive(timeout=DEADLINE_S)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    message = orjson.loads(msg.data)
    assert message["type"] == "welcome", message
    return message["data"]


async def _closed_with(ws, code: int) -> None:
    while True:
        msg = await ws.receive(timeout=DEADLINE_S)
        if msg.type == WSMsgType.TEXT:
            continue  # snapshots sent before the close
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, code), (msg.type, msg.data, msg.extra)
        return


# --- permissions ---------------------------------------------------------------------------


async def test_a_key_limited_to_machine_read_reads_machines_and_gets_40301_on_a_write(
        client, admin):
    await admin.machine("m1")
    created = await _create(admin, permissions=["machine:read"])
    key = created["key"]
    assert created["permissions"] == ["machine:read"]
    status, body = await call(client, "GET", MACHINES, token=key)
    assert status == 200, body
    assert [m["id"] for m in body["data"]["list"]] == ["m1"]
    spec = {"id": "m2", "name": "m2", "ip": "10.0.0.2", "gpu_model": "A100", "gpu_count": 8,
            "gpu_memory_gb": 80}
    assert await _as_key(client, "POST", MACHINES, key, json=spec) == (403, 40301)
    assert await _as_key(client, "GET", AUDIT_LOGS, key) == (403, 40301)


async def test_a_key_without_permissions_asked_gets_all_of_its_users(client, accounts):
    operator = await Api.login(client, await accounts.user("operator-1", "operator"))
    created = await _create(operator)
    profile = await operator.ok("GET", PROFILE)
    assert created["permissions"] == profile["permissions"]
    status, body = await call(client, "GET", PROFILE, token=created["key"])
    assert status == 200, body
    assert body["data"]["permissions"] == profile["permissions"]


async def test_a_key_stops_granting_what_its_user_no_longer_has_after_a_role_change(
        client, admin, accounts):
    staff = await accounts.user("staff", "admin")
    key = (await _create(await Api.login(client, staff)))["key"]
    assert await _as_key(client, "GET", "/api/v1/admin/users", key) == (200, 0)
    await admin.ok("PATCH", f"/api/v1/admin/users/{staff.id}", {"role": "operator"})
    assert await _as_key(client, "GET", "/api/v1/admin/users", key) == (403, 40301)
    assert await _as_key(client, "GET", MACHINES, key) == (200, 0)


# --- expiry, revocation, disabled accounts ------------------------------------------------


async def test_an_expired_key_is_refused_with_40102(client, admin, db):
    created = await _create(admin, expires_in_days=1)
    await db.execute("UPDATE api_keys SET created_at = now() - interval '2 days', "
                     "expires_at = now() - interval '1 second'")
    assert await _as_key(client, "GET", PROFILE, created["key"]) == (401, 40102)


async def test_an_unknown_key_is_refused_with_40101(client):
    assert await _as_key(client, "GET", PROFILE, "rgk_" + "x" * 43) == REVOKED


async def test_a_revoked_key_stops_at_once_on_every_process_and_its_dashboard_closes(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    created = await _create(admin)
    key = created["key"]
    assert await _as_key(second, "GET", PROFILE, key) == (200, 0)  # cached on the second
    ws = await second.ws_connect(f"{WS}?token={key}")
    await _welcome(ws)
    other = await second.ws_connect(WS)
    await other.send_str(orjson.dumps({"type": "auth", "token": admin.token}).decode())
    await _welcome(other)

    await admin.ok("DELETE", f"{KEYS}/{created['id']}")

    assert await _as_key(second, "GET", PROFILE, key) == REVOKED
    assert await _as_key(first, "GET", PROFILE, key) == REVOKED
    await _closed_with(ws, 4001)
    assert not other.closed
    assert await admin.ok("GET", KEYS) == []


async def test_a_cached_key_revoked_while_redis_lost_its_markers_is_refused(
        client, admin, db, redis_client, redis_prefix):
    created = await _create(admin)
    assert await _as_key(client, "GET", PROFILE, created["key"]) == (200, 0)  # cached
    # A revocation whose marker and event Redis lost: only PostgreSQL knows of it.
    await db.execute("UPDATE api_keys SET revoked_at = now()")
    await redis_client.delete(*[k async for k in redis_client.scan_iter(f"{redis_prefix}*")])
    assert await _as_key(client, "GET", PROFILE, created["key"]) == REVOKED
    marker = Keys(redis_prefix).revoked_session(created["id"])
    await eventually(lambda: redis_client.exists(marker), what="the key's marker rebuilt")


async def test_a_key_of_a_disabled_user_stops_at_once(client, admin, accounts):
    staff = await accounts.user("staff", "operator")
    key = (await _create(await Api.login(client, staff)))["key"]
    assert await _as_key(client, "GET", MACHINES, key) == (200, 0)
    await admin.ok("POST", f"/api/v1/admin/users/{staff.id}/disable")
    assert await _as_key(client, "GET", MACHINES, key) == (403, 40302)


async def test_a_key_of_a_customer_whose_tenant_is_disabled_stops_at_once(client, admin,
                                                                         accounts):
    alice = await accounts.customer("alice")
    key = (await _create(await Api.login(client, alice)))["key"]
    assert await _as_key(client, "GET", "/api/v1/customer/machines", key) == (200, 0)
    await admin.ok("POST", f"/api/v1/admin/customers/{alice.tenant_id}/disable")
    assert await _as_key(client, "GET", "/api/v1/customer/machines", key) == (403, 40302)


# --- what an API key may not do -----------------------------------------------------------


async def test_a_key_cannot_create_or_revoke_keys_or_log_out(client, admin):
    created = await _create(admin)
    key = created["key"]
    assert await _as_key(client, "POST", KEYS, key, json={"name": "more"}) == (403, 40301)
    assert await _as_key(client, "DELETE", f"{KEYS}/{created['id']}", key) == (403, 40301)
    assert await _as_key(client, "POST", "/api/v1/auth/logout", key, json={}) == (403, 40301)
    assert await _as_key(client, "GET", KEYS, key) == (200, 0)


# --- the key is shown once ----------------------------------------------------------------


async def test_the_key_is_shown_once_and_never_listed(client, admin):
    created = await _create(admin, expires_in_days=30)
    key = created["key"]
    assert key.startswith("rgk_") and len(key) >= 40
    assert created["prefix"] == key[:SHOWN_PREFIX_CHARS]
    assert created["id"].startswith("key-")
    [item] = await admin.ok("GET", KEYS)
    assert set(item) == {"id", "name", "prefix", "permissions", "created_at", "expires_at",
                         "last_used_at"}
    assert item == {k: v for k, v in created.items() if k != "key"}
    assert item["last_used_at"] is None


async def test_the_key_is_never_in_the_audit_body_nor_in_the_logs(client, admin, db, caplog):
    caplog.set_level(logging.DEBUG)
    created = await _create(admin)
    key = created["key"]
    await call(client, "POST", MACHINES, token=key,
               json={"id": "m1", "name": "m1", "ip": "10.0.0.1", "gpu_model": "A100",
                     "gpu_count": 8, "gpu_memory_gb": 80, "labels": {"note": key}})
    await call(client, "GET", PROFILE, token=key)
    await call(client, "GET", PROFILE, token=key[:-1] + "?")
    await admin.ok("DELETE", f"{KEYS}/{created['id']}")
    await call(client, "GET", PROFILE, token=key)
    await client.app[AUDIT].flush()
    bodies = {row["path"]: row["body"]
              for row in await db.fetch("SELECT path, body FROM audit_logs")}
    assert bodies[MACHINES]["labels"] == {"note": "***"}  # a key is redacted wherever it is
    assert key not in orjson.dumps(list(bodies.values())).decode()
    assert caplog.records
    for record in caplog.records:
        assert key[SHOWN_PREFIX_CHARS:] not in str(record.__dict__), record.__dict__


# --- audit and last use -------------------------------------------------------------------


async def test_the_audit_log_names_the_key_that_acted(client, admin):
    created = await _create(admin)
    await call(client, "POST", f"{MACHINES}/nowhere/maintenance", token=created["key"],
               json={"enabled": True, "reason": "x"})
    await client.app[AUDIT].flush()
    items = (await admin.ok("GET", AUDIT_LOGS))["list"]
    by_path = {item["path"]: item for item in items}
    assert by_path[f"{MACHINES}/nowhere/maintenance"]["api_key_id"] == created["id"]
    assert by_path[KEYS]["api_key_id"] is None  # created with a login


async def test_ten_thousand_requests_with_a_key_cause_at_most_a_handful_of_writes(
        client, admin, db):
    key = (await _create(admin))["key"]
    keys = client.app[API_KEYS]
    writes_before, lookups_before = keys.last_use.writes, keys.lookups
    gate = asyncio.Semaphore(50)

    async def one() -> int:
        async with gate:
            resp = await client.get(PROFILE, headers={"Authorization": f"Bearer {key}"})
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(10_000)))
    assert set(statuses) == {200}
    await keys.flush_last_use()
    await keys.flush_last_use()  # nothing new: no write
    # One per minute the run spanned (a run crossing a minute boundary writes twice).
    assert keys.last_use.writes - writes_before <= 3
    assert keys.lookups - lookups_before <= 1  # one read of the key's row, then memory
    last_used = await db.fetchval("SELECT last_used_at FROM api_keys")
    assert last_used is not None and last_used.second == 0 and last_used.microsecond == 0
    [item] = await admin.ok("GET", KEYS)
    assert item["last_used_at"] is not None


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "ci", "scope": "all"}, "scope"),
    ({"name": "ci", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "ci", "expires_in_days": 3651}, "expires_in_days"),
    ({"name": "ci", "expires_in_days": "90"}, "expires_in_days"),
    ({"name": ""}, "name"),
    ({}, "name"),
    ({"name": "ci", "permissions": []}, "permissions"),
    ({"name": "ci", "permissions": ["machine:read", "user:manage"]}, "permissions[1]"),
    ({"name": "ci", "permissions": ["no:such:thing"]}, "permissions[0]"),
])
async def test_bad_input_is_refused_with_40001_naming_the_field(client, accounts, body, field):
    operator = await Api.login(client, await accounts.user("operator-1", "operator"))
    status, answer = await operator.post(KEYS, body)
    assert (status, answer["code"]) == (400, 40001), answer
    assert field in [error["field"] for error in answer["data"]["errors"]], answer
    assert await operator.ok("GET", KEYS) == []


async def test_another_users_key_id_is_not_found_and_the_key_keeps_working(client, admin,
                                                                          accounts):
    created = await _create(admin)
    other = await Api.login(client, await accounts.user("other-admin"))
    assert (await other.delete(f"{KEYS}/{created['id']}"))[0] == 404
    assert (await other.delete(f"{KEYS}/key-99999999999999999999"))[0] == 404
    assert (await other.delete(f"{KEYS}/12"))[0] == 404
    assert await other.ok("GET", KEYS) == []
    assert await _as_key(client, "GET", PROFILE, created["key"]) == (200, 0)


async def test_a_customer_key_opens_its_tenant_dashboard_with_the_auth_message(client,
                                                                              accounts):
    alice = await accounts.customer("alice")
    key = (await _create(Api(client, (await login(client, alice))["access_token"])))["key"]
    ws = await client.ws_connect(WS)
    await ws.send_str(orjson.dumps({"type": "auth", "token": key}).decode())
    assert (await _welcome(ws))["topics"] == [f"tenant_{alice.tenant_id}_monitoring"]
