"""Locust load test for the RemoteGPU hub: admins browse, customers watch, agents report.

Headless run against a hub on :8080 (the admin password comes from the environment):

    REMOTEGPU_ADMIN_PASSWORD=... .venv/bin/locust -f loadtest/locustfile.py --headless \\
        -u 200 -r 20 -t 60s --host http://127.0.0.1:8080

or, without any password, with an admin's API key (``--api-key`` or
``REMOTEGPU_API_KEY``; create one with ``POST /api/v1/auth/api-keys``):

    REMOTEGPU_API_KEY=rgk_... .venv/bin/locust -f loadtest/locustfile.py --headless ...

User classes (weights 1 : 6 : 6 by default; change them the usual Locust ways, e.g.
``--config-users '{"user_class_name": "AdminUser", "fixed_count": 5}'``, or name the
classes to run on the command line):

- ``AdminUser``: REST only; machine list with filters and paging, dashboard stats,
  realtime monitoring, the GPU trend, alerts.
- ``CustomerUser``: its machines and their metrics over REST, plus one dashboard
  WebSocket whose ``monitoring_update``/``monitoring_snapshot`` messages are reported as
  request type ``WS``: response time = delay from ``data.ts`` to receipt (ms), length =
  message size. Messages that arrive in the burst right after ``welcome`` (the current
  state, possibly seconds old) are reported as ``<type> (on connect)``.
- ``AgentUser``: owns one 8-GPU machine and posts heartbeats with realistic metrics.

At test start (once, in the master or the local runner) the admin account creates or
reuses ``LOCUST_TENANTS`` customers, each with one user, and leases
``LOCUST_MACHINES_PER_TENANT`` machines to each; agents drive machines in the same
order, so customers see live data once there are at least tenants x machines agents.
The hub allows 20 dashboard sockets per user (``REMOTEGPU_WS_MAX_CONNECTIONS_PER_USER``):
run at most 20 x ``LOCUST_TENANTS`` customer users. Re-runs reuse everything.

Environment:
  REMOTEGPU_API_KEY (an admin's API key: used instead of the user and password below),
  REMOTEGPU_ADMIN_USER (admin), REMOTEGPU_ADMIN_PASSWORD (required without a key),
  LOCUST_TENANTS (5), LOCUST_MACHINES_PER_TENANT (4),
  LOCUST_CUSTOMER_PASSWORD (locust-customer-pass), LOCUST_MACHINE_PREFIX (locust-gpu-),
  LOCUST_HEARTBEAT_S (seconds between heartbeats: "5-10", or one number; default 5-10).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import struct
import time
from typing import Any

import gevent
import gevent.lock
import requests
import websocket
from locust import HttpUser, between, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

log = logging.getLogger("remotegpu.locust")

ADMIN_USER = os.environ.get("REMOTEGPU_ADMIN_USER", "admin")
ADMIN_PASSWORD = os.environ.get("REMOTEGPU_ADMIN_PASSWORD", "")
TENANTS = int(os.environ.get("LOCUST_TENANTS", "5"))
MACHINES_PER_TENANT = int(os.environ.get("LOCUST_MACHINES_PER_TENANT", "4"))
CUSTOMER_PASSWORD = os.environ.get("LOCUST_CUSTOMER_PASSWORD", "locust-customer-pass")
MACHINE_PREFIX = os.environ.get("LOCUST_MACHINE_PREFIX", "locust-gpu-")
HEARTBEAT_S = os.environ.get("LOCUST_HEARTBEAT_S", "5-10")

LEASE_MONTHS = 12
GPUS = 8
GPU_MEM_MIB = 81559  # H100 80GB HBM3
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
WORKER_STRIDE = 100_000  # machine numbers per Locust worker process
ON_CONNECT_WINDOW_S = 0.05  # the current-state burst is written together with welcome
WS_CONNECT_TIMEOUT_S = 10


# --- naming and credentials shared by every process ---------------------------------

def tenant_name(index: int) -> str:
    return f"locust-tenant-{index:02d}"


def customer_username(index: int) -> str:
    return f"locust-customer-{index:02d}"


def machine_id(number: int) -> str:
    return f"{MACHINE_PREFIX}{number:05d}"


def heartbeat_wait():
    """Locust wait_time from LOCUST_HEARTBEAT_S: "MIN-MAX" or one number of seconds."""
    low, _, high = HEARTBEAT_S.partition("-")
    return between(float(low), float(high)) if high else constant(float(low))


def machine_spec(number: int) -> dict[str, Any]:
    ident = machine_id(number)
    ip = f"10.{250 + number // 65536 % 4}.{number // 256 % 256}.{number % 256}"
    return {"id": ident, "name": ident, "region": REGIONS[number % len(REGIONS)], "ip": ip,
            "gpu_model": "NVIDIA H100 80GB HBM3", "gpu_count": GPUS, "gpu_memory_gb": 80,
            "cpu_info": "2x Intel Xeon Platinum 8480+", "memory_total": 2048,
            "disk_total": 30720, "ssh_host": ip, "ssh_port": 22, "ssh_user": "root"}


# --- admin calls for setup (not reported to Locust) ----------------------------------

class AdminApi:
    """Admin REST calls outside the measured traffic: with the API key if one is given,
    else one login per process, shared."""

    def __init__(self, host: str, api_key: str | None) -> None:
        self.host = host.rstrip("/")
        self.session = requests.Session()
        self._token = api_key or None
        self._api_key = api_key
        self._lock = gevent.lock.Semaphore()

    def _login(self) -> str:
        if not ADMIN_PASSWORD:
            raise RuntimeError("set REMOTEGPU_ADMIN_PASSWORD (and REMOTEGPU_ADMIN_USER)")
        resp = self.session.post(f"{self.host}/api/v1/auth/login",
                                 json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        if resp.status_code != 200:
            raise RuntimeError(f"admin login failed: {resp.status_code} {resp.text}")
        return resp.json()["data"]["access_token"]

    def _bearer(self, renew: bool = False) -> str:
        with self._lock:
            if self._token is None or (renew and not self._api_key):
                self._token = self._login()
            return self._token

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """HTTP status and the envelope's ``data``; logs in again once on a 401."""
        for renew in (False, True):
            headers = {"Authorization": f"Bearer {self._bearer(renew)}"}
            resp = self.session.request(method, self.host + path, headers=headers, **kwargs)
            if resp.status_code != 401:
                break
        return resp.status_code, resp.json().get("data")

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        status, data = self.call(method, path, **kwargs)
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status} {data}")
        return data


