"""The diagnosis a failed message carries: the copy sent to a retry tier or a dead-letter queue.

The copy keeps the body byte for byte and the producer's properties and headers, minus the
broker's bookkeeping (``envelope.carried_headers``), and adds what an operator needs to act on
it: handler, routing key, first and last failure, exception and message, attempt; the
dead-letter copy also a short traceback and the host.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import aio_pika

from eventworker import envelope
from eventworker.envelope import Event
from eventworker.errors import EnvelopeError
from eventworker.observability.logs import one_line
from eventworker.worker.delivery import Delivered


def failure_copy(
    message: Delivered,
    event: Event[Any],
    error: BaseException | None,
    extra: dict[str, Any],
    *,
    handler: str,
    retried: bool,
) -> aio_pika.Message:
    """A copy of ``message`` for a retry tier or the dead-letter queue. ``retried``: it came
    back from a retry tier, so its first failure is already recorded (and kept)."""
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
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=event.id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        correlation_id=message.correlation_id,
        priority=message.priority,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
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
