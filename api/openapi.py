"""The OpenAPI 3.1 document, generated from the route declarations and their models."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from api.routing import PATH_PARAM, PUBLIC, Endpoint
from services.errors import ErrorCode

_REF_TEMPLATE = "#/components/schemas/{model}"

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "msg", "data", "traceId"],
    "properties": {
        "code": {"type": "integer", "description": "contract error code, e.g. 40001"},
        "msg": {"type": "string"},
        "data": {"description": "details; for 40001 `{errors: [{field, message}]}`"},
        "traceId": {"type": "string"},
    },
}


class _Schemas:
    """Collects component schemas; one model name must always mean one schema."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": _ERROR_SCHEMA}

    def schema_of(self, type_: Any, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(type_).json_schema(ref_template=_REF_TEMPLATE, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            known = self.components.setdefault(name, definition)
            if known != definition:
                raise RuntimeError(f"two different schemas are both named {name!r}")
        return schema


def build_document(endpoints: list[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        path = PATH_PARAM.sub(r"{\1}", endpoint.path)
        paths.setdefault(path, {})[endpoint.method.lower()] = _operation(endpoint, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Every JSON response uses the envelope "
                           "`{code, msg, data, traceId}`; errors carry a real HTTP status and "
                           "a non-zero `code` (see CONTRACT.md §1).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _operation(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.tag}.{endpoint.name}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "security": [] if endpoint.access == PUBLIC else [{"bearerAuth": []}],
        "x-access": endpoint.access,
        "responses": {"200": _success(endpoint, schemas), **_failures(endpoint)},
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = []
    if endpoint.path_params is not None:
        parameters += _parameters(endpoint.path_params, "path", schemas)
    if endpoint.query is not None:
        parameters += _parameters(endpoint.query, "query", schemas)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.schema_of(endpoint.body,
                                                                         "validation")}},
        }
    if endpoint.upload is not None:
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": [endpoint.upload], "properties": {
                endpoint.upload: {"type": "string", "format": "binary"}}},
        }}}
    return operation


def _success(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    if endpoint.raw_content_type is not None:
        return {"description": "OK", "content": {endpoint.raw_content_type: {}}}
    data = schemas.schema_of(endpoint.response, "serialization")
    envelope = {
        "type": "object",
        "required": ["code", "msg", "data", "traceId"],
        "properties": {
            "code": {"type": "integer", "const": 0},
            "msg": {"type": "string", "examples": [endpoint.message]},
            "data": data,
            "traceId": {"type": "string"},
        },
    }
    return {"description": endpoint.message, "content": {"application/json": {"schema": envelope}}}


def _failures(endpoint: Endpoint) -> dict[str, Any]:
    by_status: dict[int, list[ErrorCode]] = {}
    for code in endpoint.failure_codes:
        by_status.setdefault(code.http_status, []).append(code)
    responses = {}
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "; ".join(f"{int(c)}: {c.default_message}" for c in codes),
            "content": {"application/json": {"schema": {
                "allOf": [{"$ref": "#/components/schemas/Error"}],
                "properties": {"code": {"enum": [int(c) for c in codes]}},
            }}},
        }
    return responses


def _parameters(model: Any, where: str, schemas: _Schemas) -> list[dict[str, Any]]:
    schema = schemas.schema_of(model, "validation")
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        parameter: dict[str, Any] = {"name": name, "in": where,
                                     "required": where == "path" or name in required,
                                     "schema": prop}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is left out, never sent as null: ``int | None = None`` is
    documented as an integer that is not required."""
    variants = prop.get("anyOf")
    if variants is None or {"type": "null"} not in variants:
        return prop
    rest = [variant for variant in variants if variant != {"type": "null"}]
    unwrapped = {key: value for key, value in prop.items()
                 if key != "anyOf" and not (key == "default" and value is None)}
    return {**rest[0], **unwrapped} if len(rest) == 1 else {**unwrapped, "anyOf": rest}
