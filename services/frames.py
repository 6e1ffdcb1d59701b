"""Agent frames (CONTRACT.md §6): the metrics frame and its validation rules.

Shape and ranges are checked by the models; what depends on the hub's clock and on the
machine (timestamp window, known GPU indexes) by ``check_frame``. A rejected frame is
never stored. On the socket, where every agent streams, ``checked_metrics`` first tries
one plain pass that accepts only frames the models and ``check_frame`` accept; whatever it
does not accept goes through them, so errors are always theirs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from services.errors import NUL_MESSAGE, ValidationFailed
from services.rules import find_nul

MAX_AGE_S = 24 * 3600
MAX_AHEAD_S = 300
MAX_GPUS = 64
HOST_MEM_MAX_GB = 1_048_576
DISK_MAX_GB = 10_485_760
GPU_MEM_MAX_MIB = 4 * 1024 * 1024
XID_MAX = 1_000_000
# Cumulative double-bit ECC errors: an int4 and exact in every JSON reader. A GPU is
# retired long before; a larger count is a broken agent, and it would not survive the
# alert's jsonb details (orjson encodes at most 64-bit integers).
ECC_MAX = 2**31 - 1

# A validated metrics frame: the model's fields, numbers as floats, and each GPU's health
# fields only when the agent sent them.
Frame = dict[str, Any]

Percent = Annotated[float, Field(ge=0, le=100)]
NonNegative = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    # NaN and Infinity are not JSON, yet pydantic's parser reads them (as do some agents'
    # encoders): refused, since every comparison with NaN is false and a NaN ``ts`` would
    # pass the time window and fail only when stored.
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise PydanticCustomError("nul_character", NUL_MESSAGE)
    return text


def _text(max_length: int) -> Any:
    """Text that is stored: PostgreSQL cannot hold U+0000. (Over HTTP parse_body refuses
    it already; socket messages have no such pass.)"""
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_nul)]


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object that jsonb stores as it is. orjson encodes NaN and Infinity as null
    and refuses integers beyond 64 bits and deep nesting, so a value that does not come
    back equal from a round trip would be stored changed, or fail to be stored."""
    try:
        same = orjson.loads(orjson.dumps(value)) == value
    except orjson.JSONEncodeError:
        same = False
    if not same:
        raise PydanticCustomError("json_storable", "must hold only finite numbers, integers "
                                  "of at most 64 bits and at most 254 levels of nesting")
    if find_nul(value) is not None:
        raise PydanticCustomError("nul_character", NUL_MESSAGE)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]


class GpuSample(Strict):
    index: int = Field(ge=0, le=MAX_GPUS - 1)
    util: Percent
    mem_used: NonNegative = Field(description="MiB")
    mem_total: float = Field(gt=0, le=GPU_MEM_MAX_MIB, description="MiB")
    temp: float = Field(ge=-40, le=150, description="degrees C")
    power: float = Field(ge=0, le=5000, description="W")
    xid_errors: int | None = Field(None, ge=0, le=XID_MAX,
                                   description="XID errors since the last frame")
    ecc_dbe: int | None = Field(None, ge=0, le=ECC_MAX,
                                description="double-bit ECC errors, cumulative")
    remapped_rows_pending: bool | None = None


class MetricsFrame(Strict):
    ts: float = Field(description="sample time, epoch seconds")
    cpu_util: Percent
    mem_used: NonNegative = Field(description="GB")
    mem_total: float = Field(gt=0, le=HOST_MEM_MAX_GB, description="GB")
    disk_used: NonNegative = Field(description="GB")
    disk_total: float = Field(gt=0, le=DISK_MAX_GB, description="GB")
    gpus: list[GpuSample] = Field(max_length=MAX_GPUS)

    def as_frame(self) -> Frame:
        """The frame as the ingest takes it (see ``checked_metrics``)."""
        return self.model_dump(exclude_none=True)


class HelloGpu(Strict):
    index: int = Field(ge=0, le=MAX_GPUS - 1)
    uuid: _text(128)  # type: ignore[valid-type]
    model: _text(128)  # type: ignore[valid-type]
    memory_total: int = Field(ge=0, le=GPU_MEM_MAX_MIB, description="MiB")


