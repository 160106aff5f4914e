"""Structured logs: one JSON object per line, with the request id of the request being served
(DESIGN.md §11).

Every line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``event`` and
``request_id`` (null outside a request), then ``logger`` and the record's own fields::

    {"ts": "2026-12-07T14:46:01.123Z", "level": "info", "event": "request",
     "request_id": "5f0c…", "logger": "swreg.request", "method": "POST",
     "path": "/activate/{token}", "status": 200, "duration_ms": 41.2,
     "client": "0123456789abcdef"}

``event`` is a stable name when the call gives one (``extra={"event": "officer_auth_failed",
…}``; the request line is ``request``, a business event is the audit row's event), else the
message itself (uvicorn's and the libraries' lines). Fields given in ``extra`` become fields of
the line (a named event's message is not repeated: its fields say it).

Why the standard library's :mod:`logging` and not structlog: every module of swreg already logs
through ``logging.getLogger("swreg.…")`` (with ``extra`` fields, as ``officer_auth_failed``
does), and so do uvicorn, SQLAlchemy and the other libraries whose lines must be JSON too. With
structlog those lines would still reach it through the standard library (its
``ProcessorFormatter``), so it would add a dependency and a second way to log while the JSON
still hangs on :mod:`logging`; the request id needs only :mod:`contextvars`, which both use.
One formatter class here is the whole difference.

The request id lives in a context variable (:func:`request_context`), so a line logged deep in
a service during a request carries it: Starlette runs blocking calls in worker threads with a
copy of the request's context. :func:`log_config` is the :func:`logging.config.dictConfig`
setup ``swreg serve`` hands uvicorn (each worker process applies it again).

Why here and not in ``engine/web``: the lines come from every layer (the audit seam in
``engine.store``, the services, uvicorn) and the request id is read wherever a line is made;
DESIGN.md §1 lets services and the store import neither ``web`` nor ``cli``, so what they may
need (:func:`current_request_id`; a cron command's JSON lines one day) sits outside the layer
stack, like ``_clock``. Standard library only: any layer may import it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

_REQUEST_ID: ContextVar[str | None] = ContextVar("swreg_request_id", default=None)

FIRST_FIELDS: Final = ("ts", "level", "event", "request_id")
"""The fields every line starts with, in this order."""
_RESERVED: Final = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"}
)
"""A record's own attributes: not fields of the line (``extra`` adds the others)."""
_DROPPED: Final = frozenset({"color_message"})
"""``extra`` fields never written: uvicorn's copy of a message with terminal colours."""
_OWN: Final = frozenset({*FIRST_FIELDS, "logger", "message", "exception", "stack"})


def current_request_id() -> str | None:
    """The id of the request being served in this context, None outside a request."""
    return _REQUEST_ID.get()


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Serve a request as ``request_id``: every line logged inside (in this context and the
    worker threads it hands work to) carries it."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring). ASCII only: no character of a
    message can break the line, not even U+2028, which some readers take for a line end."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        named = getattr(record, "event", None)
        event = named if isinstance(named, str) and named else message
        request_id = getattr(record, "request_id", None) or current_request_id()
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "event": event,
            "request_id": request_id,
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in _DROPPED and key not in _OWN:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=True, default=str)


def _timestamp(created: float) -> str:
    """``created`` as ``2026-12-07T14:46:01.123Z``; the text up to the second is kept from
    the previous line (a worker writes many lines a second)."""
    global _second_text  # one entry, replaced whole: safe across threads
    fraction, whole = math.modf(created)  # rounded as datetime.fromtimestamp rounds
    second, micros = divmod(int(whole) * 1_000_000 + round(fraction * 1e6), 1_000_000)
    kept = _second_text
    if kept[0] != second:
        kept = _second_text = (second, _SECOND.format(datetime.fromtimestamp(second, UTC)))
    return f"{kept[1]}{micros // 1000:03d}Z"


_SECOND: Final = "{:%Y-%m-%dT%H:%M:%S.}"
_second_text: tuple[int, str] = (-1, "")


def log_config(level: str = "INFO") -> dict[str, Any]:
    """The :func:`logging.config.dictConfig` of the portal: every logger's lines as JSON on
    standard error; swreg's and uvicorn's server lines from ``level`` up, the libraries' from
    WARNING up. uvicorn's access log is not configured (``swreg serve`` turns it off): its lines
    hold raw paths, and paths hold tokens; :mod:`engine.web._request_log` writes the request
    lines instead."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "swreg": {"level": level},
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["json"], "level": "WARNING"},
    }


__all__ = [
    "FIRST_FIELDS",
    "JsonFormatter",
    "current_request_id",
    "log_config",
    "request_context",
]
