"""The audit trail: every write recorded with the final status and the caller, secrets
redacted at any depth, committed before the response (queued and retried only while
PostgreSQL cannot take it, and then writes are refused once the queue is full)."""

from __future__ import annotations

from datetime import UTC, datetime

from api.keys import AUDIT
from tests.helpers import call, eventually, login

AUDIT_LOGS = "/api/v1/admin/audit-logs"


async def _rows(db):
    return [dict(r) for r in await db.fetch("SELECT * FROM audit_logs ORDER BY id")]


async def test_write_is_recorded_with_user_status_and_trace(client, accounts, db):
    admin = await accounts.user("root-admin")
    tokens = await login(client, admin)
    resp = await client.post("/api/v1/auth/logout", json={"refresh_token": "r-123"},
                             headers={"Authorization": f"Bearer {tokens['access_token']}"})
    await client.app[AUDIT].flush()
    row = (await _rows(db))[-1]
    assert (row["method"], row["path"], row["status"]) == ("POST", "/api/v1/auth/logout", 200)
    assert (row["user_id"], row["username"], row["tenant_id"]) == (admin.id, "root-admin", 0)
    assert row["trace_id"] == resp.headers["X-Trace-Id"]
    assert row["body"] == {"refresh_token": "***"}
    assert row["duration_ms"] >= 0 and str(row["ip"]) == "127.0.0.1"


async def test_login_is_recorded_with_the_username_and_never_the_password(client, accounts, db):
    admin = await accounts.user("root-admin")
    await login(client, admin)
    await call(client, "POST", "/api/v1/auth/login",
               json={"username": "root-admin", "password": "wrong-password-123"})
    await client.app[AUDIT].flush()
    rows = await _rows(db)
    assert [(r["username"], r["status"]) for r in rows] == [("root-admin", 200),
                                                            ("root-admin", 401)]
    for row in rows:
        assert row["body"]["password"] == "***"
        assert admin.password not in str(row) and "wrong-password-123" not in str(row)


async def test_failed_requests_are_recorded_with_their_error_status(client, db):
    await call(client, "POST", "/api/v1/auth/logout", json={})  # no token: 401
    await call(client, "POST", "/api/v1/no/such/route", json={"a": 1})  # 404
    await client.post("/api/v1/auth/login", data=b"{bad", headers={"Content-Type":
                                                                    "application/json"})
    await client.app[AUDIT].flush()
    rows = await _rows(db)
    assert [r["status"] for r in rows] == [401, 404, 400]
    assert rows[1]["body"] == {"a": 1}
    assert rows[2]["body"] is None  # unparsable bodies are not stored


async def test_secrets_are_redacted_at_any_depth(client, db):
    body = {
        "username": "x",
        "password": "p",
        "nested": {"token": "t", "list": [{"agent_token": "a", "keep": 1},
                                          {"deeper": {"secret": "s", "Client_Secret": "c"}}]},
        "refresh_token": "r",
        "new_password": "n",
    }
    await call(client, "POST", "/api/v1/no/such/route", json=body)
    await client.app[AUDIT].flush()
    stored = (await _rows(db))[-1]["body"]
    assert stored == {
        "username": "x",
        "password": "***",
        "nested": {"token": "***", "list": [{"agent_token": "***", "keep": 1},
                                            {"deeper": {"secret": "***",
                                                        "Client_Secret": "***"}}]},
        "refresh_token": "***",
        "new_password": "***",
    }


async def test_reads_are_not_recorded(client, db):
    await client.get("/healthz")
    await client.get("/api/v1/nothing")
    await client.app[AUDIT].flush()
    assert await _rows(db) == []


async def test_a_record_is_committed_before_its_response_is_sent(make_app, aiohttp_client, db):
    client = await aiohttp_client(make_app(audit_flush_interval_s=60))
    status, _ = await call(client, "POST", "/api/v1/auth/login",
                           json={"username": "nobody", "password": "whatever1"})
    assert status == 401
    # no flush, no background writer: the record was there before the answer
    assert len(await _rows(db)) == 1
    assert client.app[AUDIT].pending == 0


async def test_records_postgres_could_not_take_are_written_on_clean_shutdown(
        make_app, aiohttp_client, pg_proxy, db):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, audit_flush_interval_s=60))
    await proxy.cut()
    for i in range(5):
        await call(client, "POST", f"/api/v1/no/such/route/{i}", json={})
    assert client.app[AUDIT].pending == 5
    await proxy.restore()
    await client.close()  # runs the app's cleanup contexts
    assert len(await _rows(db)) == 5


