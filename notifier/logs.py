"""Structured JSON logs: event id, tenant, delivery id and channel, never bodies or secrets."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

# Only these `extra` keys reach the log line: an allow-list keeps message bodies, addresses
# and tokens out even when a caller passes them by mistake.
CONTEXT_KEYS = (
    "event_id",
    "tenant",
    "delivery_id",
    "channel",
    "event_type",
    "status",
    "count",
    "errors",
    "error",
    "task",
    "backend",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
