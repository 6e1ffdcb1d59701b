"""What the agent and dashboard socket protocols share: whole frames written straight to a
transport, error messages and the flood rule (a bad message is answered; ``FLOOD_LIMIT``
of them within ``FLOOD_WINDOW_S`` close the socket with 4010)."""

from __future__ import annotations

import struct
import time
from collections import deque
from typing import Any

import orjson

from storage import cache, db

FLOOD_LIMIT = 20
FLOOD_WINDOW_S = 60.0
CLOSE_ABUSE = 4010
# After a close frame is queued, how long a peer has to take it (and answer) before the
# TCP connection is dropped.
ABORT_AFTER_S = 2.0
# Redis or PostgreSQL out of reach: a socket answers or closes, it never fails with them.
DEPENDENCY_ERRORS = cache.UNAVAILABLE_ERRORS + db.UNAVAILABLE_ERRORS


_TEXT = 0x81  # FIN + opcode 1
_CLOSE = 0x88  # FIN + opcode 8
_PING = 0x89  # FIN + opcode 9


def _frame(first_byte: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", first_byte, size) + payload
    if size < 65536:
        return struct.pack("!BBH", first_byte, 126, size) + payload
    return struct.pack("!BBQ", first_byte, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """A whole unmasked WebSocket TEXT frame carrying ``payload`` (UTF-8 JSON): server
    frames are never masked, so the bytes can be written straight to a transport."""
    return _frame(_TEXT, payload)


def close_frame(code: int, reason: str) -> bytes:
    return _frame(_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def ping_frame() -> bytes:
    return _frame(_PING, b"")


def error_message(code: str, message: str, errors: list[dict[str, Any]] | None = None,
                  **fields: Any) -> str:
    data: dict[str, Any] = {"code": code, "message": message, **fields}
    if errors:
        data["errors"] = errors
    return orjson.dumps({"type": "error", "data": data}).decode()


class Strikes:
    """Bad messages of one socket within the sliding window."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def add(self) -> bool:
        """Count one; True once the socket has flooded."""
        now = time.monotonic()
        self._times.append(now)
        while self._times and self._times[0] < now - FLOOD_WINDOW_S:
            self._times.popleft()
        return len(self._times) >= FLOOD_LIMIT
