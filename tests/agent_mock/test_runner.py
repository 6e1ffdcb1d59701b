"""Which simulated machines overheat, start idle or fall silent (agent_mock/runner.py)."""

from __future__ import annotations

import random

import pytest

from agent_mock.runner import chosen, run


@pytest.mark.parametrize(("count", "fraction", "wanted"), [
    (2000, 0.01, 20), (20, 0.2, 4), (20, 0.01, 1), (1, 0.2, 1), (5, 0.0, 0), (3, 1.0, 3),
])
def test_a_share_of_the_fleet_rounds_to_machines_and_above_0_to_at_least_one(
        count, fraction, wanted):
    picked = chosen(random.Random(7), count, fraction)
    assert len(picked) == wanted and picked <= set(range(count))


async def test_a_dev_sized_fleet_has_one_overheating_and_one_silent_machine(fake_hub,
                                                                           make_options):
    counters = await run(make_options(machines=20, overheat_fraction=0.01,
                                      silent_fraction=0.01, silent_after=0.2, duration=0.6))
    assert counters.silent == 1
    hot = [machine_id for machine_id in fake_hub.messages
           if fake_hub.frames_of(machine_id) and all(
               gpu["temp"] > 90 for frame in fake_hub.frames_of(machine_id)
               for gpu in frame["gpus"])]
    assert len(hot) == 1
