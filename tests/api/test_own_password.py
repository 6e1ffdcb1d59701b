"""CONTRACT.md §3a ``POST /api/v1/auth/password``: any logged-in user changes its own
password; a wrong current one changes nothing; every other login of the user ends at once
(on every hub process, dashboards included) while the calling one goes on."""

from __future__ import annotations

import pytest
from aiohttp import WSMsgType

from tests.helpers import PASSWORD, Api, call, login

PASSWORD_PATH = "/api/v1/auth/password"
PROFILE = "/api/v1/auth/profile"
REFRESH = "/api/v1/auth/refresh"
NEW_PASSWORD = "brand-new-password"


def _change(current: str = PASSWORD, new: str = NEW_PASSWORD) -> dict:
    return {"current_password": current, "new_password": new}


async def _profile_status(client, token: str) -> tuple[int, int]:
    status, body = await call(client, "GET", PROFILE, token=token)
    return status, body["code"]


async def _login_status(client, username: str, password: str) -> int:
    status, _ = await call(client, "POST", "/api/v1/auth/login",
                           json={"username": username, "password": password})
    return status


@pytest.mark.parametrize("role", ["admin", "operator", "customer"])
async def test_every_role_changes_its_own_password(client, accounts, role):
    account = (await accounts.customer("bob") if role == "customer"
               else await accounts.user("staff", role))
    api = await Api.login(client, account)
    assert await api.ok("POST", PASSWORD_PATH, _change()) is None
    assert await _login_status(client, account.username, PASSWORD) == 401
    assert await _login_status(client, account.username, NEW_PASSWORD) == 200


async def test_the_calling_login_keeps_working_with_its_tokens(client, accounts):
    bob = await accounts.customer("bob")
    tokens = await login(client, bob)
    await Api(client, tokens["access_token"]).ok("POST", PASSWORD_PATH, _change())
    assert await _profile_status(client, tokens["access_token"]) == (200, 0)
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert status == 200, body


async def test_the_other_logins_die_at_once(client, accounts):
    bob = await accounts.customer("bob")
    current = await login(client, bob)
    others = [await login(client, bob) for _ in range(2)]
    await Api(client, current["access_token"]).ok("POST", PASSWORD_PATH, _change())
    for pair in others:
        assert await _profile_status(client, pair["access_token"]) == (401, 40101)
        status, body = await call(client, "POST", REFRESH,
                                  json={"refresh_token": pair["refresh_token"]})
        assert (status, body["code"]) == (401, 40104)


async def test_the_other_logins_die_on_another_process_and_lose_their_dashboards(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    bob = await accounts.customer("bob")
    current = await login(first, bob)
    other = await login(second, bob)
    other_ws = await _dashboard(second, other["access_token"])
    current_ws = await _dashboard(second, current["access_token"])
    await Api(first, current["access_token"]).ok("POST", PASSWORD_PATH, _change())
    assert await _profile_status(second, other["access_token"]) == (401, 40101)
    await _closed_with_4001(other_ws)
    await current_ws.send_str('{"type": "ping"}')
    assert '"pong"' in await _next_text(current_ws)


async def test_other_users_keep_their_logins(client, accounts):
    bob = await accounts.customer("bob")
    carl = await accounts.user("carl", "customer", tenant_id=bob.tenant_id)
    carl_token = (await login(client, carl))["access_token"]
    await (await Api.login(client, bob)).ok("POST", PASSWORD_PATH, _change())
    assert await _profile_status(client, carl_token) == (200, 0)


async def test_a_wrong_current_password_is_40103_and_changes_nothing(client, accounts, db):
    bob = await accounts.customer("bob")
    current = await login(client, bob)
    other = await login(client, bob)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id)
    status, body = await call(client, "POST", PASSWORD_PATH, token=current["access_token"],
                              json=_change(current="not-the-password"))
    assert (status, body["code"]) == (401, 40103)
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id) == stored
    assert await _profile_status(client, other["access_token"]) == (200, 0)
    assert await _profile_status(client, current["access_token"]) == (200, 0)
    assert await _login_status(client, "bob", PASSWORD) == 200


async def test_wrong_guesses_are_rate_limited_like_logins(client, accounts, settings):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    for _ in range(settings.login_max_failures):
        status, _ = await call(client, "POST", PASSWORD_PATH, token=token,
                               json=_change(current="guess-guess"))
        assert status == 401
    resp = await client.post(PASSWORD_PATH, json=_change(),
                             headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert (resp.status, body["code"]) == (429, 42901)
    assert resp.headers["Retry-After"].isdigit()


async def test_the_change_is_audited_with_both_passwords_redacted(client, accounts, db):
    bob = await accounts.customer("bob")
    await (await Api.login(client, bob)).ok("POST", PASSWORD_PATH, _change())
    body = await db.fetchval("SELECT body FROM audit_logs WHERE path = $1", PASSWORD_PATH)
    assert body == {"current_password": "***", "new_password": "***"}


@pytest.mark.parametrize(("body", "field"), [
    ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
    ({"current_password": PASSWORD, "new_password": "p" * 129}, "new_password"),
    ({"current_password": PASSWORD, "new_password": 12345678}, "new_password"),
    ({"current_password": None, "new_password": NEW_PASSWORD}, "current_password"),
    ({"current_password": "c" * 1025, "new_password": NEW_PASSWORD}, "current_password"),
    ({"new_password": NEW_PASSWORD}, "current_password"),
    ({"current_password": PASSWORD}, "new_password"),
    ({**_change(), "user_id": 1}, "user_id"),
])
async def test_a_bad_body_is_40001_naming_the_field_and_changes_nothing(client, accounts,
                                                                        body, field):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    status, answer = await call(client, "POST", PASSWORD_PATH, token=token, json=body)
    assert (status, answer["code"]) == (400, 40001), answer
    assert field in [e["field"] for e in answer["data"]["errors"]]
    assert await _login_status(client, "bob", PASSWORD) == 200


async def test_an_api_key_cannot_change_the_password(client, accounts, db):
    bob = await accounts.customer("bob")
    key = (await (await Api.login(client, bob)).ok("POST", "/api/v1/auth/api-keys",
                                                   {"name": "ci"}))["key"]
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id)
    status, body = await call(client, "POST", PASSWORD_PATH, token=key, json=_change())
    assert (status, body["code"]) == (403, 40301)
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id) == stored


async def test_without_a_token_it_is_40101(client):
    status, body = await call(client, "POST", PASSWORD_PATH, json=_change())
    assert (status, body["code"]) == (401, 40101)


async def test_a_disabled_user_cannot_change_its_password(client, accounts, db):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id)
    admin = await Api.login(client, await accounts.user("root-admin"))
    await admin.ok("POST", f"/api/v1/admin/users/{bob.id}/disable")
    status, body = await call(client, "POST", PASSWORD_PATH, token=token, json=_change())
    assert (status, body["code"]) == (403, 40302)
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob.id) == stored


async def _dashboard(client, token: str):
    ws = await client.ws_connect(f"/ws/connect?token={token}")
    assert '"welcome"' in await _next_text(ws)
    return ws


async def _next_text(ws) -> str:
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT, msg
        if '"monitoring_' not in msg.data:
            return msg.data


async def _closed_with_4001(ws) -> None:
    while True:
        msg = await ws.receive(timeout=1)
        if msg.type == WSMsgType.TEXT:
            continue
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 4001), (msg.type, msg.data)
        return
