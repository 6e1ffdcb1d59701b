"""Metrics frame validation: the plain pass on the socket path accepts exactly what the
models and check_frame accept, and reads good frames the same way."""

from __future__ import annotations

import random
import time

import pytest
from pydantic import ValidationError

from services.errors import ValidationFailed
from services.frames import ECC_MAX, MetricsFrame, _plain_check, check_frame, checked_metrics
from tests.agent_frames import BAD_FRAMES, bad_frames, frame, gpu

GPU_COUNT = 2


def _through_the_models(data, now):
    model = MetricsFrame.model_validate(data)
    check_frame(model, now=now, gpu_count=GPU_COUNT)
    return model.as_frame()


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_every_bad_frame_is_refused(case):
    with pytest.raises((ValidationError, ValidationFailed)):
        checked_metrics(bad_frames()[case], now=time.time(), gpu_count=GPU_COUNT)


def test_a_refused_frame_names_the_models_errors():
    with pytest.raises(ValidationError) as refused:
        checked_metrics(bad_frames()["util above 100"], now=time.time(), gpu_count=GPU_COUNT)
    assert [e["loc"] for e in refused.value.errors()] == [("gpus", 0, "util")]
    with pytest.raises(ValidationFailed) as failed:
        checked_metrics(bad_frames()["duplicate gpu index"], now=time.time(),
                        gpu_count=GPU_COUNT)
    assert failed.value.data["errors"] == [{"field": "gpus[1].index",
                                            "message": "duplicate GPU index"}]


GOOD_FRAMES = {
    "floats": frame(),
    "integers for floats": frame(cpu_util=40, gpus=[gpu(util=50, temp=60, power=100)]),
    "no gpus": frame(gpus=[]),
    "bounds": frame(cpu_util=0, mem_used=256, gpus=[gpu(util=100, temp=-40, power=5000,
                                                        mem_used=1000)]),
    "health fields": frame(gpus=[gpu(xid_errors=3, ecc_dbe=0, remapped_rows_pending=True),
                                 gpu(index=1, xid_errors=None)]),
    "unknown fields": {**frame(type="metrics", hostname="x"), "gpus": [gpu(fan=30)]},
    "ts an hour old": frame(ts=time.time() - 3600),
}


@pytest.mark.parametrize("case", list(GOOD_FRAMES))
def test_a_good_frame_reads_as_through_the_models(case):
    now = time.time()
    data = GOOD_FRAMES[case]
    assert checked_metrics(data, now=now, gpu_count=GPU_COUNT) == _through_the_models(data,
                                                                                       now)


@pytest.mark.parametrize("case", list(GOOD_FRAMES))
def test_a_good_frame_takes_the_plain_path(case):
    # the plain pass is the hot path: good frames must not fall through to the models
    assert _plain_check(GOOD_FRAMES[case], time.time(), GPU_COUNT) is not None


# Values that sit on, just inside or just outside some field's rule, or of the wrong type;
# numbers no JSON should carry (NaN, infinities) and integers past every column's range.
EDGES = [0, 1, -1, 0.5, 40, 63, 64, 100, 100.5, 150, 151, -40, -41, 1000, 5000, 5001,
         4 * 1024 * 1024 + 1, 1_048_577, 1e30, True, False, None, "1", [], {},
         float("nan"), float("inf"), float("-inf"), ECC_MAX, ECC_MAX + 1, 2**63, 2**64 - 1,
         10**30, -(10**30), 10**400]
FRAME_FIELDS = ["ts", "cpu_util", "mem_used", "mem_total", "disk_used", "disk_total"]
GPU_FIELDS = ["index", "util", "mem_used", "mem_total", "temp", "power", "xid_errors",
              "ecc_dbe", "remapped_rows_pending"]
MISSING = object()


def _mutant(rng: random.Random, now: float) -> dict:
    data = frame(ts=now, gpus=[gpu(index=0), gpu(index=1)])
    for _ in range(rng.randint(1, 3)):
        where = rng.random()
        value = rng.choice([*EDGES, MISSING])
        if where < 0.3:
            key, target = rng.choice(FRAME_FIELDS), data
        else:
            key, target = rng.choice(GPU_FIELDS), rng.choice(data["gpus"])
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
    return data


def test_mutated_frames_get_the_same_verdict_as_through_the_models():
    rng, now = random.Random(4), time.time()
    accepted = 0
    for _ in range(5000):
        data = _mutant(rng, now)
        try:
            expected = _through_the_models(data, now)
        except (ValidationError, ValidationFailed) as exc:
            with pytest.raises(type(exc)):
                checked_metrics(data, now=now, gpu_count=GPU_COUNT)
            continue
        assert checked_metrics(data, now=now, gpu_count=GPU_COUNT) == expected, data
        accepted += 1
    assert 200 < accepted < 4800  # both verdicts well represented
