"""Structured logs for both processes: JSON lines in production, readable lines in development.

Request and job ids are bound through context variables so every line logged while handling
them carries them. Prompts are never logged; callers log `prompt_digest()` instead.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_fields", default={})  # noqa: B039


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Attach fields (request_id, job_id, ...) to every log line inside the block."""
    token = _bound.set({**_bound.get(), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def prompt_digest(prompt: str) -> str:
    """Short stable digest of a prompt: enough to correlate, nothing to read."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.bound = _bound.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message, bound fields and `extra=`."""

    _skip = set(logging.makeLogRecord({}).__dict__) | {"bound", "message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "bound", {}),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """Readable line with bound fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**getattr(record, "bound", {})}
        fields.update({k: v for k, v in record.__dict__.items() if k not in JsonFormatter._skip})
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure(fmt: str, level: str) -> None:
    """Install the formatter on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
