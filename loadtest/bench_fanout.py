"""Fan-out benchmark: N dashboards on /ws/connect of a running hub fed by the fleet simulator.

Prints the connect rate, the hub's resident memory per idle connection, the delay from a
snapshot's tick (``data.ts``) to its receipt (p50/p99), the delay of tenant updates after
their tick, and frames lost (gaps in the snapshots' ``seq``; sockets closed by the hub).
Delays are reported twice: over every socket, and over ``--probes`` sockets held by a
process of their own. A client process reading thousands of sockets adds its own queueing
(it takes a while to get through one tick's burst); a probe sees what one dashboard sees.
It speaks only the wire protocol; the hub's RSS is read from /proc (``--hub-pid``, or the
process listening on the hub's port).

Set-up it does itself (idempotent): ``--tenants`` customers ``bench-tenant-N`` with user
``bench-customer-N``, each holding ``--machines-per-tenant`` machines of the fleet. Admin
sockets share the admin's login, customer sockets their tenant's user, so the hub must
allow that many sockets per user (REMOTEGPU_WS_MAX_CONNECTIONS_PER_USER). Example:

    remotegpu agent-mock --hub http://127.0.0.1:8080 --machines 1000 \\
        --admin-user admin --admin-password "$PW" &
    .venv/bin/python loadtest/bench_fanout.py --hub http://127.0.0.1:8080 \\
        --admin-password "$PW" --subscribers 10000 --admin-share 0.02 --duration 60

With ``--api-key`` (or ``REMOTEGPU_API_KEY``) the set-up and the admin sockets use an
admin's API key instead of logging in with a password.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
import psutil
from hub_process import hub_pid

try:
    import uvloop
except ImportError:  # the benchmark still runs, only with a slower client
    uvloop = None

CUSTOMER_PASSWORD = "bench-customer-password"


@dataclass
class Tally:
    connected: int = 0
    failed: Counter = field(default_factory=Counter)
    closed_by_hub: Counter = field(default_factory=Counter)
    snapshot_delays: list[float] = field(default_factory=list)
    update_delays: list[float] = field(default_factory=list)
    snapshots: int = 0
    updates: int = 0
    events: int = 0
    lost: int = 0

    def merge(self, other: Tally) -> None:
        self.connected += other.connected
        self.failed.update(other.failed)
        self.closed_by_hub.update(other.closed_by_hub)
        self.snapshot_delays += other.snapshot_delays
        self.update_delays += other.update_delays
        self.snapshots += other.snapshots
        self.updates += other.updates
        self.events += other.events
        self.lost += other.lost


async def _api(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
               json: object = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=json, headers=headers) as resp:
        return resp.status, await resp.json()


async def _login(session: aiohttp.ClientSession, hub: str, user: str, password: str) -> str:
    status, body = await _api(session, "POST", f"{hub}/api/v1/auth/login",
                              json={"username": user, "password": password})
    if status != 200:
        sys.exit(f"login {user} failed: {body}")
    return body["data"]["access_token"]


async def _tenant(session: aiohttp.ClientSession, hub: str, admin: str, n: int) -> int:
    name = f"bench-tenant-{n}"
    status, body = await _api(session, "POST", f"{hub}/api/v1/admin/customers", admin, {
        "name": name, "username": f"bench-customer-{n}", "password": CUSTOMER_PASSWORD})
    if status == 200:
        return body["data"]["id"]
    status, body = await _api(session, "GET", f"{hub}/api/v1/admin/customers?keyword={name}"
                              "&page_size=100", admin)
    return next(item["id"] for item in body["data"]["list"] if item["name"] == name)


async def _machines(session: aiohttp.ClientSession, hub: str, admin: str) -> list[dict]:
    machines, page = [], 1
    while True:
        _, body = await _api(session, "GET", f"{hub}/api/v1/admin/machines?page={page}"
                             "&page_size=100", admin)
        machines += body["data"]["list"]
        if len(machines) >= body["data"]["total"] or not body["data"]["list"]:
            return machines
        page += 1


async def prepare(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The admin's token (its API key, if given) and one token per tenant user, after
    leasing machines to them."""
    hub, tenants, per_tenant = args.hub, args.tenants, args.machines_per_tenant
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        admin = args.api_key or await _login(session, hub, args.admin_user,
                                             args.admin_password)
        tenant_ids = [await _tenant(session, hub, admin, n) for n in range(1, tenants + 1)]
        machines = await _machines(session, hub, admin)
        held = Counter(m["tenant_id"] for m in machines if m.get("tenant_id"))
        idle = [m["id"] for m in machines if m["allocation_status"] == "idle"
                and m["status"] == "online"]
        for tenant_id in tenant_ids:
            while held[tenant_id] < per_tenant and idle:
                status, _ = await _api(
                    session, "POST", f"{hub}/api/v1/admin/machines/{idle.pop()}/allocate",
                    admin, {"tenant_id": tenant_id, "duration_months": 1})
                if status == 200:
                    held[tenant_id] += 1
        short = [t for t in tenant_ids if held[t] < per_tenant]
        if short:
            print(f"warning: {len(short)} tenants hold fewer than {per_tenant} machines "
                  "(not enough idle online machines)", file=sys.stderr)
        customers = [await _login(session, hub, f"bench-customer-{n}", CUSTOMER_PASSWORD)
                     for n in range(1, tenants + 1)]
        return admin, customers


