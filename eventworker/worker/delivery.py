"""One delivery as the worker reads it: the envelope's fields, its priority and delivery tag.

The consumer builds these straight from the frames (``worker._consumer.Delivery``); the test
kit builds them in memory. Dispatch and the failure copies depend on this protocol only, never
on aio-pika's message classes.
"""

from __future__ import annotations

from typing import Protocol

from eventworker.envelope import AmqpMessage


class Delivered(AmqpMessage, Protocol):
    """A delivered message, read-only: what dispatch decodes, copies and settles."""

    @property
    def priority(self) -> int | None: ...

    @property
    def delivery_tag(self) -> int: ...
