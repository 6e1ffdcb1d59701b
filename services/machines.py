"""Machines: registration (one by one or imported), descriptive changes, deletion,
maintenance, agent tokens. Lease state changes live in services/allocations.py."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from services.errors import Conflict, Duplicate, NotFound, ValidationFailed
from services.events import AGENT_TOKEN_ROTATED, MACHINE_DELETED, EventSink
from services.job_events import announce_machines
from services.rules import MACHINE_ID_PATTERN, NAME_MAX
from services.tokens import new_opaque_token, token_hash
from storage import machines as machine_store
from storage.errors import DuplicateError
from storage.machines import MachineFilter, NewMachine


def _text(max_length: int, **kwargs: Any) -> Any:
    return Annotated[str, StringConstraints(strip_whitespace=True, max_length=max_length,
                                            **kwargs)]


Name = _text(NAME_MAX, min_length=1)
Region = _text(64)
GpuModel = _text(128)
CpuInfo = _text(256)
SshHost = _text(255)
SshUser = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Url = _text(2048, pattern=r"^https?://\S+$")
GpuCount = Annotated[int, Field(ge=0, le=64)]
GpuMemoryGb = Annotated[int, Field(ge=0, le=4096, description="memory per GPU, GB")]
MemoryGb = Annotated[int, Field(ge=0, le=1_048_576, description="host memory, GB")]
DiskGb = Annotated[int, Field(ge=0, le=10_485_760, description="disk, GB")]
Port = Annotated[int, Field(ge=1, le=65535)]
# pydantic documents it with a format of its own ("ipvanyaddress") that no client knows.
IpAddress = Annotated[IPvAnyAddress, WithJsonSchema(
    {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})]
MAX_LABELS = 50
Labels = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=63)],
         Annotated[str, StringConstraints(max_length=255)]],
    Field(max_length=MAX_LABELS),
]


class MachineSpec(BaseModel):
    """A machine to register (the create fields of CONTRACT.md §3). An unknown field is an
    error, as in every REST body (CONTRACT.md §1a)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    id: Annotated[str, StringConstraints(pattern=MACHINE_ID_PATTERN)] | None = Field(
        None, description="generated when absent")
    name: Name
    region: Region = ""
    ip: IpAddress
    gpu_model: GpuModel
    gpu_count: GpuCount
    gpu_memory_gb: GpuMemoryGb = 0
    cpu_info: CpuInfo = ""
    memory_total: MemoryGb = 0
    disk_total: DiskGb = 0
    ssh_host: SshHost | None = Field(None, description="defaults to the machine's ip")
    ssh_port: Port = 22
    ssh_user: SshUser = "root"
    jupyter_url: Url | None = None
    labels: Labels = Field(default_factory=dict)


_FIXED = "cannot be changed here: use allocate, reclaim or maintenance"


