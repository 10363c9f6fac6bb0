"""The schedule emitter: one worker of the fleet, elected by the broker, publishes each tick.

Election: every worker with schedules consumes ``<prefix>schedules.leader``, a quorum queue with
``x-single-active-consumer``; the broker delivers to one consumer only, the active one, and
moves that role to the next consumer when the active one's channel closes (a stop, a crash, a
lost connection). The queue holds a token message, which the active consumer keeps unacked: a
worker becomes the emitter when a token is delivered to it, and since the broker gives the
unacked token back when the emitter's channel closes, the next consumer gets it at once.

The token carries the state: the last tick published of each schedule. After publishing
ticks (confirmed) the emitter publishes a new token with the new state (confirmed), then acks
the tokens it held: the queue never loses the state, and a crash in between leaves two tokens,
which the next emitter merges (the latest tick per schedule wins). Each worker puts an empty
token in at start, so the queue is never without one; the emitter absorbs the extras the same
way. It also replaces its token every :data:`REFRESH` seconds when no tick came: the broker
closes a channel holding a delivery unacked past its ``consumer_timeout``.

Each tick is published with a deterministic message id, ``<schedule name>@<UTC ISO time>``: a
tick published but not yet recorded when the emitter died is published again by the next one,
with the same id, which an idempotent handler skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from urllib.parse import quote

import aiormq.abc
import orjson
from aio_pika.abc import AbstractConnection
from loguru import logger

from eventworker import envelope
from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.amqp.delivery import Delivery
from eventworker.amqp.properties import Properties
from eventworker.errors import EventworkerError
from eventworker.observability import stats
from eventworker.observability.logs import one_line
from eventworker.publishing.channel import ConfirmChannel, Outgoing
from eventworker.schedules import MAX_CATCH_UP, Schedule
from eventworker.settings import Settings
from eventworker.topology import layout, management

#: Tokens the emitter may hold at once (its own and extras to absorb).
TOKENS = 16
#: A tick reached at most this late is on time; an older one was missed (``catch_up`` decides).
GRACE = timedelta(seconds=2)
#: After becoming the emitter, how long to take in the other tokens before the first round.
SETTLE = 0.2
#: The longest pause between two rounds (a schedule with distant ticks still wakes up).
MAX_PAUSE = 30.0
#: The emitter replaces its token at least this often, ticks or not: RabbitMQ closes a channel
#: that holds a delivery unacked longer than its consumer_timeout (30 minutes by default).
REFRESH = 60.0
#: How long a stop waits for a token rotation under way (a confirmed publish and the acks).
ROTATION_GRACE = 5.0
#: Headers of a tick: the schedule's name, the tick's time (UTC ISO), whether it came late.
SCHEDULE_HEADER = "x-eventworker-schedule"
TICK_HEADER = "x-eventworker-tick"
CAUGHT_UP_HEADER = "x-eventworker-caught-up"


@runtime_checkable
class ScheduleObserver(Protocol):
    """What the emitter reports (``worker.metrics.Metrics`` fits)."""

    def schedule_ticks(self, schedule: str, outcome: str, count: int) -> None:
        """``count`` ticks of ``schedule`` were emitted, missed or caught_up."""

    def schedule_emitter(self, active: bool) -> None:
        """This worker became (True) or stopped being (False) the emitter."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read_token(body: bytes) -> tuple[str, dict[str, datetime]]:
    """(token id, last tick per schedule); a token that cannot be read counts as empty."""
    try:
        data = orjson.loads(body)
        last = {
            str(name): datetime.fromisoformat(str(when)).astimezone(UTC)
            for name, when in dict(data.get("last") or {}).items()
        }
        return str(data.get("token", "")), last
    except (ValueError, TypeError, AttributeError):
        logger.warning("schedule emitter: an unreadable token in the election queue, dropped")
        return "", {}