_admin_apis: dict[str, AdminApi] = {}


@events.init_command_line_parser.add_listener
def add_api_key_option(parser: Any) -> None:
    parser.add_argument("--api-key", env_var="REMOTEGPU_API_KEY", default="",
                        help="an admin's API key (rgk_...), used instead of "
                             "REMOTEGPU_ADMIN_USER and REMOTEGPU_ADMIN_PASSWORD")


def admin_api(environment: Environment) -> AdminApi:
    host = environment.host
    if host not in _admin_apis:
        options = environment.parsed_options
        _admin_apis[host] = AdminApi(host, options.api_key if options else None)
    return _admin_apis[host]


def ensure_customer(api: AdminApi, index: int) -> int:
    """The tenant id of customer ``index``, created with its user if missing."""
    name = tenant_name(index)
    status, data = api.call("POST", "/api/v1/admin/customers", json={
        "name": name, "contact_name": "Locust", "username": customer_username(index),
        "password": CUSTOMER_PASSWORD})
    if status == 200:
        return data["id"]
    if status != 409:
        raise RuntimeError(f"creating customer {name}: HTTP {status} {data}")
    page = api.ok("GET", "/api/v1/admin/customers", params={"keyword": name, "page_size": 100})
    for item in page["list"]:
        if item["name"] == name:
            return item["id"]
    raise RuntimeError(f"customer {name} conflicts but is not listed: {data}")


def ensure_machine(api: AdminApi, number: int) -> str | None:
    """Register machine ``number`` if missing; its agent token when newly created."""
    status, data = api.call("POST", "/api/v1/admin/machines", json=machine_spec(number))
    if status == 200:
        return data["agent_token"]
    if status != 409:
        raise RuntimeError(f"creating {machine_id(number)}: HTTP {status} {data}")
    return None


def agent_token(api: AdminApi, number: int) -> str:
    """A fresh agent token for machine ``number``, registering the machine if needed."""
    status, data = api.call("POST", f"/api/v1/admin/machines/{machine_id(number)}/agent-token")
    if status == 200:
        return data["agent_token"]
    if status == 404:
        token = ensure_machine(api, number)
        if token is not None:
            return token
        return agent_token(api, number)  # registered concurrently by someone else
    raise RuntimeError(f"rotating the token of {machine_id(number)}: HTTP {status} {data}")


def ensure_allocated(api: AdminApi, number: int, tenant_id: int) -> None:
    ident = machine_id(number)
    status, data = api.call("POST", f"/api/v1/admin/machines/{ident}/allocate",
                            json={"tenant_id": tenant_id, "duration_months": LEASE_MONTHS,
                                  "remark": "locust"})
    if status == 200:
        return
    if status != 409:
        raise RuntimeError(f"allocating {ident}: HTTP {status} {data}")
    allocation = api.ok("GET", f"/api/v1/admin/machines/{ident}").get("allocation")
    if not allocation or allocation["tenant_id"] != tenant_id:
        log.warning("%s is not leased to tenant %s (allocation %s)", ident, tenant_id, allocation)


