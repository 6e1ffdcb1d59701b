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


JobKind = Literal["reclaim", "ssh_reset", "mount_dataset", "unmount_dataset", "task_start",
                  "task_stop"]
JobStatus = Literal["pending", "sent", "running", "succeeded", "failed", "timeout", "cancelled"]


class JobItem(BaseModel):
    id: str = Field(examples=["job-888"])
    kind: JobKind
    machine_id: str
    tenant_id: int | None
    status: JobStatus
    result: Any = None
    error: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobItem:
        return cls.model_validate({**dict(row), "id": format_id(JOB, row["id"])})


class JobRef(BaseModel):
    job_id: str = Field(examples=["job-888"])


class UserItem(BaseModel):
    id: int
    username: str
    role: Literal["admin", "operator", "customer"]
    tenant_id: int = Field(description="0 for platform staff")
    tenant_name: str | None = Field(description="null for platform staff")
    status: Literal["active", "disabled"]
    created_at: AwareDatetime
    last_login_at: AwareDatetime | None
