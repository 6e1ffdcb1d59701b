"""TimescaleDB's compression of a day of fleet data: how many bytes a day of telemetry
takes before and after the compression policy's work, for gpu_metrics and
machine_metrics.

It migrates a scratch database with ``remotegpu migrate`` (REMOTEGPU_TIMESCALEDB=on),
writes one UTC day, three days back, of ``--machines`` simulated machines sending a frame
every ``--interval`` seconds (the fleet simulator's telemetry: random walks of
utilisation, memory, temperature and power, as agent-mock sends them), then compresses
that day's chunks as the policy would and reads ``chunk_compression_stats``.

    .venv/bin/python loadtest/compression.py --machines 100 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from agent_mock.fleet import fleet
from agent_mock.telemetry import MachineSim

GPU_COLUMNS = ("time", "machine_id", "gpu_index", "util", "mem_used", "mem_total", "temp",
               "power")
MACHINE_COLUMNS = ("time", "machine_id", "cpu_util", "mem_used", "mem_total", "disk_used",
                   "disk_total")
STATS = """
SELECT count(*) AS chunks, sum(before_compression_total_bytes) AS before,
       sum(after_compression_total_bytes) AS after
FROM chunk_compression_stats($1) WHERE compression_status = 'Compressed'
"""


async def scratch(admin_dsn: str) -> str:
    name = "remotegpu_bench_compression"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "migrate",
        env={**os.environ, "REMOTEGPU_DATABASE_URL": dsn, "REMOTEGPU_DEV": "1",
             "REMOTEGPU_TIMESCALEDB": "on"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await migrate.communicate()
    if migrate.returncode:
        sys.exit(stderr.decode())
    return dsn


async def write_day(conn: asyncpg.Connection, machines: int, interval: int) -> int:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3)
    rng = random.Random(1)
    sims = [MachineSim(spec, rng, busy=rng.random() < 0.7) for spec in fleet("fleet-",
                                                                            machines)]
    rows = 0
    for start in range(0, 24 * 3600, 600):  # ten minutes of the fleet per COPY
        gpu, host = [], []
        for step in range(start, start + 600, interval):
            for sim in sims:
                moment = day + timedelta(seconds=step + sim.spec.index % interval)
                frame = sim.frame(moment.timestamp())
                gpu += [(moment, sim.spec.id, g["index"], g["util"], g["mem_used"],
                         g["mem_total"], g["temp"], g["power"]) for g in frame["gpus"]]
                host.append((moment, sim.spec.id, frame["cpu_util"], frame["mem_used"],
                             frame["mem_total"], frame["disk_used"], frame["disk_total"]))
        await conn.copy_records_to_table("gpu_metrics", records=gpu, columns=GPU_COLUMNS)
        await conn.copy_records_to_table("machine_metrics", records=host,
                                         columns=MACHINE_COLUMNS)
        rows += len(gpu) + len(host)
    return rows


async def main(args: argparse.Namespace) -> None:
    dsn = await scratch(args.admin_dsn)
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        began = time.monotonic()
        rows = await write_day(conn, args.machines, args.interval)
        print(f"{args.machines} machines, a frame every {args.interval} s, one day: "
              f"{rows:,} rows written in {time.monotonic() - began:.0f} s")
        for table in ("gpu_metrics", "machine_metrics"):
            began = time.monotonic()
            await conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}', "
                               "older_than => interval '1 day') c")
            stats = await conn.fetchrow(STATS, table)
            print(f"{table}: {stats['chunks']} chunk(s), {stats['before'] / 2**20:,.1f} MiB "
                  f"-> {stats['after'] / 2**20:,.1f} MiB, {stats['before'] / stats['after']:.1f}x "
                  f"(compressed in {time.monotonic() - began:.0f} s)")
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--interval", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
