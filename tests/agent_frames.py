"""Metrics frames for the agent protocol tests: a good one to vary, and bad ones."""

from __future__ import annotations

import time

from services.frames import ECC_MAX


def frame(**overrides):
    body = {
        "ts": time.time(), "cpu_util": 40.0, "mem_used": 120.5, "mem_total": 256,
        "disk_used": 800, "disk_total": 2048,
        "gpus": [{"index": i, "util": 80.0 + i, "mem_used": 12288, "mem_total": 24576,
                  "temp": 66.0, "power": 310.5} for i in range(2)],
    }
    body.update(overrides)
    return body


def gpu(**overrides):
    return {"index": 0, "util": 50.0, "mem_used": 100, "mem_total": 1000, "temp": 60.0,
            "power": 100.0, **overrides}


# Each case: what is wrong, and the body that has it. None of them may be stored. Built
# when asked for: a ts relative to now must still be relative to now when it is sent.
def bad_frames() -> dict[str, dict]:
    return {
        "util above 100": frame(gpus=[gpu(util=100.5)]),
        "negative util": frame(gpus=[gpu(util=-1)]),
        "gpu memory used above total": frame(gpus=[gpu(mem_used=2000)]),
        "zero gpu memory total": frame(gpus=[gpu(mem_total=0)]),
        "absurd temperature": frame(gpus=[gpu(temp=400)]),
        "negative power": frame(gpus=[gpu(power=-5)]),
        "unknown gpu index": frame(gpus=[gpu(index=2)]),
        "duplicate gpu index": frame(gpus=[gpu(), gpu()]),
        "number as a string": frame(cpu_util="40"),
        "bool as a number": frame(gpus=[gpu(util=True)]),
        "gpus not a list": frame(gpus={"index": 0}),
        "missing cpu_util": {k: v for k, v in frame().items() if k != "cpu_util"},
        "host memory used above total": frame(mem_used=300),
        "disk used above total": frame(disk_used=4096),
        "ts more than a day old": frame(ts=time.time() - 25 * 3600),
        "ts ten minutes ahead": frame(ts=time.time() + 600),
        "ts not a number": frame(ts="2026-01-01T00:00:00Z"),
        "negative xid count": frame(gpus=[gpu(xid_errors=-1)]),
        "remapped rows not a bool": frame(gpus=[gpu(remapped_rows_pending="yes")]),
        "gpu index as a float": frame(gpus=[gpu(index=0.0)]),
        "gpu not an object": frame(gpus=[0]),
        "gpu without power": frame(gpus=[{k: v for k, v in gpu().items() if k != "power"}]),
        "xid count as a float": frame(gpus=[gpu(xid_errors=1.0)]),
        "negative ecc count": frame(gpus=[gpu(ecc_dbe=-1)]),
        "more gpus than the machine has": frame(gpus=[gpu(index=i) for i in range(3)]),
        "absurd host memory total": frame(mem_total=2_000_000, mem_used=1),
        "zero disk total": frame(disk_total=0, disk_used=0),
        "null cpu_util": frame(cpu_util=None),
        # NaN passes every range check (all comparisons with it are false); sent as the
        # NaN and Infinity literals that Python's json writes
        "ts NaN": frame(ts=float("nan")),
        "cpu_util NaN": frame(cpu_util=float("nan")),
        "infinite gpu temperature": frame(gpus=[gpu(temp=float("inf"))]),
        "infinite host memory used": frame(mem_used=float("inf")),
        "ecc count above its bound": frame(gpus=[gpu(ecc_dbe=ECC_MAX + 1)]),
        "ecc count beyond 64 bits": frame(gpus=[gpu(ecc_dbe=10**30)]),
    }


BAD_FRAMES = list(bad_frames())  # the cases' names
