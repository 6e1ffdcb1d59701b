"""Dashboard sessions on ``GET /ws/connect`` (CONTRACT.md §5): authentication by URL or
first message, the session living as long as its access token (renewal, expiry, logout,
a disabled tenant), replies to client messages and the flood rule, message size, Origin,
connection caps, and the current state a new dashboard gets at once. Every refusal is a
close code after an accepted upgrade."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import WSMsgType

from api.keys import DASHBOARD_SOCKETS, INGEST, SETTINGS, STATE
from hub.dashboards import SEAT_LAPSE_S
from hub.protocol import FLOOD_LIMIT
from services.tokens import AccessTokens
from storage.cache import Keys
from storage.dashboard_seats import DashboardSeats
from tests.helpers import Api, call, eventually, login

WS = "/ws/connect"
HEARTBEAT = "/api/v1/agent/heartbeat"
FAST = {"snapshot_interval_s": 0.3, "tenant_update_interval_s": 0.1,
        "ws_auth_timeout_s": 0.5, "ws_max_message_bytes": 4096}
# Generous: how long a test waits for something that should happen at once.
DEADLINE_S = 8.0
TICKS = ("monitoring_snapshot", "monitoring_update")


@pytest.fixture
async def client(make_app, aiohttp_client):
    """A hub with fast dashboard ticks and a short authentication deadline."""
    return await aiohttp_client(make_app(**FAST))


async def _eventually(predicate, timeout_s: float = DEADLINE_S, what: str = "condition"):
    return await eventually(predicate, timeout_s, what)


def _frame() -> dict:
    return {"ts": time.time(), "cpu_util": 10.0, "mem_used": 10, "mem_total": 64,
            "disk_used": 10, "disk_total": 100,
            "gpus": [{"index": i, "util": 50.0, "mem_used": 100, "mem_total": 1000,
                      "temp": 50.0, "power": 100.0} for i in range(2)]}


async def _beat(client, agent_token: str) -> None:
    status, body = await call(client, "POST", HEARTBEAT, token=agent_token, json=_frame())
    assert status == 200, body
    await client.app[INGEST].flush()


async def _token(client, account) -> str:
    return (await login(client, account))["access_token"]


async def _connect(client, token: str | None = None, **kwargs: Any):
    path = WS if token is None else f"{WS}?token={token}"
    return await client.ws_connect(path, **kwargs)


async def _receive(ws, timeout_s: float = DEADLINE_S) -> dict:
    """The next JSON message; fails if the socket closes instead."""
    msg = await ws.receive(timeout=timeout_s)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return orjson.loads(msg.data)


async def _next(ws, kind: str, timeout_s: float = DEADLINE_S) -> dict:
    """The next message of type ``kind``, skipping ticks (snapshots, updates)."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = await _receive(ws, max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message
        assert message["type"] in TICKS, f"expected {kind}, got {message}"


async def _welcome(ws) -> dict:
    message = await _receive(ws)
    assert message["type"] == "welcome", message
    return message["data"]


