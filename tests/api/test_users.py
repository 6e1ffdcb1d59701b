"""CONTRACT.md §3a users: listing with filters, creating staff and customer users, role
changes within staff, disable/enable (ending every login at once, dashboards on every
hub process included), password resets, the last-admin and self-disable rules, and bad
input on each endpoint."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import WSMsgType

from api.keys import USERS as USERS_SERVICE
from services.errors import Conflict
from tests.helpers import PASSWORD, Account, Api, call, eventually, login

USERS = "/api/v1/admin/users"
PROFILE = "/api/v1/auth/profile"
REFRESH = "/api/v1/auth/refresh"
KEYS = "/api/v1/auth/api-keys"
NEW_PASSWORD = "brand-new-password"
ITEM_FIELDS = {"id", "username", "role", "tenant_id", "tenant_name", "status", "created_at",
               "last_login_at"}
# How long a revocation may take to reach a socket (the contract: at once; "within a second").
REVOKE_S = 1.0


async def _create(admin: Api, username: str, role: str, **fields) -> dict:
    return await admin.ok("POST", USERS, {"username": username, "password": PASSWORD,
                                          "role": role, **fields})


def _account(item: dict) -> Account:
    return Account(item["id"], item["username"], item["tenant_id"], item["role"])


async def _profile_status(client, token: str) -> tuple[int, int]:
    status, body = await call(client, "GET", PROFILE, token=token)
    return status, body["code"]


# --- create -------------------------------------------------------------------------------


async def test_create_operator_returns_a_platform_user_item(admin):
    item = await _create(admin, "olga", "operator")
    assert set(item) == ITEM_FIELDS
    assert (item["username"], item["role"], item["tenant_id"], item["tenant_name"],
            item["status"], item["last_login_at"]) == ("olga", "operator", 0, None, "active",
                                                       None)


async def test_created_operator_logs_in_with_the_operator_permissions(client, admin):
    item = await _create(admin, "olga", "operator")
    api = await Api.login(client, _account(item))
    profile = await api.ok("GET", PROFILE)
    assert (profile["role"], profile["tenant_id"]) == ("operator", 0)
    assert set(profile["permissions"]) == {
        "machine:read", "machine:write", "allocation:write", "customer:read", "alert:read",
        "alert:write", "monitoring:read", "audit:read", "job:read"}


async def test_create_customer_user_joins_its_tenant(admin, accounts):
    tenant_id = await accounts.tenant("Acme Corp")
    item = await _create(admin, "bob", "customer", tenant_id=tenant_id)
    assert (item["role"], item["tenant_id"], item["tenant_name"]) == \
        ("customer", tenant_id, "Acme Corp")


async def test_create_staff_with_tenant_id_0_is_accepted(admin):
    item = await _create(admin, "root2", "admin", tenant_id=0)
    assert (item["role"], item["tenant_id"]) == ("admin", 0)


async def test_create_stores_an_argon2_hash_not_the_password(admin, db):
    item = await _create(admin, "olga", "operator")
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", item["id"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_create_with_a_taken_username_in_another_case_is_40902(admin, db):
    await _create(admin, "olga", "operator")
    status, body = await admin.post(USERS, {"username": "OLGA", "password": PASSWORD,
                                            "role": "admin"})
    assert (status, body["code"], body["data"]) == (409, 40902, {"field": "username"})
    assert await db.fetchval("SELECT count(*) FROM users") == 2


async def test_create_customer_of_an_unknown_tenant_is_40401(admin, db):
    status, body = await admin.post(USERS, {"username": "bob", "password": PASSWORD,
                                            "role": "customer", "tenant_id": 999})
    assert (status, body["code"]) == (404, 40401)
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_create_customer_of_a_disabled_tenant_is_40901(admin, accounts, db):
    tenant_id = await accounts.tenant("Gone Corp", status="disabled")
    status, body = await admin.post(USERS, {"username": "bob", "password": PASSWORD,
                                            "role": "customer", "tenant_id": tenant_id})
    assert (status, body["code"]) == (409, 40901)
    assert await db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize("spec", [
    {"role": "customer"},
    {"role": "customer", "tenant_id": 0},
    {"role": "operator", "tenant_id": 1},
    {"role": "admin", "tenant_id": 1},
])
async def test_create_with_a_tenant_that_does_not_fit_the_role_is_40001_on_tenant_id(
        admin, accounts, db, spec):
    await accounts.tenant("Acme Corp")  # tenant 1 exists: the role is what is wrong
    status, body = await admin.post(USERS, {"username": "bob", "password": PASSWORD, **spec})
    assert (status, body["code"]) == (400, 40001), body
    assert [e["field"] for e in body["data"]["errors"]] == ["tenant_id"]
    assert await db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize(("changes", "field"), [
    ({"username": "ab"}, "username"),
    ({"username": "a" * 65}, "username"),
    ({"username": "bad name"}, "username"),
    ({"username": 42}, "username"),
    ({"password": "short"}, "password"),
    ({"password": "p" * 129}, "password"),
    ({"role": "root"}, "role"),
    ({"role": None}, "role"),
    ({"tenant_id": "1"}, "tenant_id"),
    ({"tenant_id": -1}, "tenant_id"),
    ({"tenant_id": 2**63}, "tenant_id"),
    ({"tenant_id": 1.5}, "tenant_id"),
    ({"is_admin": True}, "is_admin"),
])
async def test_create_with_a_bad_field_is_40001_naming_it(admin, db, changes, field):
    spec = {"username": "olga", "password": PASSWORD, "role": "operator", **changes}
    status, body = await admin.post(USERS, spec)
    assert (status, body["code"]) == (400, 40001), body
    assert field in [e["field"] for e in body["data"]["errors"]]
    assert await db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize("missing", ["username", "password", "role"])
async def test_create_without_a_required_field_is_40001_naming_it(admin, missing):
    spec = {"username": "olga", "password": PASSWORD, "role": "operator"}
    del spec[missing]
    status, body = await admin.post(USERS, spec)
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == [missing]


async def test_create_accepts_the_boundary_lengths(admin):
    await admin.ok("POST", USERS, {"username": "abc", "password": "p" * 8, "role": "operator"})
    await admin.ok("POST", USERS, {"username": "a" * 64, "password": "p" * 128,
                                   "role": "operator"})


async def test_a_second_customer_user_sees_exactly_what_the_first_sees(client, admin):
    acme = await admin.ok("POST", "/api/v1/admin/customers",
                          {"name": "Acme Corp", "username": "alice", "password": PASSWORD})
    other = await admin.ok("POST", "/api/v1/admin/customers",
                           {"name": "Other Corp", "username": "eve", "password": PASSWORD})
    bob = await _create(admin, "bob", "customer", tenant_id=acme["id"])
    for machine_id, tenant_id in (("m1", acme["id"]), ("m2", acme["id"]),
                                  ("m3", other["id"])):
        await admin.machine(machine_id)
        await admin.allocate(machine_id, tenant_id)
    alice_api = await Api.login(client, Account(acme["user_id"], "alice", acme["id"],
                                                "customer"))
    bob_api = await Api.login(client, _account(bob))
    eve_api = await Api.login(client, Account(other["user_id"], "eve", other["id"],
                                              "customer"))
    seen = await bob_api.ok("GET", "/api/v1/customer/machines")
    assert sorted(m["id"] for m in seen) == ["m1", "m2"]
    assert seen == await alice_api.ok("GET", "/api/v1/customer/machines")
    assert await bob_api.ok("GET", "/api/v1/customer/machines/m1/connection") == \
        await alice_api.ok("GET", "/api/v1/customer/machines/m1/connection")
    status, body = await bob_api.get("/api/v1/customer/machines/m3/connection")
    assert (status, body["code"]) == (404, 40401)
    job = await bob_api.ok("POST", "/api/v1/customer/machines/m1/ssh-reset", {})
    assert (await alice_api.ok("GET", f"/api/v1/jobs/{job['job_id']}"))["id"] == job["job_id"]
    status, body = await eve_api.get(f"/api/v1/jobs/{job['job_id']}")
    assert (status, body["code"]) == (404, 40401)


# --- list ---------------------------------------------------------------------------------


async def test_list_is_newest_first_with_the_item_fields(admin, accounts):
    tenant_id = await accounts.tenant("Acme Corp")
    await _create(admin, "olga", "operator")
    await _create(admin, "bob", "customer", tenant_id=tenant_id)
    data = await admin.ok("GET", USERS)
    assert [u["username"] for u in data["list"]] == ["bob", "olga", "root-admin"]
    assert all(set(u) == ITEM_FIELDS for u in data["list"])
    assert (data["total"], data["page"], data["page_size"]) == (3, 1, 10)


async def test_list_shows_the_last_login(client, admin):
    data = await admin.ok("GET", USERS)
    assert data["list"][0]["last_login_at"] is not None  # root-admin logged in


@pytest.mark.parametrize(("query", "expected"), [
    ("role=operator", ["olga"]),
    ("role=customer", ["carl", "bob"]),
    ("tenant_id=0", ["olga", "root-admin"]),
    ("status=disabled", ["carl"]),
    ("keyword=OL", ["olga"]),
    ("keyword=%25", []),
    ("role=customer&status=active", ["bob"]),
])
async def test_list_filters(admin, accounts, query, expected):
    acme = await accounts.tenant("Acme Corp")
    await _create(admin, "olga", "operator")
    await _create(admin, "bob", "customer", tenant_id=acme)
    carl = await _create(admin, "carl", "customer", tenant_id=acme)
    await admin.ok("POST", f"{USERS}/{carl['id']}/disable")
    data = await admin.ok("GET", f"{USERS}?{query}")
    assert [u["username"] for u in data["list"]] == expected


async def test_list_filters_by_tenant(admin, accounts):
    acme = await accounts.tenant("Acme Corp")
    other = await accounts.tenant("Other Corp")
    await _create(admin, "bob", "customer", tenant_id=acme)
    await _create(admin, "eve", "customer", tenant_id=other)
    data = await admin.ok("GET", f"{USERS}?tenant_id={acme}")
    assert [u["username"] for u in data["list"]] == ["bob"]


async def test_list_pages(admin):
    for i in range(3):
        await _create(admin, f"op-{i}", "operator")
    data = await admin.ok("GET", f"{USERS}?page=2&page_size=2")
    assert [u["username"] for u in data["list"]] == ["op-0", "root-admin"]
    assert data["total"] == 4


@pytest.mark.parametrize(("query", "field"), [
    ("page=0", "page"), ("page_size=101", "page_size"), ("role=root", "role"),
    ("status=gone", "status"), ("tenant_id=-1", "tenant_id"),
    ("tenant_id=9223372036854775808", "tenant_id"), ("keyword=" + "k" * 65, "keyword"),
])
async def test_list_with_a_bad_query_is_40001_naming_it(admin, query, field):
    status, body = await admin.get(f"{USERS}?{query}")
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == [field]


# --- role ---------------------------------------------------------------------------------


async def test_patch_turns_an_operator_into_an_admin(admin):
    olga = await _create(admin, "olga", "operator")
    item = await admin.ok("PATCH", f"{USERS}/{olga['id']}", {"role": "admin"})
    assert item["role"] == "admin"


async def test_a_new_role_ends_the_users_logins(client, admin):
    olga = await _create(admin, "olga", "operator")
    tokens = await login(client, _account(olga))
    await admin.ok("PATCH", f"{USERS}/{olga['id']}", {"role": "admin"})
    assert await _profile_status(client, tokens["access_token"]) == (401, 40101)
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)
    relogged = await Api.login(client, _account(olga))
    assert (await relogged.ok("GET", PROFILE))["role"] == "admin"


async def test_patch_with_the_same_role_keeps_the_users_logins(client, admin):
    olga = await _create(admin, "olga", "operator")
    token = (await login(client, _account(olga)))["access_token"]
    await admin.ok("PATCH", f"{USERS}/{olga['id']}", {"role": "operator"})
    assert await _profile_status(client, token) == (200, 0)


async def test_patch_with_an_empty_body_changes_nothing(admin):
    olga = await _create(admin, "olga", "operator")
    item = await admin.ok("PATCH", f"{USERS}/{olga['id']}", {})
    assert item == olga


@pytest.mark.parametrize(("start", "target"), [
    ("customer", "admin"), ("customer", "operator"), ("operator", "customer"),
    ("admin", "customer"),
])
async def test_changing_between_customer_and_staff_is_40901(admin, accounts, db, start,
                                                             target):
    tenant_id = await accounts.tenant("Acme Corp") if start == "customer" else 0
    user = await accounts.user("someone", start, tenant_id=tenant_id)
    status, body = await admin.patch(f"{USERS}/{user.id}", {"role": target})
    assert (status, body["code"], body["data"]) == (409, 40901, {"role": start})
    assert await db.fetchval("SELECT role FROM users WHERE id = $1", user.id) == start


async def test_the_last_enabled_admin_cannot_lose_the_role(admin, db):
    status, body = await admin.patch(f"{USERS}/1", {"role": "operator"})
    assert (status, body["code"]) == (409, 40901)
    assert await db.fetchval("SELECT role FROM users WHERE id = 1") == "admin"


async def test_an_admin_can_be_demoted_while_another_admin_is_enabled(admin):
    second = await _create(admin, "root2", "admin")
    item = await admin.ok("PATCH", f"{USERS}/{second['id']}", {"role": "operator"})
    assert item["role"] == "operator"


async def test_a_disabled_admin_does_not_count_as_the_other_admin(admin):
    second = await _create(admin, "root2", "admin")
    await admin.ok("POST", f"{USERS}/{second['id']}/disable")
    status, body = await admin.patch(f"{USERS}/1", {"role": "operator"})
    assert (status, body["code"]) == (409, 40901)


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(client, accounts, db):
    first = await Api.login(client, await accounts.user("root-a"))
    second = await Api.login(client, await accounts.user("root-b"))
    for _ in range(5):
        results = await asyncio.gather(first.patch(f"{USERS}/2", {"role": "operator"}),
                                       second.patch(f"{USERS}/1", {"role": "operator"}))
        assert sorted(status for status, _ in results) in ([200, 401], [200, 409]), results
        assert await db.fetchval(
            "SELECT count(*) FROM users WHERE role = 'admin' AND status = 'active'") == 1
        await db.execute("UPDATE users SET role = 'admin'")
        first = await Api.login(client, Account(1, "root-a", 0, "admin"))
        second = await Api.login(client, Account(2, "root-b", 0, "admin"))


@pytest.mark.parametrize("body", [{"role": "root"}, {"role": 1}, {"role": "admin", "x": 1},
                                  {"username": "new"}])
async def test_patch_with_a_bad_body_is_40001(admin, body):
    olga = await _create(admin, "olga", "operator")
    status, answer = await admin.patch(f"{USERS}/{olga['id']}", body)
    assert (status, answer["code"]) == (400, 40001), answer


# --- disable / enable ---------------------------------------------------------------------


async def test_disable_returns_the_user_with_status_disabled(admin):
    olga = await _create(admin, "olga", "operator")
    item = await admin.ok("POST", f"{USERS}/{olga['id']}/disable")
    assert (item["id"], item["status"]) == (olga["id"], "disabled")


async def test_disable_makes_a_live_access_token_fail_with_40302_at_once(client, admin,
                                                                         accounts):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    assert await _profile_status(client, token) == (403, 40302)


async def test_disable_stops_the_token_on_another_hub_process(make_app, aiohttp_client,
                                                               accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    bob = await accounts.customer("bob")
    token = (await login(second, bob))["access_token"]
    assert await _profile_status(second, token) == (200, 0)
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    assert await _profile_status(second, token) == (403, 40302)


async def test_disable_stops_the_users_api_key_on_every_process(make_app, aiohttp_client,
                                                                accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    bob = await accounts.customer("bob")
    key = (await (await Api.login(first, bob)).ok("POST", KEYS, {"name": "ci"}))["key"]
    for client in (first, second):  # each process has read (and cached) the key
        assert await _profile_status(client, key) == (200, 0)
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    for client in (first, second):
        assert await _profile_status(client, key) == (403, 40302)


async def test_a_lost_admin_role_is_lost_by_its_api_keys_on_every_process(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    root2 = await _create(admin, "root2", "admin")
    key = (await (await Api.login(first, _account(root2))).ok("POST", KEYS,
                                                              {"name": "ci"}))["key"]
    for client in (first, second):
        assert (await call(client, "GET", USERS, token=key))[0] == 200
    await admin.ok("PATCH", f"{USERS}/{root2['id']}", {"role": "operator"})
    status, body = await call(first, "GET", USERS, token=key)
    assert (status, body["code"]) == (403, 40301)
    # The other process hears of the new role through the event bus (cached key rows).
    await eventually(lambda: _forbidden(second, key), REVOKE_S, "key refused on the other hub")


async def test_disable_refuses_the_refresh_token_and_the_password(client, admin, accounts):
    bob = await accounts.customer("bob")
    tokens = await login(client, bob)
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)
    status, body = await call(client, "POST", "/api/v1/auth/login",
                              json={"username": "bob", "password": PASSWORD})
    assert (status, body["code"]) == (403, 40302)


async def test_disable_leaves_other_users_of_the_tenant_logged_in(client, admin, accounts):
    bob = await accounts.customer("bob")
    carl = await accounts.user("carl", "customer", tenant_id=bob.tenant_id)
    carl_token = (await login(client, carl))["access_token"]
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    assert await _profile_status(client, carl_token) == (200, 0)


async def test_disable_closes_the_users_dashboard_on_another_process_within_a_second(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    bob = await accounts.customer("bob")
    carl = await accounts.user("carl", "customer", tenant_id=bob.tenant_id)
    bob_ws = await _dashboard(second, (await login(first, bob))["access_token"])
    carl_ws = await _dashboard(second, (await login(first, carl))["access_token"])
    started = time.monotonic()
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    await _closed_with_4001(bob_ws, REVOKE_S)
    assert time.monotonic() - started < REVOKE_S
    await _answers_ping(carl_ws)


async def test_disable_closes_the_users_dashboard_on_this_process(client, admin, accounts):
    olga = await _create(admin, "olga", "operator")
    ws = await _dashboard(client, (await login(client, _account(olga)))["access_token"])
    await admin.ok("POST", f"{USERS}/{olga['id']}/disable")
    await _closed_with_4001(ws, REVOKE_S)


async def test_nobody_disables_themselves(admin, db):
    status, body = await admin.post(f"{USERS}/1/disable")
    assert (status, body["code"]) == (409, 40901)
    assert await db.fetchval("SELECT status FROM users WHERE id = 1") == "active"


async def test_an_admin_cannot_disable_itself_even_with_another_admin_enabled(admin):
    await _create(admin, "root2", "admin")
    status, body = await admin.post(f"{USERS}/1/disable")
    assert (status, body["code"]) == (409, 40901)


async def test_the_last_enabled_admin_cannot_be_disabled(client, admin, db):
    # Only admins manage users, so over HTTP the self rule answers first; the service
    # holds the rule for any caller.
    with pytest.raises(Conflict, match="last enabled admin"):
        await client.app[USERS_SERVICE].set_enabled(0, 1, False)
    assert await db.fetchval("SELECT status FROM users WHERE id = 1") == "active"


async def test_another_admin_can_be_disabled_while_one_stays_enabled(admin):
    second = await _create(admin, "root2", "admin")
    item = await admin.ok("POST", f"{USERS}/{second['id']}/disable")
    assert item["status"] == "disabled"


async def test_two_admins_disabling_each_other_at_once_leave_one_enabled(client, accounts,
                                                                         db):
    admins = [await accounts.user("root-a"), await accounts.user("root-b")]
    for _ in range(5):
        first, second = [await Api.login(client, account) for account in admins]
        results = await asyncio.gather(first.post(f"{USERS}/2/disable"),
                                       second.post(f"{USERS}/1/disable"))
        assert sorted(status for status, _ in results) in ([200, 403], [200, 409]), results
        enabled = await db.fetch(
            "SELECT id FROM users WHERE role = 'admin' AND status = 'active'")
        assert len(enabled) == 1
        winner = first if enabled[0]["id"] == 1 else second
        await winner.ok("POST", f"{USERS}/{3 - enabled[0]['id']}/enable")


async def test_enable_lets_the_user_log_in_again(client, admin, accounts):
    bob = await accounts.customer("bob")
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    item = await admin.ok("POST", f"{USERS}/{bob.id}/enable")
    assert item["status"] == "active"
    token = (await login(client, bob))["access_token"]
    assert await _profile_status(client, token) == (200, 0)


async def test_a_token_from_before_a_disable_stays_dead_after_enable(client, admin, accounts):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    await admin.ok("POST", f"{USERS}/{bob.id}/disable")
    await admin.ok("POST", f"{USERS}/{bob.id}/enable")
    assert await _profile_status(client, token) == (401, 40101)


# --- reset password -----------------------------------------------------------------------


async def test_reset_password_sets_the_new_one_and_ends_every_login(client, admin, accounts):
    bob = await accounts.customer("bob")
    tokens = [await login(client, bob) for _ in range(2)]
    status, body = await admin.post(f"{USERS}/{bob.id}/reset-password",
                                    {"password": NEW_PASSWORD})
    assert (status, body["data"]) == (200, None)
    for pair in tokens:
        assert await _profile_status(client, pair["access_token"]) == (401, 40101)
    status, body = await call(client, "POST", "/api/v1/auth/login",
                              json={"username": "bob", "password": PASSWORD})
    assert (status, body["code"]) == (401, 40103)
    await login(client, Account(bob.id, "bob", bob.tenant_id, "customer", NEW_PASSWORD))


async def test_reset_password_closes_the_users_dashboard(client, admin, accounts):
    bob = await accounts.customer("bob")
    ws = await _dashboard(client, (await login(client, bob))["access_token"])
    await admin.ok("POST", f"{USERS}/{bob.id}/reset-password", {"password": NEW_PASSWORD})
    await _closed_with_4001(ws, REVOKE_S)


async def test_reset_password_is_audited_with_the_password_redacted(admin, accounts, db):
    bob = await accounts.customer("bob")
    await admin.ok("POST", f"{USERS}/{bob.id}/reset-password", {"password": NEW_PASSWORD})
    body = await db.fetchval("SELECT body FROM audit_logs WHERE path = $1",
                             f"{USERS}/{bob.id}/reset-password")
    assert body == {"password": "***"}


@pytest.mark.parametrize("body", [{"password": "short"}, {"password": "p" * 129},
                                  {"password": 12345678}, {}, {"password": NEW_PASSWORD,
                                                               "force": True}])
async def test_reset_password_with_a_bad_body_is_40001_and_changes_nothing(client, admin,
                                                                           accounts, body):
    bob = await accounts.customer("bob")
    token = (await login(client, bob))["access_token"]
    status, answer = await admin.post(f"{USERS}/{bob.id}/reset-password", body)
    assert (status, answer["code"]) == (400, 40001)
    assert await _profile_status(client, token) == (200, 0)


# --- unknown ids, access ------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["999", "0", "9223372036854775808", "abc", "-1", "01",
                                     "\N{FULLWIDTH DIGIT ONE}"])
@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("PATCH", "", {"role": "admin"}), ("POST", "/disable", None), ("POST", "/enable", None),
    ("POST", "/reset-password", {"password": NEW_PASSWORD}),
])
async def test_an_unknown_user_is_40401(admin, user_id, method, suffix, body):
    status, answer = await call(admin.client, method, f"{USERS}/{user_id}{suffix}",
                                token=admin.token, json=body)
    assert (status, answer["code"]) == (404, 40401)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", USERS, None),
    ("POST", USERS, {"username": "x-user", "password": PASSWORD, "role": "admin"}),
    ("PATCH", f"{USERS}/1", {"role": "operator"}),
    ("POST", f"{USERS}/1/disable", None),
    ("POST", f"{USERS}/1/enable", None),
    ("POST", f"{USERS}/1/reset-password", {"password": NEW_PASSWORD}),
])
async def test_users_admin_is_403_for_operators_and_customers_and_401_without_token(
        client, admin, accounts, db, method, path, body):
    operator = await Api.login(client, await accounts.user("olga", "operator"))
    customer = await Api.login(client, await accounts.customer("bob"))
    for api in (operator, customer):
        status, answer = await call(client, method, path, token=api.token, json=body)
        assert (status, answer["code"]) == (403, 40301)
    status, answer = await call(client, method, path, json=body)
    assert (status, answer["code"]) == (401, 40101)
    assert await db.fetchval("SELECT count(*) FROM users WHERE status = 'active'") == 3
    assert await db.fetchval("SELECT role FROM users WHERE id = 1") == "admin"


# --- helpers ------------------------------------------------------------------------------


async def _forbidden(client, token: str) -> bool:
    status, body = await call(client, "GET", USERS, token=token)
    return (status, body["code"]) == (403, 40301)


async def _dashboard(client, token: str):
    ws = await client.ws_connect(f"/ws/connect?token={token}")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.TEXT and '"welcome"' in msg.data, msg
    return ws


async def _closed_with_4001(ws, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == WSMsgType.TEXT:
            continue
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 4001), (msg.type, msg.data)
        return


async def _answers_ping(ws) -> None:
    await ws.send_str('{"type": "ping"}')
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT, msg
        if '"pong"' in msg.data:
            return
