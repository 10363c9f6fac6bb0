"""A delivered message as eventworker reads it, straight from aiormq's frames.

aio-pika's ``IncomingMessage`` sends every field through a checking ``__setattr__`` and
keeps neither the decoded properties nor whether they could be decoded. :class:`Delivery`
has the fields eventworker reads, as ``IncomingMessage`` would set them, plus
``properties`` (a copy built from them keeps the producer's header entries as bytes) and
``undecodable`` (why the message cannot be read, or None). :class:`Delivered` is the
protocol the worker's dispatch reads, which the test kit's in-memory deliveries satisfy too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import aiormq.abc

from eventworker.amqp.frames import UndecodableMethod
from eventworker.amqp.properties import Properties, UndecodableProperties
from eventworker.envelope import AmqpMessage


class Delivered(AmqpMessage, Protocol):
    """A delivered message, read-only, as the worker's dispatch decodes, copies and settles it:
    the envelope's fields, the decoded properties (a copy keeps the producer's header entries
    as bytes), the priority and the delivery tag. :class:`Delivery` is one; the test kit
    builds others in memory."""

    @property
    def properties(self) -> Properties | None: ...

    @property
    def priority(self) -> int | None: ...

    @property
    def delivery_tag(self) -> int: ...


def undecodable(delivered: aiormq.abc.DeliveredMessage) -> str | None:
    """Why ``delivered`` cannot be read (a method field or a content header that did not
    decode), or None."""
    properties = delivered.header.properties
    method = delivered.delivery
    problems = [
        part.error
        for part in (method, properties)
        if isinstance(part, UndecodableMethod | UndecodableProperties)
    ]
    return "; ".join(problems) or None


class Delivery:
    """A ``basic.deliver`` or ``basic.get-ok`` message with the fields eventworker reads.
    Settled through its channel by its ``delivery_tag`` (it has no ``ack`` of its own)."""

    __slots__ = (
        "app_id",
        "body",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "exchange",
        "headers",
        "message_id",
        "priority",
        "properties",
        "redelivered",
        "routing_key",
        "timestamp",
        "type",
        "undecodable",
    )

    def __init__(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        properties = delivered.header.properties
        frame: Any = delivered.delivery  # a Deliver or a GetOk: both have these four fields
        self.body: bytes = delivered.body
        self.properties = properties if isinstance(properties, Properties) else None
        self.headers: Mapping[str, Any] = properties.headers or {}
        self.content_type: str | None = properties.content_type
        self.content_encoding: str | None = properties.content_encoding
        self.message_id: str | None = properties.message_id
        self.correlation_id: str | None = properties.correlation_id
        self.timestamp: datetime | None = properties.timestamp
        self.type: str | None = properties.message_type
        self.app_id: str | None = properties.app_id
        self.priority = properties.priority or 0
        self.delivery_tag: int = frame.delivery_tag
        self.exchange: str | None = frame.exchange
        self.routing_key: str | None = frame.routing_key
        self.redelivered: bool | None = frame.redelivered
        self.undecodable = (
            undecodable(delivered)
            if isinstance(properties, UndecodableProperties) or isinstance(frame, UndecodableMethod)
            else None
        )
