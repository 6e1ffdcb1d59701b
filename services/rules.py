"""Shape rules shared by every endpoint and the CLI (CONTRACT.md §1a)."""

from __future__ import annotations

import re

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"
USERNAME_RE = re.compile(USERNAME_PATTERN)
PASSWORD_MIN = 8
PASSWORD_MAX = 128
MACHINE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
NAME_MAX = 128


def password_problem(password: str) -> str | None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"must be {PASSWORD_MIN}..{PASSWORD_MAX} characters"
    return None


def find_nul(value: object, path: str = "") -> str | None:
    """The field path of the first string (or key) holding U+0000, which PostgreSQL text
    cannot store; None if there is none."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = find_nul(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_nul(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
