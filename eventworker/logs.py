"""Logging set-up (loguru): the only module that adds sinks.

The library stays silent (``logger.disable("eventworker")``) until the CLI calls
:func:`configure`. Untrusted text (exception messages, routing keys) goes into log lines only
through :func:`one_line`, so a producer cannot forge log lines or inject terminal escapes.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from loguru import logger

from eventworker.settings import redact_url

logger.disable("eventworker")

_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message}{extra[context]}"
)


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line: control characters (newlines, terminal escapes) as ``\\xNN``
    escapes, then truncated to ``limit`` characters. Printable Unicode stays as it is."""
    escaped = _CONTROL.sub(_escape, str(text))
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The longest message a log line carries; longer ones are truncated.
MAX_MESSAGE = 4000


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _context(record: Any) -> None:
    """Every record, ours or a plugin's, on one line: a producer's id, routing key or error
    text cannot forge a log line or send escapes to a terminal."""
    record["message"] = one_line(record["message"], MAX_MESSAGE)
    extra = record["extra"]
    extra.setdefault("component", "eventworker")
    fields = [
        f"{k}={one_line(extra[k], 200)}" for k in ("handler", "event_id", "attempt") if k in extra
    ]
    extra["context"] = f" [{' '.join(fields)}]" if fields else ""


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
        logger.bind(component=record.name).log(level, "{}", one_line(redact_url(message), 1000))


def configure(level: str = "INFO") -> None:
    """Send eventworker's (and the standard library's) log records to stderr at ``level``.

    ``diagnose=False``: loguru would otherwise print variable values in tracebacks, which can
    hold a message body or a password.
    """
    logger.remove()
    logger.configure(patcher=_context)
    logger.add(
        sys.stderr, level=level, format=_FORMAT, diagnose=False, backtrace=False, colorize=None
    )
    logger.enable("eventworker")
    logging.basicConfig(handlers=[_Intercept()], level=logging.WARNING, force=True)
