"""Agent frames (CONTRACT.md §6): the metrics frame and its validation rules.

Shape and ranges are checked by the models; what depends on the hub's clock and on the
machine (timestamp window, known GPU indexes) by ``check_frame``. A rejected frame is
never stored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _memory_fits(self) -> GpuSample:
        if self.mem_used > self.mem_total:
            raise ValueError("mem_used exceeds mem_total")
        return self


class MetricsFrame(Strict):
    ts: float = Field(description="sample time, epoch seconds")
    cpu_util: Percent
    mem_used: NonNegative = Field(description="GB")
    mem_total: float = Field(gt=0, le=1_048_576, description="GB")
    disk_used: NonNegative = Field(description="GB")
    disk_total: float = Field(gt=0, le=10_485_760, description="GB")
    gpus: list[GpuSample] = Field(max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> MetricsFrame:
        if self.mem_used > self.mem_total:
            raise ValueError("mem_used exceeds mem_total")
        if self.disk_used > self.disk_total:
            raise ValueError("disk_used exceeds disk_total")
        indexes = [gpu.index for gpu in self.gpus]
        if len(set(indexes)) != len(indexes):
            raise ValueError("duplicate GPU index")
        return self


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
    """Refuse a frame whose time is outside the accepted window or that names a GPU the
    machine does not have."""
    errors = []
    if frame.ts < now - MAX_AGE_S:
        errors.append({"field": "ts", "message": "older than 24 hours"})
    elif frame.ts > now + MAX_AHEAD_S:
        errors.append({"field": "ts", "message": "more than 5 minutes ahead of the hub's clock"})
    for i, gpu in enumerate(frame.gpus):
        if gpu.index >= gpu_count:
            errors.append({"field": f"gpus[{i}].index",
                           "message": f"unknown GPU index: the machine has {gpu_count} GPUs"})
    if errors:
        raise ValidationFailed(errors, "invalid metrics frame")
