"""The API description: the OpenAPI document and a human page rendered from it."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
import orjson
from aiohttp import web

from api.keys import OPENAPI
from api.routing import PUBLIC, Routes

routes = Routes("docs")


@routes.get("/api/v1/openapi.json", access=PUBLIC, summary="This document (OpenAPI 3.1)",
            raw_content_type="application/json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[OPENAPI]), content_type="application/json")


@routes.get("/api/docs", access=PUBLIC, summary="The API reference for humans",
            raw_content_type="text/html")
async def docs_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("docs.html", request, _page_context(request.app[OPENAPI]))


def _page_context(document: dict[str, Any]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ok = op["responses"]["200"].get("content", {})
            groups.setdefault(op["tags"][0], []).append({
                "method": method.upper(),
                "path": path,
                "id": op["operationId"],
                "summary": op["summary"],
                "description": op.get("description", ""),
                "access": op["x-access"],
                "parameters": op.get("parameters", []),
                "body": _pretty(body.get("schema")) if body else None,
                "ok": _pretty(ok.get("application/json", {}).get("schema", {})
                              .get("properties", {}).get("data"))
                      if "application/json" in ok else next(iter(ok), ""),
                "failures": [(status, r["description"]) for status, r in op["responses"].items()
                             if status != "200"],
            })
    return {
        "info": document["info"],
        "groups": sorted(groups.items()),
        "schemas": {name: _pretty(s) for name, s in document["components"]["schemas"].items()},
        "public": PUBLIC,
    }


def _pretty(schema: Any) -> str:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode() if schema else ""