async def _listen(ws: aiohttp.ClientWebSocketResponse, tally: Tally, measuring: list[bool],
                  update_interval: float) -> None:
    last_seq: int | None = None
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        received = time.time()
        frame = orjson.loads(message.data)
        kind = frame["type"]
        if kind == "monitoring_snapshot":
            seq = frame["data"]["seq"]
            if last_seq is not None and measuring[0]:
                tally.snapshots += 1
                tally.lost += max(0, seq - last_seq - 1)
                tally.snapshot_delays.append(received - frame["data"]["ts"])
            last_seq = seq
        elif kind == "monitoring_update":
            if measuring[0]:
                tally.updates += 1
                # Updates carry the sample's time, not the tick's; the hub ticks at
                # k * interval + interval / 2 of the wall clock, so the time since the last
                # such instant is the delivery delay.
                tally.update_delays.append((received - update_interval / 2) % update_interval)
        elif measuring[0]:
            tally.events += 1
    if ws.close_code not in (None, 1000):
        tally.closed_by_hub[ws.close_code] += 1


async def run(hub: str, tokens: list[str], duration: float, settle: float,
              update_interval: float, connect_parallel: int,
              ready: multiprocessing.synchronize.Event | None = None,
              go: multiprocessing.synchronize.Event | None = None) -> tuple[Tally, float]:
    """Open one socket per token, hold them ``settle`` + ``duration`` seconds, measure
    during ``duration``. Returns the tally and the seconds it took to connect them all."""
    url = hub.replace("http", "ws", 1) + "/ws/connect?token="
    tally, measuring = Tally(), [False]
    gate = asyncio.Semaphore(connect_parallel)
    listeners: list[asyncio.Task[None]] = []
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def connect(token: str) -> None:
            async with gate:
                try:
                    ws = await session.ws_connect(url + token, compress=0, autoping=True,
                                                  max_msg_size=0)
                    welcome = await ws.receive(timeout=30)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    tally.failed[type(exc).__name__] += 1
                    return
            if welcome.type != aiohttp.WSMsgType.TEXT:
                tally.failed[f"close {welcome.data}"] += 1
                return
            tally.connected += 1
            sockets.append(ws)
            listeners.append(asyncio.create_task(_listen(ws, tally, measuring,
                                                         update_interval)))

        started = time.monotonic()
        await asyncio.gather(*(connect(token) for token in tokens))
        took = time.monotonic() - started
        # Tuned like the hub (hub/cli.py): a full collection over thousands of sockets
        # would stall this client and show up as delivery delay.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 10)
        if ready is not None and go is not None:
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
        await asyncio.sleep(settle)
        measuring[0] = True
        await asyncio.sleep(duration)
        measuring[0] = False
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*listeners, return_exceptions=True)
    return tally, took


def _worker(args: argparse.Namespace, index: int, tokens: list[str],
            queue: multiprocessing.Queue, ready: multiprocessing.synchronize.Event,
            go: multiprocessing.synchronize.Event) -> None:
    with asyncio.Runner(loop_factory=uvloop and uvloop.new_event_loop) as runner:
        queue.put((index, *runner.run(run(args.hub, tokens, args.duration, args.settle,
                                          args.update_interval, args.connect_parallel,
                                          ready, go))))


def _tick_totals(metrics_url: str) -> dict[str, float]:
    """The hub's own account of its ticks: sums and counts of tick durations, by kind."""

    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(metrics_url) as resp:
            resp.raise_for_status()
            return await resp.text()

    totals = {}
    for line in asyncio.run(scrape()).splitlines():
        if line.startswith(("remotegpu_ws_tick_seconds_sum", "remotegpu_ws_tick_seconds_count")):
            name, value = line.rsplit(" ", 1)
            totals[name] = float(value)
    return totals


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def _delays(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"p50={_pct(values, 0.5) * 1000:.0f} ms p99={_pct(values, 0.99) * 1000:.0f} ms "
            f"max={max(values) * 1000:.0f} ms mean={statistics.fmean(values) * 1000:.0f} ms")


