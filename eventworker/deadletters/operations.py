"""Operations on dead-letter queues and the unrouted queue: stats, show, replay, purge, export.

Works over plain AMQP, without the management plugin; reading a queue without losing or
reordering what an operation does not take is ``queue_reader``'s part.

A replay publishes copies with a window of confirms in flight (``window``) and acks each
dead-lettered original only once its copy is confirmed: a crash in between leaves a duplicate,
never a loss. Replay, purge and export read with a consumer (many messages on their way at
once); ``show`` reads a few with ``basic.get``. A message whose AMQP header cannot be
decoded is never replayed (its copy could not be what the producer sent): it stays dead-lettered, in
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

from eventworker import envelope
from eventworker.amqp.delivery import Delivery
from eventworker.amqp.properties import PERSISTENT, Properties
from eventworker.deadletters import letter
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.reader import QueueReader, count, reading
from eventworker.deadletters.window import DEFAULT_WINDOW, MAX_WINDOW, CopyWindow
from eventworker.errors import BrokerError, Interrupted, PublishError
from eventworker.publishing.channel import ConfirmChannel

#: ``stats`` samples a quorum queue only up to this size: sampling one means a full turn of it,
#: a few milliseconds per message.
QUORUM_SAMPLE_MAX = 5_000
#: Messages a purge or an export has on their way from the broker at once.
PREFETCH = 1024
#: Deletions a selective purge acks at once (one ``basic.ack(multiple)`` when it can).
ACK_BATCH = 256
#: The connection every operation takes (from ``eventworker.connection.connect``).
Connection = AbstractConnection


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    """A queue of dead letters and where a replay sends them.

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
    """Which dead letters an operation takes; empty criteria take every message."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None

    def __call__(self, message: Letter) -> bool:
        return (not self.ids or message.id in self.ids) and (
            self.reason is None or message.reason == self.reason
        )


@dataclass(frozen=True, slots=True)
class DeadLetterStats:
    dlq: DeadLetterQueue
    exists: bool
    count: int
    oldest_age: float | None
    reasons: tuple[tuple[str, int], ...]
    sampled: int


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    scanned: int
    moved: tuple[Letter, ...]
    error: PublishError | None = None
    #: Selected messages left dead-lettered because their header cannot be decoded.
    refused: tuple[Letter, ...] = ()


class ReplayInterrupted(Interrupted):
    """A stop ended a replay: what moved before it is in ``outcome``; the rest is in place."""

    def __init__(self, outcome: ReplayOutcome) -> None:
        super().__init__(
            f"interrupted: {len(outcome.moved)} message(s) moved; every other one is still "
            f"dead-lettered, in order"
        )
        self.outcome = outcome


async def stats(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    sample: int,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> DeadLetterStats:
    """Count, oldest age and most frequent reasons; the last two from the first ``sample``
    messages (0, or a quorum queue of more than ``QUORUM_SAMPLE_MAX``: count only)."""
    ready = await count(connection, dlq.queue)
    if ready is None:
        return DeadLetterStats(dlq, False, 0, None, (), 0)
    if dlq.queue_type == "quorum" and ready > QUORUM_SAMPLE_MAX:
        sample = 0
    shown = await show(connection, dlq, limit=sample, preview_chars=0, stop=stop) if sample else []
    now = now or datetime.now(UTC)
    ages = [a for a in (p.age(now) for p in shown) if a is not None]
    reasons = Counter(p.reason for p in shown).most_common(3)
    return DeadLetterStats(dlq, True, ready, max(ages, default=None), tuple(reasons), len(shown))


async def show(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    limit: int,
    preview_chars: int,
    stop: asyncio.Event | None = None,
) -> list[Letter]:
    """The first ``limit`` messages, described; the queue is left as it was.

    Raises:
        BrokerError: the queue does not exist.
        Interrupted: ``stop`` was set.
    """
    async with _reading(connection, dlq, limit=limit, stop=stop) as reader:
        return [
            letter.diagnose(m, preview_chars=preview_chars, default_reason=dlq.default_reason)
            async for m in reader.messages()
        ]


async def replay(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    select: Selection,
    limit: int | None,
    rate: float | None,
    dry_run: bool,
    publish_timeout: float,
    on_move: Callable[[Letter], None],
    stop: asyncio.Event | None = None,
    on_read: Callable[[], None] | None = None,
    window: int = DEFAULT_WINDOW,
) -> ReplayOutcome:
    """Send the selected dead letters back, each original acked only once its copy is
    confirmed, with up to ``window`` confirms in flight; the copies arrive in the order read.
    ``on_read`` hears each message read, selected or not (a progress bar); ``on_move`` each
    one moved, in order, once its original is acked.

    Stops at the first copy the broker does not confirm (returned in ``error``); that message
    stays in the dead-letter queue with every one not yet sent (copies already in flight then
    are waited for: those confirmed moved). ``rate`` bounds copies per second; ``limit`` the
    number moved. Selected messages whose header cannot be decoded stay in the dead-letter
    queue, in ``refused``.

    Raises:
        BrokerError: a queue or exchange it needs does not exist.
        ValueError: ``window`` is not 1 to ``MAX_WINDOW``.
        ReplayInterrupted: ``stop`` was set. Reading stopped (what the broker had already
            given, at most ``2 * window`` messages, moved too), the confirms in flight were
            waited for; what moved is in its ``outcome``, the rest is dead-lettered in order.
    """
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be 1 to {MAX_WINDOW}, not {window}")
    stop = stop or asyncio.Event()
    if dlq.return_to is not None and await count(connection, dlq.return_to) is None:
        raise BrokerError(
            f"work queue {dlq.return_to!r} does not exist: start a worker for handler "
            f"{dlq.label!r} once (it declares its queue and bindings), then replay"
        )
    publisher = await ConfirmChannel.open(
        connection, dlq.exchange, source=None, timeout=publish_timeout
    )
    would_move: list[Letter] = []
    refused: list[Letter] = []
    scanned = 0
    interrupted = False
    started = time.monotonic()
    try:
        async with _reading(connection, dlq, stop=stop, prefetch=2 * window) as reader:
            copies = CopyWindow(reader, publisher, size=window, on_move=on_move)
            try:
                async for message in reader.messages():
                    scanned += 1
                    if on_read is not None:
                        on_read()
                    described = letter.diagnose(
                        message, preview_chars=0, default_reason=dlq.default_reason
                    )
                    chosen = select(described)
                    if not chosen:
                        continue
                    if described.reason == envelope.UNDECODABLE:
                        refused.append(described)
                        continue
                    sent = len(would_move) + len(copies.moved) + copies.in_flight
                    if rate:
                        await copies.drain()  # what moved is reported before a pause
                        if not await _paced(stop, started + sent / rate):
                            raise Interrupted("interrupted while pacing")
                    if dry_run:
                        would_move.append(described)
                        on_move(described)
                    else:
                        await copies.send(
                            message,
                            described,
                            _copy(message, dlq),
                            # The producer's routing key even through the return exchange (a
                            # headers exchange, which ignores it): the worker reads a copy that
                            # no retry queue expired as a first delivery, with the routing key
                            # it was sent with.
                            described.routing_key,
                        )
                        if copies.error is not None:
                            break
                    if limit is not None and sent + 1 >= limit:
                        break
            except Interrupted:
                interrupted = True
            finally:
                await copies.drain()
    finally:
        await publisher.close()
    moved = tuple(would_move) if dry_run else tuple(copies.moved)
    outcome = ReplayOutcome(scanned, moved, copies.error, tuple(refused))
    if interrupted:
        raise ReplayInterrupted(outcome)
    return outcome


async def _paced(stop: asyncio.Event, until: float) -> bool:
    """Wait until the monotonic time ``until``; False when ``stop`` was set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, until - time.monotonic()))
    return not stop.is_set()


