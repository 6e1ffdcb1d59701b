"""Agent frames (CONTRACT.md §6): the metrics frame and its validation rules.

Shape and ranges are checked by the models; what depends on the hub's clock and on the
machine (timestamp window, known GPU indexes) by ``check_frame``. A rejected frame is
never stored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.errors import ValidationFailed

MAX_AGE_S = 24 * 3600
MAX_AHEAD_S = 300

Percent = Annotated[float, Field(ge=0, le=100)]
NonNegative = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class GpuSample(Strict):
    index: int = Field(ge=0, le=63)
    util: Percent
    mem_used: NonNegative = Field(description="MiB")
    mem_total: float = Field(gt=0, le=4 * 1024 * 1024, description="MiB")
    temp: float = Field(ge=-40, le=150, description="degrees C")
    power: float = Field(ge=0, le=5000, description="W")
    xid_errors: int | None = Field(None, ge=0, le=1_000_000,
                                   description="XID errors since the last frame")
    ecc_dbe: int | None = Field(None, ge=0, description="double-bit ECC errors, cumulative")
    remapped_rows_pending: bool | None = None


class MetricsFrame(Strict):
    ts: float = Field(description="sample time, epoch seconds")
    cpu_util: Percent
    mem_used: NonNegative = Field(description="GB")
    mem_total: float = Field(gt=0, le=1_048_576, description="GB")
    disk_used: NonNegative = Field(description="GB")
    disk_total: float = Field(gt=0, le=10_485_760, description="GB")
    gpus: list[GpuSample] = Field(max_length=64)


class WsMetrics(MetricsFrame):
    type: Literal["metrics"]


class HelloGpu(Strict):
    index: int = Field(ge=0, le=63)
    uuid: str = Field(max_length=128)
    model: str = Field(max_length=128)
    memory_total: int = Field(ge=0, le=4 * 1024 * 1024, description="MiB")


class Hello(Strict):
    type: Literal["hello"]
    machine_id: str = Field(max_length=64)
    agent_version: str = Field("", max_length=64)
    gpus: list[HelloGpu] = Field(default_factory=list, max_length=64)


class JobUpdate(Strict):
    status: Literal["running", "succeeded", "failed"]
    result: dict | None = None
    error: str | None = Field(None, max_length=4096)


class WsJobUpdate(JobUpdate):
    type: Literal["job_update"]
    job_id: str = Field(max_length=32)


def check_frame(frame: MetricsFrame, *, now: float, gpu_count: int) -> None:
    """The rules the models cannot express: a time inside the accepted window, used
    amounts within totals, each GPU index once and one the machine has. (Kept out of the
    models' validators: this one loop is several times cheaper, and it runs per frame.)"""
    errors = []
    if frame.ts < now - MAX_AGE_S:
        errors.append({"field": "ts", "message": "older than 24 hours"})
    elif frame.ts > now + MAX_AHEAD_S:
        errors.append({"field": "ts", "message": "more than 5 minutes ahead of the hub's clock"})
    if frame.mem_used > frame.mem_total:
        errors.append({"field": "mem_used", "message": "exceeds mem_total"})
    if frame.disk_used > frame.disk_total:
        errors.append({"field": "disk_used", "message": "exceeds disk_total"})
    seen = set()
    for i, gpu in enumerate(frame.gpus):
        if gpu.index >= gpu_count:
            errors.append({"field": f"gpus[{i}].index",
                           "message": f"unknown GPU index: the machine has {gpu_count} GPUs"})
        elif gpu.index in seen:
            errors.append({"field": f"gpus[{i}].index", "message": "duplicate GPU index"})
        seen.add(gpu.index)
        if gpu.mem_used > gpu.mem_total:
            errors.append({"field": f"gpus[{i}].mem_used", "message": "exceeds mem_total"})
    if errors:
        raise ValidationFailed(errors, "invalid metrics frame")
