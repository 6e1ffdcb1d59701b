"""Helpers shared by tests: seeding accounts and calling the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from services.passwords import PasswordHasher
from services.settings import Settings

PASSWORD = "correct-horse-battery"


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
