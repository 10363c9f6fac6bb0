"""Reading a queue with ``basic.get`` and handing back, in order, what the reader did not take.

Works over plain AMQP, without the management plugin. A queue is read with ``basic.get``, one
message at a time (each a :class:`~eventworker.amqp.delivery.Delivery`: a message whose header
cannot be decoded is read too, marked ``undecodable``), at most as many as it held when the
operation began (so a steady inflow cannot keep it reading). What an operation takes (moves
or deletes) is acked; every other message read is held unacked and handed back at the end,
one ``basic.nack(requeue)`` per message in the order read, so the queue's order is kept:

- a classic queue puts a returned message back at its old position;
- a quorum queue puts returned messages at its tail (RabbitMQ 3.x without a delivery limit) or
  its head (with one), and reorders returns that arrive in a burst. So on a quorum queue each
  nack waits for a round trip before the next, and a read that held anything goes on to the end
  of what the queue held at the start: handing everything back in order then turns the queue
  full circle. Messages that arrived meanwhile end up ahead of them.

A killed process loses nothing either (the broker takes back what its channel held), but a
quorum queue then returns those messages in no particular order. So an operation is stopped
with ``stop`` (set by a signal handler), checked between two messages, never by cancelling it:
a cancellation that lands in an RPC makes aiormq close the channel, and Python 3.11's
``asyncio.wait_for`` (under every aiormq RPC) can even swallow one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiormq.abc
from aio_pika.abc import AbstractConnection
from aiormq import spec
from aiormq.exceptions import AMQPChannelError, ChannelAccessRefused, ChannelNotFoundEntity

from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.amqp.delivery import Delivery
from eventworker.errors import BrokerError, Interrupted

#: How long one ``basic.get`` may take (aio-pika's default for ``Queue.get``).
GET_TIMEOUT = 5.0


def counts_reads(version: str) -> bool:
    """True for RabbitMQ 4.0 to 4.2: there every message a read hands back counts towards a
    quorum queue's delivery limit (20 by default), and past it a dead-letter queue, which has
    no dead-letter exchange, drops the message. 3.x has no default limit; 4.3 counts only
    ``basic.reject``."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return False
    return major == 4 and minor < 3


def broker_version(connection: AbstractConnection) -> str:
    """The broker's version as it announced it ("" when it did not)."""
    properties = connection.transport.connection.server_properties if connection.transport else {}
    version = properties.get("version", "")
    return version.decode() if isinstance(version, bytes) else str(version)


class QueueReader:
    """Gets messages one by one; :meth:`take` acks one, the rest go back in order on close."""

    def __init__(
        self,
        channel: aiormq.abc.AbstractChannel,
        queue: str,
        *,
        budget: int,
        limit: int | None,
        quorum: bool,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._channel = channel
        self._stop = stop
        self._queue = queue
        self._budget = budget  # messages the queue held at the start, not yet read
        self._limit = limit
        self._quorum = quorum
        self._held: dict[int, None] = {}  # delivery tags in the order read

    async def messages(self) -> AsyncIterator[Delivery]:
        """The queue's messages in order, at most ``limit``."""
        shown = 0
        while self._limit is None or shown < self._limit:
            if self._stop is not None and self._stop.is_set():
                raise Interrupted("interrupted: every message not reported as taken is in place")
            message = await self._get()
            if message is None:
                return
            shown += 1
            yield message

    async def _get(self) -> Delivery | None:
        if self._budget <= 0:
            return None
        got = await self._channel.basic_get(self._queue, no_ack=False, timeout=GET_TIMEOUT)
        if isinstance(got.delivery, spec.Basic.GetEmpty):
            self._budget = 0
            return None
        self._budget -= 1
        message = Delivery(got)
        self._held[message.delivery_tag] = None
        return message

    async def take(self, message: Delivery) -> None:
        await self._channel.basic_ack(message.delivery_tag)
        self._held.pop(message.delivery_tag, None)

    async def release(self) -> None:
        """Hand back every held message, one nack each, in the order read."""
        if self._quorum and self._held:
            while await self._get() is not None:
                pass  # a full turn: see the module docstring
        for tag in self._held:
            await self._channel.basic_nack(tag, multiple=False, requeue=True)
            if self._quorum:
                # basic.nack has no reply; a round trip (basic.qos, harmless here: this channel
                # consumes nothing) makes sure it reached the queue before the next one.
                await self._channel.basic_qos(prefetch_count=0)
        self._held.clear()


async def count(connection: AbstractConnection, queue: str) -> int | None:
    """Messages ready in ``queue`` (passive declare), or None when it does not exist."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return None
    except ChannelAccessRefused as exc:
        raise BrokerError(f"no permission to read queue {queue!r}: {exc}") from exc
    try:
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


@asynccontextmanager
async def reading(
    connection: AbstractConnection,
    queue: str,
    *,
    quorum: bool,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[QueueReader]:
    """A :class:`QueueReader` of at most ``limit`` messages (and of no more than the queue held at
    the start); held messages go back in order when the block ends, however it ends.

    Raises:
        BrokerError: the queue does not exist, or reading it is not permitted.
    """
    ready = await count(connection, queue)
    if ready is None:
        raise BrokerError(f"queue {queue!r} does not exist on the broker")
    channel = await connection.channel()
    try:
        reader = QueueReader(
            await channel.get_underlay_channel(),
            queue,
            budget=ready,
            limit=limit,
            quorum=quorum,
            stop=stop,
        )
        try:
            yield reader
        finally:
            # A dead channel has handed everything back already (in no set order on quorum).
            with contextlib.suppress(*CHANNEL_GONE):
                await reader.release()
    except AMQPChannelError as exc:
        raise BrokerError(f"reading queue {queue!r} failed: {exc}") from exc
    finally:
        if not channel.is_closed:
            await channel.close()
