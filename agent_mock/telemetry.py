"""Believable telemetry for one machine: the metrics frame of CONTRACT.md §6.

Each GPU's utilisation is a random walk pulled back toward the machine's workload
(busy machines near a per-machine target, idle ones near zero); memory follows
utilisation, temperature and power follow it with a lag. Every value is clamped to the
range the hub accepts. A step costs a few microseconds per GPU: no per-frame heavy work.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from agent_mock.fleet import MachineSpec

# Temperatures: healthy boards stay below the hub's overheat threshold (85 °C by
# default) and never reach 90 °C; overheating ones stay above 90 °C.
HEALTHY_MAX_C = 88.0
OVERHEAT_MIN_C = 90.5
OVERHEAT_MAX_C = 99.5
# Per-frame chance that a busy machine's job ends, or an idle one gets work.
WORKLOAD_FLIP = 0.002
# Pull toward the target per frame (0: never, 1: at once).
_UTIL_PULL = 0.3
_MEM_PULL = 0.5
_TEMP_PULL = 0.25
_POWER_PULL = 0.6
_HOST_PULL = 0.3


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class MachineSim:
    """The state of one simulated machine; ``frame`` advances it by one sample."""

    __slots__ = ("_busy_target", "_disk_used", "_ecc_dbe", "_host_mem", "_mem_frac",
                 "_remapped", "_rng", "_targets", "ambient", "busy", "cpu_util",
                 "health_rate", "mem", "overheat", "power", "spec", "temp", "util", "uuids")

    def __init__(self, spec: MachineSpec, rng: random.Random, *, busy: bool = True,
                 overheat: bool = False, health_rate: float = 0.0) -> None:
        self.spec = spec
        self._rng = rng
        self.overheat = overheat
        self.health_rate = health_rate
        self.uuids = [f"GPU-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
                      for _ in range(spec.gpu_count)]
        self._busy_target = rng.uniform(85.0, 100.0) if overheat else rng.uniform(35.0, 95.0)
        self._mem_frac = rng.uniform(0.4, 0.95)
        self.ambient = rng.uniform(27.0, 36.0)
        self.busy = busy or overheat
        self._targets: list[float] = []
        self._retarget()
        count = spec.gpu_count
        self.util = list(self._targets)
        self.mem = [self._mem_target(u) for u in self.util]
        self.temp = [self._temp_target(u) for u in self.util]
        self.power = [self._power_target(u) for u in self.util]
        self._ecc_dbe = [0] * count
        self._remapped = [False] * count
        mean = sum(self.util) / count if count else 0.0
        self.cpu_util = self._cpu_target(mean)
        self._host_mem = self._host_mem_target(mean)
        self._disk_used = spec.model.disk_total * rng.uniform(0.1, 0.7)

    def set_busy(self, busy: bool) -> None:
        """A job started (True) or ended (False) on the machine."""
        self.busy = busy or self.overheat
        self._retarget()

    def hello_gpus(self) -> list[dict[str, Any]]:
        model = self.spec.model
        return [{"index": i, "uuid": gpu_uuid, "model": model.name,
                 "memory_total": model.memory_mib}
                for i, gpu_uuid in enumerate(self.uuids)]

    def frame(self, ts: float) -> dict[str, Any]:
        """Advance one sample and return the metrics frame (a fresh dict)."""
        rng = self._rng
        if not self.overheat and rng.random() < WORKLOAD_FLIP:
            self.set_busy(not self.busy)
        model = self.spec.model
        noise = 4.0 if self.busy else 0.5
        gpus = []
        total = 0.0
        for i, target in enumerate(self._targets):
            util = _clamp(self.util[i] + _UTIL_PULL * (target - self.util[i])
                          + rng.gauss(0.0, noise), 0.0, 100.0)
            self.util[i] = util
            total += util
            mem = self.mem[i]
            mem = _clamp(mem + _MEM_PULL * (self._mem_target(util) - mem), 0.0,
                         model.memory_mib)
            self.mem[i] = mem
            temp = self.temp[i]
            temp += _TEMP_PULL * (self._temp_target(util) - temp) + rng.gauss(0.0, 0.3)
            temp = (_clamp(temp, OVERHEAT_MIN_C, OVERHEAT_MAX_C) if self.overheat
                    else _clamp(temp, self.ambient - 3.0, HEALTHY_MAX_C))
            self.temp[i] = temp
            power = self.power[i]
            power += _POWER_PULL * (self._power_target(util) - power)
            power = _clamp(power + rng.gauss(0.0, 0.015 * model.tdp_w),
                           0.5 * model.idle_w, 1.05 * model.tdp_w)
            self.power[i] = power
            gpu = {"index": i, "util": round(util, 1), "mem_used": int(mem),
                   "mem_total": model.memory_mib, "temp": round(temp, 1),
                   "power": round(power, 1)}
            if self.health_rate:
                self._health(i, gpu)
            gpus.append(gpu)
        mean = total / len(gpus) if gpus else 0.0
        self.cpu_util = _clamp(self.cpu_util + _HOST_PULL * (self._cpu_target(mean)
                                                             - self.cpu_util)
                               + rng.gauss(0.0, 2.0), 0.0, 100.0)
        self._host_mem = _clamp(self._host_mem + _HOST_PULL * (self._host_mem_target(mean)
                                                               - self._host_mem),
                                1.0, 0.98 * model.memory_total)
        self._disk_used = _clamp(self._disk_used + rng.gauss(0.0, 0.0005 * model.disk_total),
                                 0.05 * model.disk_total, 0.85 * model.disk_total)
        return {"ts": round(ts, 3), "cpu_util": round(self.cpu_util, 1),
                "mem_used": round(self._host_mem, 1), "mem_total": model.memory_total,
                "disk_used": round(self._disk_used, 1), "disk_total": model.disk_total,
                "gpus": gpus}

    def _retarget(self) -> None:
        rng = self._rng
        if self.busy:
            self._targets = [_clamp(self._busy_target + rng.gauss(0.0, 5.0), 0.0, 100.0)
                             for _ in range(self.spec.gpu_count)]
        else:
            self._targets = [rng.uniform(0.0, 2.0) for _ in range(self.spec.gpu_count)]

    def _mem_target(self, util: float) -> float:
        # A training job holds its memory even when utilisation dips.
        share = 0.01 + self._mem_frac * min(1.0, util / 60.0) if self.busy else 0.005
        return self.spec.model.memory_mib * min(0.98, share)

    def _temp_target(self, util: float) -> float:
        if self.overheat:
            return 92.0 + 6.0 * util / 100.0
        return self.ambient + 0.45 * util

    def _power_target(self, util: float) -> float:
        model = self.spec.model
        return model.idle_w + (model.tdp_w - model.idle_w) * util / 100.0

    def _cpu_target(self, gpu_util: float) -> float:
        return 3.0 + 0.35 * gpu_util

    def _host_mem_target(self, gpu_util: float) -> float:
        return 6.0 + self.spec.model.memory_total * (0.05 + 0.5 * gpu_util / 100.0)

    def _health(self, i: int, gpu: dict[str, Any]) -> None:
        """Rare hardware trouble: an XID burst, a double-bit ECC error, pending row
        remaps. ECC counts are cumulative and remaps stay pending, so once seen they are
        reported in every later frame."""
        rng = self._rng
        if rng.random() < self.health_rate:
            kind = rng.randrange(3)
            if kind == 0:
                gpu["xid_errors"] = rng.randint(1, 3)
            elif kind == 1:
                self._ecc_dbe[i] += 1
            else:
                self._remapped[i] = True
        if self._ecc_dbe[i]:
            gpu["ecc_dbe"] = self._ecc_dbe[i]
        if self._remapped[i]:
            gpu["remapped_rows_pending"] = True
