"""CONTRACT.md §2: login, refresh rotation and reuse detection, logout, profile, and
the per-request token checks."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from api.keys import REDIS, REDIS_KEYS
from storage.cache import Keys
from storage.revocations import Revocations
from tests.helpers import call, eventually, login

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
PROFILE = "/api/v1/auth/profile"


async def test_login_returns_bearer_tokens(client, accounts, settings):
    admin = await accounts.user("root-admin")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": "root-admin", "password": admin.password})
    assert status == 200 and body["code"] == 0 and body["msg"] == "ok"
    data = body["data"]
    assert set(data) == {"access_token", "refresh_token", "expires_in", "token_type"}
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == settings.access_token_ttl_s
    claims = jwt.decode(data["access_token"], settings.jwt_secret, algorithms=["HS256"],
                        issuer="remotegpu")
    assert claims["sub"] == str(admin.id) and claims["tid"] == 0 and claims["sid"]


async def test_login_username_is_case_insensitive(client, accounts):
    admin = await accounts.user("Operator1", "operator")
    status, _ = await call(client, "POST", LOGIN,
                           json={"username": "operator1", "password": admin.password})
    assert status == 200


async def test_login_wrong_password_is_40103(client, accounts):
    await accounts.user("root-admin")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": "root-admin", "password": "not-the-password"})
    assert (status, body["code"]) == (401, 40103)
    assert body["data"] is None and body["traceId"]


async def test_login_unknown_user_gets_the_same_answer_as_a_wrong_password(client, accounts):
    await accounts.user("root-admin")
    _, wrong_password = await call(client, "POST", LOGIN,
                                   json={"username": "root-admin", "password": "nope-nope"})
    status, unknown = await call(client, "POST", LOGIN,
                                 json={"username": "nobody", "password": "nope-nope"})
    assert status == 401
    assert {k: v for k, v in unknown.items() if k != "traceId"} == \
        {k: v for k, v in wrong_password.items() if k != "traceId"}


async def test_login_with_missing_fields_is_40001_naming_them(client):
    status, body = await call(client, "POST", LOGIN, json={"username": 5})
    assert (status, body["code"]) == (400, 40001)
    fields = {e["field"] for e in body["data"]["errors"]}
    assert fields == {"username", "password"}


async def test_login_disabled_user_with_right_password_is_40302(client, accounts):
    user = await accounts.user("gone-admin", status="disabled")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": user.username, "password": user.password})
    assert (status, body["code"]) == (403, 40302)


async def test_login_disabled_user_with_wrong_password_is_40103(client, accounts):
    user = await accounts.user("gone-admin", status="disabled")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": user.username, "password": "wrong-password"})
    assert (status, body["code"]) == (401, 40103)


async def test_login_user_of_disabled_tenant_is_40302(client, accounts):
    tenant_id = await accounts.tenant("Suspended Inc", status="disabled")
    user = await accounts.user("bob", "customer", tenant_id=tenant_id)
    status, body = await call(client, "POST", LOGIN,
                              json={"username": user.username, "password": user.password})
    assert (status, body["code"]) == (403, 40302)


async def test_login_failures_per_username_are_rate_limited_with_retry_after(
        make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(login_max_failures=3, login_window_s=120))
    user = await accounts.user("root-admin")
    for _ in range(3):
        status, _ = await call(client, "POST", LOGIN,
                               json={"username": user.username, "password": "wrong-pass"})
        assert status == 401
    resp = await client.post(LOGIN, json={"username": user.username, "password": user.password})
    body = await resp.json()
    assert (resp.status, body["code"]) == (429, 42901)
    assert 1 <= int(resp.headers["Retry-After"]) <= 120


async def test_login_failures_per_ip_are_limited_at_five_times_the_username_limit(
        make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(login_max_failures=2))
    for i in range(10):  # 5 x 2 failures, spread over usernames that never hit their own limit
        status, _ = await call(client, "POST", LOGIN,
                               json={"username": f"user-{i}", "password": "wrong-pass"})
        assert status == 401
    user = await accounts.user("root-admin")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": user.username, "password": user.password})
    assert (status, body["code"]) == (429, 42901)


async def test_successful_login_resets_the_username_failure_count(make_app, aiohttp_client,
                                                                 accounts):
    client = await aiohttp_client(make_app(login_max_failures=3))
    user = await accounts.user("root-admin")
    for _ in range(2):
        await call(client, "POST", LOGIN, json={"username": user.username, "password": "bad-pw!"})
    await login(client, user)
    for _ in range(2):
        status, _ = await call(client, "POST", LOGIN,
                               json={"username": user.username, "password": "bad-pw!"})
        assert status == 401
    await login(client, user)


async def test_concurrent_bad_passwords_for_one_username_evaluate_exactly_its_limit(
        client, accounts, settings):
    user = await accounts.user("root-admin")
    results = await asyncio.gather(*[
        call(client, "POST", LOGIN, json={"username": user.username, "password": "wrong-pass"})
        for _ in range(60)])
    statuses = [status for status, _ in results]
    limit = settings.login_max_failures
    assert (statuses.count(401), statuses.count(429)) == (limit, 60 - limit)


async def test_concurrent_attempts_from_one_ip_evaluate_exactly_its_limit(client, settings):
    results = await asyncio.gather(*[
        call(client, "POST", LOGIN, json={"username": f"nobody-{i}", "password": "wrong-pass"})
        for i in range(120)])
    statuses = [status for status, _ in results]
    limit = settings.login_max_failures * 5
    assert (statuses.count(401), statuses.count(429)) == (limit, 120 - limit)


async def _bad_login(client) -> int:
    status, _ = await call(client, "POST", LOGIN,
                           json={"username": "root-admin", "password": "wrong-pass"})
    return status


async def _refused_for(client, user) -> int:
    """The Retry-After of a login with the right password, which must be refused."""
    resp = await client.post(LOGIN, json={"username": user.username, "password": user.password})
    assert resp.status == 429
    assert (await resp.json())["code"] == 42901
    return int(resp.headers["Retry-After"])


async def test_a_locked_out_username_waits_the_first_lockout_not_the_window(
        make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(login_max_failures=3, login_window_s=1000,
                                           login_lockout_s=100))
    user = await accounts.user("root-admin")
    assert [await _bad_login(client) for _ in range(3)] == [401] * 3
    assert 50 < await _refused_for(client, user) <= 100


async def test_each_failure_after_a_lockout_locks_again_twice_as_long_up_to_the_window(
        make_app, aiohttp_client, accounts, redis_client, redis_prefix):
    client = await aiohttp_client(make_app(login_max_failures=2, login_window_s=1000,
                                           login_lockout_s=100))
    user = await accounts.user("root-admin")
    assert [await _bad_login(client) for _ in range(2)] == [401] * 2
    waits = []
    for _ in range(5):
        waits.append(await _refused_for(client, user))
        await redis_client.delete(Keys(redis_prefix).login_lock(user.username))  # it ran out
        assert await _bad_login(client) == 401  # one failure is enough to lock it again
    # Retry-After counts down from each lock-out's length (margins for a slow machine).
    for wait, lockout in zip(waits, [100, 200, 400, 800, 1000], strict=True):
        assert lockout - 50 < wait <= lockout


async def test_a_lockout_ends_by_itself(make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(login_max_failures=2, login_lockout_s=2))
    user = await accounts.user("root-admin")
    assert [await _bad_login(client) for _ in range(2)] == [401] * 2
    await _refused_for(client, user)

    async def logged_in() -> bool:
        resp = await client.post(LOGIN, json={"username": user.username,
                                              "password": user.password})
        return resp.status == 200

    await eventually(logged_in, what="the lock-out over")


async def test_a_successful_login_makes_the_next_lockout_short_again(
        make_app, aiohttp_client, accounts, redis_client, redis_prefix):
    client = await aiohttp_client(make_app(login_max_failures=2, login_window_s=1000,
                                           login_lockout_s=100))
    user = await accounts.user("root-admin")
    lock = Keys(redis_prefix).login_lock(user.username)
    assert [await _bad_login(client) for _ in range(2)] == [401] * 2
    await redis_client.delete(lock)  # it ran out
    assert await _bad_login(client) == 401  # locked again: the next would last 400 s
    await redis_client.delete(lock)
    await login(client, user)
    assert [await _bad_login(client) for _ in range(2)] == [401] * 2
    assert 50 < await _refused_for(client, user) <= 100


async def test_an_ip_at_its_limit_waits_until_its_window_ends(make_app, aiohttp_client,
                                                              accounts):
    client = await aiohttp_client(make_app(login_max_failures=1, login_window_s=1000,
                                           login_lockout_s=1))
    for i in range(5):
        status, _ = await call(client, "POST", LOGIN,
                               json={"username": f"nobody-{i}", "password": "wrong-pass"})
        assert status == 401
    assert 950 < await _refused_for(client, await accounts.user("root-admin")) <= 1000


async def test_successful_logins_do_not_use_up_the_ip_limit(make_app, aiohttp_client,
                                                            accounts):
    client = await aiohttp_client(make_app(login_max_failures=1))  # 5 per IP
    user = await accounts.user("root-admin")
    for _ in range(8):
        await login(client, user)
    for i in range(5):
        status, _ = await call(client, "POST", LOGIN,
                               json={"username": f"nobody-{i}", "password": "wrong-pass"})
        assert status == 401


async def test_refresh_rotates_the_refresh_token(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert status == 200
    fresh = body["data"]
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert fresh["access_token"] != tokens["access_token"]
    status, _ = await call(client, "GET", PROFILE, token=fresh["access_token"])
    assert status == 200


async def test_reused_refresh_token_fails_and_revokes_the_newer_one(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    _, body = await call(client, "POST", REFRESH, json={"refresh_token": tokens["refresh_token"]})
    newer = body["data"]

    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": newer["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)
    # the whole login is dead, access tokens included
    status, body = await call(client, "GET", PROFILE, token=newer["access_token"])
    assert (status, body["code"]) == (401, 40101)


async def test_reuse_of_one_login_leaves_other_logins_alive(client, accounts):
    user = await accounts.user("root-admin")
    first, second = await login(client, user), await login(client, user)
    await call(client, "POST", REFRESH, json={"refresh_token": first["refresh_token"]})
    await call(client, "POST", REFRESH, json={"refresh_token": first["refresh_token"]})
    status, _ = await call(client, "GET", PROFILE, token=second["access_token"])
    assert status == 200


async def test_concurrent_refreshes_of_one_token_let_at_most_one_through(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    results = await asyncio.gather(*[
        call(client, "POST", REFRESH, json={"refresh_token": tokens["refresh_token"]})
        for _ in range(10)
    ])
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) <= 1
    assert statuses.count(401) >= 9


async def test_unknown_refresh_token_is_40104(client):
    status, body = await call(client, "POST", REFRESH, json={"refresh_token": "made-up"})
    assert (status, body["code"]) == (401, 40104)


async def test_expired_refresh_token_is_40104(make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(refresh_token_ttl_s=1))
    tokens = await login(client, await accounts.user("root-admin"))
    await asyncio.sleep(1.2)
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)


async def test_refresh_for_a_disabled_user_is_40302(client, accounts, db):
    user = await accounts.user("root-admin")
    tokens = await login(client, user)
    await db.execute("UPDATE users SET status = 'disabled' WHERE id = $1", user.id)
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (403, 40302)


async def test_logout_kills_the_access_token_at_once(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "POST", LOGOUT, token=tokens["access_token"], json={})
    assert (status, body["code"], body["data"]) == (200, 0, None)
    status, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert (status, body["code"]) == (401, 40101)


async def test_logout_kills_the_refresh_tokens_of_the_login(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    await call(client, "POST", LOGOUT, token=tokens["access_token"])
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)


async def test_logout_leaves_the_users_other_logins_alive(client, accounts):
    user = await accounts.user("root-admin")
    first, second = await login(client, user), await login(client, user)
    await call(client, "POST", LOGOUT, token=first["access_token"])
    status, _ = await call(client, "GET", PROFILE, token=second["access_token"])
    assert status == 200


async def test_logout_with_a_refresh_token_of_another_login_ends_that_one_too(client, accounts):
    user = await accounts.user("root-admin")
    first, second = await login(client, user), await login(client, user)
    await call(client, "POST", LOGOUT, token=first["access_token"],
               json={"refresh_token": second["refresh_token"]})
    status, body = await call(client, "GET", PROFILE, token=second["access_token"])
    assert (status, body["code"]) == (401, 40101)


async def test_logout_cannot_end_another_users_login(client, accounts):
    alice, bob = await accounts.user("alice-admin"), await accounts.user("bob-admin")
    alice_tokens, bob_tokens = await login(client, alice), await login(client, bob)
    await call(client, "POST", LOGOUT, token=alice_tokens["access_token"],
               json={"refresh_token": bob_tokens["refresh_token"]})
    status, _ = await call(client, "POST", REFRESH,
                           json={"refresh_token": bob_tokens["refresh_token"]})
    assert status == 200


async def test_logout_without_a_token_is_40101(client):
    status, body = await call(client, "POST", LOGOUT, json={})
    assert (status, body["code"]) == (401, 40101)


async def test_profile_has_exactly_the_contract_fields(client, accounts):
    admin = await accounts.user("root-admin")
    tokens = await login(client, admin)
    status, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert status == 200
    data = body["data"]
    assert set(data) == {"id", "username", "role", "tenant_id", "permissions"}
    assert (data["id"], data["username"], data["role"], data["tenant_id"]) == \
        (admin.id, "root-admin", "admin", 0)
    assert {"machine:read", "user:manage", "audit:read"} <= set(data["permissions"])


async def test_customer_profile_carries_its_tenant_and_tenant_permissions(client, accounts):
    customer = await accounts.customer("alice")
    tokens = await login(client, customer)
    _, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert body["data"]["tenant_id"] == customer.tenant_id
    assert body["data"]["role"] == "customer"
    assert set(body["data"]["permissions"]) == {
        "tenant:machine:read", "tenant:machine:operate", "dataset:read", "dataset:write",
        "task:read", "task:write", "job:read",
    }


async def test_operator_permissions_are_the_contract_list(client, accounts):
    tokens = await login(client, await accounts.user("ops", "operator"))
    _, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert set(body["data"]["permissions"]) == {
        "machine:read", "machine:write", "allocation:write", "customer:read", "alert:read",
        "alert:write", "monitoring:read", "audit:read", "job:read",
    }


def _forge(settings, *, secret=..., algorithm="HS256", **claims_override):
    now = int(time.time())
    claims = {"iss": "remotegpu", "sub": "1", "usr": "x", "tid": 0, "role": "admin",
              "sid": "00000000-0000-0000-0000-000000000000", "jti": "j", "iat": now,
              "exp": now + 600}
    claims.update(claims_override)
    key = settings.jwt_secret if secret is ... else secret
    return jwt.encode(claims, key, algorithm=algorithm)


async def test_expired_access_token_is_40102(client, settings):
    token = _forge(settings, exp=int(time.time()) - 5, iat=int(time.time()) - 100)
    status, body = await call(client, "GET", PROFILE, token=token)
    assert (status, body["code"]) == (401, 40102)


@pytest.mark.parametrize("case", ["other-key", "alg-none", "garbage", "no-sid", "wrong-issuer"])
async def test_invalid_access_tokens_are_40101(client, settings, case):
    if case == "other-key":
        token = _forge(settings, secret="another-secret-" + "y" * 40)
    elif case == "alg-none":
        token = _forge(settings, algorithm="none", secret=None)
    elif case == "garbage":
        token = "not.a.jwt"
    elif case == "no-sid":
        token = jwt.encode({"sub": "1", "iss": "remotegpu", "exp": int(time.time()) + 60},
                           settings.jwt_secret, algorithm="HS256")
    else:
        token = _forge(settings, iss="someone-else")
    status, body = await call(client, "GET", PROFILE, token=token)
    assert (status, body["code"]) == (401, 40101)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "token"])
async def test_missing_or_malformed_authorization_is_40101(client, header):
    headers = {"Authorization": header} if header else {}
    resp = await client.get(PROFILE, headers=headers)
    body = await resp.json()
    assert (resp.status, body["code"]) == (401, 40101)


async def test_customer_token_on_an_admin_route_is_40301(client, accounts):
    tokens = await login(client, await accounts.customer("alice"))
    status, body = await call(client, "GET", "/api/v1/admin/audit-logs",
                              token=tokens["access_token"])
    assert (status, body["code"]) == (403, 40301)


async def test_disabled_tenant_is_locked_out_at_once(client, accounts, db):
    customer = await accounts.customer("alice")
    tokens = await login(client, customer)
    await db.execute("UPDATE tenants SET status = 'disabled' WHERE id = $1", customer.tenant_id)
    revocations = Revocations(client.app[REDIS], client.app[REDIS_KEYS])
    await revocations.set_tenant_disabled(customer.tenant_id, True)
    status, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert (status, body["code"]) == (403, 40302)


async def test_disabled_user_is_locked_out_at_once(client, accounts, db):
    admin = await accounts.user("root-admin")
    tokens = await login(client, admin)
    await db.execute("UPDATE users SET status = 'disabled' WHERE id = $1", admin.id)
    revocations = Revocations(client.app[REDIS], client.app[REDIS_KEYS])
    await revocations.set_user_disabled(admin.id, True)
    status, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert (status, body["code"]) == (403, 40302)


async def test_tenant_disabled_while_the_hub_was_down_is_locked_out_after_start(
        make_app, aiohttp_client, accounts, db):
    customer = await accounts.customer("alice")
    first = await aiohttp_client(make_app())
    tokens = await login(first, customer)
    await first.close()
    await db.execute("UPDATE tenants SET status = 'disabled' WHERE id = $1", customer.tenant_id)
    second = await aiohttp_client(make_app())
    status, body = await call(second, "GET", PROFILE, token=tokens["access_token"])
    assert (status, body["code"]) == (403, 40302)


async def test_reenabled_tenant_is_let_back_in_after_restart(make_app, aiohttp_client, accounts,
                                                             db):
    customer = await accounts.customer("alice")
    await db.execute("UPDATE tenants SET status = 'disabled' WHERE id = $1", customer.tenant_id)
    first = await aiohttp_client(make_app())
    await first.close()
    await db.execute("UPDATE tenants SET status = 'active' WHERE id = $1", customer.tenant_id)
    second = await aiohttp_client(make_app())
    tokens = await login(second, customer)
    status, _ = await call(second, "GET", PROFILE, token=tokens["access_token"])
    assert status == 200

