"""The OpenAPI document is generated from the route declarations and lists every route."""

from __future__ import annotations

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from api.keys import OPENAPI
from api.routing import AGENT, PUBLIC, Routes, check_all_declared


async def test_openapi_document_is_valid_openapi_3_1(client):
    resp = await client.get("/api/v1/openapi.json")
    document = await resp.json()
    assert resp.status == 200 and document["openapi"] == "3.1.0"
    validate(document)


async def test_every_route_is_in_the_document_with_its_access(client):
    document = client.app[OPENAPI]
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        operation = document["paths"].get(path, {}).get(route.method.lower())
        assert operation is not None, f"{route.method} {path} missing from the OpenAPI document"
        assert operation["x-access"] == route.handler.endpoint.access


async def test_document_lists_failure_codes_of_protected_routes(client):
    operation = client.app[OPENAPI]["paths"]["/api/v1/admin/audit-logs"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    codes = {code for response in operation["responses"].values()
             for code in response.get("content", {}).get("application/json", {})
             .get("schema", {}).get("properties", {}).get("code", {}).get("enum", [])}
    assert {40001, 40101, 40102, 40301, 40302, 50001} <= codes


async def test_public_routes_say_so_in_the_document(client):
    operation = client.app[OPENAPI]["paths"]["/api/v1/auth/login"]["post"]
    assert operation["security"] == []
    assert "requestBody" in operation


async def test_docs_page_renders_every_operation(client):
    resp = await client.get("/api/docs")
    html = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    for path in client.app[OPENAPI]["paths"]:
        assert f"<code>{path}</code>" in html


def _operations(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def _json_body(operation):
    return operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get(
        "schema")


async def test_every_rest_body_forbids_unknown_fields_and_agent_bodies_do_not(client):
    for label, operation in _operations(client.app[OPENAPI]):
        body = _json_body(operation)
        if body is not None:
            strict = operation["x-access"] != AGENT
            assert (body.get("additionalProperties") is False) == strict, label


async def test_every_path_parameter_states_its_shape(client):
    for label, operation in _operations(client.app[OPENAPI]):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["required"] and parameter["schema"]["pattern"], label
                assert "404" in operation["responses"], label


async def test_id_and_count_parameters_state_their_range(client):
    paths = client.app[OPENAPI]["paths"]
    query = {p["name"]: p["schema"] for p in paths["/api/v1/admin/machines"]["get"]["parameters"]}
    assert (query["tenant_id"]["minimum"], query["tenant_id"]["maximum"]) == (0, 2**63 - 1)
    assert (query["page_size"]["minimum"], query["page_size"]["maximum"]) == (1, 100)
    create = _json_body(paths["/api/v1/admin/machines"]["post"])["properties"]
    assert (create["gpu_count"]["minimum"], create["gpu_count"]["maximum"]) == (0, 64)
    assert (create["ssh_port"]["minimum"], create["ssh_port"]["maximum"]) == (1, 65535)
    allocate = _json_body(paths["/api/v1/admin/allocations"]["post"])["properties"]
    assert allocate["tenant_id"]["maximum"] == 2**63 - 1
    assert (allocate["duration_months"]["minimum"], allocate["duration_months"]["maximum"]) \
        == (1, 36)


async def test_optional_query_parameters_are_never_documented_as_null(client):
    for label, operation in _operations(client.app[OPENAPI]):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            assert {"type": "null"} not in schema.get("anyOf", []), (label, parameter["name"])
            assert schema.get("default", "") is not None, (label, parameter["name"])


async def test_the_import_documents_its_multipart_file(client):
    operation = client.app[OPENAPI]["paths"]["/api/v1/admin/machines/import"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]


def test_a_path_parameter_without_a_declaration_is_refused():
    routes = Routes("t")
    with pytest.raises(TypeError, match="path parameters"):
        routes.get("/things/{id}", access=PUBLIC, summary="undeclared id")(_nothing)


async def _nothing(request: web.Request) -> None:
    return None


def test_a_route_without_an_access_declaration_is_refused_at_start_up():
    app = web.Application()

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/sneaky", sneaky)
    with pytest.raises(RuntimeError, match="GET /sneaky"):
        check_all_declared(app)


def test_declared_routes_pass_the_start_up_check():
    app = web.Application()
    routes = Routes("t")

    @routes.get("/fine", access=PUBLIC, summary="ok")
    async def fine(request: web.Request) -> None:
        return None

    app.add_routes(routes.table)
    check_all_declared(app)


def test_access_must_be_declared():
    routes = Routes("t")
    with pytest.raises(TypeError):
        routes.get("/x", summary="no access given")  # type: ignore[call-arg]
