"""The alert rules evaluated on every metrics frame: GPU overheating for N consecutive
samples, XID errors, new double-bit ECC errors, pending row remaps, a full disk.

``observe`` is synchronous and cheap (it runs for every frame); it returns the alert
changes to make. It remembers which alerts are open, so a condition that persists costs
no database write except a periodic refresh of ``last_seen_at``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.alerts import DISK_FULL, GPU_ECC, GPU_OVERHEAT, GPU_REMAPPED_ROWS, GPU_XID

REFRESH_S = 60.0
# index, util, mem_used, mem_total, temp, power: a GPU dict with more carries health fields
_BASE_FIELDS = 6


@dataclass(frozen=True)
class Change:
    raise_: bool  # False: resolve
    machine_id: str
    rule: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Machine:
    hot_streak: dict[int, int] = field(default_factory=dict)  # gpu index -> samples above
    ecc_seen: dict[int, int] = field(default_factory=dict)  # gpu index -> last ecc_dbe


class FrameRules:
    def __init__(self, *, temp_c: float, temp_samples: int, disk_pct: float) -> None:
        self._temp_c = temp_c
        self._temp_samples = temp_samples
        self._disk_pct = disk_pct
        self._machines: dict[str, _Machine] = {}
        self._open: dict[tuple[str, str], float] = {}  # open alert -> when last raised

    def load(self, alerts: list[dict[str, Any]]) -> None:
        """At start-up: the open alerts, and the latest ECC alert of each machine."""
        for alert in alerts:
            self.note(alert)
        for alert in alerts:  # refresh open ones at the next sighting
            if alert["status"] != "resolved":
                self._open[(alert["machine_id"], alert["rule"])] = 0.0

    def note(self, alert: dict[str, Any]) -> None:
        """Keep track of alert changes made elsewhere (other processes, admins, or before
        a restart): which are open, and the ECC counts already alerted on."""
        key = (alert["machine_id"], alert["rule"])
        if alert["status"] == "resolved":
            self._open.pop(key, None)
        else:
            self._open.setdefault(key, time.monotonic())
        if alert["rule"] == GPU_ECC:
            seen = self._machines.setdefault(alert["machine_id"], _Machine()).ecc_seen
            for index, count in (alert.get("details") or {}).get("ecc_dbe", {}).items():
                seen[int(index)] = max(seen.get(int(index), 0), int(count))

    def forget(self, machine_id: str) -> None:
        self._machines.pop(machine_id, None)

    def observe(self, machine_id: str, gpus: list[dict[str, Any]], disk_used: float,
                disk_total: float) -> list[Change]:
        """The alert changes one frame calls for (usually none). The common case, nothing
        wrong and nothing open, touches no dict beyond the machine's own."""
        state = self._machines.get(machine_id)
        if state is None:
            state = self._machines[machine_id] = _Machine()
        changes: list[Change] = []
        self._overheat(machine_id, state, gpus, changes)
        if any(len(gpu) > _BASE_FIELDS for gpu in gpus):  # health fields present
            self._health(machine_id, state, gpus, changes)
        disk_pct = disk_used / disk_total * 100
        full = disk_pct > self._disk_pct
        if full or (machine_id, DISK_FULL) in self._open:
            self._state(changes, machine_id, DISK_FULL, full,
                        lambda: (f"disk {disk_pct:.1f}% full (threshold {self._disk_pct:g}%)",
                                 {"disk_used": disk_used, "disk_total": disk_total}))
        return changes

    def _overheat(self, machine_id: str, state: _Machine, gpus: list[dict[str, Any]],
                  changes: list[Change]) -> None:
        streak = state.hot_streak
        limit = self._temp_c
        if not streak and (machine_id, GPU_OVERHEAT) not in self._open and all(
                gpu["temp"] <= limit for gpu in gpus):
            return  # the usual case: all cool, nothing open
        for gpu in gpus:
            if gpu["temp"] > limit:
                streak[gpu["index"]] = streak.get(gpu["index"], 0) + 1
            elif streak:
                streak.pop(gpu["index"], None)
        if not streak:
            if (machine_id, GPU_OVERHEAT) in self._open:
                self._state(changes, machine_id, GPU_OVERHEAT, False)
            return
        hot = [g for g in gpus if streak.get(g["index"], 0) >= self._temp_samples]
        if hot:
            worst = max(hot, key=lambda g: g["temp"])
            self._state(changes, machine_id, GPU_OVERHEAT, True, lambda: (
                f"GPU {worst['index']} at {worst['temp']:.0f} C for {self._temp_samples}+ "
                f"samples (threshold {self._temp_c:g} C)",
                {"gpus": {str(g["index"]): g["temp"] for g in hot}}))

    def _health(self, machine_id: str, state: _Machine, gpus: list[dict[str, Any]],
                changes: list[Change]) -> None:
        xid = {g["index"]: g["xid_errors"] for g in gpus if g.get("xid_errors")}
        if xid:  # events: raised on every occurrence, resolved after a quiet period
            changes.append(Change(True, machine_id, GPU_XID,
                                  f"XID errors on GPU {', '.join(map(str, sorted(xid)))}",
                                  {"xid_errors": {str(k): v for k, v in xid.items()}}))
        grown = {}
        for gpu in gpus:
            count = gpu.get("ecc_dbe")
            if count is None:
                continue
            before = state.ecc_seen.get(gpu["index"], 0)
            if count > before:
                grown[gpu["index"]] = count
            state.ecc_seen[gpu["index"]] = count
        if grown:
            changes.append(Change(True, machine_id, GPU_ECC,
                                  f"double-bit ECC errors on GPU "
                                  f"{', '.join(map(str, sorted(grown)))}",
                                  {"ecc_dbe": {str(k): v for k, v in grown.items()}}))
        reported = [g for g in gpus if g.get("remapped_rows_pending") is not None]
        if reported:
            pending = [g["index"] for g in reported if g["remapped_rows_pending"]]
            self._state(changes, machine_id, GPU_REMAPPED_ROWS, bool(pending), lambda: (
                f"row remapping pending on GPU {', '.join(map(str, pending))}: reset the GPU",
                {"gpus": pending}))

    def _state(self, changes: list[Change], machine_id: str, rule: str, active: bool,
               describe: Callable[[], tuple[str, dict[str, Any]]] | None = None) -> None:
        """A rule whose condition holds or not: raise on the way in (and refresh now and
        then), resolve on the way out. ``describe`` builds the message only when needed."""
        key = (machine_id, rule)
        now = time.monotonic()
        if active:
            last = self._open.get(key)
            if last is None or now - last >= REFRESH_S:
                self._open[key] = now
                message, details = describe() if describe else ("", {})
                changes.append(Change(True, machine_id, rule, message, details))
        elif key in self._open:
            del self._open[key]
            changes.append(Change(False, machine_id, rule))
