"""The simulated fleet: what each machine is (GPU model, count, host size, address).

A machine's description depends only on its index, so a later run with the same id
prefix describes the very machines an earlier run registered, with no state but the
tokens file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

REGIONS = ("cn-beijing", "cn-shanghai", "cn-shenzhen", "us-west")


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    memory_gb: int
    memory_mib: int
    tdp_w: float
    idle_w: float
    counts: tuple[int, ...]
    cpu_info: str
    memory_total: int
    disk_total: int


# Memory sizes in MiB are what nvidia-smi reports for these boards.
GPU_MODELS = (
    GpuModel("NVIDIA H100 80GB HBM3", 80, 81559, 700.0, 70.0, (8,),
             "2x Intel Xeon Platinum 8480+ (112 cores)", 2048, 7680),
    GpuModel("NVIDIA A100-SXM4-80GB", 80, 81920, 400.0, 55.0, (8, 4),
             "2x AMD EPYC 7763 (128 cores)", 1024, 3840),
    GpuModel("NVIDIA L40S", 48, 46068, 350.0, 35.0, (8, 4),
             "2x AMD EPYC 9354 (64 cores)", 768, 3840),
    GpuModel("NVIDIA GeForce RTX 4090", 24, 24564, 450.0, 25.0, (4, 8),
             "AMD Ryzen Threadripper PRO 5975WX (32 cores)", 256, 2048),
)
# H100 and A100 boxes dominate a rental fleet; consumer cards fill the cheap end.
_MODEL_WEIGHTS = (4, 3, 2, 3)


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One simulated machine, as registered with the hub."""

    id: str
    index: int
    region: str
    ip: str
    model: GpuModel
    gpu_count: int

    @property
    def ssh_port(self) -> int:
        return 20000 + self.index % 45000

    def create_body(self) -> dict[str, Any]:
        """The create fields of CONTRACT.md §3."""
        short = self.model.name.removeprefix("NVIDIA ").removeprefix("GeForce ")
        return {
            "id": self.id,
            "name": f"Simulated {short} x{self.gpu_count} #{self.index}",
            "region": self.region,
            "ip": self.ip,
            "gpu_model": self.model.name,
            "gpu_count": self.gpu_count,
            "gpu_memory_gb": self.model.memory_gb,
            "cpu_info": self.model.cpu_info,
            "memory_total": self.model.memory_total,
            "disk_total": self.model.disk_total,
            "ssh_host": f"gw-{self.region}.sim.invalid",
            "ssh_port": self.ssh_port,
            "ssh_user": "root",
            "labels": {"simulated": "agent-mock"},
        }


def machine_id(prefix: str, index: int) -> str:
    return f"{prefix}{index:05d}"


def machine_spec(prefix: str, index: int) -> MachineSpec:
    """The machine number ``index`` (1-based) of the fleet."""
    rng = random.Random(index)
    model = rng.choices(GPU_MODELS, weights=_MODEL_WEIGHTS)[0]
    n = index - 1
    # 10.a.b.c with c in 1..254: unique for the first 16 million machines.
    ip = f"10.{(n // (256 * 254)) % 256}.{(n // 254) % 256}.{n % 254 + 1}"
    return MachineSpec(id=machine_id(prefix, index), index=index,
                       region=REGIONS[n % len(REGIONS)], ip=ip, model=model,
                       gpu_count=rng.choice(model.counts))


def fleet(prefix: str, machines: int) -> list[MachineSpec]:
    return [machine_spec(prefix, index) for index in range(1, machines + 1)]
