"""Operations on dead-letter queues and the unrouted queue: stats, show, replay, purge, export.

Works over plain AMQP, without the management plugin; reading a queue without losing or
reordering what an operation does not take is ``queue_reader``'s part.

A replay publishes the copy with a confirm and acks the parked original only afterwards: a
crash in between leaves a duplicate, never a loss. A message whose AMQP header cannot be
decoded is never replayed (its copy could not be what the producer sent): it stays parked, in
its place, and the outcome names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from aio_pika.abc import AbstractConnection

from eventworker import envelope, parked
from eventworker.amqp.properties import PERSISTENT, Properties
from eventworker.errors import BrokerError, Interrupted, PublishError
from eventworker.parked import Parked
from eventworker.publisher import Publisher
from eventworker.queue_reader import Reader, count, reading

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
    #: Selected messages left parked because their header cannot be decoded.
    refused: tuple[Parked, ...] = ()


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
    async with _reading(connection, parking, limit=limit, stop=stop) as reader:
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
    Selected messages whose header cannot be decoded stay parked, in ``refused``.

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
    refused: list[Parked] = []
    scanned = 0
    started = time.monotonic()
    async with _reading(connection, parking, stop=stop) as reader:
        async for message in reader.messages():
            scanned += 1
            described = parked.describe(
                message, preview_chars=0, default_reason=parking.default_reason
            )
            if not select(described):
                continue
            if described.reason == envelope.UNDECODABLE:
                refused.append(described)
                continue
            if rate:
                pause = max(0.0, started + len(moved) / rate - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                if stop.is_set():
                    raise Interrupted("interrupted: every message not reported as moved is parked")
            if not dry_run:
                copy = Properties.build(
                    origin=message.properties,
                    delivery_mode=PERSISTENT,
                    **parked.replay_properties(message, return_to=parking.return_to),
                )
                key = "" if parking.return_to is not None else described.routing_key
                try:
                    await publisher.send_copy(message.body, copy, key)
                except PublishError as exc:
                    return ReplayOutcome(scanned, tuple(moved), exc, tuple(refused))
                await reader.take(message)
            moved.append(described)
            on_move(described)
            if limit is not None and len(moved) >= limit:
                break
    return ReplayOutcome(scanned, tuple(moved), refused=tuple(refused))


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
        async with _reading(connection, parking, stop=stop) as reader:
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
    async with _reading(connection, parking, limit=limit, stop=stop) as reader:
        async for message in reader.messages():
            out.write(parked.export_record(message) + b"\n")
            written += 1
    out.flush()
    return written


def _reading(
    connection: AbstractConnection,
    parking: Parking,
    *,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
) -> AbstractAsyncContextManager[Reader]:
    quorum = parking.queue_type == "quorum"
    return reading(connection, parking.queue, quorum=quorum, limit=limit, stop=stop)