async def test_records_survive_a_database_outage_and_are_written_after(make_app, aiohttp_client,
                                                                      pg_proxy, db):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, audit_flush_interval_s=0.05))
    await proxy.cut()
    await call(client, "POST", "/api/v1/no/such/route", json={"during": "outage"})
    assert client.app[AUDIT].pending == 1
    await proxy.restore()
    await eventually(lambda: client.app[AUDIT].pending == 0, what="queue written")
    assert [r["body"] for r in await _rows(db)] == [{"during": "outage"}]


async def test_writes_are_refused_before_they_run_while_the_trail_cannot_keep_records(
        make_app, aiohttp_client, pg_proxy, db, scrape):
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, audit_queue_max=3,
                                           audit_flush_interval_s=60))
    await proxy.cut()
    answers = []
    for _ in range(5):
        resp = await client.post("/api/v1/nothing", json={})
        answers.append((resp.status, resp.headers.get("Retry-After"),
                        (await resp.json())["code"]))
    assert answers == [(404, None, 40401)] * 3 + [(503, "5", 50301)] * 2
    trail = client.app[AUDIT]
    assert (trail.pending, trail.dropped) == (3, 0)
    metrics = await scrape(client)
    assert "remotegpu_audit_dropped_total 0.0" in metrics
    assert "remotegpu_audit_pending 3.0" in metrics
    await proxy.restore()
    await trail.flush()
    assert len(await _rows(db)) == 3


async def test_forwarded_for_is_ignored_from_untrusted_peers(client, db):
    await call(client, "POST", "/api/v1/nothing", json={},
               headers={"X-Forwarded-For": "203.0.113.9"})
    await client.app[AUDIT].flush()
    assert str((await _rows(db))[-1]["ip"]) == "127.0.0.1"


