"""The simulated dynamics: ranges, workloads, overheating, health events."""

from __future__ import annotations

import itertools
import random
import re
import time
from statistics import mean

from agent_mock.fleet import machine_spec
from agent_mock.telemetry import HEALTHY_MAX_C, MachineSim
from tests.agent_mock.frames import HEALTH_KEYS, check_frame


def _frames(sim, steps):
    return [sim.frame(time.time()) for _ in range(steps)]


def test_every_value_stays_in_range_over_a_long_run():
    rng = random.Random(1)
    for index in range(1, 40):
        spec = machine_spec("sim-", index)
        sim = MachineSim(spec, rng, busy=index % 3 != 0)
        for frame in _frames(sim, 300):
            check_frame(frame, spec.gpu_count, spec.model.memory_mib, max_temp=90.0)


def test_busy_gpus_work_hard_and_run_warm_while_idle_ones_rest_near_zero():
    spec = machine_spec("sim-", 1)
    rng = random.Random(2)
    busy = MachineSim(spec, rng, busy=True)
    idle = MachineSim(spec, rng, busy=False)
    busy.set_busy(True)  # no flip during the test either way
    busy_frames, idle_frames = _frames(busy, 200), _frames(idle, 200)

    def avg(frames, key):
        return mean(gpu[key] for frame in frames for gpu in frame["gpus"])

    assert avg(idle_frames, "util") < 3
    assert avg(busy_frames, "util") > 25
    assert avg(busy_frames, "temp") > avg(idle_frames, "temp") + 10
    assert avg(busy_frames, "power") > avg(idle_frames, "power") + 50
    assert avg(busy_frames, "mem_used") > 20 * avg(idle_frames, "mem_used")


def test_temperature_follows_load_with_a_lag():
    spec = machine_spec("sim-", 1)
    sim = MachineSim(spec, random.Random(3), busy=False)
    cold = sim.frame(time.time())["gpus"][0]["temp"]
    sim.set_busy(True)
    temps = [frame["gpus"][0]["temp"] for frame in _frames(sim, 30)]
    assert temps[0] < temps[-1]
    assert temps[0] - cold < temps[-1] - cold  # not all at once
    assert max(temps) < HEALTHY_MAX_C + 0.01


def test_utilisation_drifts_rather_than_jumps():
    spec = machine_spec("sim-", 1)
    sim = MachineSim(spec, random.Random(4), busy=True)
    utils = [frame["gpus"][0]["util"] for frame in _frames(sim, 200)]
    steps = [abs(b - a) for a, b in itertools.pairwise(utils)]
    assert len(set(utils)) > 50
    assert mean(steps) < 10


def test_overheating_machines_stay_above_90_degrees():
    rng = random.Random(5)
    for index in range(1, 10):
        spec = machine_spec("sim-", index)
        sim = MachineSim(spec, rng, busy=False, overheat=True)
        for frame in _frames(sim, 100):
            check_frame(frame, spec.gpu_count, spec.model.memory_mib)
            assert all(90 < gpu["temp"] < 100 for gpu in frame["gpus"])


def test_health_events_appear_at_the_asked_rate_and_stick_when_cumulative():
    spec = machine_spec("sim-", 1)
    assert all(not HEALTH_KEYS & set(gpu) for frame in _frames(MachineSim(
        spec, random.Random(6)), 200) for gpu in frame["gpus"])

    sim = MachineSim(spec, random.Random(6), health_rate=0.05)
    frames = _frames(sim, 200)
    seen = {key for frame in frames for gpu in frame["gpus"] for key in HEALTH_KEYS & set(gpu)}
    assert seen == HEALTH_KEYS
    for frame in frames:
        check_frame(frame, spec.gpu_count, spec.model.memory_mib)
        for gpu in frame["gpus"]:
            assert isinstance(gpu.get("xid_errors", 1), int) and gpu.get("xid_errors", 1) > 0
            assert gpu.get("remapped_rows_pending", True) is True
    ecc = [frame["gpus"][0].get("ecc_dbe", 0) for frame in frames]
    assert ecc == sorted(ecc)


def test_hello_describes_every_gpu():
    spec = machine_spec("sim-", 1)
    gpus = MachineSim(spec, random.Random(7)).hello_gpus()
    assert [gpu["index"] for gpu in gpus] == list(range(spec.gpu_count))
    assert all(re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                            r"[0-9a-f]{12}", gpu["uuid"]) for gpu in gpus)
    assert len({gpu["uuid"] for gpu in gpus}) == spec.gpu_count
    assert all(gpu["model"] == spec.model.name for gpu in gpus)
    assert all(gpu["memory_total"] == spec.model.memory_mib for gpu in gpus)


def test_the_hub_accepts_the_frames():
    # The hub's own models: catches drift between the simulator and the contract.
    from services.frames import Hello, MetricsFrame, checked_metrics
    from services.frames import check_frame as hub_check_frame

    spec = machine_spec("sim-", 3)
    sim = MachineSim(spec, random.Random(8), health_rate=0.05)
    Hello.model_validate({"type": "hello", "machine_id": spec.id,
                          "agent_version": "agent-mock/1", "gpus": sim.hello_gpus()})
    for frame in _frames(sim, 50):
        hub_check_frame(MetricsFrame.model_validate(frame), now=time.time(),
                        gpu_count=spec.gpu_count)
        checked_metrics({"type": "metrics", **frame}, now=time.time(),
                        gpu_count=spec.gpu_count)
