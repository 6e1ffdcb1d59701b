"""``./dev run`` as a new user meets it (issue 11, point 5): the hub and a simulated fleet,
the admin password on no command line, and Ctrl-C stops everything it started, exit 0.

The script runs from a copy of itself in a temporary folder (its ``var/`` there, not the
checkout's) that shares this checkout's ``.venv``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
from contextlib import suppress
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[1]
START_S = 90.0  # a cold start migrates, creates the admin and registers the fleet
STOP_S = 30.0


def _venv_is_current() -> bool:
    """Whether .venv was installed from this packaging: otherwise ./dev would reinstall it,
    from the copy."""
    stamp = ROOT / ".venv" / ".installed"
    packaging = (ROOT / "setup.cfg").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    return stamp.exists() and stamp.read_text().strip() == hashlib.sha256(packaging).hexdigest()


@pytest.fixture
def dev_copy(tmp_path: Path) -> Path:
    if not _venv_is_current():
        pytest.skip(".venv is older than setup.cfg/pyproject.toml: run ./dev once")
    shutil.copy2(ROOT / "dev", tmp_path / "dev")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "devservices.py", tmp_path / "scripts")
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return tmp_path


def _started_from(folder: Path, but: int) -> dict[int, bytes]:
    """The command lines of running processes started from ``folder``, but ``but``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == but:
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
            running = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            continue
        if running and str(folder).encode() in command_line:
            found[int(entry.name)] = command_line
    return found


async def _drain(stream: asyncio.StreamReader, into: list[bytes]) -> None:
    while line := await stream.readline():
        into.append(line)


async def test_dev_run_stopped_with_ctrl_c_stops_hub_and_fleet_and_exits_0(
        dev_copy, settings, db, redis_client):
    env = {**os.environ,
           "REMOTEGPU_DATABASE_URL": settings.database_url,
           "REMOTEGPU_REDIS_URL": settings.redis_url,
           "REMOTEGPU_REDIS_PREFIX": settings.redis_prefix,
           "REMOTEGPU_JWT_SECRET": settings.jwt_secret,
           "REMOTEGPU_ARGON2_TIME_COST": "1", "REMOTEGPU_ARGON2_MEMORY_KIB": "1024",
           "REMOTEGPU_METRICS_PORT": "0", "REMOTEGPU_DEV_FLEET": "2"}
    env.pop("REMOTEGPU_ADMIN_PASSWORD", None)
    # A session of its own: killpg below is what a terminal does on Ctrl-C.
    dev = await asyncio.create_subprocess_exec(
        "bash", str(dev_copy / "dev"), "run", "--port", str(unused_port()), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    output: list[bytes] = []
    drains = [asyncio.create_task(_drain(stream, output)) for stream in (dev.stdout, dev.stderr)]
    try:
        await eventually(lambda: db.fetchval(
            "SELECT count(*) = 2 FROM machines WHERE status = 'online'"), START_S,
            "the dev fleet online")
        started = _started_from(dev_copy, but=dev.pid)
        assert any(b"\0serve\0" in line for line in started.values())
        assert any(b"\0agent-mock\0" in line for line in started.values())
        password = (dev_copy / "var" / "dev-admin-password").read_text().strip().encode()
        assert not [line for line in started.values() if password in line]

        os.killpg(dev.pid, signal.SIGINT)
        # Not dev.wait(): that also waits for the pipes, which a survivor would hold open.
        await eventually(lambda: dev.returncode is not None, STOP_S, "./dev run to exit")
        assert _started_from(dev_copy, but=dev.pid) == {}
        await asyncio.gather(*drains)
        assert dev.returncode == 0, b"".join(output).decode()[-3000:]
        assert b"unbound variable" not in b"".join(output)
    finally:
        for pid in _started_from(dev_copy, but=dev.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if dev.returncode is None:
            dev.kill()
        await dev.wait()
        await asyncio.gather(*drains)
