"""eventworker: event-driven workers on RabbitMQ with handler plugins, broker-held retries and
dead letters, where no event is lost.

The public API for plugin authors and producers; everything else is internal.
"""

import typing

from eventworker.errors import (
    BrokerError,
    EventworkerError,
    HandlerTimeoutError,
    InvalidInputError,
    PublishError,
    Reject,
    Retry,
)

if typing.TYPE_CHECKING:  # the lazily imported names, for type checkers
    from eventworker.envelope import Event
    from eventworker.handlers import (
        Context,
        Handler,
        Middleware,
        Resource,
        RetryPolicy,
        handler,
        resource,
    )
    from eventworker.publishing.blocking import BlockingPublisher
    from eventworker.publishing.channel import PublishResult
    from eventworker.publishing.publisher import NewEvent, Publisher
    from eventworker.schedules import Schedule, schedule

#: Public names imported on first use: the publishers pull in aio-pika, which a plugin module
#: that only declares handlers does not need; the handler API pulls in pydantic (about 200 ms),
#: which ``eventworker --help`` (whose module sits inside this package) does not need.
_LAZY = {
    "BlockingPublisher": "eventworker.publishing.blocking",
    "Context": "eventworker.handlers",
    "Event": "eventworker.envelope",
    "Handler": "eventworker.handlers",
    "Middleware": "eventworker.handlers",
    "NewEvent": "eventworker.publishing.publisher",
    "PublishResult": "eventworker.publishing.channel",
    "Publisher": "eventworker.publishing.publisher",
    "Resource": "eventworker.handlers",
    "RetryPolicy": "eventworker.handlers",
    "Schedule": "eventworker.schedules",
    "schedule": "eventworker.schedules",
    "handler": "eventworker.handlers",
    "resource": "eventworker.handlers",
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
    "Middleware",
    "NewEvent",
    "PublishError",
    "PublishResult",
    "Publisher",
    "Reject",
    "Resource",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "handler",
    "resource",
    "schedule",
]


def __getattr__(name: str) -> typing.Any:
    """Resolve the lazily imported public names (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventworker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value
