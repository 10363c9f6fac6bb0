"""The diagnosis a failed message carries: the copy sent to a retry tier or a dead-letter queue.

The copy keeps the body byte for byte and the producer's properties and headers, minus the
broker's bookkeeping (``envelope.carried_headers``), and adds what an operator needs to act on
it: handler, routing key, first and last failure, exception and message, attempt; the
dead-letter copy also a short traceback and the host. ``where`` puts the last frames of the
handler's traceback on the dead-letter log line. The producer's header entries go out as
the bytes they came in (``amqp.properties``): exact in type as well as value, names of up to
255 bytes whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import eventworker
from eventworker import envelope
from eventworker.amqp.delivery import Delivered
from eventworker.amqp.properties import PERSISTENT, Properties
from eventworker.envelope import Event
from eventworker.errors import EnvelopeError
from eventworker.observability.logs import one_line


def failure_copy(
    message: Delivered,
    event: Event[Any],
    error: BaseException | None,
    extra: dict[str, Any],
    *,
    handler: str,
    retried: bool,
) -> Properties:
    """The properties of a copy of ``message`` (its body goes as it is) for a retry tier or the
    dead-letter queue. ``retried``: it came back from a retry tier, so its first failure is
    already recorded (and kept)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    first = event.headers.get(envelope.FIRST_FAILURE) if retried else None
    headers = envelope.carried_headers(message.headers or {})
    if event.causation_id:
        headers[envelope.CAUSATION_ID] = event.causation_id
    headers.update(
        {
            envelope.ROUTING_KEY: event.type,
            envelope.HANDLER: handler,
            envelope.FIRST_FAILURE: first if isinstance(first, str) else now,
            envelope.LAST_FAILURE: now,
            envelope.EXCEPTION: type(error).__name__ if error else "",
            envelope.ERROR_MESSAGE: message_of(error)[:1024],
            **extra,
        }
    )
    return _copy(message, event, headers)


def probation_copy(message: Delivered, event: Event[Any], extra: dict[str, Any]) -> Properties:
    """The properties of ``message`` moved as it is to its handler's probation queue: every
    header kept (``x-death`` too, which says whether it came back from a retry tier), but
    sender-selected routing, plus ``extra`` (where it returns, its redelivery count)."""
    headers = {k: v for k, v in (message.headers or {}).items() if k.lower() not in ("cc", "bcc")}
    headers.update(extra)
    return _copy(message, event, headers)


def _copy(message: Delivered, event: Event[Any], headers: dict[str, Any]) -> Properties:
    """The properties of a persistent copy of ``message`` with ``headers``: the producer's own
    properties kept (not ``expiration``, ``reply_to`` or ``user_id``), the event's id as its
    ``message_id`` (a derived one included)."""
    return Properties.build(
        origin=message.properties,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=event.id,
        message_type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        correlation_id=message.correlation_id,
        priority=message.priority or 0,
        delivery_mode=PERSISTENT,
    )


def message_of(error: BaseException | None) -> str:
    """The error's message; for an envelope error its detail (the reason is a header)."""
    if error is None:
        return ""
    if isinstance(error, EnvelopeError):
        return error.detail
    return str(error)


def describe_error(error: BaseException | None) -> str:
    """``Type: message`` on one line, for a log line."""
    return f"{type(error).__name__}: {one_line(message_of(error), 200)}" if error else "ok"


def short_traceback(error: BaseException | None) -> str:
    """The last frames of the traceback, at most 2 KiB: enough to find the line, no locals."""
    if error is None or error.__traceback__ is None:
        return ""
    text = "".join(traceback.format_exception(error, limit=-4, chain=False))
    return text[-2048:]


#: Where the frames that run a handler live (the worker's, asyncio's, the thread pool's):
#: leading frames from these are not the handler's and are left out of ``where``.
_RUNNERS = tuple(
    str(Path(module.__file__).resolve().parent) + "/"
    for module in (eventworker, asyncio, concurrent.futures)
    if module.__file__
)


def _runner(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_RUNNERS)


def where(error: BaseException | None, frames: int = 3) -> str:
    """The innermost ``frames`` frames of the handler's traceback on one line, innermost first:
    `` | at mailer.py:17 in deliver < handlers.py:42 in send_mail``. The frames that ran the
    handler (the worker's, asyncio's) are left out; empty for an error raised outside the
    handler (a timeout, input refused before it ran)."""
    if error is None or error.__traceback__ is None:
        return ""
    summary = traceback.extract_tb(error.__traceback__)
    start = next((i for i, f in enumerate(summary) if not _runner(f.filename)), len(summary))
    own = summary[start:][-frames:]
    if not own:
        return ""
    shown = " < ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(own))
    return f" | at {one_line(shown, 300)}"
