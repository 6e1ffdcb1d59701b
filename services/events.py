"""Domain events services announce (a machine changed state, a job was queued, ...).

Services only publish; the hub delivers them to this process at once and to the other hub
processes through Redis (hub/bus.py), where dashboards, agent sockets and caches react.
Publishing never blocks and never fails the caller: events are notifications, the
database stays the truth.
"""

from __future__ import annotations

from typing import Any, Protocol

MACHINE_STATUS = "machine_status"
ALERT = "alert"
JOB_UPDATE = "job_update"
JOB_QUEUED = "job_queued"
AGENT_TOKEN_ROTATED = "agent_token_rotated"
MACHINE_DELETED = "machine_deleted"
# Access tokens that must stop working at once, dashboards included: {"sids": [...]} for
# ended login sessions and revoked API keys ("key-N"), plus {"user_id": N} when every
# session of that user ended (disabled, or a new role; every process also forgets
# its cached rows of the user's API keys), {"tenant_id": N} for every user of a disabled
# tenant.
ACCESS_REVOKED = "access_revoked"


class EventSink(Protocol):
    def publish(self, kind: str, data: dict[str, Any]) -> None: ...