async def test_forwarded_for_is_believed_from_trusted_proxies(make_app, aiohttp_client, db):
    import ipaddress

    client = await aiohttp_client(make_app(
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
    ))
    await call(client, "POST", "/api/v1/nothing", json={},
               headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"})
    await client.app[AUDIT].flush()
    # the rightmost hop that is not a trusted proxy is the client
    assert str((await _rows(db))[-1]["ip"]) == "203.0.113.9"


async def test_audit_list_filters_and_pages_newest_first(client, accounts, db):
    admin = await accounts.user("root-admin")
    tokens = await login(client, admin)
    for i in range(3):
        await call(client, "POST", f"/api/v1/things/{i}", json={}, token=tokens["access_token"])
    await call(client, "DELETE", "/api/v1/things/9", token=tokens["access_token"])
    await client.app[AUDIT].flush()

    status, body = await call(client, "GET", AUDIT_LOGS + "?page_size=2",
                              token=tokens["access_token"])
    assert status == 200
    page = body["data"]
    assert (page["total"], page["page"], page["page_size"]) == (5, 1, 2)
    assert [item["path"] for item in page["list"]] == ["/api/v1/things/9", "/api/v1/things/2"]
    item = page["list"][0]
    assert set(item) == {"id", "user_id", "username", "tenant_id", "ip", "method", "path",
                         "body", "status", "trace_id", "duration_ms", "created_at",
                         "api_key_id"}
    assert item["created_at"].endswith("Z")

    _, body = await call(client, "GET", AUDIT_LOGS + "?method=DELETE",
                         token=tokens["access_token"])
    assert [i["path"] for i in body["data"]["list"]] == ["/api/v1/things/9"]

    _, body = await call(client, "GET", AUDIT_LOGS + "?path=/api/v1/things/",
                         token=tokens["access_token"])
    assert body["data"]["total"] == 4

    _, body = await call(client, "GET", AUDIT_LOGS + "?path=/api/v1/auth",
                         token=tokens["access_token"])
    assert [i["path"] for i in body["data"]["list"]] == ["/api/v1/auth/login"]


async def test_audit_list_filters_by_user(client, accounts):
    alice, bob = await accounts.user("alice-admin"), await accounts.user("bob-admin")
    bob_tokens = await login(client, bob)
    await call(client, "POST", "/api/v1/auth/logout", token=(await login(client, alice))[
        "access_token"])
    await call(client, "POST", "/api/v1/auth/logout", token=(await login(client, alice))[
        "access_token"])
    await client.app[AUDIT].flush()
    _, body = await call(client, "GET", AUDIT_LOGS + f"?user_id={alice.id}",
                         token=bob_tokens["access_token"])
    assert [(i["user_id"], i["path"]) for i in body["data"]["list"]] == \
        [(alice.id, "/api/v1/auth/logout")] * 2


async def test_audit_list_path_prefix_treats_wildcards_literally(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    await call(client, "POST", "/api/v1/a_b", json={}, token=tokens["access_token"])
    await call(client, "POST", "/api/v1/axb", json={}, token=tokens["access_token"])
    await client.app[AUDIT].flush()
    _, body = await call(client, "GET", AUDIT_LOGS + "?path=/api/v1/a_",
                         token=tokens["access_token"])
    assert [i["path"] for i in body["data"]["list"]] == ["/api/v1/a_b"]
    _, body = await call(client, "GET", AUDIT_LOGS + "?path=/api/v1/%25",
                         token=tokens["access_token"])
    assert body["data"]["total"] == 0


async def test_audit_list_time_window(client, accounts, db):
    tokens = await login(client, await accounts.user("root-admin"))
    await client.app[AUDIT].flush()
    await db.execute("UPDATE audit_logs SET created_at = '2026-01-01T10:00:00Z'")
    _, body = await call(client, "GET",
                         AUDIT_LOGS + "?from=2026-01-01T09:00:00Z&to=2026-01-01T11:00:00Z",
                         token=tokens["access_token"])
    assert body["data"]["total"] == 1
    _, body = await call(client, "GET", AUDIT_LOGS + "?from=2026-01-01T10:00:01Z",
                         token=tokens["access_token"])
    assert body["data"]["total"] == 0
    status, body = await call(client, "GET", AUDIT_LOGS + "?from=yesterday",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001, "from")


async def test_a_user_id_filter_beyond_64_bits_is_40001(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", AUDIT_LOGS + f"?user_id={2**63}",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "user_id")


async def test_a_from_filter_in_year_1_is_40001(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", AUDIT_LOGS + "?from=0001-01-01T00:00:00%2B01:00",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001, "from")


async def test_a_to_filter_in_year_9999_is_40001(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", AUDIT_LOGS + "?to=9999-12-31T23:59:59-01:00",
                              token=tokens["access_token"])
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001, "to")


async def test_audit_list_needs_audit_read(client, accounts):
    tokens = await login(client, await accounts.customer())
    status, body = await call(client, "GET", AUDIT_LOGS, token=tokens["access_token"])
    assert (status, body["code"]) == (403, 40301)


async def test_operator_can_read_the_audit_list(client, accounts):
    tokens = await login(client, await accounts.user("ops", "operator"))
    status, _ = await call(client, "GET", AUDIT_LOGS, token=tokens["access_token"])
    assert status == 200


async def test_nul_characters_never_block_the_trail(client, db):
    await call(client, "POST", "/api/v1/no%00where", json={"na\u0000me": "x\u0000y"})
    await call(client, "POST", "/api/v1/after", json={})
    await client.app[AUDIT].flush()
    rows = await _rows(db)
    assert [r["path"] for r in rows] == ["/api/v1/no\ufffdwhere", "/api/v1/after"]
    assert rows[0]["body"] == {"na\ufffdme": "x\ufffdy"}


async def test_a_record_postgres_refuses_is_dropped_and_the_rest_written(client, db):
    from storage.audit import AuditRecord

    trail = client.app[AUDIT]
    good = dict(created_at=datetime.now(UTC), user_id=None, username=None, tenant_id=None,
                ip="127.0.0.1", method="POST", path="/ok", body=None, status=200,
                trace_id="t", duration_ms=1.0)
    for record in (good, {**good, "ip": "not-an-ip", "path": "/bad-ip"},
                   {**good, "path": "/bad\x00path"}, {**good, "path": "/ok2"}):
        await trail.write(AuditRecord(**record))
    assert [r["path"] for r in await _rows(db)] == ["/ok", "/ok2"]
    assert (trail.pending, trail.dropped) == (0, 2)


async def test_records_queued_in_an_outage_one_of_them_refused_do_not_block_the_rest(
        make_app, aiohttp_client, pg_proxy, db):
    from storage.audit import AuditRecord

    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, audit_flush_interval_s=60))
    trail = client.app[AUDIT]
    await proxy.cut()
    good = dict(created_at=datetime.now(UTC), user_id=None, username=None, tenant_id=None,
                ip="127.0.0.1", method="POST", path="/ok", body=None, status=200,
                trace_id="t", duration_ms=1.0)
    for record in (good, {**good, "ip": "not-an-ip", "path": "/bad-ip"},
                   {**good, "path": "/ok2"}):
        await trail.write(AuditRecord(**record))
    assert trail.pending == 3
    await proxy.restore()
    await trail.flush()
    assert [r["path"] for r in await _rows(db)] == ["/ok", "/ok2"]
    assert (trail.pending, trail.dropped) == (0, 1)
