"""Helpers shared by tests: seeding accounts and calling the API."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from services.passwords import PasswordHasher
from services.settings import Settings

PASSWORD = "correct-horse-battery"


async def eventually(predicate: Callable[[], Any], timeout_s: float = 10.0,
                     what: str = "condition", poll_s: float = 0.05) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something truthy; that value.
    Fails the test if ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        await asyncio.sleep(poll_s)


@dataclass
class Account:
    id: int
    username: str
    tenant_id: int
    role: str
    password: str = PASSWORD


class Accounts:
    """Creates tenants and users straight in the database, with cheap password hashes."""

    def __init__(self, db: asyncpg.Pool, settings: Settings) -> None:
        self._db = db
        self._hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                                      memory_kib=settings.argon2_memory_kib)
        self._hash_of_default: str | None = None

    async def _hash(self, password: str) -> str:
        if password != PASSWORD:
            return await self._hasher.hash(password)
        if self._hash_of_default is None:
            self._hash_of_default = await self._hasher.hash(PASSWORD)
        return self._hash_of_default

    async def tenant(self, name: str = "Acme Corp", status: str = "active") -> int:
        return await self._db.fetchval(
            "INSERT INTO tenants (name, status) VALUES ($1, $2) RETURNING id", name, status
        )

    async def user(self, username: str, role: str = "admin", *, tenant_id: int = 0,
                   password: str = PASSWORD, status: str = "active") -> Account:
        user_id = await self._db.fetchval(
            "INSERT INTO users (tenant_id, username, password_hash, role, status) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            tenant_id, username, await self._hash(password), role, status,
        )
        return Account(user_id, username, tenant_id, role, password)

    async def customer(self, username: str = "alice", tenant_name: str = "Acme Corp"
                       ) -> Account:
        tenant_id = await self.tenant(tenant_name)
        return await self.user(username, "customer", tenant_id=tenant_id)


async def login(client: TestClient, account: Account) -> dict[str, Any]:
    resp = await client.post("/api/v1/auth/login",
                             json={"username": account.username, "password": account.password})
    body = await resp.json()
    assert resp.status == 200, body
    return body["data"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(client: TestClient, method: str, path: str, *, token: str | None = None,
               **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """One request; returns the HTTP status and the decoded envelope."""
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.update(bearer(token))
    resp = await client.request(method, path, headers=headers, **kwargs)
    return resp.status, await resp.json()


class Api:
    """A client acting as one logged-in account."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    @classmethod
    async def login(cls, client: TestClient, account: Account) -> Api:
        return cls(client, (await login(client, account))["access_token"])

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return await call(self.client, "GET", path, token=self.token, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return await call(self.client, "POST", path, token=self.token, json=json, **kwargs)

    async def patch(self, path: str, json: Any) -> tuple[int, dict[str, Any]]:
        return await call(self.client, "PATCH", path, token=self.token, json=json)

    async def delete(self, path: str) -> tuple[int, dict[str, Any]]:
        return await call(self.client, "DELETE", path, token=self.token)

    async def ok(self, method: str, path: str, json: Any = None) -> Any:
        """The ``data`` of a request that must succeed."""
        status, body = await call(self.client, method, path, token=self.token, json=json)
        assert status == 200, body
        return body["data"]

    async def machine(self, machine_id: str, **fields: Any) -> dict[str, Any]:
        spec = {"id": machine_id, "name": machine_id, "ip": "10.0.0.1", "gpu_model": "A100",
                "gpu_count": 8, "gpu_memory_gb": 80, **fields}
        return await self.ok("POST", "/api/v1/admin/machines", spec)

    async def allocate(self, machine_id: str, tenant_id: int, months: int = 1,
                       **fields: Any) -> str:
        data = await self.ok("POST", f"/api/v1/admin/machines/{machine_id}/allocate",
                             {"tenant_id": tenant_id, "duration_months": months, **fields})
        return data["allocation_id"]
