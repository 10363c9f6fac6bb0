"""The worker's lifecycle: connect, declare, consume, reconnect, drain, stop.

One connection consumes and acks; a second one publishes (retry and dead-letter copies, follow-up
events), so a broker that blocks publishers (resource alarm) cannot stop acks. The worker owns
reconnection: after any loss it declares the topology and subscribes every queue again, so it
never stays up with a queue that has no consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Any

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError
from loguru import logger

from eventworker.amqp.connection import CHANNEL_GONE, connect
from eventworker.amqp.delivery import Delivery
from eventworker.backoff import Backoff
from eventworker.errors import BrokerUnreachableError, PublishError
from eventworker.handlers import Middleware
from eventworker.inbox.claims import Inbox
from eventworker.inbox.protocol import InboxStore
from eventworker.inbox.stores import build_inbox
from eventworker.observability.logs import one_line
from eventworker.plugins import lifespan
from eventworker.plugins.discovery import Registration, declared_resources
from eventworker.plugins.resolved import ResolvedHandler, resolve, topology_plan
from eventworker.publishing.channel import ConfirmChannel
from eventworker.schedules import Schedule
from eventworker.settings import Settings
from eventworker.topology import declare, layout
from eventworker.worker import _banner
from eventworker.worker._acks import Acks
from eventworker.worker._budget import ByteBudget
from eventworker.worker._consumer import Consumer, unserved
from eventworker.worker.dispatch import Dispatcher, Observer
from eventworker.worker.emitter import Emitter, ScheduleObserver

#: Reconnection back-off: first pause, growth factor and the longest pause, in seconds.
BACKOFF_FIRST, BACKOFF_FACTOR, BACKOFF_MAX = 0.5, 2.0, 15.0
#: How long a broker round trip during shutdown may take before we stop waiting for it.
CONNECTION_CLOSE_TIMEOUT = 5.0


def _gone(connection: AbstractConnection) -> bool:
    """The connection died (aiormq's side; aio-pika's own flags follow in a later task)."""
    transport = connection.transport
    return transport is None or transport.connection.is_closed or not connection.connected.is_set()


class State(Enum):
    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    DRAINING = "draining"
    STOPPED = "stopped"


class Worker:
    """Runs handlers until :meth:`stop`; :meth:`run` returns after a graceful drain.

    Raises from :meth:`run`: BrokerAuthError, TopologyConflictError and other BrokerErrors
    (fatal: reconnecting would not help), BrokerUnreachableError when the broker cannot be
    reached at start or stays away longer than ``reconnect_timeout``, InboxError when the
    inbox of idempotent handlers cannot be opened, ResourceError when a plugin's resource fails
    to start. ``inbox_store`` replaces the store the settings name (tests, embedding);
    ``resources`` maps resource types to stand-ins used instead of entering the plugins' own;
    ``middleware`` runs around every handling, the first outermost; with ``schedules``, the
    worker stands for election as the emitter of those periodic events (``worker/emitter.py``).

    Raises from the constructor: ConfigError for an inbox URL that names no usable store.
    """

    def __init__(
        self,
        registrations: Sequence[Registration],
        settings: Settings,
        *,
        reconnect_timeout: float = 300.0,
        observers: Sequence[Observer] = (),
        inbox_store: InboxStore | None = None,
        resources: Mapping[type[Any], Any] | None = None,
        middleware: Sequence[Middleware] = (),
        schedules: Sequence[Schedule] = (),
    ) -> None:
        if not registrations:
            raise ValueError("a worker needs at least one handler")
        self.settings = settings
        self.registrations = list(registrations)
        self.routes = resolve(registrations, settings)
        self.plan = topology_plan(self.routes, settings, schedules=bool(schedules))
        #: The periodic events this worker stands for election to emit (none: it does not).
        self.schedules = list(schedules)
        self.emitter = (
            Emitter(
                schedules,
                queue_prefix=settings.queue_prefix,
                observers=[o for o in observers if isinstance(o, ScheduleObserver)],
            )
            if schedules
            else None
        )
        self.state = State.STARTING
        self.reconnect_timeout = reconnect_timeout
        self.observers = tuple(observers)
        sync_slots = sum(r.concurrency for r in self.routes if not r.handler.is_async)
        self.executor = ThreadPoolExecutor(
            max_workers=max(sync_slots, 1), thread_name_prefix="eventworker-handler"
        )
        self.interrupted = False
        #: A second SIGTERM/SIGINT this soon after the first is the same stop request, not a
        #: "stop at once": a supervised worker gets one from its process group (a terminal's
        #: Ctrl-C, systemd, ``kill -- -PGID``) and one forwarded by the supervisor.
        self.repeat_window = 0.0
        self._first_signal: float | None = None
        self.inbox: Inbox | None = build_inbox(
            settings.inbox,
            handlers={r.handler.name: r.concurrency for r in self.routes if r.idempotent},
            store=inbox_store,
        )
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        #: The consumers of the current session (empty while not connected).
        self.consumers: list[Consumer] = []
        #: Sessions that connected again after a loss (metrics read it).
        self.reconnects = 0
        self._waiting: set[asyncio.Task[Any]] = set()
        self._running: set[asyncio.Task[Any]] = set()
        self._stand_ins = dict(resources or {})
        self.middleware = tuple(middleware)
        #: The entered resources by type, what ``ctx.resource`` reads (filled by :meth:`run`).
        self.resources: dict[type[Any], Any] = {}
        #: Bytes of bodies the handlings hold, shared by every handler and kept across
        #: sessions (a handling of a lost session still holds its body); None = no bound.
        self.budget = (
            ByteBudget(settings.max_inflight_bytes) if settings.max_inflight_bytes else None
        )

    # -- control ------------------------------------------------------------------------
    def stop(self) -> None:
        """Begin a graceful drain (idempotent); safe to call from a signal handler."""
        self._stop.set()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every handler's queue has its consumer."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def ready(self) -> bool:
        """Connected, topology declared and every queue consumed; False while starting,
        reconnecting, draining and stopped (``/readyz`` answers with it)."""
        return self.state is State.RUNNING and self._ready.is_set() and not self._stop.is_set()

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self, *, handle_signals: bool = False) -> None:
        """Serve until stopped, then drain. With ``handle_signals``, SIGTERM/SIGINT stop the
        worker gracefully and a second one cancels the drain at once."""
        if handle_signals:
            self._install_signals(asyncio.current_task())
        resources = contextlib.AsyncExitStack()
        try:
            self.resources.update(
                await lifespan.enter(
                    resources, declared_resources(self.registrations), stand_ins=self._stand_ins
                )
            )
            if self.inbox is not None:
                await self.inbox.start()
            lost_since: float | None = None
            backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_FACTOR)
            while not self._stop.is_set():
                try:
                    await self._session()
                    lost_since = None
                    backoff.reset()
                    if not self._stop.is_set():
                        self.state = State.RECONNECTING
                        logger.warning("connection to the broker lost; reconnecting")
                        lost_since = time.monotonic()
                except (BrokerUnreachableError, AMQPError, ConnectionError) as exc:
                    if self.state is State.STARTING:
                        raise
                    self.state = State.RECONNECTING
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > self.reconnect_timeout:
                        raise BrokerUnreachableError(
                            f"broker unreachable for over {self.reconnect_timeout:g}s; giving "
                            f"up: {exc}"
                        ) from None
                    pause = backoff.next()
                    logger.error("reconnect failed: {}; next try in {:g}s", exc, pause)
                    await self._sleep_unless_stopped(pause)
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            # Our own second-signal cancel: the sessions' finally blocks closed the
            # connections, so the broker has every unfinished message back. Return normally.
            logger.warning("stopped without draining")
        finally:
            self.state = State.STOPPED
            self.executor.shutdown(wait=False, cancel_futures=True)
            try:
                if self.inbox is not None:
                    await self.inbox.close()
            finally:
                # After the drain, in reverse order; also after a failed start.
                await resources.aclose()
                self.resources.clear()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _install_signals(self, main: asyncio.Task[Any] | None) -> None:
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            now = time.monotonic()
            if self._first_signal is not None and now - self._first_signal < self.repeat_window:
                return
            if self._stop.is_set():
                logger.warning(
                    "second {}: stopping now, unfinished messages go back to the broker",
                    signal.Signals(signum).name,
                )
                self.interrupted = True
                if main is not None:
                    main.cancel()
                return
            self._first_signal = now
            logger.info(
                "{}: draining (grace {:g}s); send it again to stop at once",
                signal.Signals(signum).name,
                self.settings.grace,
            )
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def _session(self) -> None:
        """One connected period: declare, consume, wait for stop or loss; drain on stop."""
        s = self.settings
        urls = s.urls()
        names = ",".join(r.handler.name for r in self.routes)
        names = names if len(names) <= 120 else names[:117] + "..."
        consuming = await connect(
            urls,
            role=f"worker [{names}]",
            timeout=s.connect_timeout,
            heartbeat=s.heartbeat,
            tls=s.tls,
        )
        publishing: AbstractConnection | None = None
        try:
            publishing = await connect(
                urls,
                role=f"worker-publisher [{names}]",
                timeout=s.connect_timeout,
                heartbeat=s.heartbeat,
                tls=s.tls,
            )
            await declare.apply(self.plan, consuming)
            publisher = await ConfirmChannel.open(
                publishing,
                s.exchange,
                source=None,
                timeout=s.publish_timeout,
                delay_levels=s.delay_levels,
            )
            lost = asyncio.Event()
            for live in (consuming, publishing):
                live.close_callbacks.add(lambda *_: lost.set())
            # Without its channel the publisher can send no retry or dead-letter copy, and every
            # failing message would go round unacked: a new session opens a new one.
            publisher.on_close(lambda *_: lost.set())
            # One that closed during the awaits above called its callbacks before they were
            # added: the session would never hear of it (a dead publishing connection would
            # leave every failing message without its retry copy).
            if _gone(consuming) or _gone(publishing):
                raise ConnectionError(
                    "the connection to the broker closed while setting up the session"
                )
            if publisher.is_closed:
                raise ConnectionError("the publishing channel closed while setting up")
            consumers = self.consumers = [
                await self._subscribe(consuming, route, publisher, lost, queue_name)
                for route in self.routes
                for queue_name in (route.queue, route.probation_queue)
                if queue_name is not None
            ]
            if self.state is State.STARTING:
                _banner.log_start(self.settings, self.routes, self.registrations, self.middleware)
                if self.schedules:
                    logger.info(
                        "schedules: {}; standing for election as their emitter on {}",
                        ", ".join(f"{s.name} ({s.cron})" for s in self.schedules),
                        self.emitter.queue if self.emitter else "",
                    )
            else:
                self.reconnects += 1
                logger.info("reconnected: {} queue(s) consuming again", len(consumers))
            self.state = State.RUNNING
            self._ready.set()
            waits = {
                asyncio.ensure_future(self._stop.wait()),
                asyncio.ensure_future(lost.wait()),
                asyncio.ensure_future(self._watchdog(consuming, consumers, lost)),
            }
            if self.emitter is not None:
                waits.add(asyncio.ensure_future(self._emitting(consuming, publisher)))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            self._ready.clear()
            self.consumers = []
            if self._stop.is_set():
                await self._drain(consumers)
            else:
                # Lost, or the watchdog gave up on a consumer: write the coalesced acks of the
                # channels still open (a dead one drops its own), so what finished is not
                # redelivered; what still runs is, as the connection closes.
                await asyncio.gather(*(self._close(consumer) for consumer in consumers))
        except RuntimeError:
            # What aiormq raises to open a channel on a connection that has closed (a cut
            # while the session was being set up): a lost connection like any other.
            if any(c is not None and _gone(c) for c in (consuming, publishing)):
                raise ConnectionError(
                    "the connection to the broker closed while setting up the session"
                ) from None
            raise
        finally:
            for conn in (consuming, publishing):
                if conn is not None and not conn.is_closed:
                    # Closing a broken connection: the broker requeues regardless.
                    with contextlib.suppress(TimeoutError, *CHANNEL_GONE):
                        await asyncio.wait_for(conn.close(), CONNECTION_CLOSE_TIMEOUT)

    async def _emitting(self, connection: AbstractConnection, publisher: ConfirmChannel) -> None:
        """The schedule emitter for this session; when it fails, the session ends (and the
        next one stands for election again)."""
        assert self.emitter is not None
        try:
            await self.emitter.run(connection, publisher)
        except (PublishError, AMQPError, ConnectionError, RuntimeError, *CHANNEL_GONE) as exc:
            logger.warning("schedule emitter: {}; connecting again", one_line(exc, 300))

    async def _subscribe(
        self,
        connection: AbstractConnection,
        route: ResolvedHandler,
        publisher: ConfirmChannel,
        lost: asyncio.Event,
        queue_name: str,
    ) -> Consumer:
        """A consumer of ``queue_name``, the route's work queue or (classic queues) its
        probation queue, on a channel of its own (delivery tags and coalesced acks are per
        channel)."""
        channel = await connection.channel()
        # The broker cancels a consumer when its queue is deleted, and closes a channel on a
        # consumer timeout: either way this session is broken; a new one re-declares all.
        channel.close_callbacks.add(lambda *_: lost.set())
        underlay = await channel.get_underlay_channel()

        def cancelled_by_broker(*_: Any) -> None:
            # Never silent: an operator deleted the queue, or its node went away.
            logger.error(
                "the broker cancelled our consumer of queue {} (queue deleted?); declaring "
                "the topology and subscribing again",
                route.queue,
            )
            lost.set()

        underlay.on_consumer_cancel_callbacks.add(cancelled_by_broker)
        dispatcher = Dispatcher(
            route,
            moves=publisher,
            events=publisher.publish,
            return_exchange=layout.return_exchange(self.settings.exchange),
            queue_prefix=self.settings.queue_prefix,
            exchange=self.settings.exchange,
            delay_levels=self.settings.delay_levels,
            max_body_bytes=self.settings.max_body_bytes,
            executor=self.executor,
            observers=self.observers,
            inbox=self.inbox,
            resources=self.resources,
            middleware=self.middleware,
        )
        slots = asyncio.Semaphore(route.concurrency)
        budget = self.budget

        async def on_message(message: Delivery, acks: Acks) -> None:
            # aiormq runs each delivery in a task of its own; the semaphore bounds how many
            # run the handler at once (prefetch only bounds how many are delivered), the
            # budget how many bytes of bodies they hold. A slot first: a delivery waiting for
            # its handler's slot holds no bytes another handler could use.
            task = asyncio.current_task()
            assert task is not None
            if slots.locked():
                await self._wait(task, slots.acquire())
            else:
                await slots.acquire()  # a free slot: returns at once
            try:
                size = len(message.body)
                if budget is not None and not budget.try_take(size):
                    await self._wait(task, budget.take(size))
                try:
                    if self.state is State.DRAINING:
                        return  # unstarted: left unacked, the broker redelivers it
                    self._running.add(task)
                    try:
                        await dispatcher.handle(message, acks)
                    finally:
                        self._running.discard(task)
                finally:
                    if budget is not None:
                        budget.give(size)
            finally:
                slots.release()

        queue = await channel.get_queue(queue_name, ensure=False)
        alone = queue_name == route.probation_queue
        # The work queue starts on probation (prefetch 1 while redelivered messages come): see
        # consumer.py. Not with a single active consumer: ending probation re-subscribes, and
        # the broker would hand the queue to another worker while this one still runs a
        # message. Not on a classic queue either: there a redelivered message is moved to the
        # probation queue, whose messages always run one at a time (see topology.layout).
        consumer = Consumer(
            channel,
            underlay,
            queue,
            prefetch=1 if alone else route.prefetch,
            on_message=on_message,
            on_undecodable=dispatcher.reject_undecodable,
            name=f"{route.handler.name} (probation)" if alone else route.handler.name,
            probation=not route.handler.single_active_consumer and route.probation_queue is None,
        )
        await consumer.start()
        return consumer

    async def _wait(self, task: asyncio.Task[Any], waiting: Awaitable[Any]) -> None:
        """Await ``waiting`` (a slot, room in the budget) as one of the deliveries the drain
        cancels: they have not started, so the broker redelivers them."""
        self._waiting.add(task)
        try:
            await waiting
        finally:
            self._waiting.discard(task)

    async def _watchdog(
        self, connection: AbstractConnection, consumers: list[Consumer], lost: asyncio.Event
    ) -> None:
        """Every ``watchdog_interval`` seconds, check that each queue we serve still has our
        consumer; if one lost it without any notice we saw, end the session so the next one
        subscribes everything again. A worker never stays up with a queue nobody consumes."""
        interval = self.settings.watchdog_interval
        if not interval:
            await lost.wait()
            return
        while not lost.is_set():
            await asyncio.sleep(interval)
            missing = await unserved(connection, consumers)
            if missing:
                logger.error(
                    "watchdog: no consumer of ours on {}; subscribing again", ", ".join(missing)
                )
                lost.set()

    async def _drain(self, consumers: list[Consumer]) -> None:
        """Stop consuming first, then let started handlers finish within the grace period.

        Unstarted deliveries and handlers still running after the grace are left unacked:
        closing the channel hands them back to the broker, and no attempt is consumed.
        """
        self.state = State.DRAINING
        started = time.monotonic()
        for consumer in consumers:
            # A dead channel has no consumer left to cancel.
            with contextlib.suppress(TimeoutError, *CHANNEL_GONE):
                await asyncio.wait_for(consumer.cancel(), CONNECTION_CLOSE_TIMEOUT)
        for task in list(self._waiting):
            task.cancel()
        running = set(self._running)
        pending: set[asyncio.Task[Any]] = set()
        if running:
            logger.info(
                "waiting up to {:g}s for {} running handler(s)", self.settings.grace, len(running)
            )
            _, pending = await asyncio.wait(running, timeout=self.settings.grace)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CONNECTION_CLOSE_TIMEOUT) if pending else None
        await asyncio.gather(*(self._close(consumer) for consumer in consumers))
        logger.info(
            "drained in {:.1f}s: {} finished, {} unfinished handed back to the broker",
            time.monotonic() - started,
            len(running) - len(pending),
            len(pending),
        )

    @staticmethod
    async def _close(consumer: Consumer) -> None:
        """Write the consumer's coalesced acks and close its channel; unfinished deliveries
        stay unacked and go back to the queue."""
        # A dead channel has nothing left to ack: the broker requeued its deliveries.
        with contextlib.suppress(TimeoutError, *CHANNEL_GONE):
            await asyncio.wait_for(consumer.close(), CONNECTION_CLOSE_TIMEOUT)
