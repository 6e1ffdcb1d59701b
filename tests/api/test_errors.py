"""CONTRACT.md §1: every failure answers with the envelope, a real HTTP status and a code."""

from __future__ import annotations

from aiohttp import web

from api.routing import PUBLIC, Routes
from tests.helpers import call, login


def _assert_envelope(body, code):
    assert set(body) == {"code", "msg", "data", "traceId"}
    assert body["code"] == code
    assert isinstance(body["msg"], str) and body["msg"]
    assert body["traceId"]


async def test_unknown_path_is_an_enveloped_40401(client):
    resp = await client.get("/api/v1/no/such/thing")
    assert resp.status == 404
    _assert_envelope(await resp.json(), 40401)


async def test_wrong_method_is_an_enveloped_40501(client):
    resp = await client.delete("/api/v1/auth/profile")
    assert resp.status == 405
    _assert_envelope(await resp.json(), 40501)


async def test_malformed_json_is_40002(client):
    resp = await client.post("/api/v1/auth/login", data=b'{"username": "a",',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    _assert_envelope(await resp.json(), 40002)


async def test_json_that_is_not_an_object_is_40002(client):
    status, body = await call(client, "POST", "/api/v1/auth/login", json=["a", "b"])
    assert status == 400
    _assert_envelope(body, 40002)


async def test_wrong_content_type_is_40002(client):
    resp = await client.post("/api/v1/auth/login", data=b"username=a&password=b",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 400
    _assert_envelope(await resp.json(), 40002)


async def test_a_json_endpoint_given_multipart_is_40002(client):
    resp = await client.post("/api/v1/auth/login", data=b"--zz\r\n\r\nx\r\n--zz--\r\n",
                             headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert resp.status == 400
    _assert_envelope(await resp.json(), 40002)


async def test_a_body_that_cannot_be_decoded_as_its_content_encoding_says_is_40002(client):
    resp = await client.post("/api/v1/auth/login", data=b"this is not gzip",
                             headers={"Content-Type": "application/json",
                                      "Content-Encoding": "gzip"})
    assert resp.status == 400
    _assert_envelope(await resp.json(), 40002)


async def test_wrong_json_types_are_40001_with_one_entry_per_field(client):
    status, body = await call(client, "POST", "/api/v1/auth/login",
                              json={"username": ["x"], "password": 12345678})
    assert status == 400
    _assert_envelope(body, 40001)
    assert sorted(e["field"] for e in body["data"]["errors"]) == ["password", "username"]
    assert all(e["message"] for e in body["data"]["errors"])


async def test_an_unknown_body_field_is_40001_naming_it(client):
    status, body = await call(client, "POST", "/api/v1/auth/login",
                              json={"username": "a", "password": "b", "remember_me": True})
    assert status == 400
    _assert_envelope(body, 40001)
    assert body["data"]["errors"] == [{"field": "remember_me", "message": "unknown field"}]


async def test_unknown_query_parameters_are_ignored(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, _ = await call(client, "GET", "/api/v1/admin/audit-logs?_=1700000000",
                           token=tokens["access_token"])
    assert status == 200


async def test_oversized_body_is_an_enveloped_41301(make_app, aiohttp_client):
    client = await aiohttp_client(make_app(max_body_bytes=1024))
    resp = await client.post("/api/v1/auth/login",
                             json={"username": "a", "password": "x" * 5000})
    assert resp.status == 413
    _assert_envelope(await resp.json(), 41301)


async def test_bad_query_values_are_40001(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", "/api/v1/admin/audit-logs?page=0&page_size=abc",
                              token=tokens["access_token"])
    assert status == 400
    _assert_envelope(body, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == {"page", "page_size"}


async def test_page_size_above_100_is_40001(client, accounts):
    tokens = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", "/api/v1/admin/audit-logs?page_size=101",
                              token=tokens["access_token"])
    assert (status, body["code"]) == (400, 40001)


async def test_unexpected_exception_is_a_bare_50001_without_details(make_app, aiohttp_client,
                                                                     caplog):
    app = make_app()
    routes = Routes("test")

    @routes.get("/boom", access=PUBLIC, summary="fails")
    async def boom(request: web.Request) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_routes(routes.table)
    client = await aiohttp_client(app)
    resp = await client.get("/boom")
    text = await resp.text()
    assert resp.status == 500
    body = await resp.json()
    _assert_envelope(body, 50001)
    assert "hunter2" not in text and "RuntimeError" not in text
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged and logged[0].exc_info is not None


async def test_trace_id_is_in_header_and_body(client):
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.headers["X-Trace-Id"] == body["traceId"]


async def test_sane_request_id_becomes_the_trace_id(client):
    resp = await client.get("/nowhere", headers={"X-Request-Id": "req-42.a_b"})
    assert resp.headers["X-Trace-Id"] == "req-42.a_b"
    assert (await resp.json())["traceId"] == "req-42.a_b"


async def test_insane_request_id_is_replaced(client):
    resp = await client.get("/healthz", headers={"X-Request-Id": "bad id<script>"})
    assert resp.headers["X-Trace-Id"] != "bad id<script>"
    assert len(resp.headers["X-Trace-Id"]) == 32


async def test_nul_character_in_a_body_field_is_40001_naming_it(client, accounts):
    admin = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "POST", "/api/v1/admin/machines",
                              token=admin["access_token"],
                              json={"name": "a\u0000b", "ip": "10.0.0.1", "gpu_model": "x",
                                    "gpu_count": 1, "labels": {"k": "v"}})
    assert (status, body["code"]) == (400, 40001)
    assert body["data"]["errors"] == [{"field": "name",
                                       "message": "must not contain the NUL character"}]


async def test_nul_character_in_a_query_value_is_40001(client, accounts):
    admin = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", "/api/v1/admin/machines?keyword=a%00b",
                              token=admin["access_token"])
    assert (status, body["data"]["errors"][0]["field"]) == (400, "keyword")


async def test_nul_character_in_a_path_id_is_40401(client, accounts):
    admin = await login(client, await accounts.user("root-admin"))
    status, body = await call(client, "GET", "/api/v1/admin/machines/m%001",
                              token=admin["access_token"])
    assert (status, body["code"]) == (404, 40401)
