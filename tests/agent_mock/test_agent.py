"""Agents against the fake hub: hello and frames, commands, reconnects, bad tokens."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from aiohttp.test_utils import TestServer

from agent_mock.counters import Counters
from agent_mock.fleet import machine_spec
from agent_mock.options import Options
from agent_mock.registration import read_tokens, write_tokens
from agent_mock.runner import run
from tests.agent_mock.fake_hub import FakeHub
from tests.agent_mock.frames import check_frame


async def _until(condition, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


def _check_frames_of(hub, machine_id, **kwargs):
    spec = machine_spec("sim-", int(machine_id.removeprefix("sim-")))
    frames = hub.frames_of(machine_id)
    assert frames, f"no frame from {machine_id}"
    for frame in frames:
        check_frame(frame, spec.gpu_count, spec.model.memory_mib, **kwargs)
    return frames


async def test_ws_agents_say_hello_then_stream_valid_frames(fake_hub, make_options):
    counters = await run(make_options(machines=4, duration=0.5))

    assert sorted(fake_hub.messages) == [f"sim-{i:05d}" for i in range(1, 5)]
    for machine_id, messages in fake_hub.messages.items():
        spec = machine_spec("sim-", int(machine_id.removeprefix("sim-")))
        hello = messages[0]
        assert hello["type"] == "hello"
        assert hello["machine_id"] == machine_id
        assert hello["agent_version"] == "agent-mock/1"
        assert [gpu["index"] for gpu in hello["gpus"]] == list(range(spec.gpu_count))
        assert all(gpu["memory_total"] == spec.model.memory_mib and
                   gpu["model"] == spec.model.name and gpu["uuid"].startswith("GPU-")
                   for gpu in hello["gpus"])
        assert {m["type"] for m in messages[1:]} == {"metrics"}
        frames = _check_frames_of(fake_hub, machine_id, max_temp=90.0)
        assert len(frames) >= 5
        assert [f["ts"] for f in frames] == sorted(f["ts"] for f in frames)
    assert counters.machines == 4
    assert counters.frames == len(fake_hub.frames)
    assert counters.errors == counters.reconnects == counters.stopped == 0
    assert counters.connected == 0  # every socket was closed at the end


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_commands_are_answered_running_then_succeeded(fake_hub, make_options,
                                                            transport):
    commands = [{"job_id": "job-1", "action": "reclaim",
                 "params": {"allocation_id": "alloc-1", "reason": "expired"}},
                {"job_id": "job-2", "action": "ssh_reset", "params": {"public_key": "ssh-ed"}},
                {"job_id": "job-3", "action": "format_disk", "params": {}}]
    queue = fake_hub.ws_commands if transport == "ws" else fake_hub.http_commands
    queue["sim-00002"] = commands

    counters = await run(make_options(transport=transport, duration=0.6))

    reclaim = fake_hub.updates_of("job-1")
    assert [u["status"] for u in reclaim] == ["running", "succeeded"]
    assert reclaim[1]["result"]["wiped"] is True
    assert reclaim[1]["result"]["keys_reset"] is True
    ssh = fake_hub.updates_of("job-2")
    assert [u["status"] for u in ssh] == ["running", "succeeded"]
    assert ssh[1]["result"]["public_key_installed"] is True
    unknown = fake_hub.updates_of("job-3")
    assert [u["status"] for u in unknown] == ["running", "failed"]
    assert "format_disk" in unknown[1]["error"]
    assert {machine for machine, _, _ in fake_hub.job_updates} == {"sim-00002"}
    # The hub's own model of a job update: catches drift from the contract.
    from services.frames import JobUpdate

    for _, _, update in fake_hub.job_updates:
        JobUpdate.model_validate(update)
    assert (counters.commands, counters.answered) == (3, 3)
    # Commands arrive once: the fake hub hands them out a single time.
    assert not queue


async def test_a_reclaimed_machine_goes_idle(fake_hub, make_options):
    fake_hub.ws_commands["sim-00001"] = [{"job_id": "job-9", "action": "reclaim",
                                          "params": {}}]
    await run(make_options(machines=1, idle_fraction=0.0, duration=1.2))
    frames = fake_hub.frames_of("sim-00001")
    assert max(g["util"] for g in frames[0]["gpus"]) > 10
    assert max(g["util"] for g in frames[-1]["gpus"]) < 10


async def test_http_agents_post_valid_heartbeats(fake_hub, make_options):
    counters = await run(make_options(transport="http", machines=3, duration=0.5))
    for i in range(1, 4):
        assert len(_check_frames_of(fake_hub, f"sim-{i:05d}")) >= 5
    assert not fake_hub.messages
    assert counters.frames == len(fake_hub.frames) and counters.errors == 0


async def test_http_agents_back_off_and_retry_on_5xx(fake_hub, make_options):
    fake_hub.failing_heartbeats = 6
    counters = await run(make_options(transport="http", machines=2, duration=0.6))
    assert counters.errors == 6 and counters.reconnects == 6
    assert counters.frames == len(fake_hub.frames) > 6
    assert fake_hub.heartbeats == counters.frames + 6


async def test_overheat_fraction_makes_gpus_run_above_90_degrees(fake_hub, make_options):
    await run(make_options(machines=4, overheat_fraction=0.5))
    hot = [machine_id for machine_id in fake_hub.messages
           if all(gpu["temp"] > 90 for frame in fake_hub.frames_of(machine_id)
                  for gpu in frame["gpus"])]
    cool = [machine_id for machine_id in fake_hub.messages
            if all(gpu["temp"] < 90 for frame in fake_hub.frames_of(machine_id)
                   for gpu in frame["gpus"])]
    assert len(hot) == 2 and len(cool) == 2
    for machine_id in hot:
        _check_frames_of(fake_hub, machine_id)


async def test_frames_are_spread_over_the_interval(fake_hub, make_options):
    interval = 0.4
    await run(make_options(machines=40, interval=interval, duration=1.0))
    offsets = []
    for machine_id in fake_hub.messages:
        times = [t for t, mid, _ in fake_hub.frames if mid == machine_id]
        assert len(times) >= 2
        offsets.append(times[0] % interval)
        # Each machine keeps its own rhythm.
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.5 * interval < gap < 1.5 * interval for gap in gaps)
    # The fleet's first frames fall all over the interval, not in one burst.
    buckets = {int(offset / interval * 4) for offset in offsets}
    assert buckets == {0, 1, 2, 3}


async def test_agents_reconnect_when_the_hub_drops_the_socket(fake_hub, make_options):
    fake_hub.drop_after = 2
    counters = await run(make_options(machines=2, duration=0.8))
    for machine_id in ("sim-00001", "sim-00002"):
        assert fake_hub.connections[machine_id] == 2
        kinds = [m["type"] for m in fake_hub.messages[machine_id]]
        assert kinds[:3] == ["hello", "metrics", "metrics"]
        second_hello = kinds.index("hello", 1)
        assert kinds[second_hello + 1:].count("metrics") >= 3
    assert counters.reconnects == 2


async def test_agents_reconnect_when_the_hub_comes_back(make_options):
    hub = FakeHub()
    server = TestServer(hub.app())
    await server.start_server()
    hub.url = str(server.make_url("")).rstrip("/")
    counters = Counters()
    task = asyncio.create_task(run(make_options(hub=hub.url, machines=3, duration=None,
                                                backoff_base=0.05, backoff_cap=0.1),
                                   counters))
    try:
        await asyncio.sleep(0.3)
        assert counters.connected == 3
        port = server.port
        await server.close()
        await asyncio.sleep(0.3)
        assert counters.connected == 0 and counters.errors > 0
        frames_before = len(hub.frames)

        server = TestServer(hub.app(), port=port)
        await server.start_server()
        await asyncio.sleep(0.5)
        assert counters.connected == 3
        assert counters.reconnects >= 3
        assert len(hub.frames) > frames_before
        assert all(count == 2 for count in hub.connections.values())
    finally:
        task.cancel()
        await asyncio.wait({task})
        await server.close()


async def test_a_refused_token_stops_that_machine_only(fake_hub, make_options, tokens_file,
                                                       caplog):
    await run(make_options(machines=3, duration=0.05))
    tokens = read_tokens(tokens_file)
    tokens["sim-00002"] = "not-a-valid-token"
    write_tokens(tokens_file, tokens)
    fake_hub.frames.clear()

    with caplog.at_level(logging.WARNING, logger="agent_mock"):
        counters = await run(make_options(machines=3, admin_user=None, admin_password=None))

    assert counters.stopped == 1
    assert "sim-00002: the hub refused the agent token (401)" in caplog.text
    assert {mid for _, mid, _ in fake_hub.frames} == {"sim-00001", "sim-00003"}


async def test_when_every_token_is_refused_the_run_ends(fake_hub, make_options, tokens_file):
    write_tokens(tokens_file, {"sim-00001": "bad", "sim-00002": "bad"})
    counters = await asyncio.wait_for(
        run(make_options(machines=2, transport="http", duration=None, admin_user=None,
                         admin_password=None)), timeout=5)
    assert counters.stopped == 2 and counters.frames == 0


async def test_error_messages_from_the_hub_are_logged_and_the_agent_goes_on(
        fake_hub, make_options, caplog):
    fake_hub.error_after_hello = True
    with caplog.at_level(logging.WARNING, logger="agent_mock"):
        counters = await run(make_options(machines=1))
    assert counters.errors == 1
    assert "hub says" in caplog.text and "try again" in caplog.text
    assert len(fake_hub.frames_of("sim-00001")) >= 5


async def test_silent_machines_stop_sending_but_keep_their_socket(fake_hub, make_options):
    counters = await run(make_options(machines=4, silent_fraction=0.5, silent_after=0.2,
                                      duration=0.8))
    assert counters.silent == 2
    last_frame = {mid: max(t for t, m, _ in fake_hub.frames if m == mid)
                  for mid in fake_hub.messages}
    ordered = sorted(last_frame.values())
    # Two machines went quiet well before the end; the two others sent to the last.
    assert ordered[1] < ordered[2] - 0.2
    assert all(count == 1 for count in fake_hub.connections.values())


async def test_cancelling_a_run_stops_it_promptly_and_closes_every_socket(
        fake_hub, make_options):
    counters = Counters()
    task = asyncio.create_task(run(make_options(machines=20, duration=None), counters))
    await asyncio.sleep(0.3)
    assert counters.connected == 20
    task.cancel()
    # A correctness bound, not a benchmark: shutdown must not hang on the sockets.
    done, _ = await asyncio.wait({task}, timeout=3)
    assert done and task.cancelled()
    assert counters.connected == 0


async def test_a_job_finished_while_disconnected_is_reported_after_the_next_hello(
        fake_hub, make_options, monkeypatch):
    # The socket drops after the second frame, while the job runs, and the agent stays
    # away longer than the job takes.
    monkeypatch.setattr(Options, "backoff_delay", lambda self, attempt: 0.3)
    fake_hub.drop_after = 2
    fake_hub.ws_commands["sim-00001"] = [{"job_id": "job-5", "action": "ssh_reset",
                                          "params": {}}]
    counters = await run(make_options(machines=1, job_delay_scale=0.15, duration=0.8))

    messages = fake_hub.messages["sim-00001"]
    second_hello = [m["type"] for m in messages].index("hello", 1)
    assert {"type": "job_update", "job_id": "job-5", "status": "running"} in \
        messages[:second_hello]
    assert messages[second_hello + 1]["job_id"] == "job-5"
    assert messages[second_hello + 1]["status"] == "succeeded"
    assert (counters.commands, counters.answered) == (1, 1)


async def test_a_repeated_command_runs_once_and_a_finished_one_is_answered_again(
        fake_hub, make_options):
    command = {"job_id": "job-7", "action": "task_stop", "params": {}}
    fake_hub.http_commands["sim-00001"] = [command, command]
    counters = Counters()
    task = asyncio.create_task(run(make_options(machines=1, transport="http", duration=None),
                                   counters))
    try:
        await _until(lambda: counters.answered == 1)
        fake_hub.http_commands["sim-00001"] = [command]
        await _until(lambda: len(fake_hub.updates_of("job-7")) == 3)
    finally:
        task.cancel()
        await asyncio.wait({task})
    updates = fake_hub.updates_of("job-7")
    assert [u["status"] for u in updates] == ["running", "succeeded", "succeeded"]
    assert updates[1] == updates[2]
    assert (counters.commands, counters.answered) == (1, 1)
