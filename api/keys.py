"""Every ``web.AppKey`` and ``web.RequestKey`` of the hub, in one place."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from api.metrics import HttpMetrics
from api.readiness import ReadinessProbes
from api.shutdown import ShutdownClock
from hub.agent_ws import AgentSockets
from hub.bus import Bus
from hub.dashboards import DashboardSockets
from hub.dispatcher import Dispatcher
from hub.fanout import Fanout
from hub.ingest import Ingest
from hub.monitor import Liveness
from hub.periodic import Periodic
from hub.state import LatestState
from hub.topics import Topics
from services.agents import AgentAuth, AgentIdentity
from services.alerts import AlertService
from services.allocations import AllocationService
from services.api_keys import ApiKeyService
from services.audit import AuditTrail
from services.auth import AuthService, Principal
from services.customers import CustomerService
from services.dashboard import DashboardService
from services.imports import ImportService
from services.jobs import JobService
from services.machines import MachineService
from services.settings import Settings
from services.telemetry import TelemetryService, TimescaleJobs
from services.tenant_machines import TenantMachineService
from services.usage import UsageService
from services.users import UserService
from storage.cache import Keys

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", redis.Redis)
REDIS_KEYS = web.AppKey("redis_keys", Keys)
AUTH = web.AppKey("auth", AuthService)
API_KEYS = web.AppKey("api_keys", ApiKeyService)
AUDIT = web.AppKey("audit", AuditTrail)
MACHINES = web.AppKey("machines", MachineService)
IMPORTS = web.AppKey("imports", ImportService)
ALLOCATIONS = web.AppKey("allocations", AllocationService)
JOBS = web.AppKey("jobs", JobService)
CUSTOMERS = web.AppKey("customers", CustomerService)
USERS = web.AppKey("users", UserService)
DASHBOARD = web.AppKey("dashboard", DashboardService)
TENANT_MACHINES = web.AppKey("tenant_machines", TenantMachineService)
PERIODIC = web.AppKey("periodic", dict[str, Periodic])
TIMESCALEDB = web.AppKey("timescaledb", bool)
BUS = web.AppKey("bus", Bus)
STATE = web.AppKey("state", LatestState)
ALERTS = web.AppKey("alerts", AlertService)
TELEMETRY = web.AppKey("telemetry", TelemetryService)
AGENT_AUTH = web.AppKey("agent_auth", AgentAuth)
INGEST = web.AppKey("ingest", Ingest)
LIVENESS = web.AppKey("liveness", Liveness)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
AGENT_SOCKETS = web.AppKey("agent_sockets", AgentSockets)
DASHBOARD_SOCKETS = web.AppKey("dashboard_sockets", DashboardSockets)
FANOUT = web.AppKey("fanout", Fanout)
TOPICS = web.AppKey("topics", Topics)
METRICS = web.AppKey("metrics", HttpMetrics)
OPENAPI = web.AppKey("openapi", dict)
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)
READINESS = web.AppKey("readiness", ReadinessProbes)
TIMESCALE_JOBS = web.AppKey("timescale_jobs", TimescaleJobs)
USAGE = web.AppKey("usage", UsageService)

TRACE_ID = web.RequestKey("trace_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
AGENT_IDENTITY = web.RequestKey("agent_identity", AgentIdentity)
