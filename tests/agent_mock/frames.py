"""Range checks for what the simulator sends (CONTRACT.md §6 units and limits)."""

from __future__ import annotations

import time
from typing import Any

FRAME_KEYS = {"ts", "cpu_util", "mem_used", "mem_total", "disk_used", "disk_total", "gpus"}
GPU_KEYS = {"index", "util", "mem_used", "mem_total", "temp", "power"}
HEALTH_KEYS = {"xid_errors", "ecc_dbe", "remapped_rows_pending"}


def check_frame(frame: dict[str, Any], gpu_count: int, gpu_mem_mib: int, *,
                max_temp: float = 100.0) -> None:
    assert set(frame) == FRAME_KEYS
    now = time.time()
    assert now - 60 < frame["ts"] <= now + 1
    assert 0 <= frame["cpu_util"] <= 100
    assert frame["mem_total"] > 0 and 0 <= frame["mem_used"] <= frame["mem_total"]
    assert frame["disk_total"] > 0 and 0 <= frame["disk_used"] <= frame["disk_total"]
    assert [gpu["index"] for gpu in frame["gpus"]] == list(range(gpu_count))
    for gpu in frame["gpus"]:
        assert GPU_KEYS <= set(gpu) <= GPU_KEYS | HEALTH_KEYS
        assert 0 <= gpu["util"] <= 100
        assert gpu["mem_total"] == gpu_mem_mib
        assert isinstance(gpu["mem_used"], int) and 0 <= gpu["mem_used"] <= gpu_mem_mib
        assert 15 <= gpu["temp"] < max_temp
        assert 0 < gpu["power"] <= 1000
        for key in ("cpu_util", "util", "temp", "power"):
            value = frame.get(key, gpu.get(key))
            assert isinstance(value, float | int)