async def _closed_with(ws, code: int, timeout_s: float = DEADLINE_S) -> str:
    """Wait for the server's close frame (skipping any text before it); its reason."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == WSMsgType.TEXT:
            continue
        assert msg.type == WSMsgType.CLOSE, (msg.type, msg.data, msg.extra)
        assert msg.data == code, (msg.data, msg.extra)
        return msg.extra or ""


async def _is_open(ws) -> None:
    """The session answers a ping: it is open and serving."""
    await ws.send_str('{"type": "ping"}')
    pong = await _next(ws, "pong")
    assert isinstance(pong["ts"], float)


def _exp(token: str) -> int:
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def _crafted(client, account, ttl_s: int, role: str | None = None,
             secret: str | None = None) -> str:
    """An access token made like the hub makes them, for a login that was never stored."""
    tokens = AccessTokens(secret or client.app[SETTINGS].jwt_secret, ttl_s)
    return tokens.issue(user_id=account.id, username=account.username,
                        tenant_id=account.tenant_id, role=role or account.role,
                        sid=str(uuid.uuid4()))


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
async def test_a_token_in_the_url_is_welcomed_with_the_global_topic(client, accounts, role):
    staff = await accounts.user(f"staff-{role}", role)
    ws = await _connect(client, await _token(client, staff))
    assert await _welcome(ws) == {"user_id": staff.id, "role": role,
                                  "topics": ["global_monitoring"]}
    await _is_open(ws)


async def test_an_admin_gets_the_current_snapshot_right_after_the_welcome(
        make_app, aiohttp_client, accounts):
    # Ticks a minute apart: the snapshot that follows the welcome is the current state.
    client = await aiohttp_client(make_app(snapshot_interval_s=60.0))
    admin = await Api.login(client, await accounts.user("root-admin"))
    await _beat(client, (await admin.machine("m1", gpu_count=2))["agent_token"])
    await _eventually(lambda: client.app[STATE].status("m1") == "online", what="m1 online")
    ws = await _connect(client, admin.token)
    await _welcome(ws)
    snapshot = await _receive(ws)
    assert (snapshot["type"], snapshot["topic"]) == ("monitoring_snapshot", "global_monitoring")
    assert isinstance(snapshot["data"]["ts"], float)
    assert isinstance(snapshot["data"]["seq"], int)
    [row] = snapshot["data"]["machines"]
    assert set(row) == {"machine_id", "status", "gpu_util", "gpu_mem", "cpu_util", "ts"}
    assert (row["machine_id"], row["status"], row["gpu_util"], row["cpu_util"]) == (
        "m1", "online", 50.0, 10.0)


async def test_a_registered_machine_that_never_reported_is_in_the_snapshot_with_nulls(
        make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(snapshot_interval_s=60.0))
    admin = await Api.login(client, await accounts.user("root-admin"))
    await admin.machine("m1", gpu_count=2)
    # a process started after the registration loads it from the database
    later = await aiohttp_client(make_app(snapshot_interval_s=60.0))
    expected = [{"machine_id": "m1", "status": "offline", "gpu_util": None, "gpu_mem": None,
                 "cpu_util": None, "ts": None}]
    for process in (later, client):
        ws = await _connect(process, admin.token)
        await _welcome(ws)
        snapshot = await _receive(ws)
        assert snapshot["data"]["machines"] == expected, process is client


async def test_a_first_auth_message_authenticates_without_a_token_in_the_url(client,
                                                                             accounts):
    admin = await accounts.user("root-admin")
    ws = await _connect(client)
    await ws.send_str(orjson.dumps({"type": "auth", "token": await _token(client, admin)}
                                   ).decode())
    assert await _welcome(ws) == {"user_id": admin.id, "role": "admin",
                                  "topics": ["global_monitoring"]}
    assert (await _receive(ws))["type"] == "monitoring_snapshot"


async def test_no_token_and_no_auth_message_in_time_closes_with_4001(client):
    ws = await _connect(client)
    await _closed_with(ws, 4001)


@pytest.mark.parametrize("first", [
    '{"type": "ping"}',
    '{"type": "auth"}',
    '{"type": "auth", "token": ""}',
    '{"type": "auth", "token": 42}',
    "not json",
    '["auth"]',
])
async def test_a_first_message_that_is_not_auth_with_a_token_closes_with_4001(client, first):
    ws = await _connect(client)
    await ws.send_str(first)
    await _closed_with(ws, 4001)


async def test_a_binary_first_message_closes_with_4001(client, accounts):
    admin = await accounts.user("root-admin")
    ws = await _connect(client)
    token = await _token(client, admin)
    await ws.send_bytes(orjson.dumps({"type": "auth", "token": token}))
    await _closed_with(ws, 4001)


@pytest.mark.parametrize("how", ["url", "message"])
async def test_a_bad_token_closes_with_4001(client, accounts, how):
    admin = await accounts.user("root-admin")
    forged = _crafted(client, admin, 60, secret="another-secret-" + "y" * 40)
    for token in ("not-a-jwt", forged):
        if how == "url":
            ws = await _connect(client, token)
        else:
            ws = await _connect(client)
            await ws.send_str(orjson.dumps({"type": "auth", "token": token}).decode())
        await _closed_with(ws, 4001)


@pytest.mark.parametrize("how", ["url", "message"])
async def test_an_expired_token_closes_with_4001(client, accounts, how):
    admin = await accounts.user("root-admin")
    # the same token, still valid, is welcomed: only the expiry differs
    fresh = await _connect(client, _crafted(client, admin, 60))
    await _welcome(fresh)
    expired = _crafted(client, admin, -60)
    if how == "url":
        ws = await _connect(client, expired)
    else:
        ws = await _connect(client)
        await ws.send_str(orjson.dumps({"type": "auth", "token": expired}).decode())
    await _closed_with(ws, 4001)


async def test_a_role_without_a_dashboard_permission_closes_with_4001(client, accounts):
    admin = await accounts.user("root-admin")
    ws = await _connect(client, _crafted(client, admin, 60, role="nobody"))
    await _closed_with(ws, 4001)


# --- the session lives as long as its token -------------------------------------------------


async def test_a_session_whose_token_expires_unrenewed_is_closed_with_4001(
        make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(**FAST, access_token_ttl_s=2))
    admin = await accounts.user("root-admin")
    token = await _token(client, admin)
    ws = await _connect(client, token)
    await _welcome(ws)
    await _closed_with(ws, 4001, timeout_s=2 + DEADLINE_S)
    # never before the token's own expiry (the loop's timer may fire a hair early)
    assert time.time() >= _exp(token) - 0.1
    await _eventually(lambda: client.app[DASHBOARD_SOCKETS].count == 0, what="socket gone")


@pytest.mark.parametrize("renewal", ["login", "refresh"])
async def test_a_session_renewed_before_expiry_stays_open_past_the_first_expiry(
        make_app, aiohttp_client, accounts, renewal):
    client = await aiohttp_client(make_app(**FAST, access_token_ttl_s=3))
    admin = await accounts.user("root-admin")
    tokens = await login(client, admin)
    first = tokens["access_token"]
    ws = await _connect(client, first)
    await _welcome(ws)
    # Tokens carry whole seconds: renew a second later, so the new one lasts longer.
    await asyncio.sleep(1.1)
    if renewal == "login":
        second = await _token(client, admin)
    else:
        status, body = await call(client, "POST", "/api/v1/auth/refresh",
                                  json={"refresh_token": tokens["refresh_token"]})
        assert status == 200, body
        second = body["data"]["access_token"]
    assert _exp(second) > _exp(first)
    await ws.send_str(orjson.dumps({"type": "auth", "token": second}).decode())
    await _is_open(ws)
    await asyncio.sleep(max(0.0, _exp(first) + 0.3 - time.time()))
    await _is_open(ws)
    # the renewed token's expiry still holds
    await _closed_with(ws, 4001, timeout_s=3 + DEADLINE_S)
    assert time.time() >= _exp(second) - 0.1


async def test_renewing_with_another_users_token_closes_with_4001(client, accounts):
    admin = await accounts.user("root-admin")
    other = await accounts.user("other-admin")
    ws = await _connect(client, await _token(client, admin))
    await _welcome(ws)
    await ws.send_str(orjson.dumps({"type": "auth", "token": await _token(client, other)}
                                   ).decode())
    await _closed_with(ws, 4001)


@pytest.mark.parametrize("token", ["not-a-jwt", "expired"])
async def test_renewing_with_an_invalid_token_closes_with_4001(client, accounts, token):
    admin = await accounts.user("root-admin")
    ws = await _connect(client, await _token(client, admin))
    await _welcome(ws)
    if token == "expired":
        token = _crafted(client, admin, -60)
    await ws.send_str(orjson.dumps({"type": "auth", "token": token}).decode())
    await _closed_with(ws, 4001)


async def test_an_auth_message_without_a_token_mid_session_is_an_error_not_a_close(client,
                                                                                  accounts):
    admin = await accounts.user("root-admin")
    ws = await _connect(client, await _token(client, admin))
    await _welcome(ws)
    await ws.send_str('{"type": "auth"}')
    error = await _next(ws, "error")
    assert error["data"]["code"] == "invalid_message"
    await _is_open(ws)


async def test_disabling_a_tenant_closes_its_customers_sockets_with_4001(client, admin,
                                                                         accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    customer_ws = await _connect(client, await _token(client, alice))
    await _welcome(customer_ws)
    admin_ws = await _connect(client, admin.token)
    await _welcome(admin_ws)
    await admin.ok("POST", f"/api/v1/admin/customers/{alice.tenant_id}/disable")
    await _closed_with(customer_ws, 4001)
    await _is_open(admin_ws)


async def test_a_customer_of_a_disabled_tenant_cannot_connect(client, admin, accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    token = await _token(client, alice)
    await admin.ok("POST", f"/api/v1/admin/customers/{alice.tenant_id}/disable")
    ws = await _connect(client, token)
    await _closed_with(ws, 4001)


async def test_disabling_another_tenant_leaves_a_customers_socket_open(client, admin,
                                                                       accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    bob = await accounts.customer("bob", "Other Corp")
    ws = await _connect(client, await _token(client, alice))
    await _welcome(ws)
    bob_ws = await _connect(client, await _token(client, bob))
    await _welcome(bob_ws)
    await admin.ok("POST", f"/api/v1/admin/customers/{bob.tenant_id}/disable")
    await _closed_with(bob_ws, 4001)
    await _is_open(ws)


async def test_logout_closes_that_logins_socket_and_not_another_login_of_the_user(client,
                                                                                 accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    leaving, staying = await _token(client, alice), await _token(client, alice)
    leaving_ws = await _connect(client, leaving)
    await _welcome(leaving_ws)
    staying_ws = await _connect(client, staying)
    await _welcome(staying_ws)
    status, body = await call(client, "POST", "/api/v1/auth/logout", token=leaving, json={})
    assert status == 200, body
    await _closed_with(leaving_ws, 4001)
    await _is_open(staying_ws)
    # the logged-out token cannot open a new one
    again = await _connect(client, leaving)
    await _closed_with(again, 4001)


async def test_a_reused_refresh_token_closes_the_socket_of_its_login_with_4001(client,
                                                                                 accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    tokens = await login(client, alice)
    ws = await _connect(client, tokens["access_token"])
    await _welcome(ws)
    other_ws = await _connect(client, await _token(client, alice))  # another login
    await _welcome(other_ws)
    refresh = {"refresh_token": tokens["refresh_token"]}
    status, body = await call(client, "POST", "/api/v1/auth/refresh", json=refresh)
    assert status == 200, body
    await _is_open(ws)  # a refresh alone ends nothing
    status, body = await call(client, "POST", "/api/v1/auth/refresh", json=refresh)
    assert status == 401, body
    await _closed_with(ws, 4001)
    await _is_open(other_ws)


async def test_logout_and_tenant_disable_close_sockets_held_by_another_process(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app(**FAST))
    second = await aiohttp_client(make_app(**FAST))
    admin = await Api.login(first, await accounts.user("root-admin"))
    alice = await accounts.customer("alice", "Acme Corp")
    bob = await accounts.customer("bob", "Other Corp")
    alice_token = await _token(first, alice)
    alice_ws = await _connect(second, alice_token)
    await _welcome(alice_ws)
    bob_ws = await _connect(second, await _token(first, bob))
    await _welcome(bob_ws)
    status, body = await call(first, "POST", "/api/v1/auth/logout", token=alice_token, json={})
    assert status == 200, body
    await _closed_with(alice_ws, 4001)
    await _is_open(bob_ws)
    await admin.ok("POST", f"/api/v1/admin/customers/{bob.tenant_id}/disable")
    await _closed_with(bob_ws, 4001)


# --- client messages ----------------------------------------------------------------------


async def test_a_ping_is_answered_with_a_pong_carrying_the_server_time(client, admin):
    ws = await _connect(client, admin.token)
    await _welcome(ws)
    before = time.time()
    await ws.send_str('{"type": "ping"}')
    pong = await _next(ws, "pong")
    assert set(pong) == {"type", "ts"}
    assert before - 1 <= pong["ts"] <= time.time() + 1


@pytest.mark.parametrize("bad", ["not json", '{"type": "subscribe", "topic": "x"}',
                                 '{"no": "type"}', "[1, 2]", '"ping"'])
async def test_a_bad_message_is_answered_with_an_error_and_the_socket_stays_open(client,
                                                                                 admin, bad):
    ws = await _connect(client, admin.token)
    await _welcome(ws)
    await ws.send_str(bad)
    error = await _next(ws, "error")
    assert error["data"]["code"] == "invalid_message"
    assert isinstance(error["data"]["message"], str) and error["data"]["message"]
    await _is_open(ws)


async def test_a_flood_of_bad_messages_closes_with_4010(client, admin):
    ws = await _connect(client, admin.token)
    await _welcome(ws)
    for _ in range(FLOOD_LIMIT - 1):
        await ws.send_str("not json")
        assert (await _next(ws, "error"))["data"]["code"] == "invalid_message"
    await _is_open(ws)  # good messages do not count
    await ws.send_str('{"type": "unknown"}')
    await _closed_with(ws, 4010)


async def test_a_message_larger_than_the_limit_closes_with_1009(client, admin):
    ws = await _connect(client, admin.token)
    await _welcome(ws)
    limit = client.app[SETTINGS].ws_max_message_bytes
    # just under the limit is fine
    await ws.send_str(orjson.dumps({"type": "ping", "pad": "x" * (limit - 40)}).decode())
    await _next(ws, "pong")
    await ws.send_str(orjson.dumps({"type": "ping", "pad": "x" * (limit + 1)}).decode())
    await _closed_with(ws, 1009)


async def test_a_first_message_larger_than_the_limit_closes_with_1009(client, admin):
    ws = await _connect(client)
    limit = client.app[SETTINGS].ws_max_message_bytes
    await ws.send_str(orjson.dumps({"type": "auth", "token": admin.token,
                                    "pad": "x" * limit}).decode())
    await _closed_with(ws, 1009)


# --- Origin ---------------------------------------------------------------------------------


@pytest.fixture
async def dash_client(make_app, aiohttp_client):
    return await aiohttp_client(make_app(**FAST,
                                         ws_allowed_origins=("https://dash.example.com",)))


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null",
                                    "https://dash.example.com.evil.net"])
async def test_a_browser_origin_not_allowed_closes_with_4003(dash_client, accounts, origin):
    admin = await accounts.user("root-admin")
    token = await _token(dash_client, admin)
    ws = await _connect(dash_client, token, headers={"Origin": origin})
    await _closed_with(ws, 4003)


async def test_the_same_host_on_another_port_is_not_same_origin(dash_client, accounts):
    admin = await accounts.user("root-admin")
    token = await _token(dash_client, admin)
    origin = f"http://{dash_client.host}:{dash_client.port + 1}"
    ws = await _connect(dash_client, token, headers={"Origin": origin})
    await _closed_with(ws, 4003)


async def test_a_same_origin_page_is_allowed(dash_client, accounts):
    admin = await accounts.user("root-admin")
    token = await _token(dash_client, admin)
    origin = f"http://{dash_client.host}:{dash_client.port}"
    ws = await _connect(dash_client, token, headers={"Origin": origin})
    await _welcome(ws)


async def test_an_origin_on_the_allow_list_is_allowed(dash_client, accounts):
    admin = await accounts.user("root-admin")
    token = await _token(dash_client, admin)
    ws = await _connect(dash_client, token, headers={"Origin": "https://dash.example.com"})
    await _welcome(ws)


async def test_a_client_without_an_origin_header_is_allowed(dash_client, accounts):
    admin = await accounts.user("root-admin")
    ws = await _connect(dash_client, await _token(dash_client, admin))
    await _welcome(ws)


# --- connection caps ----------------------------------------------------------------------


async def test_a_users_socket_beyond_the_per_user_cap_closes_with_4009(make_app,
                                                                       aiohttp_client,
                                                                       accounts):
    client = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=2))
    admin = await accounts.user("root-admin")
    token = await _token(client, admin)
    first, second = await _connect(client, token), await _connect(client, token)
    await _welcome(first)
    await _welcome(second)
    third = await _connect(client, token)
    await _closed_with(third, 4009)
    await _is_open(first)
    await _is_open(second)
    # another user is not counted against this one
    other = await accounts.user("other-admin")
    other_ws = await _connect(client, await _token(client, other))
    await _welcome(other_ws)


async def test_a_closed_socket_frees_its_place_under_the_per_user_cap(make_app,
                                                                      aiohttp_client,
                                                                      accounts):
    client = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=1))
    admin = await accounts.user("root-admin")
    token = await _token(client, admin)
    first = await _connect(client, token)
    await _welcome(first)
    await _closed_with(await _connect(client, token), 4009)
    await first.close()
    await _eventually(lambda: client.app[DASHBOARD_SOCKETS].count == 0, what="socket gone")
    again = await _connect(client, token)
    await _welcome(again)


async def test_the_per_user_cap_counts_the_users_sockets_on_every_process(make_app,
                                                                          aiohttp_client,
                                                                          accounts):
    first = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=2))
    second = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=2))
    admin = await accounts.user("root-admin")
    token = await _token(first, admin)
    on_first, on_second = await _connect(first, token), await _connect(second, token)
    await _welcome(on_first)
    await _welcome(on_second)
    await _closed_with(await _connect(first, token), 4009)
    await _closed_with(await _connect(second, token), 4009)
    await on_first.close()
    await _eventually(lambda: first.app[DASHBOARD_SOCKETS].count == 0, what="socket gone")
    await _welcome(await _connect(second, token))


async def test_a_process_started_in_place_of_a_killed_one_frees_its_seats_at_once(
        make_app, aiohttp_client, accounts, redis_client, redis_prefix):
    admin = await accounts.user("root-admin")
    # A process "hub-a:8080" held all of the user's seats and was killed (SIGKILL): its
    # seats are in Redis, and would count until its liveness key lapses.
    killed = DashboardSeats(redis_client, Keys(redis_prefix), process_id="hub-a:8080",
                            lapse_s=SEAT_LAPSE_S)
    for _ in range(2):
        assert await killed.take(admin.id, 2)
    await killed.keep_alive()
    elsewhere = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=2))
    token = await _token(elsewhere, admin)
    await _closed_with(await _connect(elsewhere, token), 4009)  # counted: it may be alive
    restarted = await aiohttp_client(make_app(**FAST, ws_max_connections_per_user=2,
                                              instance_id="hub-a:8080"))
    await _welcome(await _connect(restarted, token))
    await _welcome(await _connect(elsewhere, token))


async def test_a_socket_beyond_the_process_cap_closes_with_4009(make_app, aiohttp_client,
                                                                accounts):
    client = await aiohttp_client(make_app(**FAST, ws_max_connections=1))
    admin = await accounts.user("root-admin")
    other = await accounts.user("other-admin")
    first = await _connect(client, await _token(client, admin))
    await _welcome(first)
    second = await _connect(client, await _token(client, other))
    await _closed_with(second, 4009)
    await _is_open(first)
    await first.close()
    await _eventually(lambda: client.app[DASHBOARD_SOCKETS].count == 0, what="socket gone")
    third = await _connect(client, await _token(client, other))
    await _welcome(third)


# --- customers ------------------------------------------------------------------------------


async def test_a_customer_gets_its_tenant_topic_and_one_update_per_reporting_machine(
        client, admin, accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    tenant = alice.tenant_id
    other_tenant = await accounts.tenant("Other Corp")
    agents = {m: (await admin.machine(m, gpu_count=2))["agent_token"]
              for m in ("m1", "m2", "m3", "m4")}
    for machine_id in ("m1", "m2", "m3"):
        await admin.allocate(machine_id, tenant)
    await admin.allocate("m4", other_tenant)
    for machine_id in ("m1", "m2", "m4"):  # m3 never reports
        await _beat(client, agents[machine_id])
    state = client.app[STATE]

    def settled() -> bool:
        return (state.by_tenant.get(tenant) == {"m1", "m2", "m3"}
                and all(state.status(m) == "online" for m in ("m1", "m2", "m4"))
                and not state.changed)

    # no update tick or status event left to come: what follows the welcome is the state
    await _eventually(settled, what="state settled")
    ws = await _connect(client, await _token(client, alice))
    assert await _welcome(ws) == {"user_id": alice.id, "role": "customer",
                                  "topics": [f"tenant_{tenant}_monitoring"]}
    messages = []
    while True:
        try:
            messages.append(await _receive(ws, timeout_s=1.0))
        except TimeoutError:
            break
    updates = messages[:2]
    assert [m["type"] for m in updates] == ["monitoring_update"] * 2, messages
    assert [m["data"]["machine_id"] for m in updates] == ["m1", "m2"]
    for update in updates:
        assert update["topic"] == f"tenant_{tenant}_monitoring"
        data = update["data"]
        assert set(data) == {"machine_id", "gpu_util", "gpu_mem", "cpu_util", "ts"}
        assert (data["gpu_util"], data["cpu_util"]) == (50.0, 10.0)
    # nothing else: no snapshot, no other tenant's machine, no second update
    assert messages[2:] == []


async def test_a_customer_whose_machines_never_reported_gets_only_the_welcome(client, admin,
                                                                              accounts):
    alice = await accounts.customer("alice", "Acme Corp")
    await admin.machine("m1", gpu_count=2)
    await admin.allocate("m1", alice.tenant_id)
    await _eventually(lambda: client.app[STATE].by_tenant.get(alice.tenant_id) == {"m1"},
                      what="m1 leased in the state")
    ws = await _connect(client, await _token(client, alice))
    await _welcome(ws)
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=1.0)
    await _is_open(ws)
