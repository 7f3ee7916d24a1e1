"""Who a log line is about: the job id, its owner and attempt, and the id of the HTTP request behind it, put on
every record by a logging filter that reads them from context variables.

The API sets them per request (``service.request_context``), the worker where a job starts
(``worker.runner.run_job``); admission stores the request id in the job's plan, so the worker's lines about a
job carry the id of the request that submitted it (the queue carries only the job id). ``configure`` installs
one handler on the root logger: JSON lines (``TRAINER_LOG_FORMAT=json``, python-json-logger) or text.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from core.settings import Settings

#: The record attributes this module adds (None: not about a job / not in a request).
FIELDS = ("request_id", "job_id", "owner", "attempt")
_vars: dict[str, ContextVar[Any]] = {name: ContextVar(name, default=None) for name in FIELDS}
#: An incoming X-Request-Id is kept when it looks like an id (a proxy's, a client's); anything else is replaced.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def bind(**values: Any) -> None:
    """Set some of ``FIELDS`` for the rest of this context (a request's thread, a job's process)."""
    for name, value in values.items():
        _vars[name].set(value)


def clear() -> None:
    """A pooled thread serves many requests: nothing of the last one may stay on the next one's lines."""
    for var in _vars.values():
        var.set(None)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``bind`` for the length of a ``with`` block; afterwards every field is as before it, including those a
    ``bind`` inside the block set."""
    tokens = [(var, var.set(values.get(name, var.get()))) for name, var in _vars.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current(name: str) -> Any:
    return _vars[name].get()


def request_id_from(header: str | None) -> str:
    """The incoming id when it is sane, else a new one."""
    if header and SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Adds ``FIELDS`` to every record (None when unset) and a ``context`` suffix for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        parts = []
        for name in FIELDS:
            value = _vars[name].get()
            setattr(record, name, value)
            if value is not None:
                parts.append(f"{name}={value}")
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class _JobJson(JsonFormatter):
    """JSON without the null context fields: a line about no job does not say ``"job_id": null``."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if not (k in FIELDS and v is None)}


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return _JobJson(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "context"],
        )
    return logging.Formatter(TEXT_FORMAT)


def handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(formatter(settings.log_format))
    out.addFilter(ContextFilter())
    return out


def configure(settings: Settings, stream: IO[str] | None = None) -> None:
    """One handler on the root logger, replacing what was there (a second app in one process does not double it)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "trainer", False)]:
        root.removeHandler(old)
    new = handler(settings, stream)
    new.trainer = True  # type: ignore[attr-defined]  # marks the handler this module added
    root.addHandler(new)
    root.setLevel(settings.log_level)
