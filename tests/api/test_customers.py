"""CONTRACT.md §3 customers rows: creating a tenant with its first user (one transaction),
listing with machine counts, filters and paging, and disabling/enabling a tenant, which
ends its users' logins at once (§2)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from tests.helpers import Account, Api, call, login

CUSTOMERS = "/api/v1/admin/customers"
MACHINES = "/api/v1/admin/machines"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
PROFILE = "/api/v1/auth/profile"
MY_MACHINES = "/api/v1/customer/machines"
CUSTOMER_PASSWORD = "s3cret-password"
ITEM_FIELDS = {"id", "name", "contact_name", "contact_email", "status", "machine_count",
               "created_at"}


def _spec(name: str = "Acme Corp", username: str = "alice", **fields) -> dict:
    return {"name": name, "username": username, "password": CUSTOMER_PASSWORD, **fields}


async def _create(admin: Api, name: str = "Acme Corp", username: str = "alice",
                  **fields) -> dict:
    return await admin.ok("POST", CUSTOMERS, _spec(name, username, **fields))


def _account(created: dict) -> Account:
    return Account(created["user_id"], created["username"], created["id"], "customer",
                   CUSTOMER_PASSWORD)


async def _tenant_count(db) -> int:
    return await db.fetchval("SELECT count(*) FROM tenants WHERE id <> 0")


async def _user_count(db) -> int:
    return await db.fetchval("SELECT count(*) FROM users")


# --- create -------------------------------------------------------------------------------


async def test_create_returns_the_tenant_and_its_first_user(admin, db):
    data = await _create(admin, contact_name="Ann Smith", contact_email="ann@acme.example")
    assert set(data) == {"id", "name", "status", "user_id", "username"}
    assert isinstance(data["id"], int) and data["id"] > 0
    assert isinstance(data["user_id"], int)
    assert (data["name"], data["status"], data["username"]) == ("Acme Corp", "active", "alice")
    row = await db.fetchrow("SELECT * FROM tenants WHERE id = $1", data["id"])
    assert (row["name"], row["contact_name"], row["contact_email"], row["status"]) == \
        ("Acme Corp", "Ann Smith", "ann@acme.example", "active")
    user = await db.fetchrow("SELECT * FROM users WHERE id = $1", data["user_id"])
    assert (user["username"], user["tenant_id"], user["role"], user["status"]) == \
        ("alice", data["id"], "customer", "active")


async def test_create_stores_a_password_hash_not_the_password(admin, db):
    data = await _create(admin)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", data["user_id"])
    assert CUSTOMER_PASSWORD not in stored


async def test_created_user_logs_in_as_a_customer_of_the_new_tenant(client, admin):
    data = await _create(admin)
    tokens = await login(client, _account(data))
    status, body = await call(client, "GET", PROFILE, token=tokens["access_token"])
    assert status == 200, body
    profile = body["data"]
    assert (profile["id"], profile["username"], profile["role"], profile["tenant_id"]) == \
        (data["user_id"], "alice", "customer", data["id"])
    assert "tenant:machine:read" in profile["permissions"]
    assert "customer:manage" not in profile["permissions"]


async def test_created_user_can_use_the_customer_api(client, admin):
    customer = await Api.login(client, _account(await _create(admin)))
    assert await customer.ok("GET", MY_MACHINES) == []


async def test_create_without_contact_fields_leaves_them_null(admin):
    data = await _create(admin)
    item = (await admin.ok("GET", CUSTOMERS))["list"][0]
    assert item["id"] == data["id"]
    assert (item["contact_name"], item["contact_email"]) == (None, None)


async def test_create_with_a_name_taken_in_another_case_is_40902_and_creates_no_user(admin, db):
    await _create(admin, "Acme Corp", "alice")
    users_before = await _user_count(db)
    status, body = await admin.post(CUSTOMERS, _spec("ACME corp", "bob"))
    assert (status, body["code"]) == (409, 40902)
    assert await _user_count(db) == users_before
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'bob'") == 0
    assert await _tenant_count(db) == 1


async def test_create_with_a_taken_username_is_40902_and_creates_no_tenant(admin, db):
    await _create(admin, "Acme Corp", "alice")
    status, body = await admin.post(CUSTOMERS, _spec("Beta Labs", "ALICE"))
    assert (status, body["code"]) == (409, 40902)
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE name = 'Beta Labs'") == 0
    assert await _tenant_count(db) == 1


async def test_create_with_a_staff_username_is_40902_and_creates_no_tenant(admin, db):
    # the admin fixture's own username
    status, body = await admin.post(CUSTOMERS, _spec("Beta Labs", "root-admin"))
    assert (status, body["code"]) == (409, 40902)
    assert await _tenant_count(db) == 0


async def test_the_name_of_a_failed_create_is_free_again(admin):
    await _create(admin, "Acme Corp", "alice")
    status, _ = await admin.post(CUSTOMERS, _spec("Beta Labs", "alice"))
    assert status == 409
    data = await _create(admin, "Beta Labs", "bob")
    assert data["name"] == "Beta Labs"


async def test_concurrent_creates_with_one_username_make_exactly_one_tenant(admin, db):
    results = await asyncio.gather(*[admin.post(CUSTOMERS, _spec(f"Tenant {i}", "alice"))
                                     for i in range(8)])
    outcomes = sorted((status, body["code"]) for status, body in results)
    assert outcomes == [(200, 0)] + [(409, 40902)] * 7
    assert await _tenant_count(db) == 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'alice'") == 1


async def test_concurrent_creates_with_one_name_make_exactly_one_user(admin, db):
    results = await asyncio.gather(*[admin.post(CUSTOMERS, _spec("Acme", f"user{i}"))
                                     for i in range(8)])
    outcomes = sorted((status, body["code"]) for status, body in results)
    assert outcomes == [(200, 0)] + [(409, 40902)] * 7
    assert await _tenant_count(db) == 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE role = 'customer'") == 1


@pytest.mark.parametrize(("changes", "field"), [
    ({"username": "a b"}, "username"),
    ({"username": "ab"}, "username"),
    ({"username": "x" * 65}, "username"),
    ({"username": "alice@acme"}, "username"),
    ({"username": 12345}, "username"),
    ({"password": "seven77"}, "password"),
    ({"password": "p" * 129}, "password"),
    ({"contact_email": "not-an-email"}, "contact_email"),
    ({"contact_email": "a@b"}, "contact_email"),
    ({"contact_email": "two words@acme.example"}, "contact_email"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "n" * 129}, "name"),
    ({"contact_name": "c" * 129}, "contact_name"),
])
async def test_create_with_an_invalid_field_is_40001_naming_it(admin, db, changes, field):
    status, body = await admin.post(CUSTOMERS, {**_spec(), **changes})
    assert (status, body["code"]) == (400, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == {field}
    assert (await _tenant_count(db), await _user_count(db)) == (0, 1)  # only the admin


@pytest.mark.parametrize("missing", ["name", "username", "password"])
async def test_create_without_a_required_field_is_40001_naming_it(admin, db, missing):
    spec = _spec()
    del spec[missing]
    status, body = await admin.post(CUSTOMERS, spec)
    assert (status, body["code"]) == (400, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == {missing}
    assert await _tenant_count(db) == 0


async def test_create_with_several_bad_fields_names_each_of_them(admin):
    status, body = await admin.post(CUSTOMERS, {"username": "a b", "password": "short",
                                                "contact_email": "nope"})
    assert (status, body["code"]) == (400, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == \
        {"name", "username", "password", "contact_email"}
    assert all(e["message"] for e in body["data"]["errors"])


async def test_create_accepts_the_boundary_lengths(admin):
    data = await _create(admin, "n" * 128, "abc", password="p" * 8)
    assert data["name"] == "n" * 128
    data = await _create(admin, "N2", "u" * 64, password="p" * 128)
    assert data["username"] == "u" * 64


async def test_create_with_malformed_json_is_40002(admin, db):
    status, body = await call(admin.client, "POST", CUSTOMERS, token=admin.token,
                              data=b"{not json", headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (400, 40002)
    assert await _tenant_count(db) == 0


# --- list ---------------------------------------------------------------------------------


async def test_list_is_newest_first_with_the_item_fields(admin):
    created = [await _create(admin, f"Tenant {i}", f"user{i}",
                             contact_name=f"Contact {i}", contact_email=f"c{i}@t.example")
               for i in range(3)]
    data = await admin.ok("GET", CUSTOMERS)
    assert [item["id"] for item in data["list"]] == [c["id"] for c in reversed(created)]
    item = data["list"][-1]
    assert set(item) >= ITEM_FIELDS
    assert (item["name"], item["contact_name"], item["contact_email"], item["status"],
            item["machine_count"]) == ("Tenant 0", "Contact 0", "c0@t.example", "active", 0)
    assert item["created_at"].endswith("Z")


async def test_list_never_shows_the_platform_tenant(admin):
    data = await admin.ok("GET", CUSTOMERS)
    assert (data["list"], data["total"]) == ([], 0)
    data = await admin.ok("GET", f"{CUSTOMERS}?keyword=platform")
    assert (data["list"], data["total"]) == ([], 0)
    await _create(admin)
    data = await admin.ok("GET", CUSTOMERS)
    assert 0 not in [item["id"] for item in data["list"]]
    assert data["total"] == 1


async def test_machine_count_is_the_machines_each_tenant_holds_now(admin, accounts):
    acme, beta, idle_tenant = (await accounts.tenant("Acme"), await accounts.tenant("Beta"),
                               await accounts.tenant("Gamma"))
    for machine_id in ("m1", "m2", "m3", "m4"):
        await admin.machine(machine_id)
    await admin.allocate("m1", acme)
    await admin.allocate("m2", acme)
    await admin.allocate("m3", beta)
    data = await admin.ok("GET", CUSTOMERS)
    counts = {item["id"]: item["machine_count"] for item in data["list"]}
    assert counts == {acme: 2, beta: 1, idle_tenant: 0}


async def test_machine_count_keeps_a_machine_being_reclaimed(admin, accounts):
    acme = await accounts.tenant("Acme")
    await admin.machine("m1")
    await admin.allocate("m1", acme)
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"})
    item = (await admin.ok("GET", CUSTOMERS))["list"][0]
    assert item["machine_count"] == 1


async def test_machine_count_drops_a_reclaimed_machine(admin, accounts):
    acme = await accounts.tenant("Acme")
    await admin.machine("m1")
    await admin.machine("m2")
    await admin.allocate("m1", acme)
    await admin.allocate("m2", acme)
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x", "force": True})
    item = (await admin.ok("GET", CUSTOMERS))["list"][0]
    assert item["machine_count"] == 1


@pytest.mark.parametrize(("keyword", "expected"), [
    ("acme", ["Acme Corp"]),
    ("CORP", ["Acme Corp", "Zeta Corp"]),
    ("ann", ["Acme Corp"]),
    ("bob@beta", ["Beta Labs"]),
    ("example", ["Acme Corp", "Beta Labs"]),
    ("nothing-like-it", []),
    ("%", []),
    ("_", []),
])
async def test_keyword_matches_part_of_name_or_contact(admin, keyword, expected):
    await _create(admin, "Acme Corp", "alice", contact_name="Ann Smith",
                  contact_email="ann@acme.example")
    await _create(admin, "Beta Labs", "bob", contact_name="Bob Jones",
                  contact_email="bob@beta.example")
    await _create(admin, "Zeta Corp", "zed")
    data = await admin.ok("GET", f"{CUSTOMERS}?keyword={keyword.replace('%', '%25')}")
    assert sorted(item["name"] for item in data["list"]) == expected
    assert data["total"] == len(expected)


async def test_status_filter_lists_only_customers_in_that_state(admin):
    acme = await _create(admin, "Acme", "alice")
    beta = await _create(admin, "Beta", "bob")
    await admin.ok("POST", f"{CUSTOMERS}/{beta['id']}/disable")
    disabled = await admin.ok("GET", f"{CUSTOMERS}?status=disabled")
    assert ([i["id"] for i in disabled["list"]], disabled["total"]) == ([beta["id"]], 1)
    assert disabled["list"][0]["status"] == "disabled"
    active = await admin.ok("GET", f"{CUSTOMERS}?status=active")
    assert ([i["id"] for i in active["list"]], active["total"]) == ([acme["id"]], 1)


async def test_keyword_and_status_filters_combine(admin):
    await _create(admin, "Acme One", "alice")
    second = await _create(admin, "Acme Two", "bob")
    await _create(admin, "Beta", "carol")
    await admin.ok("POST", f"{CUSTOMERS}/{second['id']}/disable")
    data = await admin.ok("GET", f"{CUSTOMERS}?keyword=acme&status=disabled")
    assert [i["name"] for i in data["list"]] == ["Acme Two"]


async def test_paging_reports_total_page_and_page_size(admin, accounts):
    ids = [await accounts.tenant(f"Tenant {i:02d}") for i in range(12)]
    newest_first = list(reversed(ids))
    first = await admin.ok("GET", CUSTOMERS)
    assert (first["total"], first["page"], first["page_size"]) == (12, 1, 10)
    assert [i["id"] for i in first["list"]] == newest_first[:10]
    pages = [await admin.ok("GET", f"{CUSTOMERS}?page={p}&page_size=5") for p in (1, 2, 3)]
    assert [len(p["list"]) for p in pages] == [5, 5, 2]
    assert all((p["total"], p["page_size"]) == (12, 5) for p in pages)
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert [i["id"] for p in pages for i in p["list"]] == newest_first
    beyond = await admin.ok("GET", f"{CUSTOMERS}?page=4&page_size=5")
    assert (beyond["list"], beyond["total"], beyond["page"]) == ([], 12, 4)


@pytest.mark.parametrize(("query", "field"), [
    ("page=0", "page"),
    ("page=x", "page"),
    ("page_size=0", "page_size"),
    ("page_size=101", "page_size"),
    ("status=deleted", "status"),
    ("keyword=" + "k" * 129, "keyword"),
])
async def test_list_with_an_out_of_range_query_is_40001(admin, query, field):
    status, body = await admin.get(f"{CUSTOMERS}?{query}")
    assert (status, body["code"]) == (400, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == {field}


# --- disable / enable ---------------------------------------------------------------------


async def test_disable_returns_the_customer_with_status_disabled(admin, db):
    data = await _create(admin, contact_name="Ann")
    item = await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    assert set(item) >= ITEM_FIELDS
    assert (item["id"], item["status"], item["contact_name"]) == (data["id"], "disabled", "Ann")
    assert await db.fetchval("SELECT status FROM tenants WHERE id = $1", data["id"]) == "disabled"


async def test_enable_returns_the_customer_with_status_active(admin):
    data = await _create(admin)
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    item = await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/enable")
    assert (item["id"], item["status"]) == (data["id"], "active")


async def test_disable_makes_an_existing_access_token_fail_with_40302_at_once(client, admin):
    data = await _create(admin)
    tokens = await login(client, _account(data))
    status, _ = await call(client, "GET", MY_MACHINES, token=tokens["access_token"])
    assert status == 200
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    for path in (MY_MACHINES, PROFILE):
        status, body = await call(client, "GET", path, token=tokens["access_token"])
        assert (status, body["code"]) == (403, 40302)


async def test_disable_locks_out_every_user_of_the_tenant(client, admin, accounts):
    data = await _create(admin)
    second = await accounts.user("alice-2", "customer", tenant_id=data["id"])
    tokens = [await login(client, _account(data)), await login(client, second)]
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    for pair in tokens:
        status, body = await call(client, "GET", MY_MACHINES, token=pair["access_token"])
        assert (status, body["code"]) == (403, 40302)
    status, body = await call(client, "POST", LOGIN,
                              json={"username": second.username, "password": second.password})
    assert (status, body["code"]) == (403, 40302)


async def test_disable_refuses_the_customers_refresh_token(client, admin):
    data = await _create(admin)
    tokens = await login(client, _account(data))
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)


async def test_disabled_customer_login_with_the_right_password_is_40302(client, admin):
    data = await _create(admin)
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": "alice", "password": CUSTOMER_PASSWORD})
    assert (status, body["code"]) == (403, 40302)


async def test_disabled_customer_login_with_a_wrong_password_is_40103(client, admin):
    data = await _create(admin)
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    status, body = await call(client, "POST", LOGIN,
                              json={"username": "alice", "password": "wrong-password"})
    assert (status, body["code"]) == (401, 40103)


async def test_disable_leaves_other_tenants_logged_in(client, admin):
    acme = await _create(admin, "Acme", "alice")
    beta = await _create(admin, "Beta", "bob")
    beta_tokens = await login(client, _account(beta))
    await admin.ok("POST", f"{CUSTOMERS}/{acme['id']}/disable")
    status, _ = await call(client, "GET", MY_MACHINES, token=beta_tokens["access_token"])
    assert status == 200
    status, _ = await call(client, "POST", REFRESH,
                           json={"refresh_token": beta_tokens["refresh_token"]})
    assert status == 200


async def test_enable_lets_the_customer_log_in_again_with_a_working_token(client, admin):
    data = await _create(admin)
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/enable")
    tokens = await login(client, _account(data))
    status, body = await call(client, "GET", MY_MACHINES, token=tokens["access_token"])
    assert (status, body["data"]) == (200, [])
    status, _ = await call(client, "POST", REFRESH,
                           json={"refresh_token": tokens["refresh_token"]})
    assert status == 200


async def test_a_token_from_before_a_disable_stays_dead_after_enable(client, admin):
    data = await _create(admin)
    tokens = await login(client, _account(data))
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/enable")
    status, body = await call(client, "GET", MY_MACHINES, token=tokens["access_token"])
    assert (status, body["code"]) == (401, 40101)


async def test_a_refresh_token_from_before_a_disable_stays_dead_after_enable(client, admin):
    data = await _create(admin)
    tokens = await login(client, _account(data))
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/disable")
    await admin.ok("POST", f"{CUSTOMERS}/{data['id']}/enable")
    status, body = await call(client, "POST", REFRESH,
                              json={"refresh_token": tokens["refresh_token"]})
    assert (status, body["code"]) == (401, 40104)


@pytest.mark.parametrize("action", ["disable", "enable"])
@pytest.mark.parametrize("tenant_id", ["999999", "abc", "0", "-1", "1e3", "9" * 25])
async def test_disable_or_enable_of_an_unknown_customer_is_40401(admin, db, action, tenant_id):
    status, body = await admin.post(f"{CUSTOMERS}/{tenant_id}/{action}")
    assert (status, body["code"]) == (404, 40401)
    assert await db.fetchval("SELECT status FROM tenants WHERE id = 0") == "active"


@pytest.mark.parametrize("digits", ["superscript", "fullwidth"])
async def test_disable_with_non_ascii_digits_in_the_id_is_40401(admin, accounts, db, digits):
    tenant_id = await accounts.tenant("Acme")
    base = 0xFF10 if digits == "fullwidth" else None
    spelling = ("".join(chr(base + int(d)) for d in str(tenant_id)) if base
                else "\u00b2")  # "2" as a superscript
    status, body = await admin.post(f"{CUSTOMERS}/{quote(spelling)}/disable")
    assert (status, body["code"]) == (404, 40401)
    assert await db.fetchval("SELECT status FROM tenants WHERE id = $1", tenant_id) == "active"


# --- permissions --------------------------------------------------------------------------


async def test_operator_can_list_customers(client, admin, accounts):
    await _create(admin)
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    data = await operator.ok("GET", CUSTOMERS)
    assert data["total"] == 1


async def test_operator_cannot_create_customers(client, accounts, db):
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    status, body = await operator.post(CUSTOMERS, _spec())
    assert (status, body["code"]) == (403, 40301)
    assert await _tenant_count(db) == 0


@pytest.mark.parametrize("action", ["disable", "enable"])
async def test_operator_cannot_disable_or_enable_customers(client, admin, accounts, db, action):
    data = await _create(admin)
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    status, body = await operator.post(f"{CUSTOMERS}/{data['id']}/{action}")
    assert (status, body["code"]) == (403, 40301)
    assert await db.fetchval("SELECT status FROM tenants WHERE id = $1", data["id"]) == "active"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", CUSTOMERS),
    ("POST", CUSTOMERS),
    ("POST", CUSTOMERS + "/{id}/disable"),
    ("POST", CUSTOMERS + "/{id}/enable"),
])
async def test_customer_token_is_refused_on_customer_management(client, admin, db, method,
                                                                path):
    data = await _create(admin)
    customer = await Api.login(client, _account(data))
    status, body = await call(client, method, path.format(id=data["id"]), token=customer.token,
                              json=_spec("Other", "other") if method == "POST" else None)
    assert (status, body["code"]) == (403, 40301)
    assert await _tenant_count(db) == 1
    assert await db.fetchval("SELECT status FROM tenants WHERE id = $1", data["id"]) == "active"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", CUSTOMERS),
    ("POST", CUSTOMERS),
    ("POST", CUSTOMERS + "/1/disable"),
])
async def test_customer_management_without_a_token_is_40101(client, method, path):
    status, body = await call(client, method, path, json={} if method == "POST" else None)
    assert (status, body["code"]) == (401, 40101)


# --- detail and changes -------------------------------------------------------------------

DEFAULT_QUOTA = 10995116277760
DETAIL_FIELDS = ITEM_FIELDS | {"users", "storage_quota_bytes", "storage_used_bytes"}


async def _dataset(db, tenant_id: int, size: int, status: str) -> None:
    await db.execute(
        "INSERT INTO datasets (tenant_id, filename, size, status, object_key, chunk_size, "
        "part_count) VALUES ($1, 'd.bin', $2, $3, gen_random_uuid()::text, $2, 1)",
        tenant_id, size, status)


async def test_detail_is_the_item_with_its_users_and_the_default_quota(admin, accounts):
    data = await _create(admin, contact_email="ann@acme.example")
    await admin.ok("POST", "/api/v1/admin/users", {"username": "bob", "password": "p" * 8,
                                                   "role": "customer",
                                                   "tenant_id": data["id"]})
    await _create(admin, "Other Corp", "eve")
    detail = await admin.ok("GET", f"{CUSTOMERS}/{data['id']}")
    assert set(detail) == DETAIL_FIELDS
    assert (detail["name"], detail["contact_email"], detail["status"]) == \
        ("Acme Corp", "ann@acme.example", "active")
    assert [(u["username"], u["role"], u["tenant_id"], u["tenant_name"])
            for u in detail["users"]] == [("alice", "customer", data["id"], "Acme Corp"),
                                          ("bob", "customer", data["id"], "Acme Corp")]
    assert (detail["storage_quota_bytes"], detail["storage_used_bytes"]) == (DEFAULT_QUOTA, 0)


async def test_detail_quota_follows_the_setting_until_one_is_set(make_app, aiohttp_client,
                                                                 accounts):
    client = await aiohttp_client(make_app(tenant_quota_bytes=1000))
    admin = await Api.login(client, await accounts.user("root-admin"))
    tenant_id = await accounts.tenant()
    assert (await admin.ok("GET", f"{CUSTOMERS}/{tenant_id}"))["storage_quota_bytes"] == 1000
    await admin.ok("PATCH", f"{CUSTOMERS}/{tenant_id}", {"storage_quota_bytes": 5})
    assert (await admin.ok("GET", f"{CUSTOMERS}/{tenant_id}"))["storage_quota_bytes"] == 5


async def test_storage_used_sums_the_datasets_not_failed(admin, accounts, db):
    tenant_id = await accounts.tenant()
    other = await accounts.tenant("Other Corp")
    for size, status in [(100, "ready"), (20, "processing"), (3, "uploading"), (4000, "error")]:
        await _dataset(db, tenant_id, size, status)
    await _dataset(db, other, 50000, "ready")
    detail = await admin.ok("GET", f"{CUSTOMERS}/{tenant_id}")
    assert detail["storage_used_bytes"] == 123


@pytest.mark.parametrize("tenant_id", ["0", "999", "9223372036854775808", "x", "-1", "01"])
async def test_detail_or_change_of_an_unknown_customer_is_40401(admin, tenant_id):
    for method, body in (("GET", None), ("PATCH", {"name": "New"})):
        status, answer = await call(admin.client, method, f"{CUSTOMERS}/{tenant_id}",
                                    token=admin.token, json=body)
        assert (status, answer["code"]) == (404, 40401)


async def test_change_sets_only_the_fields_sent(admin, db):
    data = await _create(admin, contact_name="Ann", contact_email="ann@acme.example")
    detail = await admin.ok("PATCH", f"{CUSTOMERS}/{data['id']}",
                            {"name": " Acme Ltd ", "storage_quota_bytes": 0})
    assert set(detail) == DETAIL_FIELDS
    assert (detail["name"], detail["contact_name"], detail["contact_email"],
            detail["storage_quota_bytes"]) == ("Acme Ltd", "Ann", "ann@acme.example", 0)
    assert [u["username"] for u in detail["users"]] == ["alice"]


async def test_change_with_null_clears_contacts_and_restores_the_default_quota(admin, db):
    data = await _create(admin, contact_name="Ann", contact_email="ann@acme.example")
    await admin.ok("PATCH", f"{CUSTOMERS}/{data['id']}", {"storage_quota_bytes": 7})
    detail = await admin.ok("PATCH", f"{CUSTOMERS}/{data['id']}",
                            {"contact_name": None, "contact_email": None,
                             "storage_quota_bytes": None})
    assert (detail["contact_name"], detail["contact_email"], detail["storage_quota_bytes"]) \
        == (None, None, DEFAULT_QUOTA)
    assert await db.fetchval("SELECT storage_quota_bytes FROM tenants WHERE id = $1",
                             data["id"]) is None


async def test_change_with_an_empty_body_changes_nothing(admin):
    data = await _create(admin)
    before = await admin.ok("GET", f"{CUSTOMERS}/{data['id']}")
    assert await admin.ok("PATCH", f"{CUSTOMERS}/{data['id']}", {}) == before


async def test_change_to_a_taken_name_is_40902_and_changes_nothing(admin, db):
    data = await _create(admin)
    await _create(admin, "Other Corp", "eve")
    status, body = await admin.patch(f"{CUSTOMERS}/{data['id']}", {"name": "OTHER corp"})
    assert (status, body["code"], body["data"]) == (409, 40902, {"field": "name"})
    assert await db.fetchval("SELECT name FROM tenants WHERE id = $1", data["id"]) == \
        "Acme Corp"


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": None}, "name"),
    ({"name": ""}, "name"),
    ({"name": "n" * 129}, "name"),
    ({"name": 5}, "name"),
    ({"contact_email": "not-an-email"}, "contact_email"),
    ({"contact_name": "c" * 129}, "contact_name"),
    ({"storage_quota_bytes": -1}, "storage_quota_bytes"),
    ({"storage_quota_bytes": 2**63}, "storage_quota_bytes"),
    ({"storage_quota_bytes": "10"}, "storage_quota_bytes"),
    ({"storage_quota_bytes": 1.5}, "storage_quota_bytes"),
    ({"status": "disabled"}, "status"),
    ({"username": "bob"}, "username"),
])
async def test_change_with_a_bad_field_is_40001_naming_it_and_changes_nothing(admin, db,
                                                                              changes, field):
    data = await _create(admin)
    status, body = await admin.patch(f"{CUSTOMERS}/{data['id']}", changes)
    assert (status, body["code"]) == (400, 40001), body
    assert [e["field"] for e in body["data"]["errors"]] == [field]
    row = await db.fetchrow("SELECT name, status, storage_quota_bytes FROM tenants "
                            "WHERE id = $1", data["id"])
    assert tuple(row) == ("Acme Corp", "active", None)


async def test_change_is_403_for_operators_and_customers(client, admin, accounts, db):
    data = await _create(admin)
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    customer = await Api.login(client, _account(data))
    for api in (operator, customer):
        status, body = await api.patch(f"{CUSTOMERS}/{data['id']}", {"name": "Mine"})
        assert (status, body["code"]) == (403, 40301)
    status, body = await customer.get(f"{CUSTOMERS}/{data['id']}")
    assert (status, body["code"]) == (403, 40301)
    assert await db.fetchval("SELECT name FROM tenants WHERE id = $1", data["id"]) == \
        "Acme Corp"