def main(args: argparse.Namespace) -> None:
    admin, customers = asyncio.run(prepare(args))
    admins = round(args.subscribers * args.admin_share)
    tokens = [admin] * admins + [customers[i % len(customers)]
                                 for i in range(args.subscribers - admins)]
    pid = args.hub_pid or hub_pid(args.hub)
    rss_before = _rss(pid)
    # Probes take every k-th token, so they hold admins and customers in the same mix.
    step = max(1, len(tokens) // args.probes) if args.probes else 0
    probe_at = set(range(0, len(tokens), step)[:args.probes]) if step else set()
    probes = [token for i, token in enumerate(tokens) if i in probe_at]
    bulk = [token for i, token in enumerate(tokens) if i not in probe_at]
    parts = [bulk[i::args.processes] for i in range(args.processes)] + ([probes] if probes else [])
    queue: multiprocessing.Queue = multiprocessing.Queue()
    ready_events = [multiprocessing.Event() for _ in parts]
    go = multiprocessing.Event()
    workers = [multiprocessing.Process(target=_worker, args=(args, i, part, queue, ready, go))
               for i, (part, ready) in enumerate(zip(parts, ready_events, strict=True))]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for ready in ready_events:
        ready.wait()
    connect_s = time.monotonic() - started
    time.sleep(2)  # the hub settles its allocations after the burst
    rss_held = _rss(pid)
    ticks_before = _tick_totals(args.metrics_url)
    go.set()
    total, probe_tally = Tally(), Tally()
    for _ in workers:  # every result first: a worker cannot exit before its result is read
        index, tally, _took = queue.get()
        total.merge(tally)
        if probes and index == len(parts) - 1:
            probe_tally = tally
    for worker in workers:
        worker.join()
    ticks = {name: value - ticks_before.get(name, 0.0)
             for name, value in _tick_totals(args.metrics_url).items()}
    rss_per_conn = (rss_held - rss_before) / max(1, total.connected)
    print(f"subscribers={args.subscribers} admins={admins} tenants={args.tenants} "
          f"client processes={args.processes} + {len(probes)} probes in their own, "
          f"event loop {'uvloop' if uvloop else 'asyncio'}, measured {args.duration:g} s "
          f"after {args.settle:g} s")
    print(f"connected={total.connected} failed={dict(total.failed) or 0} in {connect_s:.1f} s "
          f"({total.connected / connect_s:,.0f}/s)")
    print(f"hub RSS {rss_before / 2**20:,.0f} MiB -> {rss_held / 2**20:,.0f} MiB held: "
          f"{rss_per_conn / 1024:.1f} KiB per idle connection")
    print(f"snapshots received={total.snapshots:,} lost={total.lost}; "
          f"updates received={total.updates:,}; events={total.events:,}")
    for label, tally in (("all sockets", total), ("probe sockets", probe_tally)):
        if tally.snapshots or tally.updates:
            print(f"{label}: snapshot delay tick->receipt {_delays(tally.snapshot_delays)}; "
                  f"update delay tick->receipt {_delays(tally.update_delays)}")
    closes = dict(total.closed_by_hub) or "none"
    print(f"closed by the hub (code: sockets) while measuring: {closes}")
    for kind in ("snapshot", "update"):
        runs = ticks.get(f'remotegpu_ws_tick_seconds_count{{kind="{kind}"}}', 0)
        took = ticks.get(f'remotegpu_ws_tick_seconds_sum{{kind="{kind}"}}', 0)
        if runs:
            print(f"hub {kind} ticks (settle + measure): {runs:.0f}, "
                  f"mean {took / runs * 1000:.1f} ms to build and write")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="http://127.0.0.1:8080")
    parser.add_argument("--metrics-url", default="http://127.0.0.1:9464/metrics",
                        help="the hub's metrics listener (REMOTEGPU_METRICS_HOST and _PORT; "
                             "default http://127.0.0.1:9464/metrics)")
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument("--admin-password", default=os.environ.get("REMOTEGPU_ADMIN_PASSWORD"))
    parser.add_argument("--api-key", default=os.environ.get("REMOTEGPU_API_KEY"),
                        help="an admin's API key (rgk_...; default $REMOTEGPU_API_KEY), used "
                             "instead of --admin-user and --admin-password")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--admin-share", type=float, default=0.02,
                        help="fraction of subscribers that are admins (the rest customers)")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--machines-per-tenant", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds after every socket is open before measuring")
    parser.add_argument("--update-interval", type=float, default=1.0,
                        help="the hub's REMOTEGPU_TENANT_UPDATE_INTERVAL_S")
    parser.add_argument("--processes", type=int, default=1,
                        help="client processes holding the sockets (besides the probes')")
    parser.add_argument("--probes", type=int, default=100,
                        help="sockets measured from a process of their own (0 for none)")
    parser.add_argument("--connect-parallel", type=int, default=100,
                        help="handshakes in flight per client process")
    parser.add_argument("--hub-pid", type=int, default=None)
    main(parser.parse_args())