def _copy(message: Delivery, dlq: DeadLetterQueue) -> Properties:
    return Properties.build(
        origin=message.properties,
        delivery_mode=PERSISTENT,
        **letter.replay_properties(message, return_to=dlq.return_to),
    )


async def purge(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    select: Selection | None,
    stop: asyncio.Event | None = None,
    on_read: Callable[[], None] | None = None,
) -> int:
    """Delete the selected messages for good (``None``: all, with one ``queue.purge``).
    ``on_read`` hears each message read when some are selected (a progress bar).

    Raises:
        BrokerError: the queue does not exist.
        Interrupted: ``stop`` was set.
    """
    if select is not None:
        taken = 0
        chosen: list[Delivery] = []
        async with _reading(connection, dlq, stop=stop, prefetch=PREFETCH) as reader:
            try:
                async for message in reader.messages():
                    if on_read is not None:
                        on_read()
                    described = letter.diagnose(
                        message, preview_chars=0, default_reason=dlq.default_reason
                    )
                    if not select(described):
                        continue
                    chosen.append(message)
                    if len(chosen) >= ACK_BATCH:
                        await reader.take_many(chosen)
                        taken, chosen = taken + len(chosen), []
            finally:
                await reader.take_many(chosen)  # an interrupted purge deletes what it read
        return taken + len(chosen)
    if await count(connection, dlq.queue) is None:
        raise BrokerError(f"queue {dlq.queue!r} does not exist on the broker")
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(dlq.queue, ensure=False)
        result = await queue.purge()
        return int(result.message_count or 0)
    finally:
        await channel.close()


async def export(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
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
    prefetch = min(PREFETCH, limit or PREFETCH)
    async with _reading(connection, dlq, limit=limit, stop=stop, prefetch=prefetch) as reader:
        async for message in reader.messages():
            out.write(letter.export_record(message) + b"\n")
            written += 1
    out.flush()
    return written


def _reading(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
    prefetch: int = 0,
) -> AbstractAsyncContextManager[QueueReader]:
    quorum = dlq.queue_type == "quorum"
    return reading(connection, dlq.queue, quorum=quorum, limit=limit, stop=stop, prefetch=prefetch)
