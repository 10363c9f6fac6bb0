"""A test kit for plugin authors.

:func:`run_handler` runs one handler on one event in this process, without a broker, through
the worker's own dispatch (decoding, model validation, timeout, sync handlers in a thread, the
retry decision): the :class:`Outcome` says what the worker would do (ack, retry in N seconds,
dead-letter with a reason), what the handler raised and what it published.

:func:`running_worker` (and the pytest fixture ``eventworker_worker``: add
``pytest_plugins = ["eventworker.testing"]`` to the top-level ``conftest.py``) runs a real
worker with chosen handlers against a test broker, on an exchange and queues of its own, and
waits for outcomes.

Both take ``resources``: a mapping of resource types to fakes (``{Database: FakeDatabase()}``),
handed to ``ctx.resource`` as they are, or ``@resource`` declarations, entered and left as the
worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest

from eventworker import envelope
from eventworker.amqp.properties import Properties
from eventworker.envelope import Event
from eventworker.errors import (
    EnvelopeError,
    HandlerTimeoutError,
    InvalidInputError,
    PublishError,
)
from eventworker.handlers import Handler, HandlerFunc, Middleware, Resource
from eventworker.plugins import lifespan
from eventworker.plugins.discovery import Plugin, Registration
from eventworker.plugins.resolved import ResolvedHandler, resolve
from eventworker.publishing.publisher import Publisher
from eventworker.settings import Settings
from eventworker.topology import delays
from eventworker.worker.decisions import Ack, DeadLetter, Decision, RetryIn
from eventworker.worker.dispatch import Dispatcher
from eventworker.worker.lifecycle import Worker

#: The broker the fixture uses: $EVENTWORKER_TEST_URL, else a local RabbitMQ.
TEST_URL_ENV = "EVENTWORKER_TEST_URL"
_PLUGIN = Plugin(entry_point="test", value="test", distribution="test", version="0")
_EXCHANGE, _RETURN = "eventworker.test", "eventworker.test.return"

#: What ``resources=`` takes: fakes by type, or resource declarations to enter.
Resources = Mapping[type[Any], Any] | Iterable[Resource[Any]]


def _resources(given: Resources | None) -> tuple[dict[type[Any], Any], tuple[Resource[Any], ...]]:
    """(fakes by type, declarations to enter) of a ``resources=`` argument."""
    if given is None:
        return {}, ()
    if isinstance(given, Mapping):
        return dict(given), ()
    declared = tuple(given)
    for item in declared:
        if not isinstance(item, Resource):
            raise TypeError(
                f"resources= takes a mapping of types to fakes or @resource declarations, "
                f"not a {type(item).__name__}"
            )
    return {}, declared


@dataclass(frozen=True, slots=True)
class Published:
    """A follow-up event the handler published with ``ctx.publish``; ``data`` as JSON."""

    routing_key: str
    data: Any
    id: str | None
    headers: Mapping[str, Any] | None
    correlation_id: str | None
    causation_id: str | None
    #: Whole seconds the broker would hold it (``delay`` or ``at``); 0: at once.
    delay: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the worker would do with the event after this attempt."""

    decision: Decision
    event: Event[Any]
    #: What the handler raised (a HandlerTimeoutError for a timeout, an EnvelopeError for
    #: input that never reached it); None when it returned.
    error: BaseException | None
    published: list[Published]
    #: The retry or dead-letter queue the copy went to (a delay level's exchange for an exact
    #: retry delay), and the copy's headers (the diagnosis).
    moved_to: str | None = None
    copy_headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def acked(self) -> bool:
        return isinstance(self.decision, Ack)

    @property
    def retry_delay(self) -> float | None:
        """Seconds until the next attempt, when the event is retried."""
        return self.decision.delay if isinstance(self.decision, RetryIn) else None

    @property
    def dead_letter_reason(self) -> str | None:
        """``rejected``, ``exception``, ``timeout``, ``schema_error``..., when dead-lettered."""
        return self.decision.reason if isinstance(self.decision, DeadLetter) else None


@dataclass(slots=True)
class _Delivery:
    """An in-memory delivery with what dispatch reads of an aio-pika message."""

    body: bytes
    routing_key: str
    exchange: str
    headers: dict[str, Any]
    message_id: str
    correlation_id: str | None
    content_type: str | None
    content_encoding: str | None = None
    type: str | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    app_id: str | None = None
    redelivered: bool = False
    priority: int | None = None
    delivery_tag: int = 1
    properties: None = None


class _Settled:
    """Stands in for the channel's acks: the outcome is read from the decision instead."""

    def ack(self, tag: int) -> None:
        pass

    async def nack(self, tag: int, *, requeue: bool) -> None:
        pass

    async def reject(self, tag: int) -> None:
        pass