class Emitter:
    """Takes part in the election for ``schedules`` and, while elected, publishes their ticks."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        queue_prefix: str,
        observers: Sequence[ScheduleObserver] = (),
    ) -> None:
        self.schedules = list(schedules)
        self.queue = layout.schedules_queue(queue_prefix)
        self.observers = tuple(observers)
        #: Whether this worker is the emitter now.
        self.active = False
        #: The last tick published (or passed over) of each schedule, as the tokens say.
        self.last: dict[str, datetime] = {}
        self._held: dict[int, str] = {}
        self._token = ""
        self._dirty = False
        self._rotated_at = 0.0
        self._wake = asyncio.Event()

    async def run(self, connection: AbstractConnection, publisher: ConfirmChannel) -> None:
        """Stand for election on a channel of ``connection``, publishing through
        ``publisher`` while elected; returns when the channel closes, and stops being the
        emitter when cancelled (the channel's close hands the token to the next worker)."""
        channel = await connection.channel()
        closed = asyncio.Event()

        def on_close(*_: object) -> None:
            closed.set()
            self._wake.set()

        channel.close_callbacks.add(on_close)
        try:
            await channel.set_qos(prefetch_count=TOKENS)
            underlay = await channel.get_underlay_channel()
            await underlay.basic_consume(self.queue, self._deliver, no_ack=False)
            await self._put_token(publisher, uuid.uuid4().hex, {})
            await self._serve(publisher, underlay, closed)
        finally:
            self._step_down()
            if not channel.is_closed:
                with contextlib.suppress(TimeoutError, *CHANNEL_GONE):
                    await asyncio.wait_for(channel.close(), 5.0)

    def _step_down(self) -> None:
        if self.active:
            logger.info("schedule emitter: this worker is no longer the emitter")
            for observer in self.observers:
                observer.schedule_emitter(False)
        self.active = False
        self._held.clear()
        self.last.clear()
        self._token = ""

    async def _deliver(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        delivery = Delivery(delivered)
        token, last = _read_token(delivery.body)
        self._held[delivery.delivery_tag] = token
        for name, when in last.items():
            if name not in self.last or when > self.last[name]:
                self.last[name] = when
        if token != self._token:
            self._dirty = True
        if not self.active:
            self.active = True
            logger.info(
                "schedule emitter: this worker is now the emitter of {} schedule(s)",
                len(self.schedules),
            )
            for observer in self.observers:
                observer.schedule_emitter(True)
        self._wake.set()

    async def _serve(
        self,
        publisher: ConfirmChannel,
        underlay: aiormq.abc.AbstractChannel,
        closed: asyncio.Event,
    ) -> None:
        while not closed.is_set():
            # Cleared before the round: a token delivered during it wakes the next at once.
            self._wake.clear()
            pause = MAX_PAUSE
            if self.active:
                if self._dirty and not self._token:
                    await asyncio.sleep(SETTLE)  # just elected: let the other tokens come in
                now = datetime.now(UTC)
                emitted = False
                for item in self.schedules:
                    emitted = await self._emit(item, now, publisher) or emitted
                stale = time.monotonic() - self._rotated_at >= REFRESH
                if (emitted or self._dirty or stale) and not closed.is_set():
                    await self._rotate_through_a_stop(publisher, underlay)
                pause = self._pause(datetime.now(UTC))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    def _pause(self, now: datetime) -> float:
        """Seconds until the next tick of any schedule (at most :data:`MAX_PAUSE`)."""
        pause = MAX_PAUSE
        for item in self.schedules:
            upcoming = item.next_times(1, max(now, self.last.get(item.name, now)))
            if upcoming:
                pause = min(pause, (upcoming[0] - now).total_seconds() + 0.001)
        return max(pause, 0.0)

    async def _emit(self, item: Schedule, now: datetime, publisher: ConfirmChannel) -> bool:
        """Publish the ticks of ``item`` due by ``now``, as its catch-up policy says; True
        when its state changed."""
        last = self.last.get(item.name)
        if last is None:
            self.last[item.name] = now  # a new schedule: its ticks start now
            return True
        # In a thread: after a long outage, counting what was missed walks many ticks.
        ticks, total = await asyncio.to_thread(item.ticks_between, last, now, MAX_CATCH_UP + 1)
        if not ticks:
            return False
        on_time = [t for t in ticks if now - t <= GRACE]
        late = ticks[: len(ticks) - len(on_time)]
        missed = total - len(on_time)
        chosen = {"none": [], "last": late[-1:], "all": late[-MAX_CATCH_UP:]}[item.catch_up]
        self._count(item, "missed", missed - len(chosen))
        for tick in chosen + on_time:
            result = await publisher.send(
                Outgoing(
                    item.routing_key,
                    envelope.encode_data(item.data),
                    item.message_id(tick),
                    headers={
                        SCHEDULE_HEADER: item.name,
                        TICK_HEADER: _iso(tick),
                        CAUGHT_UP_HEADER: tick in chosen,
                    },
                    timestamp=tick,
                )
            )
            if result.status == "unroutable":
                logger.warning(
                    "schedule {}: tick {} published, but no queue is bound to {!r}",
                    item.name,
                    item.message_id(tick),
                    item.routing_key,
                )
            else:
                result.check(f"tick {item.message_id(tick)}")
            self.last[item.name] = tick
            self._count(item, "caught_up" if tick in chosen else "emitted", 1)
        self.last[item.name] = ticks[-1]
        return True

    def _count(self, item: Schedule, outcome: str, count: int) -> None:
        if count > 0:
            for observer in self.observers:
                observer.schedule_ticks(item.name, outcome, count)

    async def _put_token(
        self, publisher: ConfirmChannel, token: str, last: dict[str, datetime]
    ) -> None:
        body = orjson.dumps({"token": token, "last": {k: _iso(v) for k, v in last.items()}})
        properties = Properties.build(message_id=token, delivery_mode=2, content_type=envelope.JSON)
        await publisher.send_to_queue(body, properties, self.queue)

    async def _rotate_through_a_stop(
        self, publisher: ConfirmChannel, underlay: aiormq.abc.AbstractChannel
    ) -> None:
        """:meth:`_rotate`, finished even when the worker stops meanwhile (within
        :data:`ROTATION_GRACE` seconds): cut between the new token and the acks, it would leave
        the old token beside the new one."""
        rotation = asyncio.ensure_future(self._rotate(publisher, underlay))
        try:
            await asyncio.shield(rotation)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(rotation, ROTATION_GRACE)
            raise

    async def _rotate(
        self, publisher: ConfirmChannel, underlay: aiormq.abc.AbstractChannel
    ) -> None:
        """Put the state in a new token (confirmed), then let go of the tokens held before."""
        self._dirty = False
        self._rotated_at = time.monotonic()
        before = list(self._held)
        # Known before it is sent: the broker may deliver it back before the confirm comes.
        self._token = uuid.uuid4().hex
        await self._put_token(publisher, self._token, dict(self.last))
        for tag in before:
            if self._held.get(tag) != self._token:
                await underlay.basic_ack(tag)
                self._held.pop(tag, None)


@dataclass(frozen=True, slots=True)
class Elected:
    """Who emits the schedules now, as the broker says: the active consumer's connection name
    (None when it cannot be told), how many workers stand for election (None when unknown:
    AMQP counts only the active consumer of such a queue), and all that in words."""

    connection: str | None
    candidates: int | None
    detail: str


async def elected(settings: Settings, *, timeout: float = 10.0) -> Elected:
    """The current emitter: whether the election queue has an active consumer (a passive
    declare), and which one and how many stand, from the management API when
    ``management_url`` is set. Never raises: what cannot be read is said in ``detail``."""
    queue = layout.schedules_queue(settings.queue_prefix)
    try:
        async with stats.connected(settings) as reader:
            found = (await asyncio.wait_for(reader.read([queue]), timeout))[queue]
    except (EventworkerError, TimeoutError, OSError) as exc:
        return Elected(None, None, f"unknown: the broker could not be asked ({one_line(exc, 200)})")
    if not found.exists:
        return Elected(None, 0, f"none: no worker with schedules has run ({queue} is missing)")
    if not found.consumers:
        return Elected(None, 0, "none: no worker with schedules is running")
    if not settings.management_url.get_secret_value():
        return Elected(
            None,
            None,
            "unknown: a worker is the emitter (AMQP does not say which); set management_url "
            "to see it",
        )
    try:
        path = f"queues/{management.vhost_path(settings)}/{quote(queue, safe='')}"
        row = await management.get(settings, path, timeout=timeout)
        names = await management.connection_names(settings, timeout=timeout)
    except EventworkerError as exc:
        return Elected(None, None, f"unknown: {exc}")
    consumers = row.get("consumer_details") or []
    for consumer in consumers:
        # The one single-active consumer gets the messages; the others wait their turn.
        if consumer.get("activity_status") == "single_active":
            name = management.connection_of(consumer, names) or "?"
            return Elected(name, len(consumers), f"{name} ({len(consumers)} standing)")
    return Elected(None, len(consumers), "unknown: the management API names no active consumer")
