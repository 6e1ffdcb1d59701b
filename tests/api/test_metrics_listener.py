"""Prometheus metrics on a listener of their own (issue 11, point 4): never on the API
port, on ``REMOTEGPU_METRICS_HOST``:``REMOTEGPU_METRICS_PORT`` while the hub runs."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from api.metrics_listener import MetricsListenError
from tests.helpers import call


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_the_api_port_answers_404_for_metrics(client):
    status, body = await call(client, "GET", "/metrics")
    assert (status, body["code"]) == (404, 40401)


async def test_the_metrics_listener_serves_prometheus_text(make_app, aiohttp_client):
    port = unused_port()
    client = await aiohttp_client(make_app(metrics_port=port))
    await client.get("/healthz")
    status, content_type, text = await _get(f"http://127.0.0.1:{port}/metrics")
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert 'remotegpu_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' \
        in text
    assert "remotegpu_ingest_rows_written_total" in text


async def test_the_metrics_listener_serves_nothing_else(make_app, aiohttp_client):
    port = unused_port()
    await aiohttp_client(make_app(metrics_port=port))
    status, _, _ = await _get(f"http://127.0.0.1:{port}/healthz")
    assert status == 404


async def test_the_metrics_listener_closes_with_the_hub(make_app, aiohttp_client):
    port = unused_port()
    client = await aiohttp_client(make_app(metrics_port=port))
    await client.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(f"http://127.0.0.1:{port}/metrics")


async def test_a_metrics_port_in_use_stops_start_up_naming_the_settings(make_app):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsListenError, match=rf"127\.0\.0\.1:{port} \("
                                                     r"REMOTEGPU_METRICS_HOST, "
                                                     r"REMOTEGPU_METRICS_PORT"):
            await web.AppRunner(make_app(metrics_port=port)).setup()
