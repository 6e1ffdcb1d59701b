"""Public ids of prefixed objects (``alloc-101``, ``job-888``): formatting and parsing.

A malformed id is simply not found (CONTRACT.md §1), never a 400.
"""

from __future__ import annotations

import re

from services.errors import NotFound

ALLOCATION = "alloc"
JOB = "job"
TASK = "task"
DATASET = "ds"
ALERT = "alert"

_MAX_BIGINT = 2**63 - 1
_ID_RE = re.compile(r"^([a-z]+)-(\d{1,19})$")


def format_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def parse_id(prefix: str, text: str, what: str) -> int:
    match = _ID_RE.match(text)
    if match is None or match[1] != prefix or int(match[2]) > _MAX_BIGINT:
        raise NotFound(f"{what} not found")
    return int(match[2])
