"""Prometheus instruments of one worker process: what its handlers did, and what the broker holds.

:class:`Metrics` is a dispatch :class:`~eventworker.worker.dispatch.Observer`: every delivery is
counted when it is received and when it is settled, every publish when its confirm (or refusal)
came back. Work, retry and dead-letter queue depths are read from the broker every
``metrics_poll_interval`` seconds (:func:`eventworker.observability.stats.poll`). Each
``Metrics`` has a registry of its own, so several workers in one process never share a series.

Several worker processes on one machine: each serves its own endpoint (one port per process)
and Prometheus adds them up; nothing is shared between processes, so no count can be lost or
double-counted. Queue depths are the broker's, the same in every process: take ``max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from eventworker.envelope import Event
from eventworker.observability import stats
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import Settings
from eventworker.topology import delays, layout
from eventworker.worker.decisions import Ack, DeadLetter, Decision, Duplicate, Requeue, RetryIn

#: Every reason a dead-letter decision can carry (retry.DeadLetter), pre-set to 0 per handler.
DEAD_LETTER_REASONS = (
    "rejected",
    "exception",
    "timeout",
    "retry_requested",
    "give_up",
    "too_large",
    "unsupported_content_type",
    "decode_error",
    "schema_error",
    "undecodable",
)
#: The ``delay`` label of a retry held an exact delay in the delay levels.
EXACT = "exact"
PUBLISH_KINDS = ("event", "retry", "dead_letter", "probation")
PUBLISH_STATUSES = ("confirmed", "nacked", "unroutable", "timeout", "connection_lost")
#: Handler durations: from a few milliseconds to the default 300 s handler timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Message ages: the AMQP timestamp has whole seconds; retries make ages of hours plausible.
AGE_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400)
_OUTCOMES = {
    Ack: "ack",
    RetryIn: "retry",
    DeadLetter: "dead_letter",
    Duplicate: "duplicate",
    Requeue: "requeued",
}


class WorkerView(Protocol):
    """What the metrics read of a worker at scrape time (``worker.Worker`` fits)."""

    routes: list[ResolvedHandler]
    reconnects: int

    @property
    def state(self) -> Enum: ...

    @property
    def ready(self) -> bool: ...


class _Series:
    """One handler's series that every delivery touches, looked up once: prometheus-client's
    ``labels()`` checks the values and takes a lock on each call."""

    __slots__ = ("acked", "age", "duration_ack", "received")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.received = metrics.received_total.labels(name)
        self.age = metrics.age.labels(name)
        self.acked = metrics.acked_total.labels(name)
        self.duration_ack = metrics.duration.labels(name, _OUTCOMES[Ack])


class Metrics:
    """The instruments; an Observer for every Dispatcher of a worker. Call :meth:`watch`
    with the worker before it runs, so every series exists (at 0) from the first scrape."""

    def __init__(self) -> None:
        # No ``*_created`` series: they double the exposition and Prometheus ignores them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        r, h = self.registry, ["handler"]
        self.received_total = Counter(
            "eventworker_messages_received", "Deliveries received.", h, registry=r
        )
        self.acked_total = Counter(
            "eventworker_messages_acked", "Deliveries handled and acked.", h, registry=r
        )
        self.retried_total = Counter(
            "eventworker_messages_retried",
            "Deliveries sent to a retry tier (confirmed) and acked, by tier.",
            [*h, "delay"],
            registry=r,
        )
        self.dead_lettered_total = Counter(
            "eventworker_messages_dead_lettered",
            "Deliveries put in the dead-letter queue (confirmed) and acked, or rejected to it "
            "when their header could not be decoded (reason undecodable), by reason.",
            [*h, "reason"],
            registry=r,
        )
        self.requeued_total = Counter(
            "eventworker_messages_requeued",
            "Deliveries handed back unrun: their retry or dead-letter copy was not confirmed or "
            "the inbox did not admit them, or (classic queues) moved to the probation queue.",
            h,
            registry=r,
        )
        self.duplicates_total = Counter(
            "eventworker_duplicates_skipped",
            "Deliveries skipped as duplicates of an event already handled.",
            h,
            registry=r,
        )
        self.publishes_total = Counter(
            "eventworker_publishes",
            "Publishes by handlings: follow-up events, retry and dead-letter copies, by "
            "outcome (confirmed, nacked, unroutable = returned, timeout, connection_lost).",
            [*h, "kind", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "eventworker_handler_duration_seconds",
            "Seconds from receipt to settle (decode, handler, confirmed move), by outcome.",
            [*h, "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.age = Histogram(
            "eventworker_message_age_seconds",
            "Seconds from the event's time to its receipt by the handler.",
            h,
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.schedule_ticks_total = Counter(
            "eventworker_schedule_ticks",
            "Ticks of periodic events, by schedule and outcome: emitted on time, caught_up "
            "(published late, as catch_up allows) or missed (not published: no worker ran).",
            ["schedule", "outcome"],
            registry=r,
        )
        self.schedule_emitter_gauge = Gauge(
            "eventworker_schedule_emitter",
            "1 while this worker is the elected emitter of periodic events.",
            registry=r,
        )
        self._live = _Live()
        r.register(self._live)
        self._series: dict[str, _Series] = {}

    def _of(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series(self, name)
        return series

    # -- the worker ---------------------------------------------------------------------
    def watch(self, worker: WorkerView) -> None:
        """Read ``worker``'s state at each scrape, and create its handlers' series at 0."""
        self._live.worker = worker
        for route in worker.routes:
            name = route.handler.name
            for counter in (self.received_total, self.acked_total, self.requeued_total):
                counter.labels(name)
            self.duplicates_total.labels(name)
            for delay in sorted(set(route.policy.delays)):
                self.retried_total.labels(name, layout.delay_label(delay))
            for reason in DEAD_LETTER_REASONS:
                self.dead_lettered_total.labels(name, reason)
            for kind in PUBLISH_KINDS:
                for status in PUBLISH_STATUSES:
                    self.publishes_total.labels(name, kind, status)
            self.age.labels(name)
        for item in getattr(worker, "schedules", ()):
            for outcome in ("emitted", "caught_up", "missed"):
                self.schedule_ticks_total.labels(item.name, outcome)

    # -- Observer -----------------------------------------------------------------------
    def received(self, route: ResolvedHandler, event: Event[Any]) -> None:
        name = route.handler.name
        series = self._of(name)
        series.received.inc()
        series.age.observe(max(0.0, time.time() - event.time.timestamp()))
        task = asyncio.current_task()
        if task is not None:
            # A task set rather than a gauge: a handling cancelled at shutdown is never
            # settled, and a done task leaves the set on its own.
            running = self._live.in_flight.setdefault(name, set())
            running.add(task)
            task.add_done_callback(running.discard)

    def settled(
        self,
        route: ResolvedHandler,
        event: Event[Any],
        decision: Decision,
        *,
        moved: bool,
        seconds: float,
    ) -> None:
        name = route.handler.name
        task = asyncio.current_task()
        if task is not None:
            self._live.in_flight.get(name, set()).discard(task)
        if not moved:
            self.requeued_total.labels(name).inc()
            self.duration.labels(name, "requeued").observe(seconds)
            return
        if type(decision) is Ack:  # the common case, through the series looked up once
            series = self._of(name)
            series.duration_ack.observe(seconds)
            series.acked.inc()
            return
        self.duration.labels(name, _OUTCOMES.get(type(decision), "other")).observe(seconds)
        match decision:
            case Ack():
                self.acked_total.labels(name).inc()
            case RetryIn(delay=delay, levels=levels):
                # Exact delays are any number of seconds: one series for all, not one each.
                label = EXACT if levels else layout.delay_label(delay)
                self.retried_total.labels(name, label).inc()
            case DeadLetter(reason=reason):
                self.dead_lettered_total.labels(name, reason).inc()
            case Duplicate():
                self.duplicate(route)
            case Requeue():
                self.requeued_total.labels(name).inc()

    def published(self, route: ResolvedHandler, *, kind: str, status: str) -> None:
        self.publishes_total.labels(route.handler.name, kind, status).inc()

    def duplicate(self, route: ResolvedHandler) -> None:
        """A delivery skipped as a duplicate (the idempotency inbox calls this)."""
        self.duplicates_total.labels(route.handler.name).inc()

    # -- ScheduleObserver (worker/emitter.py) -------------------------------------------------
    def schedule_ticks(self, schedule: str, outcome: str, count: int) -> None:
        self.schedule_ticks_total.labels(schedule, outcome).inc(count)

    def schedule_emitter(self, active: bool) -> None:
        self.schedule_emitter_gauge.set(1 if active else 0)

    # -- the broker ---------------------------------------------------------------------
    @asynccontextmanager
    async def polling(self, settings: Settings) -> AsyncIterator[None]:
        """Read the watched worker's queue depths every ``metrics_poll_interval`` seconds
        while inside (not at all when it is 0)."""
        worker = self._live.worker
        if worker is None or not settings.metrics_poll_interval:
            yield
            return
        self._live.queues = {
            queue: (route.handler.name, kind)
            for route in worker.routes
            for queue, kind in ((route.queue, "work"), (route.dead_letter_queue, "dead"))
        }
        for delay, queue in worker.routes[0].retry_queues.items():
            self._live.queues[queue] = (layout.delay_label(delay), "retry")
        for level in range(settings.delay_levels):
            self._live.queues[delays.level_name(settings.exchange, level)] = (str(level), "delay")
        stop = asyncio.Event()
        task = asyncio.create_task(
            stats.poll(
                settings,
                self._live.queues,
                interval=settings.metrics_poll_interval,
                on_read=self._live.read,
                stop=stop,
            )
        )
        try:
            yield
        finally:
            stop.set()
            # A read finishes within a connect and a few declares; past that, cut it short.
            done, _ = await asyncio.wait({task}, timeout=settings.connect_timeout + 5)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Live:
    """Series computed at scrape time: worker state, in-flight handlings, queue depths."""

    def __init__(self) -> None:
        self.worker: WorkerView | None = None
        self.in_flight: dict[str, set[asyncio.Task[Any]]] = {}
        #: queue -> (handler name, delay label or level, "work" | "dead" | "retry" | "delay")
        self.queues: dict[str, tuple[str, str]] = {}
        self._found: dict[str, stats.QueueStats] = {}
        self._read_at = 0.0
        #: dead-letter queue -> when it was first seen non-empty since it was last seen empty
        self._nonempty_since: dict[str, float] = {}

    def read(self, found: dict[str, stats.QueueStats], when: float) -> None:
        self._found, self._read_at = found, when
        for queue, (_, kind) in self.queues.items():
            if kind == "dead":
                if found.get(queue) and found[queue].messages:
                    self._nonempty_since.setdefault(queue, when)
                else:
                    self._nonempty_since.pop(queue, None)

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        if worker is None:
            return
        ready = GaugeMetricFamily(
            "eventworker_ready", "1 when connected, declared and consuming every queue."
        )
        ready.add_metric([], 1.0 if worker.ready else 0.0)
        state = GaugeMetricFamily("eventworker_state", "1 for the current state.", labels=["state"])
        for value in type(worker.state):
            state.add_metric([str(value.value)], 1.0 if value is worker.state else 0.0)
        reconnects = CounterMetricFamily(
            "eventworker_reconnects", "Reconnections to the broker since start."
        )
        reconnects.add_metric([], worker.reconnects)
        yield from (ready, state, reconnects, *self._routes(worker.routes))
        if self._read_at:
            yield from self._queues()

    def _routes(self, routes: Sequence[ResolvedHandler]) -> Iterator[Metric]:
        h = ["handler"]
        in_flight = GaugeMetricFamily("eventworker_in_flight", "Handlings running now.", labels=h)
        prefetch = GaugeMetricFamily(
            "eventworker_prefetch", "Deliveries the broker sends ahead (basic.qos).", labels=h
        )
        concurrency = GaugeMetricFamily(
            "eventworker_concurrency", "Handlings that may run at once.", labels=h
        )
        for route in routes:
            name = route.handler.name
            in_flight.add_metric([name], len(self.in_flight.get(name, ())))
            prefetch.add_metric([name], route.prefetch)
            concurrency.add_metric([name], route.concurrency)
        return iter((in_flight, prefetch, concurrency))

    def _queues(self) -> Iterator[Metric]:
        labels = ["handler", "queue"]
        work = GaugeMetricFamily(
            "eventworker_queue_messages", "Ready messages in a work queue.", labels=labels
        )
        consumers = GaugeMetricFamily(
            "eventworker_queue_consumers", "Consumers of a work queue.", labels=labels
        )
        dead = GaugeMetricFamily(
            "eventworker_dead_letter_messages", "Messages in a dead-letter queue.", labels=labels
        )
        oldest = GaugeMetricFamily(
            "eventworker_dead_letter_oldest_age_seconds",
            "Seconds a dead-letter queue has been non-empty without a break, as this worker "
            "saw it: the age of its oldest message while messages are only added.",
            labels=labels,
        )
        retry = GaugeMetricFamily(
            "eventworker_retry_queue_messages",
            "Messages waiting in a retry tier (shared by all handlers).",
            labels=["delay", "queue"],
        )
        delayed = GaugeMetricFamily(
            "eventworker_delayed_messages",
            "Delayed events (and exact-delay retries) waiting in a delay level (2^level s).",
            labels=["level", "queue"],
        )
        now = time.time()
        for queue, (owner, kind) in self.queues.items():
            found = self._found.get(queue)
            if found is None or not found.exists:
                continue
            if kind == "work":
                work.add_metric([owner, queue], found.messages or 0)
                consumers.add_metric([owner, queue], found.consumers or 0)
            elif kind == "dead":
                dead.add_metric([owner, queue], found.messages or 0)
                since = self._nonempty_since.get(queue)
                oldest.add_metric([owner, queue], now - since if since else 0.0)
            elif kind == "retry":
                retry.add_metric([owner, queue], found.messages or 0)
            else:
                delayed.add_metric([owner, queue], found.messages or 0)
        read = GaugeMetricFamily(
            "eventworker_queue_stats_timestamp_seconds", "When the queue depths were last read."
        )
        read.add_metric([], self._read_at)
        return iter((work, consumers, dead, oldest, retry, delayed, read))
