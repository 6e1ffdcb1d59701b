"""Make PostgreSQL and Redis answer for ``./dev run`` (mode ``hub``) or ``./dev test``
(mode ``test``), and print the shell exports that point the hub or the tests at them.
``clear-prefix PREFIX`` deletes the keys under a Redis prefix (of $REMOTEGPU_REDIS_URL).

The configured URL is used when it answers. Otherwise a private instance is started under
``var/`` from the system's binaries (PostgreSQL on port 55432, Redis on 56379) and reused by
later runs. Exit status 3 means a server is needed but its binaries are not installed.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
PRIVATE_PG_PORT = int(os.environ.get("REMOTEGPU_DEV_PG_PORT", "55432"))
PRIVATE_REDIS_PORT = int(os.environ.get("REMOTEGPU_DEV_REDIS_PORT", "56379"))
MISSING_BINARIES = 3


class Missing(Exception):
    """The binaries needed to start a private server are not installed."""


def note(message: str) -> None:
    print(f"==> {message}", file=sys.stderr)


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


# --- PostgreSQL -------------------------------------------------------------------------

async def _postgres_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except asyncpg.InvalidCatalogNameError:
        return True  # the server answers; the database is created below
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _ensure_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            note(f"creating database {name}")
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise Missing("PostgreSQL binaries (pg_ctl, initdb)")


def _pg_home() -> Path:
    """var/pg, or when root and the postgres user cannot reach var/ (a home directory
    closed to others), a folder in /var/tmp that var/pg links to."""
    home = VAR / "pg"
    if os.geteuid() != 0 or home.exists():
        return home
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(ROOT)],
                               capture_output=True).returncode == 0
    if reachable:
        return home
    outside = Path("/var/tmp") / f"remotegpu-pg-{hashlib.sha1(bytes(ROOT)).hexdigest()[:10]}"
    outside.mkdir(mode=0o755, parents=True, exist_ok=True)
    VAR.mkdir(exist_ok=True)
    home.symlink_to(outside)
    return home


def _as_postgres_user(args: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _start_private_postgres() -> str:
    url = f"postgresql://postgres@127.0.0.1:{PRIVATE_PG_PORT}/postgres"
    if asyncio.run(_postgres_answers(url)):
        return url
    bindir = _pg_bindir()
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Missing("the postgres system user") from None
    home = _pg_home()
    home.mkdir(parents=True, exist_ok=True)
    data, run = home / "data", home / "run"
    run.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(home.resolve())], check=True)
    if not (data / "PG_VERSION").exists():
        note(f"initialising a private PostgreSQL in {home}")
        subprocess.run(_as_postgres_user([str(bindir / "initdb"), "-D", str(data), "-U",
                                          "postgres", "--auth=trust", "-E", "UTF8",
                                          "--no-locale"]),
                       check=True, stdout=subprocess.DEVNULL)
    note(f"starting the private PostgreSQL on 127.0.0.1:{PRIVATE_PG_PORT}")
    options = f"-c listen_addresses=127.0.0.1 -p {PRIVATE_PG_PORT} -k {run.resolve()}"
    subprocess.run(_as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                      str(home / "postgres.log"), "-o", options, "-w", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    if not asyncio.run(_postgres_answers(url)):
        raise SystemExit(f"dev: the private PostgreSQL did not answer; see {home}/postgres.log")
    return url


def postgres_url(configured: str) -> str:
    """The URL to use: ``configured`` if its server answers, else the private instance's
    with the same database name."""
    if asyncio.run(_postgres_answers(configured)):
        return configured
    note(f"PostgreSQL at {urlsplit(configured).netloc} does not answer; using a private one")
    private = _start_private_postgres()
    return with_database(private, urlsplit(configured).path.lstrip("/") or "postgres")


# --- Redis ------------------------------------------------------------------------------

def _redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                      timeout=2) as sock:
            if parts.password:
                user = parts.username or "default"
                sock.sendall(f"AUTH {user} {parts.password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_url(configured: str) -> str:
    if _redis_answers(configured):
        return configured
    url = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"
    if _redis_answers(url):
        return url
    server = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                              if Path("/usr/bin/redis-server").exists() else None)
    if server is None:
        raise Missing("redis-server")
    home = VAR / "redis"
    home.mkdir(parents=True, exist_ok=True)
    note(f"starting a private Redis on 127.0.0.1:{PRIVATE_REDIS_PORT}")
    subprocess.run([server, "--port", str(PRIVATE_REDIS_PORT), "--bind", "127.0.0.1",
                    "--daemonize", "yes", "--dir", str(home), "--pidfile",
                    str(home / "redis.pid"), "--logfile", str(home / "redis.log"),
                    "--save", "", "--appendonly", "no"], check=True)
    for _ in range(50):
        if _redis_answers(url):
            return url
        time.sleep(0.1)
    raise SystemExit(f"dev: the private Redis did not answer; see {home}/redis.log")


def clear_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (a new dev database takes its prefix over)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i:i + 1000])
        return len(keys)
    finally:
        client.close()


# --- entry point ------------------------------------------------------------------------

def main(mode: str) -> dict[str, str]:
    if mode == "hub":
        pg = postgres_url(os.environ.get(
            "REMOTEGPU_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/remotegpu"))
        asyncio.run(_ensure_database(pg))
        return {"REMOTEGPU_DATABASE_URL": pg,
                "REMOTEGPU_REDIS_URL": redis_url(os.environ.get("REMOTEGPU_REDIS_URL",
                                                                "redis://127.0.0.1:6379/0"))}
    if mode == "test":
        pg = postgres_url(os.environ.get(
            "REMOTEGPU_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
        return {"REMOTEGPU_TEST_DATABASE_URL": pg,
                "REMOTEGPU_TEST_REDIS_URL": redis_url(os.environ.get(
                    "REMOTEGPU_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))}
    raise SystemExit(f"dev: unknown mode {mode!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["clear-prefix"]:
        cleared = clear_prefix(os.environ["REMOTEGPU_REDIS_URL"], sys.argv[2])
        note(f"new database: {cleared} Redis keys of an earlier one cleared under "
             f"{sys.argv[2]!r}")
        sys.exit(0)
    try:
        exports = main(sys.argv[1] if len(sys.argv) > 1 else "hub")
    except Missing as exc:
        note(f"missing: {exc}")
        sys.exit(MISSING_BINARIES)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"dev: {' '.join(map(str, exc.cmd))} failed with status {exc.returncode}")
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
