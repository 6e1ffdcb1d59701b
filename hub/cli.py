"""The ``remotegpu`` command: serve, migrate, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import getpass
import logging
import os
import socket
import sys
from collections.abc import Sequence

import asyncpg
from aiohttp import web

try:
    import uvloop
except ImportError:  # a platform without uvloop (Windows): the standard loop
    uvloop = None

from agent_mock import cli as agent_mock_cli
from api.app import create_app
from api.metrics_listener import MetricsListenError
from api.shutdown import REQUESTS_SHARE
from services import logs
from services.accounts import create_admin
from services.errors import ServiceError
from services.passwords import PasswordHasher
from services.settings import Settings, SettingsError
from storage import db
from storage.cache import PrefixTaken
from storage.migrate import MigrationError, choose_timescaledb, migrate

log = logging.getLogger("remotegpu")

# Python's default (700, 10, 10) runs a young collection every 700 allocations and so
# promotes a steady stream of short-lived objects; every 25 % growth of the old generation
# then costs a full collection. With 10,000 dashboard sockets (~1 M tracked objects) one
# full collection stalls the loop for 0.3-0.8 s: every dashboard and agent waits.
GC_THRESHOLDS = (50_000, 20, 10)
# Thousands of agents and dashboards reconnect at once when a hub restarts. With aiohttp's
# default backlog (128) the kernel drops the connection attempts beyond it and each waits
# out SYN retransmits (1, 3, 7 s...). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


class CommandError(Exception):
    """A failure worth one line on stderr and exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remotegpu", description="RemoteGPU hub")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate, then run the hub")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    commands.add_parser("migrate", help="apply the SQL migrations")

    admin = commands.add_parser("create-admin", help="create (or --reset) a platform admin")
    admin.add_argument("--username", required=True)
    admin.add_argument("--password",
                       help="the password; omit it to be prompted (or to read one line from "
                            "stdin when it is not a terminal), which keeps it out of `ps`")
    admin.add_argument("--reset", action="store_true",
                       help="set a new password for an existing user and end its sessions")

    simulator = commands.add_parser("agent-mock", help="simulate a fleet of agents (speaks "
                                                       "only the agent protocol)")
    agent_mock_cli.add_arguments(simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent-mock":  # a client of the hub: needs none of its settings
        return agent_mock_cli.main(args)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"remotegpu: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        if args.command == "serve":
            _serve(settings, args.host, args.port)
        elif args.command == "migrate":
            applied = asyncio.run(_migrate(settings))
            print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied)
                                                            if applied else ""))
        elif args.command == "create-admin":
            password = args.password if args.password is not None else _read_password()
            outcome = asyncio.run(_create_admin(settings, args.username, password, args.reset))
            print(f"admin {args.username!r} {outcome}")
    except (CommandError, MigrationError, PrefixTaken, MetricsListenError) as exc:
        print(f"remotegpu: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        detail = "; ".join(f"{e['field']}: {e['message']}"
                           for e in (exc.data or {}).get("errors", []))
        print(f"remotegpu: {detail or exc.message}", file=sys.stderr)
        return 1
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


async def _connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_url, server_settings={"timezone": "UTC"})
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"cannot reach PostgreSQL (REMOTEGPU_DATABASE_URL): {exc}") from None


async def _migrate(settings: Settings) -> list[str]:
    conn = await _connect(settings)
    try:
        timescaledb = await choose_timescaledb(conn, settings.timescaledb)
        return [f"{m.version:04d}_{m.name}" for m in await migrate(conn,
                                                                     timescaledb=timescaledb)]
    finally:
        await conn.close()


async def _create_admin(settings: Settings, username: str, password: str, reset: bool) -> str:
    await _migrate(settings)
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                            memory_kib=settings.argon2_memory_kib)
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await create_admin(pool, hasher, username=username, password=password, reset=reset)
    finally:
        await pool.close()
        hasher.close()


def _tune_gc() -> None:
    """Fewer, cheaper collections for a long-running server: objects alive at start-up
    (modules, the app) are frozen out of every collection, and young collections run
    less often. Reference counting still frees everything acyclic at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _serve(settings: Settings, host: str, port: int) -> None:
    if not settings.instance_id:
        settings = dataclasses.replace(settings, instance_id=f"{socket.gethostname()}:{port}")
    applied = asyncio.run(_migrate(settings))
    if applied:
        log.info("migrations applied", extra={"migrations": applied})
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    log.info("serving", extra={"url": f"http://{host}:{port}",
                               "event_loop": type(loop).__module__.split(".")[0]})
    app = create_app(settings)
    _tune_gc()
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.shutdown_grace_s * REQUESTS_SHARE,
        backlog=LISTEN_BACKLOG,
        loop=loop,
    )


if __name__ == "__main__":
    sys.exit(main())
