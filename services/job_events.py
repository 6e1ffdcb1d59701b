"""How jobs are announced: to agents (commands) and to everyone else (events)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from services.events import JOB_QUEUED, JOB_UPDATE, MACHINE_STATUS, EventSink
from services.ids import ALLOCATION, JOB, format_id


def command(job: asyncpg.Record) -> dict[str, Any]:
    """The job as an agent receives it (CONTRACT.md §6), with public ids."""
    params = dict(job["params"] or {})
    if "allocation_id" in params:
        params["allocation_id"] = format_id(ALLOCATION, params["allocation_id"])
    return {"job_id": format_id(JOB, job["id"]), "action": job["kind"], "params": params}


def job_event(job: asyncpg.Record) -> dict[str, Any]:
    return {"job_id": format_id(JOB, job["id"]), "kind": job["kind"],
            "machine_id": job["machine_id"], "tenant_id": job["tenant_id"],
            "status": job["status"], "ts": time.time()}


def announce_queued(events: EventSink, job: asyncpg.Record) -> None:
    """Tell the hub a job waits for the machine's agent (pushed at once if connected)."""
    events.publish(JOB_QUEUED, {"machine_id": job["machine_id"],
                                "job_id": format_id(JOB, job["id"])})
    events.publish(JOB_UPDATE, job_event(job))


def announce_machines(events: EventSink, machines: list[asyncpg.Record]) -> None:
    """``machine_status`` events for rows with id, status, allocation_status, tenant_id and
    version (events may arrive out of order: the highest version is the machine's state)."""
    now = time.time()
    for row in machines:
        events.publish(MACHINE_STATUS, machine_status(row, now))


def machine_status(row: asyncpg.Record, now: float) -> dict[str, Any]:
    """The ``machine_status`` event of a row with id, status, allocation_status, tenant_id
    and version."""
    return {"machine_id": row["id"], "status": row["status"],
            "allocation_status": row["allocation_status"], "tenant_id": row["tenant_id"],
            "version": row["version"], "ts": now}
