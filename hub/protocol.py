"""What the agent and dashboard socket protocols share: error messages and the flood rule
(a bad message is answered; ``FLOOD_LIMIT`` of them within ``FLOOD_WINDOW_S`` close the
socket with 4010)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson

from storage import cache, db

FLOOD_LIMIT = 20
FLOOD_WINDOW_S = 60.0
CLOSE_ABUSE = 4010
# Redis or PostgreSQL out of reach: a socket answers or closes, it never fails with them.
DEPENDENCY_ERRORS = cache.UNAVAILABLE_ERRORS + db.UNAVAILABLE_ERRORS


def error_message(code: str, message: str, errors: list[dict[str, Any]] | None = None) -> str:
    data: dict[str, Any] = {"code": code, "message": message}
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
