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
