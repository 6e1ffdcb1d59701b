"""The response envelope of CONTRACT.md §1 and request parsing into models.

``{"code": 0, "msg": "ok", "data": ..., "traceId": "..."}``: the data part is encoded
by pydantic straight to JSON bytes and spliced in, so no response is encoded twice.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.keys import TRACE_ID
from services.errors import NUL_MESSAGE, ErrorCode, Malformed, NotFound, ValidationFailed
from services.rules import find_nul

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"


def envelope_bytes(code: int, msg: str, data_json: bytes, trace_id: str) -> bytes:
    return b"".join((
        b'{"code":', str(code).encode(), b',"msg":', orjson.dumps(msg),
        b',"data":', data_json, b',"traceId":', orjson.dumps(trace_id), b"}",
    ))


def json_response(request: web.Request, data_json: bytes, *, msg: str = "ok") -> web.Response:
    body = envelope_bytes(0, msg, data_json, request.get(TRACE_ID, ""))
    return web.Response(body=body, content_type=JSON)


def error_response(request: web.Request, code: ErrorCode, msg: str, data: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = envelope_bytes(int(code), msg, orjson.dumps(data), request.get(TRACE_ID, ""))
    return web.Response(status=code.http_status, body=body, content_type=JSON, headers=headers)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("machine_ids", 1)`` -> ``"machine_ids[1]"``, as CONTRACT.md names fields."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


# Contract wording where pydantic's differs.
_MESSAGES = {"extra_forbidden": "unknown field"}


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": field_path(err["loc"]), "message": _MESSAGES.get(err["type"], err["msg"])}
        for err in exc.errors(include_url=False, include_input=False)
    ]


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    if not raw:
        raw = b"{}"
    elif request.content_type != JSON:
        raise Malformed(f"expected Content-Type {JSON}")
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        kinds = {err["type"] for err in exc.errors()}
        if "json_invalid" in kinds:
            raise Malformed("malformed JSON") from None
        if "model_type" in kinds and all(err["loc"] == () for err in exc.errors()):
            raise Malformed("expected a JSON object") from None
        raise ValidationFailed(validation_errors(exc)) from None
    if b"\\u0000" in raw:  # cheap test first; the walk names the field
        field = find_nul(orjson.loads(raw))
        if field is not None:
            raise ValidationFailed([{"field": field, "message": NUL_MESSAGE}])
    return parsed


def parse_query(request: web.Request, model: type[M]) -> M:
    values = dict(request.query)
    nul = find_nul(values)
    if nul is not None:
        raise ValidationFailed([{"field": nul, "message": NUL_MESSAGE}])
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


def parse_path(request: web.Request, model: type[M]) -> M:
    """A malformed id is simply not found (CONTRACT.md §1)."""
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError:
        raise NotFound() from None
