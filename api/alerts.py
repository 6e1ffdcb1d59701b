"""Alerts: what needs an operator's attention (``/api/v1/admin/alerts``), and what a
tenant sees of its machines' (``/api/v1/customer/alerts``)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from api.keys import ALERTS, PRINCIPAL
from api.models import Page, PageQuery, PathParams, prefixed_id
from api.routing import Routes
from services.alerts import TENANT_RULES, alert_event
from services.errors import ErrorCode
from services.ids import ALERT, parse_id
from storage.alerts import AlertFilter

routes = Routes("alerts")


AlertRule = Literal["machine_offline", "gpu_overheat", "gpu_xid", "gpu_ecc",
                    "gpu_remapped_rows", "disk_full", "lease_expiring", "reclaim_stuck"]


class TenantAlertQuery(PageQuery):
    status: Literal["open", "active", "acknowledged", "resolved"] = Field(
        "open", description="open: active or acknowledged (what the dashboard stats count "
                            "as active_alerts)")
    severity: Literal["info", "warning", "critical"] | None = None
    machine_id: str | None = Field(None, max_length=64)
    rule: Literal[TENANT_RULES] | None = None  # type: ignore[valid-type]


class AlertQuery(TenantAlertQuery):
    rule: AlertRule | None = None


class AlertItem(BaseModel):
    id: str = Field(examples=["alert-3"])
    machine_id: str
    tenant_id: int | None
    rule: AlertRule
    severity: Literal["info", "warning", "critical"]
    status: Literal["active", "acknowledged", "resolved"]
    message: str
    details: dict[str, Any]
    first_seen_at: AwareDatetime
    last_seen_at: AwareDatetime
    resolved_at: AwareDatetime | None
    acknowledged_by: str | None = Field(description="username")
    acknowledged_at: AwareDatetime | None

    @classmethod
    def from_row(cls, row: Any) -> AlertItem:
        return cls.model_validate(alert_event(row))


class AlertPath(PathParams):
    id: prefixed_id(ALERT)  # type: ignore[valid-type]


@routes.get("/api/v1/admin/alerts", access="alert:read", summary="List alerts",
            query=AlertQuery, response=Page[AlertItem],
            description="Open ones (active or acknowledged) by default; most recently seen "
                        "first.")
async def list_alerts(request: web.Request, query: AlertQuery) -> Page[AlertItem]:
    rows, total = await request.app[ALERTS].page(_filter(query), limit=query.page_size,
                                                 offset=query.offset)
    return _page(rows, total, query)


@routes.get("/api/v1/customer/alerts", access="tenant:machine:read",
            summary="Alerts of my machines", query=TenantAlertQuery, response=Page[AlertItem],
            description="Raised while the caller's tenant leased the machine: offline, GPU "
                        "health, disk, lease expiring. Open ones by default; most recently "
                        "seen first. A machine of another tenant in `machine_id` matches "
                        "nothing, as an unknown one does.")
async def my_alerts(request: web.Request, query: TenantAlertQuery) -> Page[AlertItem]:
    rows, total = await request.app[ALERTS].page_of_tenant(
        request[PRINCIPAL].tenant_id, _filter(query), limit=query.page_size,
        offset=query.offset)
    return _page(rows, total, query)


def _filter(query: TenantAlertQuery) -> AlertFilter:
    return AlertFilter(status=query.status, severity=query.severity,
                       machine_id=query.machine_id, rule=query.rule)


def _page(rows: list[Any], total: int, query: PageQuery) -> Page[AlertItem]:
    return Page[AlertItem](list=[AlertItem.from_row(r) for r in rows], total=total,
                           page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/alerts/{id}/ack", access="alert:write",
             path_params=AlertPath,
             summary="Acknowledge an alert", response=AlertItem,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="An acknowledged alert stays open until its condition clears. "
                         "Acknowledging twice changes nothing; a resolved alert is 409.")
async def ack_alert(request: web.Request) -> AlertItem:
    alert_id = parse_id(ALERT, request.match_info["id"], "alert")
    row = await request.app[ALERTS].acknowledge(alert_id, request[PRINCIPAL].user_id)
    return AlertItem.from_row(row)