class Hello(Strict):
    type: Literal["hello"]
    machine_id: str = Field(max_length=64)
    agent_version: str = Field("", max_length=64)
    gpus: list[HelloGpu] = Field(default_factory=list, max_length=64)

    @field_validator("gpus")
    @classmethod
    def _each_index_once(cls, gpus: list[HelloGpu]) -> list[HelloGpu]:
        # one upsert stores them all, and it cannot touch a GPU's row twice
        if len({gpu.index for gpu in gpus}) != len(gpus):
            raise PydanticCustomError("duplicate_index", "duplicate GPU index")
        return gpus


class JobUpdate(Strict):
    status: Literal["running", "succeeded", "failed"]
    result: JsonObject | None = None
    error: _text(4096) | None = None  # type: ignore[valid-type]


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


def checked_metrics(data: Any, *, now: float, gpu_count: int) -> Frame:
    """A decoded metrics message, validated as ``MetricsFrame`` and ``check_frame`` would:
    the frame, or their errors (``pydantic.ValidationError`` or ``ValidationFailed``)."""
    frame = _plain_check(data, now, min(gpu_count, MAX_GPUS))
    if frame is not None:
        return frame
    model = MetricsFrame.model_validate(data)
    check_frame(model, now=now, gpu_count=gpu_count)
    return model.as_frame()


_NUMBER = frozenset({float, int})  # by type, not isinstance: a bool is no number here


def _plain_check(data: Any, now: float, gpu_count: int) -> Frame | None:
    """The frame if it is fine, else None (without saying why). Several times cheaper than
    building the models, and it runs for every frame of the fleet."""
    if type(data) is not dict:
        return None
    try:
        ts, cpu_util, gpus = data["ts"], data["cpu_util"], data["gpus"]
        mem_used, mem_total = data["mem_used"], data["mem_total"]
        disk_used, disk_total = data["disk_used"], data["disk_total"]
    except KeyError:
        return None
    if (type(ts) not in _NUMBER or type(cpu_util) not in _NUMBER
            or type(mem_used) not in _NUMBER or type(mem_total) not in _NUMBER
            or type(disk_used) not in _NUMBER or type(disk_total) not in _NUMBER
            or type(gpus) is not list or len(gpus) > gpu_count):
        return None
    if not (now - MAX_AGE_S <= ts <= now + MAX_AHEAD_S and 0 <= cpu_util <= 100
            and 0 <= mem_used <= mem_total <= HOST_MEM_MAX_GB and mem_total > 0
            and 0 <= disk_used <= disk_total <= DISK_MAX_GB and disk_total > 0):
        return None
    checked = []
    seen = 0  # bit i: GPU index i already in this frame
    for gpu in gpus:
        if type(gpu) is not dict:
            return None
        try:
            index, util, temp, power = gpu["index"], gpu["util"], gpu["temp"], gpu["power"]
            used, total = gpu["mem_used"], gpu["mem_total"]
        except KeyError:
            return None
        if (type(index) is not int or type(util) not in _NUMBER or type(temp) not in _NUMBER
                or type(power) not in _NUMBER or type(used) not in _NUMBER
                or type(total) not in _NUMBER):
            return None
        if not (0 <= index < gpu_count and not seen >> index & 1 and 0 <= util <= 100
                and 0 <= used <= total <= GPU_MEM_MAX_MIB and total > 0
                and -40 <= temp <= 150 and 0 <= power <= 5000):
            return None
        seen |= 1 << index
        sample = {"index": index, "util": float(util), "mem_used": float(used),
                  "mem_total": float(total), "temp": float(temp), "power": float(power)}
        if len(gpu) > 6 and not _plain_health(gpu, sample):
            return None
        checked.append(sample)
    return {"ts": float(ts), "cpu_util": float(cpu_util), "mem_used": float(mem_used),
            "mem_total": float(mem_total), "disk_used": float(disk_used),
            "disk_total": float(disk_total), "gpus": checked}


def _plain_health(gpu: dict[str, Any], sample: dict[str, Any]) -> bool:
    """Copies the health fields the GPU carries into ``sample``; False if one is bad."""
    xid, ecc = gpu.get("xid_errors"), gpu.get("ecc_dbe")
    remapped = gpu.get("remapped_rows_pending")
    if xid is not None:
        if type(xid) is not int or not 0 <= xid <= XID_MAX:
            return False
        sample["xid_errors"] = xid
    if ecc is not None:
        if type(ecc) is not int or not 0 <= ecc <= ECC_MAX:
            return False
        sample["ecc_dbe"] = ecc
    if remapped is not None:
        if type(remapped) is not bool:
            return False
        sample["remapped_rows_pending"] = remapped
    return True
