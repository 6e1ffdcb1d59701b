"""Route declarations: one source for the aiohttp routes, the access rule every request is
checked against, request parsing, the envelope, and the OpenAPI document.

A handler is declared with its method, path, access, models and failure codes::

    routes = Routes("auth")

    @routes.post("/api/v1/auth/login", access=PUBLIC, body=LoginIn, response=TokenOut,
                 errors=(ErrorCode.BAD_CREDENTIALS,), summary="Log in")
    async def login(request: web.Request, body: LoginIn) -> TokenOut: ...

Path parameters are declared as a model (``path_params=MachinePath``): a value that does
not fit is 404, and the document states each one's shape. A multipart upload names its
file part (``upload="file"``) for the document; the handler reads it.

``access`` is required: a permission string (``"machine:read"``), ``AUTHENTICATED`` (any
logged-in user), ``AGENT`` (a machine's agent token) or ``PUBLIC``. The app refuses to
start if any route was added without a declaration (``check_all_declared``), so nothing
is public by accident.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from api.envelope import json_response, parse_body, parse_path, parse_query
from services.errors import ErrorCode

PUBLIC = "public"
AUTHENTICATED = "authenticated"
AGENT = "agent"  # a machine's agent token; user tokens are refused

Handler = Callable[..., Awaitable[Any]]

PATH_PARAM = re.compile(r"{(\w+)(?::[^}]+)?}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    access: str
    summary: str
    tag: str
    name: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    upload: str | None = None
    response: Any = None
    errors: tuple[ErrorCode, ...] = ()
    message: str = "ok"
    # A raw handler builds its own response (WebSocket, Prometheus text, HTML); the
    # content type documents it.
    raw_content_type: str | None = None
    audited: bool = True
    description: str = ""

    @property
    def permission(self) -> str | None:
        return None if self.access in (PUBLIC, AUTHENTICATED, AGENT) else self.access

    @property
    def failure_codes(self) -> tuple[ErrorCode, ...]:
        """Every code this endpoint can answer with, for the OpenAPI document."""
        codes: list[ErrorCode] = []
        if self.body is not None:
            codes += [ErrorCode.VALIDATION, ErrorCode.MALFORMED, ErrorCode.TOO_LARGE]
        if self.query is not None:
            codes.append(ErrorCode.VALIDATION)
        if self.path_params is not None:
            codes.append(ErrorCode.NOT_FOUND)
        if self.access == AGENT:
            codes.append(ErrorCode.UNAUTHENTICATED)
        elif self.access != PUBLIC:
            codes += [ErrorCode.UNAUTHENTICATED, ErrorCode.TOKEN_EXPIRED, ErrorCode.DISABLED]
        if self.permission is not None:
            codes.append(ErrorCode.FORBIDDEN)
        codes += list(self.errors)
        codes.append(ErrorCode.INTERNAL)
        return tuple(sorted(set(codes)))


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The declaration of the route this request matched (None for router 404/405)."""
    return getattr(request.match_info.handler, "endpoint", None)


class Routes:
    """The routes of one resource module."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.table = web.RouteTableDef()
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, access: str, summary: str,
              **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = Endpoint(method=method, path=path, access=access, summary=summary,
                                tag=self.tag, name=handler.__name__, **options)
            _check_path_params(endpoint)
            wrapped = _wrapped(endpoint, handler)
            wrapped.endpoint = endpoint  # type: ignore[attr-defined]
            self.table.route(method, path, name=f"{self.tag}.{endpoint.name}")(wrapped)
            self.endpoints.append(endpoint)
            return handler
        return register

    def get(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kwargs)


def _wrapped(endpoint: Endpoint, handler: Handler) -> Handler:
    """The aiohttp handler: parses the declared body and query, calls ``handler`` and,
    unless it is raw, wraps its result in the envelope."""
    adapter: TypeAdapter[Any] | None = (
        None if endpoint.raw_content_type else TypeAdapter(endpoint.response))

    async def handle(request: web.Request) -> web.StreamResponse:
        if endpoint.path_params is not None:
            parse_path(request, endpoint.path_params)
        kwargs: dict[str, Any] = {}
        if endpoint.body is not None:
            kwargs["body"] = await parse_body(request, endpoint.body)
        if endpoint.query is not None:
            kwargs["query"] = parse_query(request, endpoint.query)
        result = await handler(request, **kwargs)
        if adapter is None:
            return result
        return json_response(request, adapter.dump_json(result), msg=endpoint.message)

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


def _check_path_params(endpoint: Endpoint) -> None:
    """Every path parameter is declared, so none reaches a handler (or the database)
    unchecked and the document gives each its shape."""
    names = set(PATH_PARAM.findall(endpoint.path))
    declared = set(endpoint.path_params.model_fields) if endpoint.path_params else set()
    if names != declared:
        raise TypeError(f"{endpoint.method} {endpoint.path}: path parameters {sorted(names)} "
                        f"declared as {sorted(declared)}")


def check_all_declared(app: web.Application) -> None:
    """Refuse to start if a route has no access declaration."""
    undeclared = [
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if route.method != "HEAD" and getattr(route.handler, "endpoint", None) is None
    ]
    if undeclared:
        raise RuntimeError("routes without an access declaration: " + ", ".join(undeclared))
