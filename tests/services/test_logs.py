from __future__ import annotations

import logging

import orjson

from services.logs import JsonFormatter, trace_id_var


def _format(**extra) -> dict:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": "hello %s",
                                    "args": ("world",), **extra})
    return orjson.loads(JsonFormatter().format(record))


def test_log_line_is_one_json_object_with_message_and_extras():
    entry = _format(machine_id="m-1")
    assert entry["msg"] == "hello world"
    assert entry["machine_id"] == "m-1"
    assert entry["level"] == "INFO"


def test_log_line_carries_the_current_trace_id():
    token = trace_id_var.set("abc123")
    try:
        assert _format()["trace_id"] == "abc123"
    finally:
        trace_id_var.reset(token)


def test_log_line_without_a_request_has_no_trace_id():
    assert "trace_id" not in _format()
