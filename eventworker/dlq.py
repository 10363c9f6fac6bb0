"""Operations on dead-letter queues and the unrouted queue: stats, show, replay, purge, export.

Works over plain AMQP, without the management plugin. A queue is read with ``basic.get``, one
message at a time, at most as many as it held when the operation began (so a steady inflow
cannot keep it reading). What an operation takes (moves or deletes) is acked; every other
message read is held unacked and handed back at the end, one ``basic.nack(requeue)`` per
message in the order read, so the queue's order is kept:

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

A replay publishes the copy with a confirm and acks the parked original only afterwards: a
crash in between leaves a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPChannelError, ChannelAccessRefused, ChannelNotFoundEntity

from eventworker import parked
from eventworker.connection import CHANNEL_GONE
from eventworker.errors import BrokerError, Interrupted, PublishError
from eventworker.parked import Parked
from eventworker.publisher import Publisher

#: ``stats`` samples a quorum queue only up to this size: sampling one means a full turn of it,
#: a few milliseconds per message.
QUORUM_SAMPLE_MAX = 5_000
#: The connection every operation takes (from ``eventworker.connection.connect``).
Connection = AbstractConnection


@dataclass(frozen=True, slots=True)
class Parking:
    """A queue of parked messages and where a replay sends them.

    ``return_to`` set: a handler's dead-letter queue; copies go to ``exchange`` (the return
    exchange) for that work queue only. ``return_to`` None: the unrouted queue; copies go to
    ``exchange`` (the topic exchange) with their original routing key.
    """

    label: str
    queue: str
    exchange: str
    return_to: str | None
    default_reason: str = "unknown"
    #: How the queue was declared (the ``queue_type`` setting): it decides how reads keep order.
    queue_type: str = "quorum"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which parked messages an operation takes; empty criteria take every message."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None

    def __call__(self, message: Parked) -> bool:
        return (not self.ids or message.id in self.ids) and (
            self.reason is None or message.reason == self.reason
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    parking: Parking
    exists: bool
    count: int
    oldest_age: float | None
    reasons: tuple[tuple[str, int], ...]
    sampled: int


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    scanned: int
    moved: tuple[Parked, ...]
    error: PublishError | None = None


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


class Reader:
    """Gets messages one by one; :meth:`take` acks one, the rest go back in order on close."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: aio_pika.abc.AbstractQueue,
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

    async def messages(self) -> AsyncIterator[AbstractIncomingMessage]:
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

    async def _get(self) -> AbstractIncomingMessage | None:
        if self._budget <= 0:
            return None
        message = await self._queue.get(fail=False, no_ack=False)
        if message is None:
            self._budget = 0
            return None
        self._budget -= 1
        assert message.delivery_tag is not None
        self._held[message.delivery_tag] = None
        return message

    async def take(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self._held.pop(message.delivery_tag or 0, None)

    async def release(self) -> None:
        """Hand back every held message, one nack each, in the order read."""
        if self._quorum and self._held:
            while await self._get() is not None:
                pass  # a full turn: see the module docstring
        underlay = await self._channel.get_underlay_channel()
        for tag in self._held:
            await underlay.basic_nack(tag, multiple=False, requeue=True)
            if self._quorum:
                # basic.nack has no reply; a round trip (basic.qos, harmless here: this channel
                # consumes nothing) makes sure it reached the queue before the next one.
                await underlay.basic_qos(prefetch_count=0)
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
    parking: Parking,
    *,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Reader]:
    """A :class:`Reader` of at most ``limit`` messages (and of no more than the queue held at
    the start); held messages go back in order when the block ends, however it ends.

    Raises:
        BrokerError: the queue does not exist, or reading it is not permitted.
    """
    queue = parking.queue
    ready = await count(connection, queue)
    if ready is None:
        raise BrokerError(f"queue {queue!r} does not exist on the broker")
    channel = await connection.channel()
    try:
        reader = Reader(
            channel,
            await channel.get_queue(queue, ensure=False),
            budget=ready,
            limit=limit,
            quorum=parking.queue_type == "quorum",
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


async def stats(
    connection: AbstractConnection,
    parking: Parking,
    *,
    sample: int,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> QueueStats:
    """Count, oldest age and most frequent reasons; the last two from the first ``sample``
    messages (0, or a quorum queue of more than ``QUORUM_SAMPLE_MAX``: count only)."""
    ready = await count(connection, parking.queue)
    if ready is None:
        return QueueStats(parking, False, 0, None, (), 0)
    if parking.queue_type == "quorum" and ready > QUORUM_SAMPLE_MAX:
        sample = 0
    shown = (
        await show(connection, parking, limit=sample, preview_chars=0, stop=stop) if sample else []
    )
    now = now or datetime.now(UTC)
    ages = [a for a in (p.age(now) for p in shown) if a is not None]
    reasons = Counter(p.reason for p in shown).most_common(3)
    return QueueStats(parking, True, ready, max(ages, default=None), tuple(reasons), len(shown))


async def show(
    connection: AbstractConnection,
    parking: Parking,
    *,
    limit: int,
    preview_chars: int,
    stop: asyncio.Event | None = None,
) -> list[Parked]:
    """The first ``limit`` messages, described; the queue is left as it was.

    Raises:
        BrokerError: the queue does not exist.
        Interrupted: ``stop`` was set.
    """
    async with reading(connection, parking, limit=limit, stop=stop) as reader:
        return [
            parked.describe(m, preview_chars=preview_chars, default_reason=parking.default_reason)
            async for m in reader.messages()
        ]


async def replay(
    connection: AbstractConnection,
    parking: Parking,
    *,
    select: Selection,
    limit: int | None,
    rate: float | None,
    dry_run: bool,
    publish_timeout: float,
    on_move: Callable[[Parked], None],
    stop: asyncio.Event | None = None,
) -> ReplayOutcome:
    """Send the selected parked messages back, each copy confirmed before its original is acked.

    Stops at the first copy the broker does not confirm (returned in ``error``); that message
    and the rest stay parked. ``rate`` bounds copies per second; ``limit`` the number moved.

    Raises:
        BrokerError: a queue or exchange it needs does not exist.
        Interrupted: ``stop`` was set; every message reported to ``on_move`` moved.
    """
    stop = stop or asyncio.Event()
    if parking.return_to is not None and await count(connection, parking.return_to) is None:
        raise BrokerError(
            f"work queue {parking.return_to!r} does not exist: start a worker for handler "
            f"{parking.label!r} once (it declares its queue and bindings), then replay"
        )
    publisher = await Publisher.open(
        connection, parking.exchange, source=None, timeout=publish_timeout
    )
    moved: list[Parked] = []
    scanned = 0
    started = time.monotonic()
    async with reading(connection, parking, stop=stop) as reader:
        async for message in reader.messages():
            scanned += 1
            described = parked.describe(
                message, preview_chars=0, default_reason=parking.default_reason
            )
            if not select(described):
                continue
            if rate:
                pause = max(0.0, started + len(moved) / rate - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                if stop.is_set():
                    raise Interrupted("interrupted: every message not reported as moved is parked")
            if not dry_run:
                copy = aio_pika.Message(
                    message.body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    **parked.replay_properties(message, return_to=parking.return_to),
                )
                key = "" if parking.return_to is not None else described.routing_key
                try:
                    await publisher.send_copy(copy, key)
                except PublishError as exc:
                    return ReplayOutcome(scanned, tuple(moved), exc)
                await reader.take(message)
            moved.append(described)
            on_move(described)
            if limit is not None and len(moved) >= limit:
                break
    return ReplayOutcome(scanned, tuple(moved))


async def purge(
    connection: AbstractConnection,
    parking: Parking,
    *,
    select: Selection | None,
    stop: asyncio.Event | None = None,
) -> int:
    """Delete the selected messages for good (``None``: all, with one ``queue.purge``).

    Raises:
        BrokerError: the queue does not exist.
        Interrupted: ``stop`` was set.
    """
    if select is not None:
        taken = 0
        async with reading(connection, parking, stop=stop) as reader:
            async for message in reader.messages():
                described = parked.describe(
                    message, preview_chars=0, default_reason=parking.default_reason
                )
                if select(described):
                    await reader.take(message)
                    taken += 1
        return taken
    if await count(connection, parking.queue) is None:
        raise BrokerError(f"queue {parking.queue!r} does not exist on the broker")
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(parking.queue, ensure=False)
        result = await queue.purge()
        return int(result.message_count or 0)
    finally:
        await channel.close()


async def export(
    connection: AbstractConnection,
    parking: Parking,
    out: BinaryIO,
    *,
    limit: int | None,
    stop: asyncio.Event | None = None,
) -> int:
    """Write every message (at most ``limit``) as an NDJSON record; the queue is unchanged.

    Raises:
        BrokerError: the queue does not exist.
        Interrupted: ``stop`` was set.
    """
    written = 0
    async with reading(connection, parking, limit=limit, stop=stop) as reader:
        async for message in reader.messages():
            out.write(parked.export_record(message) + b"\n")
            written += 1
    out.flush()
    return written
