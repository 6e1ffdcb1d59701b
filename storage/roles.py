"""Roles and the permissions each grants."""

from __future__ import annotations

from storage.db import Executor

_ALL = "SELECT role, permission FROM role_permissions ORDER BY role, permission"


async def permissions_by_role(db: Executor) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for row in await db.fetch(_ALL):
        table.setdefault(row["role"], set()).add(row["permission"])
    return {role: frozenset(perms) for role, perms in table.items()}
