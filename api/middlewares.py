"""Cross-cutting request handling, outermost first:

1. ``trace``: trace id, ``X-Trace-Id``, the request log line and HTTP metrics;
2. ``audit``: records every write with the final status and the authenticated user;
3. ``errors``: turns every exception into the envelope of CONTRACT.md §1;
4. ``authenticate``: resolves the bearer token of non-public routes;
5. ``authorize``: checks the route's permission (RBAC).

Audit sits outside ``errors`` so it sees the status a client really got, and reads the
principal that ``authenticate`` stored on the request after the inner layers return.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from api.envelope import JSON, error_response
from api.keys import (
    AGENT_AUTH,
    AGENT_IDENTITY,
    AUDIT,
    AUTH,
    METRICS,
    PRINCIPAL,
    SETTINGS,
    TRACE_ID,
)
from api.routing import AGENT, PUBLIC, endpoint_of
from services.audit import clean_text, redact
from services.errors import (
    ErrorCode,
    Forbidden,
    Overloaded,
    RateLimited,
    ServiceError,
    Unauthenticated,
)
from services.logs import trace_id_var
from storage.audit import AuditRecord

log = logging.getLogger("remotegpu.http")

Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

CANCELLED = 499
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# aiohttp's own HTTP errors (router, body size) mapped to contract codes.
_HTTP_CODES = {
    400: ErrorCode.MALFORMED,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def trace(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    trace_id = given if _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex
    request[TRACE_ID] = trace_id
    token = trace_id_var.set(trace_id)
    started = time.perf_counter()
    status = 500  # what the client sees if an exception escapes the inner layers
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Trace-Id"] = trace_id
        return response
    except asyncio.CancelledError:
        # The client went away, or shutdown's grace ran out: no response was sent. 499 as
        # nginx logs it, not a 500 the client never saw.
        status = CANCELLED
        raise
    finally:
        elapsed = time.perf_counter() - started
        request.app[METRICS].observe(request.method, _route_label(request), status, elapsed)
        log.info("request", extra={
            "trace_id": trace_id, "method": request.method, "path": request.path, "status": status,
            "duration_ms": round(elapsed * 1000, 2), "remote": client_ip(request),
        })
        trace_id_var.reset(token)


@web.middleware
async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every write's record is committed before its response goes out. While the trail
    cannot keep records (PostgreSQL away and its queue full), writes are refused before
    they run: nothing changes without its record."""
    endpoint = endpoint_of(request)
    if request.method not in _WRITE_METHODS or (endpoint is not None and not endpoint.audited):
        return await handler(request)
    trail = request.app[AUDIT]
    if not trail.accepting:
        return error_response(request, ErrorCode.UNAVAILABLE, "the audit trail cannot keep "
                              "records now; the request was not run",
                              {"dependency": "database"}, {"Retry-After": "5"})
    started = time.perf_counter()
    when = datetime.now(UTC)
    response = await handler(request)
    body = await _audit_body(request)
    principal = request.get(PRINCIPAL)
    username = principal.username if principal else _claimed_username(body)
    await trail.write(AuditRecord(
        created_at=when,
        user_id=principal.user_id if principal else None,
        username=username,
        tenant_id=principal.tenant_id if principal else None,
        ip=client_ip(request),
        method=request.method,
        path=clean_text(request.path),
        body=body,
        status=response.status,
        trace_id=request[TRACE_ID],
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        api_key_id=principal.api_key_id if principal else None,
    ))
    return response


async def _audit_body(request: web.Request) -> Any:
    """The request body as redacted JSON; None when there is none or it is not JSON
    (a malformed body is not stored: it could hold a secret the redactor cannot see)."""
    if request.content_type != JSON:
        return None
    try:
        raw = await request.read()
        return redact(orjson.loads(raw)) if raw else None
    except (web.HTTPException, web.RequestPayloadError, orjson.JSONDecodeError):
        return None


def _claimed_username(body: Any) -> str | None:
    name = body.get("username") if isinstance(body, dict) else None
    return name[:64] if isinstance(name, str) else None  # already cleaned by redact()


def error_middleware(unavailable: dict[type[BaseException], str]) -> Middleware:
    """``unavailable`` maps exception types of the storage layer to the dependency name
    reported in a 503; the app factory supplies it so this layer never imports drivers."""
    unavailable_types = tuple(unavailable)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServiceError as exc:
            headers = None
            if isinstance(exc, RateLimited | Overloaded):
                headers = {"Retry-After": str(exc.retry_after_s)}
            return error_response(request, exc.code, exc.message, exc.data, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status)
            if code is None:
                code = ErrorCode.INTERNAL if exc.status >= 500 else ErrorCode.MALFORMED
            return error_response(request, code, code.default_message)
        except web.RequestPayloadError:
            # The body cannot be read as sent (a broken Content-Encoding or chunking): the
            # client's fault, like malformed JSON.
            return error_response(request, ErrorCode.MALFORMED,
                                  "the request body cannot be read as sent")
        except unavailable_types as exc:
            dependency = next(name for kind, name in unavailable.items() if isinstance(exc, kind))
            log.warning("dependency unavailable", extra={"dependency": dependency,
                                                          "error": repr(exc)})
            return error_response(request, ErrorCode.UNAVAILABLE, f"{dependency} unavailable",
                                  {"dependency": dependency})
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            return error_response(request, ErrorCode.INTERNAL, ErrorCode.INTERNAL.default_message)

    return errors


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = endpoint_of(request)
    if endpoint is None or endpoint.access == PUBLIC:
        return await handler(request)
    if endpoint.access == AGENT:
        request[AGENT_IDENTITY] = await request.app[AGENT_AUTH].identify(bearer_token(request))
    else:
        request[PRINCIPAL] = await request.app[AUTH].authenticate(bearer_token(request))
    return await handler(request)


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = endpoint_of(request)
    permission = endpoint.permission if endpoint is not None else None
    if permission is not None and permission not in request[PRINCIPAL].permissions:
        raise Forbidden(f"requires permission {permission}")
    return await handler(request)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token")
    return token.strip()


def client_ip(request: web.Request) -> str | None:
    """The caller's address; ``X-Forwarded-For`` is believed only from trusted proxies,
    walking it from the right until the first hop that is not a trusted proxy."""
    remote = request.remote
    trusted = request.app[SETTINGS].trusted_proxies
    if remote is None or not trusted or not _is_trusted(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _is_ip(hop) else remote
    return hops[0] if hops and _is_ip(hops[0]) else remote


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
