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
API_KEY = "key"

MAX_BIGINT = 2**63 - 1  # PostgreSQL bigint, the type of every numeric id
# ASCII digits in canonical form only: "job-01" or a job id in other scripts is not job-1.
_NUMBER = r"(?:0|[1-9][0-9]{0,18})"
_ID_RE = re.compile(rf"([a-z]+)-({_NUMBER})")
_PLAIN_RE = re.compile(_NUMBER)
# The shapes above for the OpenAPI document; a number beyond MAX_BIGINT fits them, and is
# still not found.
NUMBER_PATTERN = rf"^{_NUMBER}$"


def id_pattern(prefix: str) -> str:
    return rf"^{prefix}-{_NUMBER}$"


def format_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def parse_id(prefix: str, text: str, what: str) -> int:
    match = _ID_RE.fullmatch(text)
    if match is None or match[1] != prefix or int(match[2]) > MAX_BIGINT:
        raise NotFound(f"{what} not found")
    return int(match[2])


def parse_number(text: str, what: str) -> int:
    """A plain numeric id (tenants, users)."""
    if _PLAIN_RE.fullmatch(text) is None or int(text) > MAX_BIGINT:
        raise NotFound(f"{what} not found")
    return int(text)
