"""eventworker: event-driven workers on RabbitMQ with handler plugins, broker-held retries and
dead letters, where no event is lost.

The public API for plugin authors and producers; everything else is internal.
"""

import typing

from eventworker.envelope import Event
from eventworker.errors import (
    BrokerError,
    EventworkerError,
    HandlerTimeoutError,
    InvalidInputError,
    PublishError,
    Reject,
    Retry,
)
from eventworker.handlers import Context, Handler, RetryPolicy, handler

if typing.TYPE_CHECKING:  # the lazily imported names, for type checkers
    from eventworker.blocking import BlockingPublisher
    from eventworker.producer import NewEvent, Publisher
    from eventworker.publisher import PublishResult

#: Public names imported on first use: they pull in aio-pika, which a plugin module that only
#: declares handlers (or a CLI showing --help) does not need.
_LAZY = {
    "BlockingPublisher": "eventworker.blocking",
    "NewEvent": "eventworker.producer",
    "PublishResult": "eventworker.publisher",
    "Publisher": "eventworker.producer",
}

__all__ = [
    "BlockingPublisher",
    "BrokerError",
    "Context",
    "Event",
    "EventworkerError",
    "Handler",
    "HandlerTimeoutError",
    "InvalidInputError",
    "NewEvent",
    "PublishError",
    "PublishResult",
    "Publisher",
    "Reject",
    "Retry",
    "RetryPolicy",
    "handler",
]


def __getattr__(name: str) -> typing.Any:
    """Resolve the lazily imported public names (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventworker' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