@events.test_start.add_listener
def setup_tenants(environment: Environment, **_: Any) -> None:
    """Customers, their users and their leased machines (idempotent)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    api = admin_api(environment)
    for index in range(1, TENANTS + 1):
        tenant_id = ensure_customer(api, index)
        for slot in range(MACHINES_PER_TENANT):
            number = (index - 1) * MACHINES_PER_TENANT + slot + 1
            ensure_machine(api, number)
            ensure_allocated(api, number, tenant_id)
    log.info("%d tenants ready, %d machines each", TENANTS, MACHINES_PER_TENANT)


# --- shared user helpers -------------------------------------------------------------

def login(user: HttpUser, username: str, password: str) -> str:
    """Log in through the measured client; the access token, or StopUser."""
    with user.client.post("/api/v1/auth/login", json={"username": username,
                                                       "password": password},
                          catch_response=True) as resp:
        if resp.status_code != 200:
            resp.failure(f"login {username}: HTTP {resp.status_code}")
            raise StopUser()
        token = resp.json()["data"]["access_token"]
    user.client.headers["Authorization"] = f"Bearer {token}"
    return token


def ws_url(host: str, token: str) -> str:
    return host.rstrip("/").replace("http", "ws", 1) + f"/ws/connect?token={token}"


class DashboardSocket:
    """One ``/ws/connect`` socket read by a greenlet; monitoring messages become Locust
    ``WS`` request events timed from ``data.ts`` to receipt."""

    REPORTED = frozenset({"monitoring_update", "monitoring_snapshot"})

    def __init__(self, environment: Environment, url: str) -> None:
        self.environment = environment
        self.url = url
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False
        self.ended = False  # the hub closed the socket

    def _fire(self, name: str, response_time: float, length: int,
              exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=response_time,
            response_length=length, exception=exception, context={})

    def open(self) -> None:
        """Connect and wait for ``welcome`` (reported as ``/ws/connect``), then read."""
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(self.url, timeout=WS_CONNECT_TIMEOUT_S,
                                                  skip_utf8_validation=True)
            welcome = self._next_message()
            if welcome is None or json.loads(welcome).get("type") != "welcome":
                raise ConnectionError(f"expected welcome, got {welcome!r}")
        except Exception as exc:  # every failure here is a failed connect
            self._fire("/ws/connect", (time.perf_counter() - started) * 1000, 0, exc)
            return
        self._fire("/ws/connect", (time.perf_counter() - started) * 1000, len(welcome))
        self._read_current_state()
        if not self.ended:
            self.ws.settimeout(None)
            self.reader = gevent.spawn(self._read_forever)

    def _next_message(self) -> bytes | None:
        """The next text message; None when the server closed (failure reported unless
        we are closing)."""
        opcode, frame = self.ws.recv_data_frame()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.ended = True
            code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
            if not self.closing:
                self._fire("close", 0, 0, ConnectionError(
                    f"closed by the hub: {code} {frame.data[2:].decode(errors='replace')}"))
            return None
        return frame.data

    def _read_current_state(self) -> None:
        """What is already readable right after welcome is the current state."""
        self.ws.settimeout(ON_CONNECT_WINDOW_S)
        with contextlib.suppress(websocket.WebSocketTimeoutException):
            while (raw := self._next_message()) is not None:
                self._report(raw, " (on connect)")

    def _read_forever(self) -> None:
        try:
            while (raw := self._next_message()) is not None:
                self._report(raw)
        except (websocket.WebSocketException, OSError) as exc:
            if not self.closing:
                self._fire("close", 0, 0, exc)

    def _report(self, raw: bytes, suffix: str = "") -> None:
        received = time.time()
        message = json.loads(raw)
        kind = message.get("type")
        ts = (message.get("data") or {}).get("ts")
        if kind in self.REPORTED and ts is not None:
            self._fire(kind + suffix, max(0.0, (received - ts) * 1000), len(raw))

    def close(self) -> None:
        self.closing = True
        if self.reader is not None:
            self.reader.kill(block=True)
        if self.ws is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                self.ws.close(timeout=2)


# --- user classes --------------------------------------------------------------------

class AdminUser(HttpUser):
    """An operator with the admin dashboard open, browsing over REST."""

    weight = 1
    wait_time = between(2, 5)

    MACHINE_FILTERS = ({}, {"status": "online"}, {"status": "offline"},
                       {"allocation_status": "allocated"}, {"allocation_status": "idle"},
                       {"gpu_model": "h100"}, {"region": "eu-west-1"},
                       {"keyword": "locust-gpu-0001"})

    def on_start(self) -> None:
        login(self, ADMIN_USER, ADMIN_PASSWORD)

    @task(3)
    def list_machines(self) -> None:
        params = {**random.choice(self.MACHINE_FILTERS), "page": random.randint(1, 3),
                  "page_size": random.choice((10, 20, 50))}
        self.client.get("/api/v1/admin/machines", params=params, name="/api/v1/admin/machines")

    @task(3)
    def dashboard_stats(self) -> None:
        self.client.get("/api/v1/admin/dashboard/stats")

    @task(2)
    def realtime(self) -> None:
        self.client.get("/api/v1/admin/monitoring/realtime")

    @task(1)
    def gpu_trend(self) -> None:
        self.client.get("/api/v1/admin/dashboard/gpu-trend", params={"range": "1h"},
                        name="/api/v1/admin/dashboard/gpu-trend?range=1h")

    @task(1)
    def alerts(self) -> None:
        params = {"status": random.choice(("active", "acknowledged")), "page_size": 20}
        self.client.get("/api/v1/admin/alerts", params=params, name="/api/v1/admin/alerts")


class CustomerUser(HttpUser):
    """A tenant's user with the customer dashboard open: REST plus one WebSocket."""

    weight = 6
    wait_time = between(3, 8)
    _numbers = itertools.count()

    def on_start(self) -> None:
        index = next(self._numbers) % TENANTS + 1
        token = login(self, customer_username(index), CUSTOMER_PASSWORD)
        self.machine_ids = [m["id"] for m in self.my_machines() or ()]
        self.socket = DashboardSocket(self.environment, ws_url(self.host, token))
        self.socket.open()

    def on_stop(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()

    @task(2)
    def my_machines(self) -> list[dict[str, Any]] | None:
        resp = self.client.get("/api/v1/customer/machines")
        return resp.json()["data"] if resp.status_code == 200 else None

    @task(1)
    def machine_metrics(self) -> None:
        if self.machine_ids:
            self.client.get(f"/api/v1/customer/machines/{random.choice(self.machine_ids)}"
                            "/metrics", params={"range": "1h"},
                            name="/api/v1/customer/machines/{id}/metrics?range=1h")


class GpuBox:
    """Plausible metrics for one 8-GPU machine: utilisation drifts, the rest follows."""

    def __init__(self) -> None:
        self.load = random.uniform(30, 90)
        self.cpu = random.uniform(10, 40)
        self.disk_used = random.uniform(2000, 20000)

    def frame(self) -> dict[str, Any]:
        self.load = min(100.0, max(0.0, self.load + random.uniform(-10, 10)))
        self.cpu = min(100.0, max(1.0, self.cpu + random.uniform(-5, 5)))
        self.disk_used = min(30000.0, self.disk_used + random.uniform(0, 2))
        return {"ts": time.time(), "cpu_util": round(self.cpu, 1),
                "mem_used": round(256 + self.load * 12, 1), "mem_total": 2048.0,
                "disk_used": round(self.disk_used, 1), "disk_total": 30720.0,
                "gpus": [self._gpu(i) for i in range(GPUS)]}

    def _gpu(self, index: int) -> dict[str, Any]:
        util = min(100.0, max(0.0, self.load + random.uniform(-8, 8)))
        return {"index": index, "util": round(util, 1),
                "mem_used": float(round(GPU_MEM_MIB * (0.15 + 0.8 * util / 100))),
                "mem_total": float(GPU_MEM_MIB),
                "temp": round(34 + util * 0.42 + random.uniform(-1.5, 1.5), 1),
                "power": round(70 + util * 6.2 + random.uniform(-10, 10), 1),
                "xid_errors": 0, "ecc_dbe": 0, "remapped_rows_pending": False}


class AgentUser(HttpUser):
    """The agent of one machine, posting heartbeats over HTTP."""

    weight = 6
    wait_time = heartbeat_wait()
    _numbers = itertools.count(1)

    def on_start(self) -> None:
        offset = 0
        if isinstance(self.environment.runner, WorkerRunner):
            offset = self.environment.runner.worker_index * WORKER_STRIDE
        number = offset + next(self._numbers)
        token = agent_token(admin_api(self.environment), number)
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.box = GpuBox()

    @task
    def heartbeat(self) -> None:
        self.client.post("/api/v1/agent/heartbeat", json=self.box.frame())
