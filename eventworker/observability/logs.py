"""Logging set-up (loguru): the only module that adds sinks.

The library stays silent (``logger.disable("eventworker")``) until the CLI calls
:func:`configure`. Untrusted text (exception messages, routing keys) goes into log lines only
through :func:`one_line`, so a producer cannot forge log lines or inject terminal escapes.
Two formats: ``pretty`` for a terminal, ``json`` (one object per line) for log pipelines.
Every line written while a message is handled carries the fields of :func:`handling`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC
from typing import Any, Literal, TextIO

import orjson
from loguru import logger

from eventworker.envelope import Event
from eventworker.settings import redact_url

logger.disable("eventworker")

Format = Literal["pretty", "json"]
#: The fields that say which handling a line belongs to, in the order JSON lines show them.
CONTEXT_FIELDS = ("handler", "event_id", "event_type", "attempt", "correlation_id", "trace_id")
#: Our own bookkeeping in a record's ``extra``; never written out as fields.
_INTERNAL = frozenset({"component", "context"})
#: Loggers whose chatter below WARNING says nothing an operator needs (and could quote URLs).
_QUIET = ("aio_pika", "aiormq", "aiohttp", "asyncio")

_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message}{extra[context]}"
)


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line: control characters (newlines, terminal escapes) as ``\\xNN``
    escapes, then truncated to ``limit`` characters. Printable Unicode stays as it is."""
    escaped = _CONTROL.sub(_escape, str(text))
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


class OneLine:
    """:func:`one_line` of ``text``, computed only when a log line is formatted: loguru drops
    a record below the level before it formats its arguments, so a DEBUG line per message costs
    next to nothing while DEBUG is off."""

    __slots__ = ("limit", "text")

    def __init__(self, text: object, limit: int = 300) -> None:
        self.text = text
        self.limit = limit

    def __str__(self) -> str:
        return one_line(self.text, self.limit)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The longest message a log line carries; longer ones are truncated.
MAX_MESSAGE = 4000


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: The handling running in this context (its task, or a ``def`` handler's thread, which runs
#: in a copy of the task's context): handler name, event and trace id, or None. Read by the
#: patcher, so a handling costs one variable set and reset, and its fields are built only for
#: a record that is written.
_HANDLING: ContextVar[tuple[str, Event[Any], str | None] | None] = ContextVar(
    "eventworker_handling", default=None
)


def handling_fields() -> dict[str, Any]:
    """The fields of the handling running in this context (empty outside one), as every log
    line written inside it carries them."""
    current = _HANDLING.get()
    if current is None:
        return {}
    handler, event, trace_id = current
    fields: dict[str, Any] = {
        "handler": handler,
        "event_id": event.id,
        "event_type": event.type,
        "attempt": event.attempt,
        "correlation_id": event.correlation_id,
    }
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


def _context(record: Any) -> None:
    """Every record, ours or a plugin's, on one line: a producer's id, routing key or error
    text cannot forge a log line or send escapes to a terminal. A record written during a
    handling gets its fields; fields the record was bound with (``ctx.logger.bind``) win."""
    record["message"] = one_line(record["message"], MAX_MESSAGE)
    extra = record["extra"]
    extra.setdefault("component", "eventworker")
    for key, value in handling_fields().items():
        extra.setdefault(key, value)
    fields = [
        f"{k}={one_line(extra[k], 200)}" for k in ("handler", "event_id", "attempt") if k in extra
    ]
    extra["context"] = f" [{' '.join(fields)}]" if fields else ""


def handling(handler: str, event: Event[Any], *, trace_id: str | None) -> HandlingContext:
    """Every line logged inside (by eventworker, the handler, or a library it calls, in this
    task or a thread started with a copy of its context) carries the handling's fields, added
    by the patcher :func:`configure` installs."""
    return HandlingContext((handler, event, trace_id))


class HandlingContext:
    """Makes a handling the current one for the ``with`` block.

    Not ``logger.contextualize``: that takes loguru's lock twice and copies its context per
    message, and a generator's context manager around it costs as much again; a no-op
    handling paid about 3 µs for fields that are read only when a line is written."""

    __slots__ = ("_current", "_token")

    def __init__(self, current: tuple[str, Event[Any], str | None]) -> None:
        self._current = current

    def __enter__(self) -> None:
        self._token = _HANDLING.set(self._current)

    def __exit__(self, *_: object) -> None:
        _HANDLING.reset(self._token)


def _json_line(record: Any) -> bytes:
    """One JSON object: time, level, logger, message, the handling fields, then any fields a
    plugin bound itself; a traceback as text (without local variables)."""
    extra = record["extra"]
    line: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "logger": extra.get("component", "eventworker"),
        "message": record["message"],
    }
    line.update((k, extra[k]) for k in CONTEXT_FIELDS if k in extra)
    line.update((k, v) for k, v in extra.items() if k not in _INTERNAL and k not in line)
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        text = traceback.format_exception(exception.type, exception.value, exception.traceback)
        line["exception"] = "".join(text)[-MAX_MESSAGE:]
    return orjson.dumps(line, default=str) + b"\n"


class _JsonSink:
    """Writes each record as one JSON line; loguru serialises calls to a sink."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, message: Any) -> None:
        self._stream.write(_json_line(message.record).decode())
        self._stream.flush()


class _Intercept(logging.Handler):
    """Routes standard-library logging (aio-pika, aiormq, plugins) into loguru's sinks."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            # aiormq logs every lost connection with its traceback, a dozen lines the worker
            # has already handled; a record stays one line, so the exception is summarised.
            message = f"{message}: {type(error).__name__}: {error}"
        # A library may put a connection URL in its message: never its password.
        text = redact_url(one_line(message, 1000))
        logger.bind(component=record.name).log(level, "{}", text)


def configure(
    level: str = "INFO", *, format: Format = "pretty", stream: TextIO | None = None
) -> None:
    """Send eventworker's (and the standard library's) log records to ``stream`` (stderr) at
    ``level``, as ``pretty`` lines or one JSON object per line.

    ``diagnose=False``: loguru would otherwise print variable values in tracebacks, which can
    hold a message body or a password. Colours only on a terminal, and never when ``NO_COLOR``
    is set to anything (no-color.org; loguru does not read it).
    """
    out = stream or sys.stderr
    colorize = False if os.environ.get("NO_COLOR") else None
    logger.remove()
    logger.configure(patcher=_context)
    if format == "json":
        logger.add(_JsonSink(out), level=level, format="{message}", diagnose=False, catch=True)
    else:
        logger.add(
            out, level=level, format=_FORMAT, diagnose=False, backtrace=False, colorize=colorize
        )
    logger.enable("eventworker")
    number = logger.level(level).no
    logging.basicConfig(handlers=[_Intercept()], level=number, force=True)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
