"""The Prometheus listener: ``GET /metrics`` on a port of its own
(``REMOTEGPU_METRICS_HOST``:``REMOTEGPU_METRICS_PORT``, loopback by default), never on the
API port, so whoever reaches the API (or its proxy) cannot read the hub's internals."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from api.keys import METRICS, SETTINGS
from api.metrics import HttpMetrics

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape still running at shutdown gets this long; the hub's own grace is for its users.
_CLOSE_TIMEOUT_S = 1.0


class MetricsListenError(Exception):
    """The metrics port could not be opened (in use, not an address of this host)."""


def metrics_app(metrics: HttpMetrics) -> web.Application:
    """What the listener serves: ``GET /metrics`` and nothing else."""
    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Opened first and closed last, so a shutdown can be watched to its end."""
    settings = app[SETTINGS]
    if not settings.metrics_port:
        yield
        return
    runner = web.AppRunner(metrics_app(app[METRICS]), access_log=None,
                           shutdown_timeout=_CLOSE_TIMEOUT_S)
    await runner.setup()
    host, port = settings.metrics_host, settings.metrics_port
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsListenError(
            f"cannot serve metrics on {address} (REMOTEGPU_METRICS_HOST, "
            f"REMOTEGPU_METRICS_PORT; 0 for none): {exc.strerror or exc}") from None
    log.info("serving metrics", extra={"url": f"http://{address}/metrics"})
    yield
    await runner.cleanup()
