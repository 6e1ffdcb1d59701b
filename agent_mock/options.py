"""How a fleet run is configured (``remotegpu agent-mock`` maps its flags onto this)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_TOKENS_FILE = Path("var/agent-mock-tokens.json")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


class AgentMockError(Exception):
    """A failure worth one line on stderr (bad options, login refused, no tokens)."""


@dataclass(frozen=True)
class Options:
    hub: str
    """Base URL of the hub, e.g. ``http://127.0.0.1:8080``."""
    machines: int
    interval: float = 5.0
    """Seconds between two frames of one machine."""
    transport: Literal["ws", "http"] = "ws"
    admin_user: str | None = None
    admin_password: str | None = None
    """With admin credentials the fleet is registered (or re-keyed) first; without,
    every machine's token must be in ``tokens_file``."""
    tokens_file: Path = DEFAULT_TOKENS_FILE
    """JSON ``{machine_id: agent_token}``, written with mode 0600."""
    id_prefix: str = "sim-"
    overheat_fraction: float = 0.01
    """Share of machines whose GPUs run above 90 °C."""
    silent_fraction: float = 0.01
    """Share of machines that stop sending (and stop answering) after a while."""
    silent_after: float = 60.0
    """A silent machine goes quiet 0.5 to 1.5 times this many seconds after it starts."""
    idle_fraction: float = 0.2
    """Share of machines that start with no workload (GPUs near 0 %)."""
    health_event_rate: float = 0.0
    """Chance per GPU per frame of an XID, ECC or row-remap event."""
    job_delay_scale: float = 1.0
    """Multiplies how long commands take (reclaim ~3 s, ssh_reset ~1 s, ...)."""
    register_concurrency: int = 20
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    summary_interval: float = 10.0
    """Seconds between summary lines on stderr; 0 prints only the final one."""
    duration: float | None = None
    """Stop after this many seconds; None runs until cancelled."""
    seed: int | None = None
    """Seeds the dynamics (phases, workloads, noise); machine descriptions never vary."""

    def __post_init__(self) -> None:
        problems = []
        if not self.hub.startswith(("http://", "https://")):
            problems.append("the hub URL must start with http:// or https://")
        if self.machines < 1:
            problems.append("machines must be at least 1")
        if self.interval <= 0:
            problems.append("interval must be positive")
        if self.transport not in ("ws", "http"):
            problems.append("transport must be ws or http")
        if (self.admin_user is None) != (self.admin_password is None):
            problems.append("give both the admin user and the admin password (--admin-password "
                            "or $REMOTEGPU_ADMIN_PASSWORD), or neither")
        if not _PREFIX.match(self.id_prefix):
            problems.append("the id prefix must be 1..40 characters of [A-Za-z0-9._-]")
        for name in ("overheat_fraction", "silent_fraction", "idle_fraction",
                     "health_event_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name.replace('_', ' ')} must lie in 0..1")
        for name in ("silent_after", "job_delay_scale", "backoff_base", "backoff_cap",
                     "summary_interval"):
            if getattr(self, name) < 0:
                problems.append(f"{name.replace('_', ' ')} must not be negative")
        if self.register_concurrency < 1:
            problems.append("register concurrency must be at least 1")
        if self.duration is not None and self.duration <= 0:
            problems.append("duration must be positive")
        if problems:
            raise AgentMockError("; ".join(problems))

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in 0..min(cap, base * 2**attempt),
        so a fleet that lost the hub does not come back in lockstep."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 30))
        return random.uniform(0.0, ceiling)
