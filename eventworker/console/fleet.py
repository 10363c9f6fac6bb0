"""The handlers as the console sees them: their queues, the depths polled from the broker, the
dead-letter samples, and the console's one AMQP connection for reading and moving dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from loguru import logger

from eventworker.amqp.connection import connect
from eventworker.console.rates import History
from eventworker.deadletters import operations as ops
from eventworker.deadletters.operations import Connection, DeadLetterQueue, DeadLetterStats
from eventworker.deadletters.reader import broker_version, counts_reads
from eventworker.errors import EventworkerError
from eventworker.observability import stats
from eventworker.observability.stats import QueueStats
from eventworker.plugins.discovery import Registration
from eventworker.plugins.resolved import ResolvedHandler, resolve
from eventworker.settings import Settings
from eventworker.topology import layout, management

#: Messages read per dead-letter queue for the oldest age and top reasons of the overview.
SAMPLE = 20
#: Seconds a dead-letter sample is shown before it is read again (reads are not free: see
#: deadletters.reader on delivery counts).
SAMPLE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class BrokerConsumer:
    """One consumer on a handler's queue, as the management API lists it."""

    queue: str
    handler: str
    connection: str
    peer: str
    prefetch: int
    active: bool


@dataclass(frozen=True, slots=True)
class Member:
    """One handler: where it came from, its queues and its dead-letter queue."""

    registration: Registration
    route: ResolvedHandler
    dlq: DeadLetterQueue

    @property
    def name(self) -> str:
        return self.route.handler.name


