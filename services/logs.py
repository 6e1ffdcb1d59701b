"""JSON logs, one object per line, carrying the trace id of the request being served."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from datetime import UTC, datetime

import orjson

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None) or trace_id_var.get()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log is replaced by the hub's request log line.
    logging.getLogger("aiohttp.access").disabled = True


class Outage:
    """A dependency that keeps failing is logged twice: when its failures start (with the
    first error) and when they end (how long it lasted, how many attempts failed), however
    many retries happen in between."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._since: float | None = None
        self._failed = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, **extra: object) -> None:
        self._failed += 1
        if self._since is not None:
            return
        self._since = time.monotonic()
        self._log.warning(f"{self._what} failing; retrying with backoff",
                          exc_info=exc, extra={"error": repr(exc), **extra})

    def recovered(self, **extra: object) -> None:
        if self._since is None:
            return
        self._log.warning(f"{self._what} recovered", extra={
            "outage_s": round(time.monotonic() - self._since, 3),
            "failed_attempts": self._failed, **extra})
        self._since, self._failed = None, 0
