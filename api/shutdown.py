"""One deadline for the whole shutdown: ``REMOTEGPU_SHUTDOWN_GRACE_S`` from the moment it
starts (SIGTERM), shared by every stage in turn, so the process exits within the grace
whatever a stage meets (a PostgreSQL that does not answer, agents that never reply).

Stages, in order: sockets get their close frames and finish their handshakes (at most
``SOCKETS_SHARE`` of the grace); open requests finish (aiohttp waits at most
``REQUESTS_SHARE`` for them, then as long again for cancelled ones); then each cleanup
(writers flushing, pools closing) takes what is left.
"""

from __future__ import annotations

import time

SOCKETS_SHARE = 0.2
REQUESTS_SHARE = 0.15


class ShutdownClock:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._deadline: float | None = None

    def start(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.grace_s

    @property
    def started(self) -> bool:
        return self._deadline is not None

    def elapsed(self) -> float:
        self.start()
        assert self._deadline is not None
        return time.monotonic() - (self._deadline - self.grace_s)

    def left(self, share: float = 1.0) -> float:
        """Seconds left to the deadline, at most ``share`` of the grace (starts the clock
        if nothing has yet)."""
        self.start()
        assert self._deadline is not None
        return max(0.0, min(self._deadline - time.monotonic(), self.grace_s * share))
