"""Platform accounts managed from the command line."""

from __future__ import annotations

import asyncpg

from services.errors import Duplicate, NotFound, field_error
from services.passwords import PasswordHasher
from services.rules import USERNAME_RE, password_problem
from storage import sessions, users
from storage.errors import DuplicateError

PLATFORM_TENANT_ID = 0


async def create_admin(pool: asyncpg.Pool, hasher: PasswordHasher, *, username: str,
                       password: str, reset: bool) -> str:
    """Create a platform admin, or with ``reset`` give an existing user a new password
    (ending its sessions). Returns "created" or "reset"."""
    if not USERNAME_RE.fullmatch(username):
        raise field_error("username", "3..64 characters of A-Z a-z 0-9 _ . -")
    problem = password_problem(password)
    if problem:
        raise field_error("password", problem)
    password_hash = await hasher.hash(password)
    async with pool.acquire() as conn, conn.transaction():
        if reset:
            user_id = await users.set_password(conn, username, password_hash)
            if user_id is None:
                raise NotFound(f"no user named {username!r}")
            await sessions.revoke_users(conn, [user_id], "password reset")
            return "reset"
        try:
            await users.insert(conn, tenant_id=PLATFORM_TENANT_ID, username=username,
                               password_hash=password_hash, role="admin")
        except DuplicateError:
            raise Duplicate(f"user {username!r} exists; use --reset to set a new password") \
                from None
    return "created"