class _Recorder:
    """Stands in for the worker's publisher: records follow-ups and moved copies."""

    def __init__(self, refuse: Sequence[str]) -> None:
        self.published: list[Published] = []
        self.moved: list[tuple[str, Properties]] = []
        self._refuse = set(refuse)

    async def publish(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        body = envelope.encode_data(data)  # TypeError, as the real publisher
        try:
            hold = delays.seconds(delay, at)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if routing_key in self._refuse:
            raise PublishError(
                f"event to {routing_key!r} not published: unroutable (refused by the test)",
                status="unroutable",
            )
        self.published.append(
            Published(
                routing_key, orjson.loads(body), id, headers, correlation_id, causation_id, hold
            )
        )

    async def send_to_queue(self, body: bytes, properties: Properties, queue: str) -> None:
        properties.marshal()  # what AMQP cannot carry fails here as in the worker
        self.moved.append((queue, properties))

    async def send_to_exchange(
        self, body: bytes, properties: Properties, exchange: str, routing_key: str
    ) -> None:
        properties.marshal()
        self.moved.append((exchange, properties))


class _Decisions:
    """An Observer that keeps every settled decision: (handler, event, decision)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Event[Any], Decision]] = []
        self.changed = asyncio.Event()

    def received(self, route: ResolvedHandler, event: Event[Any]) -> None:
        pass

    def settled(
        self,
        route: ResolvedHandler,
        event: Event[Any],
        decision: Decision,
        *,
        moved: bool,
        seconds: float,
    ) -> None:
        self.records.append((route.handler.name, event, decision))
        self.changed.set()

    def published(self, route: ResolvedHandler, *, kind: str, status: str) -> None:
        pass


def _capturing(func: HandlerFunc, raised: list[BaseException]) -> HandlerFunc:
    """``func`` that also records what it raised (the worker keeps that to itself)."""
    if inspect.iscoroutinefunction(func):

        async def run_async(event: Event[Any], ctx: Any) -> None:
            try:
                await func(event, ctx)
            except BaseException as exc:
                raised.append(exc)
                raise

        return run_async

    def run_sync(event: Event[Any], ctx: Any) -> None:
        try:
            func(event, ctx)
        except BaseException as exc:
            raised.append(exc)
            raise

    return run_sync


def _error(raised: list[BaseException], decision: Decision, copy: Mapping[str, Any]) -> Any:
    if raised and not isinstance(raised[-1], asyncio.CancelledError):
        return raised[-1]
    reason = copy.get(envelope.REASON)
    message = str(copy.get(envelope.ERROR_MESSAGE, ""))
    if copy.get(envelope.EXCEPTION) == "HandlerTimeoutError":
        return HandlerTimeoutError(message)
    if isinstance(decision, DeadLetter) and copy.get(envelope.EXCEPTION) == "EnvelopeError":
        return EnvelopeError(str(reason), message)
    return None


async def run_handler(
    handler: Handler,
    data: Any = None,
    *,
    body: bytes | None = None,
    routing_key: str | None = None,
    id: str | None = None,
    headers: Mapping[str, Any] | None = None,
    attempt: int = 1,
    correlation_id: str | None = None,
    content_type: str | None = envelope.JSON,
    settings: Settings | None = None,
    refuse_publish: Sequence[str] = (),
    resources: Resources | None = None,
    middleware: Sequence[Middleware] = (),
) -> Outcome:
    """Run ``handler`` on one event, as the worker would, without a broker.

    ``data`` becomes the JSON body (or give ``body`` bytes as delivered). ``routing_key``
    defaults to the handler's first binding key when it has no wildcard. ``attempt`` > 1
    simulates a retried delivery. ``settings`` (default: the built-in defaults, no environment)
    give the retry policy, overrides, timeout and size limit. ``ctx.publish`` to a routing key
    in ``refuse_publish`` raises ``PublishError`` (unroutable). ``resources`` are what
    ``ctx.resource`` returns: fakes by type (``{Database: FakeDatabase()}``), or ``@resource``
    declarations, entered before the handling and left after it. ``middleware`` runs around
    the handling as in a worker, the first outermost.

    Raises:
        ValueError: no routing key given and the first binding key has a wildcard.
        eventworker.errors.ResourceError: a declared resource failed to start.
    """
    settings = settings or Settings.model_construct()
    key = routing_key or handler.bindings[0]
    if routing_key is None and ("*" in key or "#" in key):
        raise ValueError(f"{handler.name} binds {key!r}: give routing_key=")
    raised: list[BaseException] = []
    spied = dataclasses.replace(handler, func=_capturing(handler.func, raised))
    [route] = resolve([Registration(spied, _PLUGIN)], settings)
    recorder, decisions = _Recorder(refuse_publish), _Decisions()
    delivered_headers = dict(headers or {})
    if attempt > 1:  # as a copy that came back from a retry tier, which the broker expired
        delays = route.policy.delays
        tier = route.retry_queues[delays[min(attempt - 2, len(delays) - 1)]]
        delivered_headers |= {
            envelope.ATTEMPT: attempt,
            envelope.ROUTING_KEY: key,
            "x-death": [{"queue": tier, "reason": "expired", "count": 1, "exchange": ""}],
        }
    delivery = _Delivery(
        body=envelope.encode_data(data) if body is None else body,
        routing_key=route.queue if attempt > 1 else key,
        exchange=_RETURN if attempt > 1 else _EXCHANGE,
        headers=delivered_headers,
        message_id=id or envelope.new_id(),
        correlation_id=correlation_id,
        content_type=content_type,
        type=key,
    )
    fakes, declared = _resources(resources)
    async with contextlib.AsyncExitStack() as stack:
        objects = await lifespan.enter(stack, [(r, _PLUGIN) for r in declared], stand_ins=fakes)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventworker-test") as executor:
            dispatcher = Dispatcher(
                route,
                moves=recorder,
                events=recorder.publish,
                return_exchange=_RETURN,
                queue_prefix=settings.queue_prefix,
                max_body_bytes=settings.max_body_bytes,
                executor=executor,
                observers=[decisions],
                resources=objects,
                middleware=middleware,
                exchange=_EXCHANGE,
                delay_levels=settings.delay_levels,
            )
            await dispatcher.handle(delivery, _Settled())
    [(_, event, decision)] = decisions.records
    moved_to, copy = recorder.moved[-1] if recorder.moved else (None, None)
    copy_headers: Mapping[str, Any] = dict(copy.headers or {}) if copy is not None else {}
    return Outcome(
        decision=decision,
        event=event,
        error=_error(raised, decision, copy_headers),
        published=recorder.published,
        moved_to=moved_to,
        copy_headers=copy_headers,
    )


def run_handler_sync(handler: Handler, data: Any = None, **options: Any) -> Outcome:
    """:func:`run_handler` for plain (non-async) tests; not inside a running event loop."""
    return asyncio.run(run_handler(handler, data, **options))


class TestWorker:
    """A real worker in this event loop, on an exchange and queues of its own; see
    :func:`running_worker`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, worker: Worker, publisher: Publisher, decisions: _Decisions) -> None:
        self.worker = worker
        self.settings = worker.settings
        self._publisher = publisher
        self._decisions = decisions

    async def publish(self, routing_key: str, data: Any, **options: Any) -> str:
        """Publish an event to the worker's exchange, confirmed; returns its id."""
        result = await self._publisher.publish(routing_key, data, **options)
        return result.event_id

    async def outcome(
        self, event_id: str, *, handler: str | None = None, timeout: float = 30.0
    ) -> list[Decision]:
        """Wait until ``handler`` (or the only handler) has finished with ``event_id`` (acked
        or dead-lettered); every decision it made about it, in order (retries first).

        Raises:
            TimeoutError: not finished within ``timeout`` seconds.
        """
        names = {r.handler.name for r in self.worker.routes}
        name = handler or (names.pop() if len(names) == 1 else None)
        if name is None:
            raise ValueError("this worker runs several handlers: say which one")
        async with asyncio.timeout(timeout):
            while True:
                self._decisions.changed.clear()
                mine = [d for h, e, d in self._decisions.records if h == name and e.id == event_id]
                if mine and isinstance(mine[-1], Ack | DeadLetter):
                    return mine
                await self._decisions.changed.wait()


