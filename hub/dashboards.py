"""``/ws/connect``: live dashboards (CONTRACT.md §5).

The upgrade is always accepted (a browser cannot read a refused handshake); everything
after it is a close code. A session lives as long as its access token: the client renews
it with an ``auth`` message, and is closed with 4001 when it expires unrenewed, when it is
revoked (logout, refresh-token reuse) or when its tenant is disabled, on every process
(the ``access_revoked`` event). Writes to dashboards go through the fan-out (hub/fanout.py);
only replies to the client's own messages are sent from its handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from hub.fanout import (
    CLOSE_GOING_AWAY,
    CLOSE_UNAUTHENTICATED,
    Fanout,
    Subscriber,
    close_now,
)
from hub.protocol import CLOSE_ABUSE, DEPENDENCY_ERRORS, Strikes, error_message, text_frame
from hub.topics import GLOBAL, Topics, tenant_topic
from services.auth import AuthService, Principal
from services.errors import ServiceError
from storage.dashboard_seats import DashboardSeats

log = logging.getLogger(__name__)

CLOSE_TRY_LATER = 1013  # RFC 6455 registry: "try again later"
CLOSE_ORIGIN = 4003
CLOSE_TOO_MANY = 4009
# A process renews its seats every SEAT_RENEW_S; a dead one's lapse after SEAT_LAPSE_S.
SEAT_LAPSE_S = 30
SEAT_RENEW_S = SEAT_LAPSE_S / 3
GLOBAL_PERMISSION = "monitoring:read"
TENANT_PERMISSION = "tenant:machine:read"


class DashboardSockets:
    def __init__(self, *, auth: AuthService, fanout: Fanout, topics: Topics,
                 seats: DashboardSeats, max_connections: int, max_per_user: int,
                 allowed_origins: tuple[str, ...],
                 auth_timeout_s: float, ping_interval_s: float, max_message_bytes: int) -> None:
        self._auth = auth
        self._fanout = fanout
        self._topics = topics
        self._seats = seats
        self._max_connections = max_connections
        self._max_per_user = max_per_user
        self._allowed_origins = allowed_origins
        self._auth_timeout_s = auth_timeout_s
        self._ping_interval_s = ping_interval_s
        self._max_message_bytes = max_message_bytes
        self._open: set[web.WebSocketResponse] = set()
        self._sessions: set[web.WebSocketResponse] = set()  # authenticated and subscribed
        # This process's sockets per user, and users whose seat could not be given back
        # (Redis out of reach): their count in Redis is rewritten at the next renewal.
        self._per_user: dict[int, int] = {}
        self._unreleased: set[int] = set()
        self._renewal: asyncio.Task[None] | None = None
        self._closing = False
        self.bad_messages = 0
        self.refused = 0

    @property
    def count(self) -> int:
        return len(self._open)

    def by_role(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sub in self._fanout.subscribers():
            counts[sub.role] = counts.get(sub.role, 0) + 1
        return counts

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self._ping_interval_s, compress=False,
                                   max_msg_size=self._max_message_bytes)
        await ws.prepare(request)
        self._open.add(ws)
        # After the upgrade nothing may escape to the HTTP error middleware: it would write
        # an HTTP response into the WebSocket stream.
        try:
            await self._serve(ws, request)
        except DEPENDENCY_ERRORS as exc:
            log.warning("dashboard closed: dependency unavailable",
                        extra={"error": type(exc).__name__})
            await ws.close(code=CLOSE_TRY_LATER, message=b"dependency unavailable")
        except Exception:
            log.exception("dashboard socket failed")
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
        finally:
            self._open.discard(ws)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        refusal = self._refusal(request)
        if refusal is not None:
            self.refused += 1
            await ws.close(code=refusal[0], message=refusal[1].encode())
            return
        principal = await self._authenticate(ws, request.query.get("token"))
        if principal is None:
            return
        if not await self._seats.take(principal.user_id, self._max_per_user):
            self.refused += 1
            await ws.close(code=CLOSE_TOO_MANY, message=b"too many connections for this user")
            return
        user_id = principal.user_id
        self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
        try:
            await self._session(ws, request, principal)
        finally:
            left = self._per_user[user_id] - 1
            if left:
                self._per_user[user_id] = left
            else:
                del self._per_user[user_id]
            try:
                # Shielded: a handler cancelled at shutdown still gives its seat back.
                await asyncio.shield(self._seats.release(user_id))
            except DEPENDENCY_ERRORS:
                self._unreleased.add(user_id)

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        if self._closing:
            return CLOSE_GOING_AWAY, "server shutting down"
        if not self._origin_allowed(request):
            return CLOSE_ORIGIN, "origin not allowed"
        if len(self._open) > self._max_connections:
            return CLOSE_TOO_MANY, "too many connections"
        return None

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: nothing to protect it from
        origin = origin.rstrip("/").lower()
        if "*" in self._allowed_origins or origin in self._allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    async def _authenticate(self, ws: web.WebSocketResponse,
                            token: str | None) -> Principal | None:
        """The caller, or None after closing the socket with 4001."""
        if token is None:
            try:
                message = await ws.receive(timeout=self._auth_timeout_s)
            except TimeoutError:
                await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"no token within time")
                return None
            token = _auth_token(message.data) if message.type == WSMsgType.TEXT else None
            if token is None:
                await ws.close(code=CLOSE_UNAUTHENTICATED,
                               message=b"first message must be auth with a token")
                return None
        try:
            return await self._auth.authenticate(token)
        except ServiceError as exc:
            await ws.close(code=CLOSE_UNAUTHENTICATED, message=exc.message.encode()[:120])
            return None

    async def _session(self, ws: web.WebSocketResponse, request: web.Request,
                       principal: Principal) -> None:
        topic = _topic_of(principal)
        if topic is None:
            await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"this role has no dashboard")
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        sub = Subscriber(transport=transport, topic=topic, role=principal.role,
                         user_id=principal.user_id, tenant_id=principal.tenant_id,
                         sid=principal.sid)
        self._sessions.add(ws)
        expiry = self._expire_at(sub, principal.expires_at)
        # Welcome, current state and subscription without a pause between them: no event
        # or tick can slip in before the dashboard is subscribed.
        transport.write(text_frame(orjson.dumps({"type": "welcome", "data": {
            "user_id": principal.user_id, "role": principal.role,
            "topics": [topic]}})))
        for frame in self._current_state(principal, topic):
            self._fanout.offer_to(sub, frame)
        self._fanout.add(sub)
        try:
            strikes = Strikes()
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                reply, bad, renewed = await self._handle(sub, message.data)
                if renewed is not None:
                    expiry.cancel()
                    expiry = self._expire_at(sub, renewed.expires_at)
                if sub.closed:
                    break
                if reply is not None:
                    await ws.send_str(reply)
                if bad:
                    self.bad_messages += 1
                    if strikes.add():
                        close_now(sub, CLOSE_ABUSE, "too many bad messages")
                        break
        finally:
            expiry.cancel()
            self._sessions.discard(ws)
            self._fanout.remove(sub)

    def _current_state(self, principal: Principal, topic: str) -> list[bytes]:
        if topic == GLOBAL:
            return [self._topics.current_snapshot()]
        return self._topics.tenant_frames(principal.tenant_id)

    def _expire_at(self, sub: Subscriber, expires_at: float) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, expires_at - time.time()), close_now, sub,
                               CLOSE_UNAUTHENTICATED, "token expired")

    async def _handle(self, sub: Subscriber,
                      text: str) -> tuple[str | None, bool, Principal | None]:
        """For one client message: the reply, whether the message was bad, and the renewed
        principal after an ``auth``."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return error_message("invalid_message", "message is not JSON"), True, None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            return orjson.dumps({"type": "pong", "ts": round(time.time(), 3)}).decode(), False, None
        if kind == "auth":
            token = message.get("token")
            if not isinstance(token, str) or not token:
                return error_message("invalid_message", "auth needs a token"), True, None
            try:
                principal = await self._auth.authenticate(token)
            except ServiceError as exc:
                close_now(sub, CLOSE_UNAUTHENTICATED, exc.message)
                return None, False, None
            if principal.user_id != sub.user_id:
                close_now(sub, CLOSE_UNAUTHENTICATED, "a renewal must be for the same user")
                return None, False, None
            sub.sid = principal.sid
            return None, False, principal
        return error_message("invalid_message", "type must be ping or auth"), True, None

    def start(self) -> None:
        self._renewal = asyncio.create_task(self._renew_seats(), name="dashboard-seats")

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewal

    async def _renew_seats(self) -> None:
        while True:
            await asyncio.sleep(SEAT_RENEW_S)
            try:
                await self._seats.keep_alive()
                for user_id in list(self._unreleased):
                    await self._seats.set_held(user_id, self._per_user.get(user_id, 0))
                    self._unreleased.discard(user_id)
            except DEPENDENCY_ERRORS as exc:
                log.warning("dashboard seats not renewed", extra={"error": type(exc).__name__})

    def on_access_revoked(self, data: dict[str, Any]) -> None:
        """Close the sessions an ``access_revoked`` event names (login sessions, every
        session of a user, or of every user of a disabled tenant)."""
        sids = set(data.get("sids") or ())
        tenant_id = data.get("tenant_id")
        user_id = data.get("user_id")
        for sub in self._fanout.subscribers():
            if (sub.sid in sids or (tenant_id is not None and sub.tenant_id == tenant_id)
                    or (user_id is not None and sub.user_id == user_id)):
                close_now(sub, CLOSE_UNAUTHENTICATED, "session revoked")

    async def close_all(self, grace_s: float) -> None:
        """Shutdown: refuse newcomers, close every socket with 1001 within ``grace_s``."""
        self._closing = True
        for sub in self._fanout.subscribers():
            close_now(sub, CLOSE_GOING_AWAY, "server shutting down")
        # Sockets still authenticating are not subscribers yet.
        pending = [ws for ws in self._open if not ws.closed and ws not in self._sessions]
        if pending:
            await asyncio.wait([asyncio.ensure_future(ws.close(
                code=CLOSE_GOING_AWAY, message=b"server shutting down")) for ws in pending],
                timeout=grace_s)


def _auth_token(text: str) -> str | None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(message, dict) and message.get("type") == "auth":
        token = message.get("token")
        return token if isinstance(token, str) and token else None
    return None


def _topic_of(principal: Principal) -> str | None:
    """Decided by the server from the role's permissions, never asked of the client."""
    if GLOBAL_PERMISSION in principal.permissions:
        return GLOBAL
    if TENANT_PERMISSION in principal.permissions:
        return tenant_topic(principal.tenant_id)
    return None

