"""Storage-level outcomes the services turn into business errors."""

from __future__ import annotations


class DuplicateError(Exception):
    """A unique constraint refused the write; ``constraint`` names it."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint
