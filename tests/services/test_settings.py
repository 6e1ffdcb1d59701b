"""Settings are read once from the environment; a bad value names its variable."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from services.settings import SPECS, Settings, SettingsError

SECRET = "s" * 32


def test_defaults_point_at_local_services():
    settings = Settings.from_env({"REMOTEGPU_JWT_SECRET": SECRET})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/remotegpu"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.access_token_ttl_s == 3600
    assert settings.refresh_token_ttl_s == 30 * 24 * 3600
    assert settings.log_level == "INFO"
    assert settings.trusted_proxies == ()


def test_missing_secret_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match=r"^REMOTEGPU_JWT_SECRET: required"):
        Settings.from_env({})


def test_short_secret_is_refused():
    with pytest.raises(SettingsError, match=r"^REMOTEGPU_JWT_SECRET: too short"):
        Settings.from_env({"REMOTEGPU_JWT_SECRET": "short"})


def test_dev_mode_generates_a_secret():
    settings = Settings.from_env({"REMOTEGPU_DEV": "1"})
    assert len(settings.jwt_secret) >= 32 and settings.dev


@pytest.mark.parametrize(("name", "value"), [
    ("REMOTEGPU_ACCESS_TOKEN_TTL_S", "soon"),
    ("REMOTEGPU_ACCESS_TOKEN_TTL_S", "0"),
    ("REMOTEGPU_REFRESH_TOKEN_TTL_S", "-5"),
    ("REMOTEGPU_LOG_LEVEL", "LOUD"),
    ("REMOTEGPU_DEV", "maybe"),
    ("REMOTEGPU_TRUSTED_PROXIES", "10.0.0.0/8,not-a-net"),
    ("REMOTEGPU_DATABASE_URL", "mysql://localhost/x"),
    ("REMOTEGPU_REDIS_URL", "http://localhost"),
    ("REMOTEGPU_METRICS_PORT", "65536"),
    ("REMOTEGPU_METRICS_PORT", "-1"),
    ("REMOTEGPU_METRICS_HOST", "not a host"),
    ("REMOTEGPU_METRICS_HOST", ""),
])
def test_bad_value_stops_start_up_with_one_line_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REMOTEGPU_JWT_SECRET": SECRET, name: value})
    message = str(caught.value)
    assert message.startswith(name + "=") and "\n" not in message


def test_metrics_listen_on_loopback_by_default():
    settings = Settings.from_env({"REMOTEGPU_JWT_SECRET": SECRET})
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 9464)


@pytest.mark.parametrize(("host", "port", "parsed"), [
    ("0.0.0.0", "0", ("0.0.0.0", 0)), ("::", "9100", ("::", 9100)),
    (" metrics.internal ", "65535", ("metrics.internal", 65535)),
])
def test_metrics_host_and_port_accept_addresses_names_and_0_for_none(host, port, parsed):
    settings = Settings.from_env({"REMOTEGPU_JWT_SECRET": SECRET,
                                  "REMOTEGPU_METRICS_HOST": host, "REMOTEGPU_METRICS_PORT": port})
    assert (settings.metrics_host, settings.metrics_port) == parsed


def test_secret_value_is_never_echoed_in_errors():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REMOTEGPU_JWT_SECRET": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value)


def test_trusted_proxies_parse_as_networks():
    settings = Settings.from_env({"REMOTEGPU_JWT_SECRET": SECRET,
                                  "REMOTEGPU_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),
                                        ipaddress.ip_network("::1/128"))


def test_every_setting_is_in_the_readme_table_with_its_default():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for spec in SPECS:
        row = re.search(rf"^\| `{spec.env}` \| ([^|]*) \|", readme, re.MULTILINE)
        assert row, f"{spec.env} missing from the README settings table"
        shown = row.group(1).strip().strip("`")
        assert shown == (spec.default or "(none)"), f"{spec.env}: README says {shown!r}"
