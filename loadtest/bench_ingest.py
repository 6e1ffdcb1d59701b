"""Ingest benchmark: agents stream metrics frames over /ws/agent to a running hub.

Paced (the default): N agents each send a frame every ``--interval`` seconds. Prints, over
the window in which every client process streams, frames sent per second, GPU samples
per second that reached PostgreSQL and the hub's CPU; and p50/p99 delay from sending a
frame to its row being visible.

Flood (``--flood``): N agents send frames as fast as the hub takes them, each frame with
its own ``ts`` (a fleet reconnecting after a restart and flushing its buffers), from the
worker processes; the main process runs ``--probes`` paced agents (a frame a second) whose
send -> row delay is measured. Prints GPU samples stored per second (from the hub's
``remotegpu_ingest_rows_written_total`` over the window), rows dropped and refused, how
often the flow control closed, the probes' p50/p99, the hub's CPU and RSS. With
``--writer-baseline S`` it then measures, for S seconds with the hub idle, how fast
PostgreSQL takes the same rows by COPY from this process (batches as the hub's writer sends
behind a backlog): the writer's uncontended rate, to compare with.

It speaks only the wire protocol (plus SQL to see when rows land and for the baseline), so
it can target any hub. Examples (hub on :8080, its database reachable with --dsn):

    .venv/bin/python loadtest/bench_ingest.py --hub http://127.0.0.1:8080 \\
        --admin-user admin --admin-password "$(cat var/dev-admin-password)" \\
        --dsn postgresql://postgres@127.0.0.1:5432/remotegpu \\
        --agents 2000 --interval 1 --duration 60 --processes 2
    REMOTEGPU_API_KEY=rgk_... .venv/bin/python loadtest/bench_ingest.py ...  # no password
    .venv/bin/python loadtest/bench_ingest.py ... --flood --agents 200 --duration 60 \\
        --processes 2 --writer-baseline 15
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
from hub_process import cpu_seconds, hub_pid, rss_bytes

try:
    import uvloop
except ImportError:  # the benchmark still runs, only with a slower client
    uvloop = None

GPUS = 8
GPU_MEM_MIB = 81559
SAMPLED_MACHINES = 100
# The hub's writer behind a backlog: 4 x 5,000 rows per COPY (REMOTEGPU_INGEST_BATCH_ROWS).
BASELINE_FRAMES_PER_BATCH = 20_000 // (GPUS + 1)
# Connection attempts in flight per client process: a real fleet does not dial in all at
# once, and beyond the hub's accept queue attempts wait out SYN retransmits (1, 3, 7 s).
CONNECTS_AT_ONCE = 500


async def _login(session: aiohttp.ClientSession, hub: str, user: str, password: str) -> str:
    async with session.post(f"{hub}/api/v1/auth/login",
                            json={"username": user, "password": password}) as resp:
        body = await resp.json()
        if resp.status != 200:
            sys.exit(f"login failed: {body}")
        return body["data"]["access_token"]


async def register(args: argparse.Namespace, count: int) -> dict[str, str]:
    """Create (or take over, by rotating the token) machines prefix00001..; their tokens.
    As the admin of ``--api-key``, or else of ``--admin-user`` and ``--admin-password``."""
    hub, prefix = args.hub, args.prefix
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        bearer = args.api_key or await _login(session, hub, args.admin_user,
                                              args.admin_password)
        headers = {"Authorization": f"Bearer {bearer}"}
        limit = asyncio.Semaphore(20)

        async def one(i: int) -> tuple[str, str]:
            machine_id = f"{prefix}{i:05d}"
            spec = {"id": machine_id, "name": machine_id, "region": f"bench-{i % 8}",
                    "ip": f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",
                    "gpu_model": "NVIDIA H100 80GB HBM3", "gpu_count": GPUS,
                    "gpu_memory_gb": 80}
            async with limit:
                async with session.post(f"{hub}/api/v1/admin/machines", json=spec,
                                        headers=headers) as resp:
                    body = await resp.json()
                    if resp.status == 200:
                        return machine_id, body["data"]["agent_token"]
                async with session.post(f"{hub}/api/v1/admin/machines/{machine_id}/agent-token",
                                        headers=headers) as resp:
                    body = await resp.json()
                    return machine_id, body["data"]["agent_token"]

        return dict(await asyncio.gather(*(one(i) for i in range(1, count + 1))))


def make_frame(now: float, phase: float) -> dict:
    util = 50 + 45 * random.random() * phase
    return {
        "type": "metrics", "ts": now, "cpu_util": 35.0, "mem_used": 180.0, "mem_total": 512,
        "disk_used": 900, "disk_total": 3800,
        "gpus": [{"index": i, "util": round(util, 1), "mem_used": round(util * 800),
                  "mem_total": GPU_MEM_MIB, "temp": round(40 + util / 3, 1),
                  "power": round(90 + util * 6, 1)} for i in range(GPUS)],
    }


async def _read(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Reads what the hub sends, as an agent does: its pings are answered (a socket that
    stays quiet while the others connect would be closed as dead) and its close is seen."""
    async for _ in ws:
        pass


