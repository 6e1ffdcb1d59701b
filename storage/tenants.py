"""Tenants (customers); tenant 0 is the platform itself."""

from __future__ import annotations

from storage.db import Executor

_DISABLED_IDS = "SELECT id FROM tenants WHERE status = 'disabled'"


async def disabled_ids(db: Executor) -> list[int]:
    return [row["id"] for row in await db.fetch(_DISABLED_IDS)]
