"""What the fleet did, for the periodic summary line and for tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    machines: int = 0
    connected: int = 0
    """Machines currently reaching the hub (an open socket, or a last heartbeat that
    went through)."""
    frames: int = 0
    commands: int = 0
    """Commands received from the hub."""
    answered: int = 0
    """Commands carried through to a final job update (succeeded or failed)."""
    errors: int = 0
    """Failed requests or connection attempts, 5xx answers, rejected frames and
    ``error`` messages from the hub."""
    reconnects: int = 0
    """Retries after a dropped connection or a failed attempt."""
    stopped: int = 0
    """Machines that gave up because the hub refused their token (401)."""
    silent: int = 0
    """Machines that went quiet on purpose (the silent fraction)."""

    def summary(self, elapsed_s: float, frames_before: int = 0,
                window_s: float | None = None) -> str:
        rate = ""
        if window_s:
            rate = f" ({(self.frames - frames_before) / window_s:.0f}/s)"
        return (f"agent-mock: {elapsed_s:.0f}s machines={self.machines} "
                f"connected={self.connected} frames={self.frames}{rate} "
                f"commands={self.answered}/{self.commands} errors={self.errors} "
                f"reconnects={self.reconnects} stopped={self.stopped} silent={self.silent}")