async def drive(hub: str, tokens: dict[str, str], interval: float, duration: float,
                sent_at: dict[tuple[str, datetime], float] | None,
                sampled: frozenset[str] = frozenset(), warmup: float = 0.0) -> dict[str, Any]:
    """Stream frames from every machine for ``duration`` seconds once all are connected.
    Counts frames sent per wall-clock second, so rates can be taken over the window in
    which every client process was streaming (connecting thousands of sockets takes a while).

    One scheduler sends every machine's frame when it is due (each machine keeps a random
    phase within the interval): a task per machine that sleeps between frames would spend
    more CPU on wake-ups than on sending, on the same cores as the hub.
    """
    ws_url = hub.replace("http", "ws", 1) + "/ws/agent"
    stats: dict[str, Any] = {"sent": 0, "errors": 0, "connected": 0}
    per_second: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        connecting = asyncio.Semaphore(CONNECTS_AT_ONCE)
        readers: list[asyncio.Task[None]] = []

        async def connect(machine_id: str, token: str) -> aiohttp.ClientWebSocketResponse | None:
            try:
                async with connecting:
                    ws = await session.ws_connect(
                        ws_url, headers={"Authorization": f"Bearer {token}"}, compress=0,
                        autoping=True)
            except (aiohttp.ClientError, OSError):
                stats["errors"] += 1
                return None
            await ws.send_str(orjson.dumps({"type": "hello", "machine_id": machine_id,
                                            "gpus": []}).decode())
            stats["connected"] += 1
            readers.append(asyncio.create_task(_read(ws)))
            return ws

        sockets = await asyncio.gather(*(connect(m, t) for m, t in tokens.items()))
        agents = [(machine_id, ws, random.random()) for machine_id, ws
                  in zip(tokens, sockets, strict=True) if ws is not None]
        start = time.monotonic()
        stats["started"] = time.time()
        due = [start + random.random() * interval for _ in agents]
        stop_at = start + duration
        while (now := time.monotonic()) < stop_at:
            for i, (machine_id, ws, phase) in enumerate(agents):
                if due[i] > now or ws.closed:
                    continue
                due[i] += interval
                sent = time.time()
                try:
                    await ws.send_str(orjson.dumps(make_frame(sent, phase)).decode())
                except (aiohttp.ClientError, ConnectionError):
                    stats["errors"] += 1
                    continue
                if sent_at is not None and machine_id in sampled and now - start >= warmup:
                    sent_at[(machine_id, datetime.fromtimestamp(sent, UTC))] = sent
                stats["sent"] += 1
                per_second[int(sent)] += 1
            await asyncio.sleep(0.01)
        stats["ended"] = time.time()
        await asyncio.gather(*(ws.close() for _, ws, _ in agents), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
    stats["per_second"] = per_second
    return stats


def frame_template(phase: float) -> tuple[bytes, bytes]:
    """A metrics message split around its ``ts`` value, so a flooding agent only formats
    the time of each frame (the client must not spend the cores the hub is measured on)."""
    encoded = orjson.dumps(make_frame(0.0, phase))
    head, tail = encoded.split(b'"ts":0.0', 1)
    return head + b'"ts":', tail


async def flood(hub: str, tokens: dict[str, str], duration: float) -> dict[str, Any]:
    """Every agent sends as fast as its socket takes frames (aiohttp waits while the
    hub's reading is paused and TCP pushes back), for ``duration`` s once all connected."""
    ws_url = hub.replace("http", "ws", 1) + "/ws/agent"
    stats: dict[str, Any] = {"sent": 0, "errors": 0, "connected": 0, "closed": 0}
    per_second: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        connecting = asyncio.Semaphore(CONNECTS_AT_ONCE)

        async def connect(machine_id: str, token: str) -> aiohttp.ClientWebSocketResponse | None:
            try:
                async with connecting:
                    ws = await session.ws_connect(
                        ws_url, headers={"Authorization": f"Bearer {token}"}, compress=0)
            except (aiohttp.ClientError, OSError):
                stats["errors"] += 1
                return None
            await ws.send_str(orjson.dumps({"type": "hello", "machine_id": machine_id,
                                            "gpus": []}).decode())
            stats["connected"] += 1
            return ws

        sockets = [ws for ws in await asyncio.gather(*(connect(m, t) for m, t in
                                                       tokens.items())) if ws is not None]
        readers = [asyncio.create_task(_read(ws)) for ws in sockets]
        stats["started"] = time.time()
        stop_at = time.monotonic() + duration

        async def send(ws: aiohttp.ClientWebSocketResponse) -> None:
            head, tail = frame_template(random.random())
            last = 0.0
            while time.monotonic() < stop_at and not ws.closed:
                now = time.time()
                last = max(now, last + 1e-5)  # each frame its own ts
                try:
                    await ws.send_str((head + repr(last).encode() + tail).decode())
                except (aiohttp.ClientError, ConnectionError):
                    stats["errors"] += 1
                    return
                stats["sent"] += 1
                per_second[int(now)] += 1
            if ws.closed:
                stats["closed"] += 1

        await asyncio.gather(*(send(ws) for ws in sockets))
        stats["ended"] = time.time()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
    stats["per_second"] = per_second
    return stats


async def writer_baseline(dsn: str, seconds: float) -> float:
    """Rows per second PostgreSQL takes by COPY from this process alone, with the hub idle:
    batches like the hub's writer sends behind a backlog, into the same tables (rows of
    machines baseline-NNNNN, deleted afterwards)."""
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    gpu_columns = ("time", "machine_id", "gpu_index", "util", "mem_used", "mem_total",
                   "temp", "power")
    machine_columns = ("time", "machine_id", "cpu_util", "mem_used", "mem_total",
                       "disk_used", "disk_total")
    start = datetime.now(UTC) - timedelta(hours=2)
    rows = frames = 0
    try:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            gpu, machine = [], []
            for _ in range(BASELINE_FRAMES_PER_BATCH):
                moment = start + timedelta(microseconds=frames * 10)
                machine_id = f"baseline-{frames % 2000:05d}"
                frames += 1
                util = 50 + 45 * random.random()
                gpu += [(moment, machine_id, i, util, util * 800, GPU_MEM_MIB,
                         40 + util / 3, 90 + util * 6) for i in range(GPUS)]
                machine.append((moment, machine_id, 35.0, 180.0, 512.0, 900.0, 3800.0))
            await conn.copy_records_to_table("gpu_metrics", records=gpu, columns=gpu_columns)
            await conn.copy_records_to_table("machine_metrics", records=machine,
                                             columns=machine_columns)
            rows += len(gpu) + len(machine)
        took = time.monotonic() - began
        for table in ("gpu_metrics", "machine_metrics"):
            await conn.execute(f"DELETE FROM {table} WHERE machine_id LIKE 'baseline-%'")
        return rows / took
    finally:
        await conn.close()


async def watch_rows(dsn: str, sent_at: dict[tuple[str, datetime], float], stop: asyncio.Event,
                     delays: list[tuple[float, float]], sampled: list[str]) -> None:
    """Poll for the GPU 0 rows of a sample of machines (an index lookup, so the poll does
    not load PostgreSQL itself) and record (send time, send -> visible delay)."""
    # Force the (machine_id, time) index: otherwise the planner may pick (parallel)
    # sequential or BRIN bitmap scans of all recent rows, and the probe would eat the very
    # cores the hub is being measured on.
    conn = await asyncpg.connect(dsn, server_settings={
        "enable_seqscan": "off", "enable_bitmapscan": "off",
        "max_parallel_workers_per_gather": "0"})
    try:
        since = datetime.now(UTC)
        while not stop.is_set():
            rows = await conn.fetch("SELECT machine_id, time FROM gpu_metrics "
                                    "WHERE machine_id = ANY($2::text[]) AND time >= $1 "
                                    "AND gpu_index = 0", since, sampled)
            seen_at = time.time()
            for row in rows:
                sent = sent_at.pop((row["machine_id"], row["time"]), None)
                if sent is not None:
                    delays.append((sent, seen_at - sent))
            if rows:
                since = max(row["time"] for row in rows)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def watch_cpu(pid: int, stop: asyncio.Event, readings: dict[int, float]) -> None:
    """The hub's CPU seconds used so far, as read at the start of each wall-clock second."""
    while not stop.is_set():
        readings.setdefault(int(time.time()), cpu_seconds(pid))
        await asyncio.sleep(0.1)


async def scrape(metrics_url: str, name: str) -> float:
    return (await scrape_all(metrics_url)).get(name, 0.0)


async def scrape_all(metrics_url: str) -> dict[str, float]:
    """The hub's unlabelled metrics, from its metrics listener."""
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as resp:
        resp.raise_for_status()
        return {parts[0]: float(parts[1]) for line in (await resp.text()).splitlines()
                if not line.startswith("#") and len(parts := line.split()) == 2}


def _worker(hub: str, tokens: dict[str, str], interval: float, duration: float,
            queue: multiprocessing.Queue) -> None:
    with asyncio.Runner(loop_factory=uvloop and uvloop.new_event_loop) as runner:
        if interval:
            queue.put(runner.run(drive(hub, tokens, interval, duration, None)))
        else:
            queue.put(runner.run(flood(hub, tokens, duration)))


async def main(args: argparse.Namespace) -> None:
    if args.flood:
        await main_flood(args)
        return
    tokens = await register(args, args.agents)
    print(f"{len(tokens)} machines registered", file=sys.stderr)
    items = list(tokens.items())
    share = len(items) // args.processes
    # This process drives the first share (and measures delays); others the rest.
    mine = dict(items[:share + len(items) % args.processes])
    others = [dict(items[len(mine) + i * share: len(mine) + (i + 1) * share])
              for i in range(args.processes - 1)]
    frames_before = await scrape(args.metrics_url, "remotegpu_ingest_frames_total")
    # spawn, not fork: a child forked from inside a running (uv)loop inherits its state,
    # and such workers hung or lost their sockets under load.
    spawn = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = spawn.Queue()
    workers = [spawn.Process(target=_worker, args=(args.hub, part, args.interval,
                                                    args.duration, queue))
               for part in others]
    for worker in workers:
        worker.start()
    sent_at: dict[tuple[str, datetime], float] = {}
    delays: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampled = sorted(mine)[:SAMPLED_MACHINES]
    watcher = asyncio.create_task(watch_rows(args.dsn, sent_at, stop, delays, sampled))
    cpu: dict[int, float] = {}
    cpu_watcher = asyncio.create_task(watch_cpu(args.hub_pid or hub_pid(args.hub), stop, cpu))
    runs = [await drive(args.hub, mine, args.interval, args.duration, sent_at,
                        frozenset(sampled), args.warmup)]
    await asyncio.sleep(3)  # let the last batches land
    stop.set()
    await asyncio.gather(watcher, cpu_watcher)
    runs += [queue.get() for _ in workers]  # before join: a worker exits once read
    for worker in workers:
        worker.join()
    frames = await scrape(args.metrics_url, "remotegpu_ingest_frames_total") - frames_before
    # The window in which every client process streamed, in whole seconds, after warm-up.
    first = int(max(run["started"] for run in runs) + args.warmup) + 1
    last = int(min(run["ended"] for run in runs))
    if last - first < 5:
        sys.exit("no common streaming window: raise --duration or lower --warmup")
    seconds = last - first
    sent = sum(run["per_second"][s] for run in runs for s in range(first, last))
    conn = await asyncpg.connect(args.dsn)
    rows = await conn.fetchval("SELECT count(*) FROM gpu_metrics WHERE time >= $1 AND time < $2",
                               datetime.fromtimestamp(first, UTC),
                               datetime.fromtimestamp(last, UTC))
    await conn.close()
    total = {key: sum(run[key] for run in runs) for key in ("sent", "errors", "connected")}
    print(f"agents={args.agents} connected={total['connected']} errors={total['errors']} "
          f"processes={args.processes} interval={args.interval}s")
    print(f"whole run: frames sent={total['sent']:,} accepted by the hub={frames:,.0f}")
    print(f"steady window ({seconds} s, every client streaming, after {args.warmup:g} s "
          f"warm-up): frames sent/s={sent / seconds:,.0f} "
          f"GPU samples written/s={rows / seconds:,.0f} "
          f"({rows:,} of {sent * GPUS:,} sent in the window); "
          f"hub CPU {(cpu[last] - cpu[first]) / seconds:.0%} of one core")
    if delays:
        p50, p99, _ = percentiles([delay for _, delay in delays])
        print(f"frame->row delay p50={p50 * 1000:.0f} ms p99={p99 * 1000:.0f} ms "
              f"(n={len(delays):,}: every frame of {len(sampled)} machines after the first "
              f"{args.warmup:g} s)")


async def main_flood(args: argparse.Namespace) -> None:
    tokens = await register(args, args.agents + args.probes)
    items = list(tokens.items())
    probes, flooders = dict(items[:args.probes]), items[args.probes:]
    print(f"{len(flooders)} flooding agents and {len(probes)} probes registered",
          file=sys.stderr)
    share = -(-len(flooders) // args.processes)
    parts = [dict(flooders[i:i + share]) for i in range(0, len(flooders), share)]
    before = await scrape_all(args.metrics_url)
    spawn = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = spawn.Queue()
    workers = [spawn.Process(target=_worker, args=(args.hub, part, 0.0, args.duration, queue))
               for part in parts]
    for worker in workers:
        worker.start()
    sent_at: dict[tuple[str, datetime], float] = {}
    delays: list[tuple[float, float]] = []
    stop = asyncio.Event()
    pid = args.hub_pid or hub_pid(args.hub)
    cpu: dict[int, float] = {}
    written: dict[int, float] = {}
    watchers = [asyncio.create_task(watch_rows(args.dsn, sent_at, stop, delays, list(probes))),
                asyncio.create_task(watch_cpu(pid, stop, cpu)),
                asyncio.create_task(watch_written(args.metrics_url, stop, written))]
    # the probes stream a little longer than the flood, which starts once all connected
    probe_run = await drive(args.hub, probes, 1.0, args.duration + 20, sent_at,
                            frozenset(probes), args.warmup)
    runs = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    await asyncio.sleep(3)  # the last batches land
    stop.set()
    await asyncio.gather(*watchers)
    rss = rss_bytes(pid)
    after = await scrape_all(args.metrics_url)
    first = int(max(run["started"] for run in runs) + args.warmup) + 1
    last = int(min(run["ended"] for run in runs))
    # A scrape can take longer than a second while the hub is saturated: take the
    # readings nearest inside the window.
    first = min((s for s in written if s >= first), default=last)
    last = max((s for s in written if s <= last), default=first)
    if last - first < 5:
        sys.exit("no common flooding window: raise --duration or lower --warmup")
    seconds = last - first
    rows_per_s = (written[last] - written[first]) / seconds
    sent = sum(run["per_second"][s] for run in runs for s in range(first, last))
    total = {key: sum(run[key] for run in runs) for key in ("sent", "errors", "connected",
                                                             "closed")}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    print(f"flood: agents={len(flooders)} connected={total['connected']} "
          f"errors={total['errors']} closed by the hub={total['closed']} "
          f"processes={args.processes} probes={len(probes)} "
          f"(probe send errors {probe_run['errors']})")
    print(f"window ({seconds} s, every flooding process sending, after {args.warmup:g} s): "
          f"frames sent/s={sent / seconds:,.0f} rows written/s={rows_per_s:,.0f} "
          f"GPU samples stored/s={rows_per_s * GPUS / (GPUS + 1):,.0f}; "
          f"hub CPU {(cpu[last] - cpu[first]) / seconds:.0%} of one core, "
          f"RSS after {rss / 2**20:,.0f} MiB")
    print(f"whole run: frames sent={total['sent']:,} "
          f"rows written={delta('remotegpu_ingest_rows_written_total'):,.0f} "
          f"dropped={delta('remotegpu_ingest_rows_dropped_total'):,.0f} "
          f"refused={delta('remotegpu_ingest_rows_refused_total'):,.0f} "
          f"duplicates={delta('remotegpu_ingest_rows_duplicate_total'):,.0f}; "
          f"flow closed {delta('remotegpu_ingest_flow_closings_total'):,.0f} times, "
          f"{delta('remotegpu_ingest_flow_closed_seconds_total'):,.1f} s in all; "
          f"dead sockets {delta('remotegpu_agent_sockets_dead_total'):,.0f}")
    flooded = [delay for sent, delay in delays if first <= sent < last]
    if flooded:
        p50, p99, worst = percentiles(flooded)
        print(f"probe frame->row delay during the flood p50={p50 * 1000:.0f} ms "
              f"p99={p99 * 1000:.0f} ms max={worst * 1000:.0f} ms (n={len(flooded):,}; "
              f"{len(sent_at)} probe frames never seen)")
    if args.writer_baseline:
        rate = await writer_baseline(args.dsn, args.writer_baseline)
        print(f"writer baseline (COPY from one client, hub idle, {args.writer_baseline:g} s): "
              f"rows/s={rate:,.0f} GPU samples/s={rate * GPUS / (GPUS + 1):,.0f}; "
              f"the flood stored {rows_per_s / rate:.0%} of it")


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and the largest."""
    values = sorted(values)
    return (statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))],
            values[-1])


async def watch_written(metrics_url: str, stop: asyncio.Event,
                        readings: dict[int, float]) -> None:
    """The hub's rows written so far, read at the start of each wall-clock second."""
    while not stop.is_set():
        second = int(time.time())
        if second not in readings:
            readings[second] = await scrape(metrics_url, "remotegpu_ingest_rows_written_total")
        await asyncio.sleep(0.1)


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
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/remotegpu")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between frames of one agent")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--processes", type=int, default=1,
                        help="client processes (the client competes with the hub for CPU)")
    parser.add_argument("--hub-pid", type=int, default=None,
                        help="the hub's pid, for its CPU use (default: found by its port)")
    parser.add_argument("--prefix", default="bench-")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds after connecting before delays are recorded")
    parser.add_argument("--flood", action="store_true",
                        help="agents send as fast as the hub takes frames (see above)")
    parser.add_argument("--probes", type=int, default=20,
                        help="flood: paced agents whose send -> row delay is measured")
    parser.add_argument("--writer-baseline", type=float, default=0.0, metavar="S",
                        help="flood: then measure PostgreSQL's COPY rate for S seconds")
    with asyncio.Runner(loop_factory=uvloop and uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
