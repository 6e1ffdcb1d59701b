"""Typed errors raised by services; the API maps each to its HTTP status and code.

The codes are CONTRACT.md §1; ``ErrorCode`` is the one list of them, also used to document
the failure modes of every endpoint in the OpenAPI document.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    VALIDATION = 40001
    MALFORMED = 40002
    UNAUTHENTICATED = 40101
    TOKEN_EXPIRED = 40102
    BAD_CREDENTIALS = 40103
    BAD_REFRESH_TOKEN = 40104
    FORBIDDEN = 40301
    DISABLED = 40302
    NOT_FOUND = 40401
    METHOD_NOT_ALLOWED = 40501
    CONFLICT = 40901
    DUPLICATE = 40902
    TOO_LARGE = 41301
    RATE_LIMITED = 42901
    INTERNAL = 50001
    UNAVAILABLE = 50301

    @property
    def http_status(self) -> int:
        return self.value // 100

    @property
    def default_message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    ErrorCode.VALIDATION: "validation failed",
    ErrorCode.MALFORMED: "malformed request body",
    ErrorCode.UNAUTHENTICATED: "authentication required",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.BAD_CREDENTIALS: "wrong username or password",
    ErrorCode.BAD_REFRESH_TOKEN: "refresh token invalid, expired, revoked or reused",
    ErrorCode.FORBIDDEN: "permission denied",
    ErrorCode.DISABLED: "account disabled",
    ErrorCode.NOT_FOUND: "not found",
    ErrorCode.METHOD_NOT_ALLOWED: "method not allowed",
    ErrorCode.CONFLICT: "state conflict",
    ErrorCode.DUPLICATE: "already exists",
    ErrorCode.TOO_LARGE: "request body too large",
    ErrorCode.RATE_LIMITED: "too many requests",
    ErrorCode.INTERNAL: "internal error",
    ErrorCode.UNAVAILABLE: "service unavailable",
}


class ServiceError(Exception):
    """A failure the client should see: a code, a message and optional details (``data``)."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str | None = None, *, data: Any = None,
                 code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code.default_message
        self.data = data
        super().__init__(self.message)


class ValidationFailed(ServiceError):
    code = ErrorCode.VALIDATION

    def __init__(self, errors: list[dict[str, Any]], message: str | None = None) -> None:
        super().__init__(message, data={"errors": errors})


class Malformed(ServiceError):
    code = ErrorCode.MALFORMED


class Unauthenticated(ServiceError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ServiceError):
    code = ErrorCode.FORBIDDEN


class NotFound(ServiceError):
    code = ErrorCode.NOT_FOUND


class Conflict(ServiceError):
    code = ErrorCode.CONFLICT


class Duplicate(ServiceError):
    code = ErrorCode.DUPLICATE


class RateLimited(ServiceError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many attempts; retry in {retry_after_s} s",
                         data={"retry_after": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    code = ErrorCode.UNAVAILABLE


class Overloaded(Unavailable):
    """The hub cannot take this now (a queue at its mark, or shutting down); the client
    should send it again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, data={"retry_after": retry_after_s})
        self.retry_after_s = retry_after_s


# PostgreSQL text cannot hold U+0000, so no field may contain it.
NUL_MESSAGE = "must not contain the NUL character"


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"field": field, "message": message}])