class MachinePatch(BaseModel):
    """Descriptive changes; ``status`` and ``allocation_status`` are refused, and so is
    an unknown field."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: Name | None = None
    region: Region | None = None
    ip: IpAddress | None = None
    gpu_model: GpuModel | None = None
    gpu_count: GpuCount | None = None
    gpu_memory_gb: GpuMemoryGb | None = None
    cpu_info: CpuInfo | None = None
    memory_total: MemoryGb | None = None
    disk_total: DiskGb | None = None
    ssh_host: SshHost | None = None
    ssh_port: Port | None = None
    ssh_user: SshUser | None = None
    jupyter_url: Url | None = None
    labels: Labels | None = None
    status: SkipJsonSchema[Any] = None
    allocation_status: SkipJsonSchema[Any] = None
    id: SkipJsonSchema[Any] = None

    @field_validator("status", "allocation_status", "id", mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        raise ValueError(_FIXED)

    def changes(self) -> dict[str, Any]:
        """The fields the client sent (``status`` and friends never get this far)."""
        sent = self.model_dump(include=self.model_fields_set)
        if sent.get("ip") is not None:
            sent["ip"] = str(sent["ip"])
        return sent


NULLABLE_ON_PATCH = frozenset({"jupyter_url"})


@dataclass(frozen=True)
class Registered:
    machine_id: str
    agent_token: str


def new_machine_id() -> str:
    return f"m-{secrets.token_hex(6)}"


def to_new_machine(spec: MachineSpec, token: str) -> NewMachine:
    return NewMachine(
        id=spec.id or new_machine_id(),
        name=spec.name,
        region=spec.region,
        ip=str(spec.ip),
        gpu_model=spec.gpu_model,
        gpu_count=spec.gpu_count,
        gpu_memory_gb=spec.gpu_memory_gb,
        cpu_info=spec.cpu_info,
        memory_total=spec.memory_total,
        disk_total=spec.disk_total,
        ssh_host=spec.ssh_host or str(spec.ip),
        ssh_port=spec.ssh_port,
        ssh_user=spec.ssh_user,
        jupyter_url=spec.jupyter_url,
        labels=dict(spec.labels),
        agent_token_hash=token_hash(token),
    )


@dataclass(frozen=True)
class MachineDetail:
    machine: asyncpg.Record
    gpus: list[asyncpg.Record]


class MachineService:
    def __init__(self, pool: asyncpg.Pool, events: EventSink) -> None:
        self._pool = pool
        self._events = events

    async def register(self, specs: list[MachineSpec]) -> list[Registered]:
        """Create machines in one transaction; each gets an agent token shown only now."""
        tokens = [new_opaque_token() for _ in specs]
        rows = [to_new_machine(spec, token) for spec, token in zip(specs, tokens, strict=True)]
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await machine_store.insert_many(conn, rows)
            except DuplicateError:
                raise Duplicate("a machine with this id already exists") from None
        # Every hub process learns of the new machines (dashboards list them at once).
        announce_machines(self._events, await machine_store.states(
            self._pool, [row.id for row in rows]))
        return [Registered(row.id, token) for row, token in zip(rows, tokens, strict=True)]

    async def get(self, machine_id: str) -> asyncpg.Record:
        row = await machine_store.get(self._pool, machine_id)
        if row is None:
            raise NotFound("machine not found")
        return row

    async def detail(self, machine_id: str) -> MachineDetail:
        machine = await self.get(machine_id)
        return MachineDetail(machine, await machine_store.gpus(self._pool, machine_id))

    async def page(self, flt: MachineFilter, *, limit: int,
                   offset: int) -> tuple[list[asyncpg.Record], int]:
        return await machine_store.page(self._pool, flt, limit=limit, offset=offset)

    async def patch(self, machine_id: str, patch: MachinePatch) -> asyncpg.Record:
        changes = patch.changes()
        nulled = [k for k, v in changes.items() if v is None and k not in NULLABLE_ON_PATCH]
        if nulled:
            raise ValidationFailed([{"field": k, "message": "must not be null"} for k in nulled])
        if changes:
            async with self._pool.acquire() as conn, conn.transaction():
                if not await machine_store.update(conn, machine_id, changes):
                    raise NotFound("machine not found")
        return await self.get(machine_id)

    async def delete(self, machine_id: str) -> None:
        if await machine_store.delete_idle(self._pool, machine_id):
            self._events.publish(MACHINE_DELETED, {"machine_id": machine_id})
            return
        state = await machine_store.allocation_status(self._pool, machine_id)
        if state is None:
            raise NotFound("machine not found")
        raise Conflict(f"only an idle machine can be deleted; this one is {state}",
                       data={"allocation_status": state})

    async def set_maintenance(self, machine_id: str, enabled: bool, reason: str | None) -> None:
        if enabled:
            changed = await machine_store.enter_maintenance(self._pool, machine_id, reason)
        else:
            changed = await machine_store.leave_maintenance(self._pool, machine_id)
        if changed:
            announce_machines(self._events, await machine_store.states(self._pool,
                                                                       [machine_id]))
            return
        state = await machine_store.allocation_status(self._pool, machine_id)
        if state is None:
            raise NotFound("machine not found")
        wanted = "idle" if enabled else "in maintenance with no open lease or reclaim"
        raise Conflict(f"machine must be {wanted}; it is {state}",
                       data={"allocation_status": state})

    async def rotate_agent_token(self, machine_id: str) -> str:
        token = new_opaque_token()
        if not await machine_store.set_agent_token(self._pool, machine_id, token_hash(token)):
            raise NotFound("machine not found")
        # every hub process forgets the old token and closes its agent socket
        self._events.publish(AGENT_TOKEN_ROTATED, {"machine_id": machine_id})
        return token