@contextlib.asynccontextmanager
async def running_worker(
    *handlers: Handler,
    url: str | None = None,
    resources: Resources | None = None,
    middleware: Sequence[Middleware] = (),
    **settings: Any,
) -> AsyncIterator[TestWorker]:
    """A worker running ``handlers`` against the broker at ``url`` (default
    $EVENTWORKER_TEST_URL, else localhost) on a fresh exchange and queue prefix, with
    ``settings`` as overrides (e.g. ``concurrency=2``). Its queues and exchanges are deleted on
    exit, after a graceful drain. ``resources``: fakes by type, or ``@resource`` declarations
    the worker enters when it starts and leaves after its drain, as in production;
    ``middleware`` runs around every handling, the first outermost.
    """
    name = f"eventworker-test.{uuid.uuid4().hex[:10]}"
    values = {
        "url": url or os.environ.get(TEST_URL_ENV, "amqp://guest:guest@localhost:5672/"),
        "exchange": name,
        "queue_prefix": f"{name}.",
        "grace": 5.0,
        **settings,
    }
    config = Settings(**values)
    decisions = _Decisions()
    fakes, declared = _resources(resources)
    plugin = dataclasses.replace(_PLUGIN, resources=declared)
    worker = Worker(
        [Registration(h, plugin) for h in handlers],
        config,
        observers=[decisions],
        resources=fakes,
        middleware=middleware,
    )
    task = asyncio.create_task(worker.run())
    try:
        ready = asyncio.ensure_future(worker.wait_ready(30))
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises what stopped the worker
        async with Publisher.connect(config.url, exchange=config.exchange) as publisher:
            yield TestWorker(worker, publisher, decisions)
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await _delete(config, [q.name for q in worker.plan.queues])


async def _delete(settings: Settings, queues: list[str]) -> None:
    connection = await aio_pika.connect(settings.url.get_secret_value())
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in (settings.exchange, f"{settings.exchange}.return"):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture
def eventworker_worker() -> Callable[..., contextlib.AbstractAsyncContextManager[TestWorker]]:
    """``async with eventworker_worker(handler, ...) as w``: :func:`running_worker`."""
    return running_worker