class Fleet:
    """The installed handlers, their last depths and rates, and a connection to the broker."""

    def __init__(self, settings: Settings, registrations: Sequence[Registration]) -> None:
        self.settings = settings
        self.registrations = list(registrations)
        self.routes = resolve(self.registrations, settings)
        back = layout.return_exchange(settings.exchange)
        self.members = {
            r.handler.name: Member(
                reg,
                r,
                DeadLetterQueue(
                    r.handler.name,
                    r.dead_letter_queue,
                    back,
                    r.queue,
                    queue_type=settings.queue_type,
                ),
            )
            for reg, r in zip(self.registrations, self.routes, strict=True)
        }
        #: Every dead-letter queue by the name `eventworker dlq` takes: the handlers', and the
        #: unrouted queue (by its own name) when one is configured.
        self.dead_letter_queues = {name: m.dlq for name, m in self.members.items()}
        self.unrouted: DeadLetterQueue | None = None
        if settings.unrouted_queue:
            self.unrouted = DeadLetterQueue(
                "(unrouted)",
                settings.unrouted_queue,
                settings.exchange,
                None,
                "unrouted",
                settings.queue_type,
            )
            self.dead_letter_queues.setdefault(settings.unrouted_queue, self.unrouted)
        self.tiers: dict[float, str] = self.routes[0].retry_queues if self.routes else {}
        self.history = History(settings.console.rate_window)
        self.depths: dict[str, QueueStats] = {}
        self.polled_at: float | None = None
        self._samples: dict[str, tuple[float, DeadLetterStats]] = {}
        self._connection: Connection | None = None
        self._lock = asyncio.Lock()
        self._reader: stats.StatsReader | None = None
        #: From the management API, when ``management_url`` is set.
        self.unacked: dict[str, int] = {}
        self.consumers: list[BrokerConsumer] = []
        self.management_error = ""
        self._reading = asyncio.Lock()

    def queue_names(self) -> list[str]:
        names = [q for m in self.members.values() for q in (m.route.queue, m.dlq.queue)]
        unrouted = [self.unrouted.queue] if self.unrouted else []
        return names + list(self.tiers.values()) + unrouted

    def on_read(self, found: dict[str, QueueStats], at: float) -> None:
        self.depths.update(found)
        self.polled_at = at
        for name, depth in found.items():
            self.history.record(name, at, depth.messages)

    async def refresh(self) -> None:
        """Read every queue's depth now.

        Raises:
            BrokerError, BrokerUnreachableError, BrokerAuthError: the broker could not be read.
        """
        connection = await self.connection()
        async with self._reading:  # one read at a time on the reader's channel
            if self._reader is None or self._reader.is_closed:
                self._reader = stats.StatsReader(connection)
            self.on_read(await self._reader.read(self.queue_names()), time.time())
        if self.settings.management_url.get_secret_value():
            await self._read_management()

    async def _read_management(self) -> None:
        """Unacked counts and the consumer list; a failure is shown, never fatal."""
        timeout = self.settings.connect_timeout
        where = management.vhost_path(self.settings)
        handlers = {
            q: m.name
            for m in self.members.values()
            for q in (m.route.queue, m.route.probation_queue)
            if q
        }
        try:
            queues = await management.get(
                self.settings,
                f"queues/{where}?columns=name,messages_unacknowledged",
                timeout=timeout,
            )
            consumers = await management.get(self.settings, f"consumers/{where}", timeout=timeout)
            named = await management.connection_names(self.settings, timeout=timeout)
        except EventworkerError as exc:
            self.management_error = str(exc)
            return
        self.management_error = ""
        self.unacked = {
            q["name"]: int(q.get("messages_unacknowledged") or 0)
            for q in queues
            if q.get("name") in handlers
        }
        self.consumers = sorted(
            (
                BrokerConsumer(
                    queue=c["queue"]["name"],
                    handler=handlers[c["queue"]["name"]],
                    connection=management.connection_of(c, named),
                    peer=str(c.get("channel_details", {}).get("peer_host", "")),
                    prefetch=int(c.get("prefetch_count") or 0),
                    active=bool(c.get("active", True)),
                )
                for c in consumers
                if c.get("queue", {}).get("name") in handlers
            ),
            key=lambda c: (c.connection, c.handler),
        )

    async def poll(self, stop: asyncio.Event) -> None:
        """Read every queue's depth each ``console.poll_interval`` seconds until ``stop``; a
        broker that cannot be reached is tried again at the next interval."""
        failing = False
        while not stop.is_set():
            try:
                await self.refresh()
                failing = False
            except EventworkerError as exc:
                (logger.debug if failing else logger.warning)(
                    "console: queue depths not read: {}", exc
                )
                failing = True
                self._reader = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.console.poll_interval)

    async def connection(self) -> Connection:
        """The console's connection (opened again when it was lost)."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await connect(
                    self.settings.url,
                    role="console",
                    timeout=self.settings.connect_timeout,
                    heartbeat=self.settings.heartbeat,
                    tls=self.settings.tls,
                )
            return self._connection

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def reads_count(self) -> bool:
        """True when each read of a quorum dead-letter queue counts towards its delivery limit."""
        version = broker_version(await self.connection())
        return self.settings.queue_type == "quorum" and counts_reads(version)

    async def sample(self, member: Member) -> DeadLetterStats:
        """Count, oldest age and top reasons of the member's dead letters (read at most every
        ``SAMPLE_TTL`` seconds, and only when there are any)."""
        cached = self._samples.get(member.name)
        depth = self.depths.get(member.dlq.queue)
        if (
            cached
            and time.monotonic() - cached[0] < SAMPLE_TTL
            and depth is not None
            and cached[1].count == depth.messages
        ):
            return cached[1]
        connection = await self.connection()
        # The reader hands back what it sampled before it returns, counted by the queue.
        found = await ops.stats(connection, member.dlq, sample=SAMPLE)
        self._samples[member.name] = (time.monotonic(), found)
        return found

    def cached_sample(self, name: str) -> DeadLetterStats | None:
        cached = self._samples.get(name)
        return cached[1] if cached else None

    def forget_sample(self, name: str) -> None:
        """Read the dead letters again next time (an action moved some)."""
        self._samples.pop(name, None)
