"""Response shapes shared by several resources (CONTRACT.md §3 item shapes)."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from pydantic import AwareDatetime, BaseModel, Field

from services.ids import ALLOCATION, JOB, format_id


class AllocationItem(BaseModel):
    id: str = Field(examples=["alloc-101"])
    machine_id: str
    machine_name: str
    tenant_id: int
    tenant_name: str
    status: Literal["active", "reclaiming", "reclaimed"]
    start_time: AwareDatetime
    expires_at: AwareDatetime
    duration_months: int
    remark: str | None
    created_at: AwareDatetime
    closed_at: AwareDatetime | None
    close_reason: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AllocationItem:
        return cls.model_validate({**dict(row), "id": format_id(ALLOCATION, row["id"])})


class JobItem(BaseModel):
    id: str = Field(examples=["job-888"])
    kind: Literal["reclaim", "ssh_reset", "mount_dataset", "task_start", "task_stop"]
    machine_id: str
    tenant_id: int | None
    status: Literal["pending", "sent", "running", "succeeded", "failed", "timeout",
                    "cancelled"]
    result: Any = None
    error: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobItem:
        return cls.model_validate({**dict(row), "id": format_id(JOB, row["id"])})


class JobRef(BaseModel):
    job_id: str = Field(examples=["job-888"])
