"""What storing each sample once costs the writer: COPY rows/s into the telemetry tables
with their unique sample keys, against the same tables with the plain (machine_id, time)
indexes they had before, and the rate of a batch that is all duplicates (absorbed with ON
CONFLICT DO NOTHING through a staging table, as the writer does after a timeout).

For each variant (plain PostgreSQL; TimescaleDB where the server offers it) it migrates a
scratch database with ``remotegpu migrate``, then sends batches as the hub's writer does
behind a backlog (20,000 GPU rows and 2,500 machine rows per COPY) from this one process,
with synchronous_commit off as the writer's pool has it. Only SQL and the CLI; rows/s are
PostgreSQL's rate (this process only encodes, on the other core).

    .venv/bin/python loadtest/bench_copy.py --batches 40
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

GPUS = 8
FRAMES = 2500
GPU_COLUMNS = ("time", "machine_id", "gpu_index", "util", "mem_used", "mem_total", "temp",
               "power")
MACHINE_COLUMNS = ("time", "machine_id", "cpu_util", "mem_used", "mem_total", "disk_used",
                   "disk_total")
PLAIN_INDEXES = """
DROP INDEX gpu_metrics_sample_key;
CREATE INDEX gpu_metrics_machine_time_idx ON gpu_metrics (machine_id, time DESC);
DROP INDEX machine_metrics_sample_key;
CREATE INDEX machine_metrics_machine_time_idx ON machine_metrics (machine_id, time DESC);
"""
ABSORB = """
CREATE TEMP TABLE IF NOT EXISTS {table}_incoming (LIKE {table}) ON COMMIT DELETE ROWS
"""


def batches(count: int) -> list[tuple[list[tuple], list[tuple]]]:
    start = datetime.now(UTC) - timedelta(hours=6)
    out, k = [], 0
    for _ in range(count):
        gpu, machine = [], []
        for _ in range(FRAMES):
            k += 1
            moment = start + timedelta(microseconds=k * 100)
            machine_id = f"bench-{k % 2000:05d}"
            util = random.uniform(5, 95)
            gpu += [(moment, machine_id, i, util, util * 800, 81559.0, 40 + util / 3,
                     90 + util * 6) for i in range(GPUS)]
            machine.append((moment, machine_id, 35.0, 180.0, 512.0, 900.0, 3800.0))
        out.append((gpu, machine))
    return out


async def copy(conn: asyncpg.Connection, data, *, absorb: bool = False) -> float:
    rows = 0
    began = time.perf_counter()
    for gpu, machine in data:
        for table, records, columns in (("gpu_metrics", gpu, GPU_COLUMNS),
                                        ("machine_metrics", machine, MACHINE_COLUMNS)):
            if absorb:
                async with conn.transaction():
                    await conn.execute(ABSORB.format(table=table))
                    await conn.copy_records_to_table(f"{table}_incoming", records=records,
                                                     columns=columns)
                    await conn.execute(f"INSERT INTO {table} SELECT * FROM {table}_incoming "
                                       "ON CONFLICT DO NOTHING")
            else:
                await conn.copy_records_to_table(table, records=records, columns=columns)
            rows += len(records)
    return rows / (time.perf_counter() - began)


async def scratch(admin_dsn: str, variant: str) -> str:
    name = f"remotegpu_bench_copy_{variant}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    env = {**os.environ, "REMOTEGPU_DATABASE_URL": dsn, "REMOTEGPU_DEV": "1",
           "REMOTEGPU_TIMESCALEDB": "on" if variant == "timescaledb" else "off"}
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "migrate", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await migrate.communicate()
    if migrate.returncode:
        sys.exit(stderr.decode())
    return dsn


async def measure(admin_dsn: str, variant: str, data) -> None:
    dsn = await scratch(admin_dsn, variant)
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        await copy(conn, data[:2])  # warm the caches, create the first chunks
        await conn.execute("TRUNCATE gpu_metrics, machine_metrics")
        unique = await copy(conn, data)
        duplicates = await copy(conn, data, absorb=True)
        await conn.execute("TRUNCATE gpu_metrics, machine_metrics")
        await conn.execute(PLAIN_INDEXES)
        await copy(conn, data[:2])
        await conn.execute("TRUNCATE gpu_metrics, machine_metrics")
        before = await copy(conn, data)
    finally:
        await conn.close()
    print(f"{variant:12} rows/s: unique keys {unique:,.0f}, plain indexes {before:,.0f} "
          f"({unique / before - 1:+.0%}); a batch of duplicates absorbed {duplicates:,.0f}")


async def main(args: argparse.Namespace) -> None:
    data = batches(args.batches)
    conn = await asyncpg.connect(args.admin_dsn)
    offers = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE "
                                 "name = 'timescaledb'")
    await conn.close()
    for variant in ("plain", "timescaledb") if offers else ("plain",):
        await measure(args.admin_dsn, variant, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--batches", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
