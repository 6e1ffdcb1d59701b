"""Registering the fleet through the admin API, and the tokens file that lets a later
run skip it.

Every machine is created with ``POST /api/v1/admin/machines``; one that already exists
(409/40902) keeps the token saved for it, or gets a new one by rotation. A few requests
run at once (``register_concurrency``) so thousands of machines register in seconds
without flooding the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from agent_mock.fleet import MachineSpec
from agent_mock.options import AgentMockError, Options

log = logging.getLogger("agent_mock")

DUPLICATE = 40902
_ATTEMPTS = 6
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def read_tokens(path: Path) -> dict[str, str]:
    """The saved ``{machine_id: token}``; empty when the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        tokens = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AgentMockError(f"{path}: not JSON ({exc})") from None
    if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()):
        raise AgentMockError(f"{path}: expected an object of machine id -> token")
    return tokens


def write_tokens(path: Path, tokens: dict[str, str]) -> None:
    """Replace the file atomically; it holds secrets, so only its owner may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(tokens, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@dataclass
class Registration:
    tokens: dict[str, str] = field(default_factory=dict)
    created: int = 0
    reused: int = 0
    rotated: int = 0


class AdminClient:
    """The few admin calls registration needs, with retries on 429/5xx."""

    def __init__(self, session: aiohttp.ClientSession, options: Options) -> None:
        self._session = session
        self._hub = options.hub.rstrip("/")
        self._options = options
        self._headers: dict[str, str] = {}

    async def login(self, username: str, password: str) -> None:
        status, body = await self._call("POST", "/api/v1/auth/login",
                                        {"username": username, "password": password})
        if status != 200:
            raise AgentMockError(f"login as {username!r} refused: {_reason(status, body)}")
        self._headers = {"Authorization": f"Bearer {body['data']['access_token']}"}

    async def create(self, spec: MachineSpec) -> str | None:
        """The new machine's agent token, or None when the machine already exists."""
        status, body = await self._call("POST", "/api/v1/admin/machines", spec.create_body())
        if status == 200:
            return body["data"]["agent_token"]
        if status == 409 and body.get("code") == DUPLICATE:
            return None
        raise AgentMockError(f"creating {spec.id} failed: {_reason(status, body)}")

    async def rotate(self, machine_id: str) -> str:
        status, body = await self._call("POST",
                                        f"/api/v1/admin/machines/{machine_id}/agent-token")
        if status != 200:
            raise AgentMockError(f"rotating the token of {machine_id} failed: "
                                 f"{_reason(status, body)}")
        return body["data"]["agent_token"]

    async def _call(self, method: str, path: str, payload: Any = None
                    ) -> tuple[int, dict[str, Any]]:
        data = None if payload is None else orjson.dumps(payload)
        headers = {**self._headers, "Content-Type": "application/json"}
        attempt = 0
        while True:
            last = attempt + 1 >= _ATTEMPTS
            try:
                async with self._session.request(method, self._hub + path, data=data,
                                                  headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if last:
                    raise AgentMockError(f"{method} {path}: {exc!r}") from None
            else:
                if status not in _RETRY_STATUSES or last:
                    try:
                        return status, orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        return status, {"msg": raw[:200].decode(errors="replace")}
            await asyncio.sleep(self._options.backoff_delay(attempt))
            attempt += 1


def _reason(status: int, body: dict[str, Any]) -> str:
    detail = f"HTTP {status}, code {body.get('code')}: {body.get('msg')}"
    errors = (body.get("data") or {}).get("errors") if isinstance(body.get("data"), dict) \
        else None
    if errors:
        detail += " (" + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors) + ")"
    return detail


async def register(session: aiohttp.ClientSession, options: Options,
                   specs: list[MachineSpec]) -> Registration:
    """Tokens for every machine of ``specs``: from the admin API when credentials are
    given (the tokens file is then updated), else from the tokens file alone."""
    saved = read_tokens(options.tokens_file)
    if options.admin_user is None or options.admin_password is None:
        missing = [spec.id for spec in specs if spec.id not in saved]
        if missing:
            raise AgentMockError(
                f"{options.tokens_file}: no agent token for {len(missing)} of {len(specs)} "
                f"machines (first: {missing[0]}); pass --admin-user and --admin-password "
                "to register them")
        return Registration(tokens={spec.id: saved[spec.id] for spec in specs},
                            reused=len(specs))

    started = time.monotonic()
    admin = AdminClient(session, options)
    await admin.login(options.admin_user, options.admin_password)
    outcome = Registration()
    gate = asyncio.Semaphore(options.register_concurrency)

    async def one(spec: MachineSpec) -> None:
        async with gate:
            token = await admin.create(spec)
            if token is not None:
                outcome.created += 1
            elif spec.id in saved:
                token = saved[spec.id]
                outcome.reused += 1
            else:
                token = await admin.rotate(spec.id)
                outcome.rotated += 1
            outcome.tokens[spec.id] = token

    tasks = [asyncio.create_task(one(spec)) for spec in specs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait(tasks)
        finally:
            # Tokens are shown only once: keep those obtained, even on failure.
            if outcome.created or outcome.rotated:
                write_tokens(options.tokens_file, {**saved, **outcome.tokens})
    print(f"agent-mock: registered {len(specs)} machines ({outcome.created} created, "
          f"{outcome.reused} reused, {outcome.rotated} re-keyed) in "
          f"{time.monotonic() - started:.1f}s; tokens in {options.tokens_file}",
          file=sys.stderr)
    return outcome
