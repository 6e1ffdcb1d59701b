"""A fake hub on loopback and options sized for fast tests (no database, no real app)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_mock.options import Options
from tests.agent_mock.fake_hub import FakeHub


@pytest.fixture
async def fake_hub(aiohttp_server: Any) -> FakeHub:
    hub = FakeHub()
    server = await aiohttp_server(hub.app())
    hub.url = str(server.make_url("")).rstrip("/")
    return hub


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "var" / "tokens.json"


@pytest.fixture
def make_options(fake_hub: FakeHub, tokens_file: Path) -> Callable[..., Options]:
    """Options for a short run against the fake hub; keywords override."""
    def build(**overrides: Any) -> Options:
        values: dict[str, Any] = {
            "hub": fake_hub.url, "machines": 3, "interval": 0.05,
            "admin_user": fake_hub.admin_user, "admin_password": fake_hub.admin_password,
            "tokens_file": tokens_file, "overheat_fraction": 0.0, "silent_fraction": 0.0,
            "job_delay_scale": 0.01, "backoff_base": 0.01, "backoff_cap": 0.05,
            "summary_interval": 0.0, "duration": 0.4, "seed": 7,
        }
        values.update(overrides)
        return Options(**values)
    return build
