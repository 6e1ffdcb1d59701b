"""The ``agent-mock`` flags, and the simulator run as a real process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from agent_mock.cli import PASSWORD_ENV, add_arguments, main, options_from_args
from agent_mock.options import DEFAULT_TOKENS_FILE, AgentMockError, Options


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_follow_the_contract():
    options = options_from_args(_parse("--hub", "http://hub:8080", "--machines", "2000"))
    assert options == Options(hub="http://hub:8080", machines=2000)
    assert options.interval == 5.0 and options.transport == "ws"
    assert options.tokens_file == DEFAULT_TOKENS_FILE == Path("var/agent-mock-tokens.json")
    assert options.overheat_fraction == options.silent_fraction == 0.01
    assert options.health_event_rate == 0.0
    assert options.duration is None


def test_every_flag_reaches_the_options():
    options = options_from_args(_parse(
        "--hub", "https://hub", "--machines", "5", "--interval", "2.5", "--transport", "http",
        "--admin-user", "ops", "--admin-password", "pw-123456", "--tokens-file", "/tmp/t.json",
        "--id-prefix", "lab-", "--overheat-fraction", "0.1", "--silent-fraction", "0.2",
        "--silent-after", "30", "--idle-fraction", "0.3", "--health-event-rate", "0.001",
        "--job-delay-scale", "0.5", "--register-concurrency", "50", "--summary-interval", "0",
        "--duration", "60", "--seed", "42"))
    assert options == Options(
        hub="https://hub", machines=5, interval=2.5, transport="http", admin_user="ops",
        admin_password="pw-123456", tokens_file=Path("/tmp/t.json"), id_prefix="lab-",
        overheat_fraction=0.1, silent_fraction=0.2, silent_after=30.0, idle_fraction=0.3,
        health_event_rate=0.001, job_delay_scale=0.5, register_concurrency=50,
        summary_interval=0.0, duration=60.0, seed=42)


@pytest.mark.parametrize("argv", [
    ("--machines", "0"), ("--interval", "0"), ("--overheat-fraction", "1.5"),
    ("--transport", "grpc"), ("--duration", "-1"),
])
def test_bad_flags_are_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit):
        _parse("--hub", "http://hub", "--machines", "1", *argv)


@pytest.mark.parametrize(("argv", "message"), [
    (("--admin-user", "ops"), "both the admin user and the admin password"),
    (("--id-prefix", "bad prefix"), "id prefix"),
])
def test_inconsistent_flags_are_refused(argv, message):
    with pytest.raises(AgentMockError, match=message):
        options_from_args(_parse("--hub", "http://hub", "--machines", "1", *argv), environ={})


def test_the_admin_password_is_read_from_the_environment_when_not_given():
    args = _parse("--hub", "http://hub", "--machines", "1", "--admin-user", "ops")
    options = options_from_args(args, environ={PASSWORD_ENV: "from-env-123"})
    assert (options.admin_user, options.admin_password) == ("ops", "from-env-123")


def test_an_admin_password_flag_wins_over_the_environment():
    args = _parse("--hub", "http://hub", "--machines", "1", "--admin-user", "ops",
                  "--admin-password", "from-flag-123")
    options = options_from_args(args, environ={PASSWORD_ENV: "from-env-123"})
    assert options.admin_password == "from-flag-123"


def test_the_password_environment_is_ignored_without_an_admin_user():
    args = _parse("--hub", "http://hub", "--machines", "1")
    options = options_from_args(args, environ={PASSWORD_ENV: "from-env-123"})
    assert (options.admin_user, options.admin_password) == (None, None)


def test_a_hub_url_needs_a_scheme():
    with pytest.raises(AgentMockError, match="http:// or https://"):
        Options(hub="hub:8080", machines=1)


def test_main_explains_a_missing_tokens_file(tmp_path, capsys):
    status = main(_parse("--hub", "http://127.0.0.1:9", "--machines", "2",
                         "--tokens-file", str(tmp_path / "none.json")))
    assert status == 1
    assert "no agent token for 2 of 2 machines" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_a_real_process_registers_streams_and_stops_cleanly(fake_hub, tokens_file,
                                                                  stop):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_mock", "--hub", fake_hub.url, "--machines", "3",
        "--interval", "0.05", "--admin-user", fake_hub.admin_user,
        "--admin-password", fake_hub.admin_password, "--tokens-file", str(tokens_file),
        "--summary-interval", "0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(200):
            if len({mid for _, mid, _ in fake_hub.frames}) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(fake_hub.frames_of("sim-00003")) > 0
        process.send_signal(stop)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    lines = stderr.decode().splitlines()
    assert lines[0].startswith("agent-mock: registered 3 machines (3 created")
    assert "Traceback" not in stderr.decode()
    final = lines[-1]
    assert "machines=3 connected=0" in final and "errors=0" in final
    assert fake_hub.sockets == set()
    assert tokens_file.exists()


def _command_line(pid: int) -> bytes:
    """What `ps` shows of a process, to every user of the machine."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_a_real_process_registers_with_the_password_from_its_environment_only(
        fake_hub, tokens_file):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_mock", "--hub", fake_hub.url, "--machines", "1",
        "--interval", "0.05", "--admin-user", fake_hub.admin_user,
        "--tokens-file", str(tokens_file), "--summary-interval", "0",
        env={**os.environ, PASSWORD_ENV: fake_hub.admin_password},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        command_line = _command_line(process.pid)
        for _ in range(200):
            if fake_hub.frames_of("sim-00001"):
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert fake_hub.frames_of("sim-00001")
    assert fake_hub.admin_password.encode() not in command_line
