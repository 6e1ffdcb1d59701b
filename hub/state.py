"""The latest sample of every machine, and what each process must know about machines
to route their data (liveness, lease state, tenant). Fed by local frames, by the other
processes through the bus, and by machine_status events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(slots=True)
class Sample:
    machine_id: str
    ts: float  # sample time, from the agent
    received: float  # receive time at the hub (liveness never trusts the agent's clock)
    cpu_util: float
    mem_used: float
    mem_total: float
    disk_used: float
    disk_total: float
    gpu_util: float | None  # mean over the GPUs, percent; None without GPUs
    gpu_mem: float  # MiB used, summed over the GPUs
    gpus: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The sample as Redis, the bus and the alert rules see it."""
        return {
            "machine_id": self.machine_id, "ts": self.ts, "received": self.received,
            "cpu_util": self.cpu_util, "mem_used": self.mem_used, "mem_total": self.mem_total,
            "disk_used": self.disk_used, "disk_total": self.disk_total,
            "gpu_util": self.gpu_util, "gpu_mem": self.gpu_mem, "gpus": self.gpus,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return cls(**{name: data[name] for name in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(slots=True)
class MachineInfo:
    status: str = "offline"
    allocation_status: str = "idle"
    tenant_id: int | None = None
    version: int = 0  # machines.version of what this says


class LatestState:
    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.machines: dict[str, MachineInfo] = {}
        self.by_tenant: dict[int, set[str]] = {}
        # Machines with a new sample since the dashboards last took this set.
        self.changed: set[str] = set()

    def load(self, rows: list[Any]) -> None:
        """Machines as the database knows them (at start-up)."""
        self.machines = {}
        self.by_tenant = {}
        for row in rows:
            self.machines[row["id"]] = MachineInfo(row["status"], row["allocation_status"],
                                                   None, row["version"])
            self._lease(row["id"], row["tenant_id"])

    def apply(self, sample: Sample) -> None:
        known = self.samples.get(sample.machine_id)
        if known is None or sample.ts >= known.ts:
            self.samples[sample.machine_id] = sample
            self.changed.add(sample.machine_id)

    def apply_status(self, data: dict[str, Any]) -> tuple[bool, int | None]:
        """Apply a machine_status event unless it is not newer than what is known
        (events from several processes meet in any order, and the periodic resync repeats
        what is known); whether it was applied, and the tenant the machine had before."""
        info = self.machines.setdefault(data["machine_id"], MachineInfo())
        previous = info.tenant_id
        version = data.get("version", 0)
        if version <= info.version:
            return False, previous
        info.version = version
        info.status = data.get("status") or info.status
        info.allocation_status = data.get("allocation_status") or info.allocation_status
        self._lease(data["machine_id"], data.get("tenant_id"))
        return True, previous

    def _lease(self, machine_id: str, tenant_id: int | None) -> None:
        info = self.machines[machine_id]
        if info.tenant_id is not None and info.tenant_id != tenant_id:
            held = self.by_tenant.get(info.tenant_id)
            if held is not None:
                held.discard(machine_id)
                if not held:
                    del self.by_tenant[info.tenant_id]
        info.tenant_id = tenant_id
        if tenant_id is not None:
            self.by_tenant.setdefault(tenant_id, set()).add(machine_id)

    def remove(self, machine_id: str) -> None:
        if machine_id in self.machines:
            self._lease(machine_id, None)
        self.samples.pop(machine_id, None)
        self.machines.pop(machine_id, None)
        self.changed.discard(machine_id)

    def knows(self, machine_id: str) -> bool:
        """Whether the machine exists (as far as the database has told this process)."""
        return machine_id in self.machines

    def tenant_of(self, machine_id: str) -> int | None:
        info = self.machines.get(machine_id)
        return info.tenant_id if info is not None else None

    def status(self, machine_id: str) -> str | None:
        info = self.machines.get(machine_id)
        return info.status if info is not None else None

    def gpu_util(self, machine_id: str) -> float | None:
        sample = self.samples.get(machine_id)
        return sample.gpu_util if sample is not None else None

    def last_heard(self, machine_id: str, recorded: datetime | None) -> datetime | None:
        """When the hub last received a frame of the machine: its latest sample's receive
        time, or ``recorded`` (machines.last_heartbeat_at) when that is later. The stored
        time is brought up to date by the liveness scan only, every monitor interval."""
        sample = self.samples.get(machine_id)
        if sample is None:
            return recorded
        received = datetime.fromtimestamp(sample.received, UTC)
        return received if recorded is None or received > recorded else recorded

    def avg_gpu_util(self) -> float | None:
        """Mean of the online machines' latest gpu_util; None when none reports."""
        values = [
            sample.gpu_util for machine_id, sample in self.samples.items()
            if sample.gpu_util is not None and self.status(machine_id) == "online"
        ]
        return round(sum(values) / len(values), 2) if values else None
