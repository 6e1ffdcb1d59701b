"""The hub process under test, found by its listening port (for the benchmarks' CPU and
memory readings)."""

from __future__ import annotations

import sys

import psutil


def hub_pid(hub: str) -> int:
    """The pid listening on ``hub``'s port; exits when there is none (pass --hub-pid)."""
    port = int(hub.rsplit(":", 1)[1].split("/")[0])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    sys.exit(f"no process listens on port {port}; pass --hub-pid")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss
