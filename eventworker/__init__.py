"""eventworker: event-driven workers on RabbitMQ with handler plugins, broker-held retries and
dead letters, where no event is lost.

The public API for plugin authors and producers; everything else is internal.
"""

from eventworker.envelope import Event
from eventworker.errors import (
    BrokerError,
    EventworkerError,
    HandlerTimeoutError,
    PublishError,
    Reject,
    Retry,
)
from eventworker.handlers import Context, Handler, RetryPolicy, handler

__all__ = [
    "BrokerError",
    "Context",
    "Event",
    "EventworkerError",
    "Handler",
    "HandlerTimeoutError",
    "PublishError",
    "Reject",
    "Retry",
    "RetryPolicy",
    "handler",
]
