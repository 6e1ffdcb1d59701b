"""The dashboards' WebSocket (CONTRACT.md §5)."""

from __future__ import annotations

from aiohttp import web

from api.keys import DASHBOARD_SOCKETS
from api.routing import PUBLIC, Routes

routes = Routes("dashboards")


@routes.get("/ws/connect", access=PUBLIC, audited=False,
            summary="Live monitoring for dashboards (WebSocket)",
            raw_content_type="websocket",
            description="Authenticate with `?token=` or a first `{\"type\":\"auth\",\"token\"}` "
                        "message within 5 s. Admins and operators receive "
                        "`global_monitoring` snapshots, customers their tenant's "
                        "`monitoring_update`s; both receive `machine_status`, `alert` and "
                        "`job_update` events. The upgrade is always accepted; refusals are "
                        "close codes (4001, 4003, 4008, 4009, 4010, 1001, 1009).")
async def connect(request: web.Request) -> web.WebSocketResponse:
    return await request.app[DASHBOARD_SOCKETS].serve(request)
