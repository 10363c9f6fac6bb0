"""What happens to one delivery: decode -> handler -> settle, exactly once, in one place.

A settle that moves the message (retry, dead letter) publishes the copy and waits for its
confirm *before* acking the original: a crash in between gives a duplicate, never a loss. A
cancelled handling (shutdown) settles nothing, so the broker redelivers the message and the
shutdown consumes no attempt. A delivery whose header cannot be decoded never reaches the
handler: it is rejected to the dead-letter queue as the broker holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Literal, Protocol

from loguru import logger
from pydantic import ValidationError

from eventworker import envelope
from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.amqp.delivery import Delivered, Delivery
from eventworker.amqp.properties import Properties
from eventworker.envelope import Event
from eventworker.errors import (
    EnvelopeError,
    HandlerTimeoutError,
    IdempotencyConflictError,
    PublishError,
)
from eventworker.handlers import NO_RESOURCES, Context, Middleware, Publish
from eventworker.inbox.claims import Inbox
from eventworker.inbox.protocol import CONFLICT_REASON, AlreadyHandled, Key, NotAdmitted
from eventworker.observability import logs, tracing
from eventworker.observability.logs import OneLine
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.topology import delays, layout
from eventworker.topology.topic import compile_bindings
from eventworker.worker._copies import (
    describe_error,
    failure_copy,
    probation_copy,
    short_traceback,
    where,
)
from eventworker.worker._deadline import Deadline
from eventworker.worker._middleware import Chain
from eventworker.worker.decisions import (
    Ack,
    DeadLetter,
    Decision,
    DeliveryLimitExceeded,
    Duplicate,
    Requeue,
    RetryIn,
    decide,
)

#: The dead-letter reason of a message redelivered more often than ``delivery_limit`` allows: the
#: broker's own for a quorum queue (its ``x-death``), the worker's for a classic one.
DELIVERY_LIMIT = "delivery_limit"
#: Pause before handing a message back to the broker when its retry or dead-letter copy could not
#: be published, so a broker that refuses publishes does not become a hot loop.
REQUEUE_PAUSE = 1.0
_HOST = socket.gethostname()


class Observer(Protocol):
    """Sees each delivery as it arrives and as it is settled (metrics implement this).

    Called on the event loop for every message: must be quick and must not raise. A
    ``Duplicate`` decision is a duplicate an idempotent handler skipped; ``Requeue``, one
    handed back to its queue because another worker held it.
    """

    def received(self, route: ResolvedHandler, event: Event[Any]) -> None: ...

    def settled(
        self,
        route: ResolvedHandler,
        event: Event[Any],
        decision: Decision,
        *,
        moved: bool,
        seconds: float,
    ) -> None:
        """``moved`` is False when the retry or dead-letter copy could not be published and the
        message went back to its queue instead; ``seconds`` is the time since receipt."""

    def published(self, route: ResolvedHandler, *, kind: PublishKind, status: str) -> None:
        """A publish by this handling ended: a follow-up ``event``, a ``retry`` copy, a
        ``dead_letter`` copy or a ``probation`` move, ``confirmed`` or why not (``nacked``,
        ``unroutable``, ...)."""


PublishKind = Literal["event", "retry", "dead_letter", "probation"]


class Settle(Protocol):
    """Where a delivery's outcome goes: the consuming channel's coalesced acks."""

    def ack(self, tag: int) -> None: ...

    async def nack(self, tag: int, *, requeue: bool) -> None: ...

    async def reject(self, tag: int) -> None: ...


class Moves(Protocol):
    """Where retry and dead-letter copies go: straight into a queue, or (an exact retry delay)
    into the delay levels, confirmed (the confirm channel's ``send_to_queue`` and
    ``send_to_exchange``)."""

    async def send_to_queue(self, body: bytes, properties: Properties, queue: str) -> None: ...

    async def send_to_exchange(
        self, body: bytes, properties: Properties, exchange: str, routing_key: str
    ) -> None: ...


class Dispatcher:
    """Runs one handler on its deliveries; ``handle`` settles each delivery exactly once."""

    def __init__(
        self,
        route: ResolvedHandler,
        *,
        moves: Moves,
        events: Publish,
        return_exchange: str,
        queue_prefix: str,
        max_body_bytes: int,
        executor: Executor,
        observers: Sequence[Observer] = (),
        inbox: Inbox | None = None,
        resources: Mapping[type[Any], Any] = NO_RESOURCES,
        middleware: Sequence[Middleware] = (),
        exchange: str = "",
        delay_levels: int = 0,
    ) -> None:
        self.route = route
        self._moves = moves
        self._events = events
        self._return_exchange = return_exchange
        self._queue_prefix = queue_prefix
        #: The event exchange and its delay levels (0: none): exact retry delays wait there.
        self._exchange = exchange
        self._delay_levels = delay_levels
        self._max_body_bytes = max_body_bytes
        self._executor = executor
        self._observers = tuple(observers)
        self._inbox = inbox if route.idempotent else None
        self._bindings = compile_bindings(route.handler.bindings)
        self._resources = resources
        #: None without middleware: the handling then takes no step of the chain at all.
        self._chain = Chain(middleware) if middleware else None

    async def handle(self, message: Delivered, acks: Settle) -> None:
        """Handle ``message`` and settle it, once, through ``acks``."""
        route = self.route
        if message.redelivered and route.probation_queue is not None:
            await self._count_redelivery(message, acks, route.probation_queue)
            return
        # The exceptions kept in this frame's locals (``invalid``, ``error``) hold their
        # tracebacks, whose frames link back to this one: a reference cycle. It keeps the
        # message, its body and the decoded event alive until the garbage collector's next full
        # collection, minutes later or more (hundreds of megabytes after a few large bodies);
        # dropping the exceptions when the handling ends frees them at once.
        invalid: EnvelopeError | None = None
        error: BaseException | None = None
        try:
            received = time.monotonic()
            # The body first, so the event is built once (its refusal is settled below).
            try:
                data = self._data(message)
            except EnvelopeError as exc:
                data, invalid = None, exc
            event = self._received(message, data)
            decision: Decision
            # The span and the log fields cover the whole handling, the settle's lines included.
            with (
                tracing.consuming(
                    handler=route.handler.name,
                    queue=route.queue,
                    event_id=event.id,
                    event_type=event.type,
                    attempt=event.attempt,
                    headers=event.headers,
                ) as span,
                logs.handling(route.handler.name, event, trace_id=span.trace_id),
            ):
                try:
                    self._check_routing_key(event.type)  # before the body's refusal, as it decides
                    if invalid is not None:
                        raise invalid
                except EnvelopeError as exc:
                    # Input that can never succeed: dead-lettered at once, attempts = 1.
                    error, decision = exc, DeadLetter(exc.reason)
                else:
                    if self._inbox is not None:
                        error, decision = await self._run_once(self._inbox, event, message.body)
                    else:
                        error = await self._run(event)
                        decision = self._decide(event, error)
                moved = await self._settle(message, acks, event, error, decision)
                span.record(outcome=type(decision).__name__, error=error)
                if self._chain is not None:
                    await self._chain.outcome(event, self._context(event), decision)
            seconds = time.monotonic() - received
            for observer in self._observers:
                observer.settled(route, event, decision, moved=moved, seconds=seconds)
        finally:
            invalid = error = None

    def _received(self, message: Delivered, data: Any) -> Event[Any]:
        """The event of ``message`` (its body decoded to ``data``), told to the observers."""
        event: Event[Any] = envelope.decode(
            message,
            data,
            trusted=self._from_retry_tier(message),
            max_attempts=self.route.policy.max_attempts,
            moved=self._on_probation(message),
        )
        for observer in self._observers:
            observer.received(self.route, event)
        return event

    def _from_retry_tier(self, message: Delivered) -> bool:
        """True for a copy one of our retry queues sent back: the return exchange delivered it
        and its newest ``x-death`` says a retry queue expired it; or one that waited an exact
        delay in the levels: a level's exchange or the delivery exchange took it last, under a
        ``return.`` routing key (which only the return exchange's binding passes on), and its
        newest ``x-death`` says a level queue expired it. Only then do our headers (attempt,
        routing key, first failure) count: a producer allowed to publish to the return
        exchange (or the levels' exchanges) could otherwise set a high attempt and have an
        event dead-lettered early."""
        death = envelope.last_death(message.headers or {})
        if death is None or death[1] != "expired":
            return False
        probation = self._on_probation(message)
        tier = layout.is_retry_queue(self._queue_prefix, death[0])
        if tier and (message.exchange == self._return_exchange or probation):
            return True
        # On probation the attempt header is the worker's own (written at the move).
        levels = self._delay_levels and delays.is_level_queue(self._exchange, death[0])
        return bool(levels) and (
            probation
            or (
                delays.is_return_key(message.routing_key or "")
                and delays.is_delay_exchange(self._exchange, message.exchange or "")
            )
        )

    def _on_probation(self, message: Delivered) -> bool:
        """Whether ``message`` is a copy this worker moved to the handler's probation queue
        (straight into it, naming it as where it returns)."""
        return (
            self.route.probation_queue is not None
            and message.exchange == ""
            and (message.headers or {}).get(envelope.RETURN_TO) == self.route.probation_queue
        )

    async def _count_redelivery(self, message: Delivered, acks: Settle, probation: str) -> None:
        """A classic queue keeps no delivery count, so a message that kills its worker would
        come back for ever. A redelivered one is counted here instead: moved, with its count,
        to the probation queue, where messages run one at a time (a crash then takes only that
        one back); past ``delivery_limit`` it is dead-lettered with reason ``delivery_limit``.
        It does not run now: what ran it last may be what stopped the worker."""
        route, name = self.route, self.route.handler.name
        received = time.monotonic()
        earlier = (message.headers or {}).get(envelope.REDELIVERIES)
        if not self._on_probation(message) or not isinstance(earlier, int) or earlier < 0:
            earlier = 0
        count = int(earlier) + 1
        event = self._received(message, None)
        decision: Decision
        if route.delivery_limit and count > route.delivery_limit:
            decision = DeadLetter(DELIVERY_LIMIT)
            error = DeliveryLimitExceeded(
                f"redelivered {count} times (delivery_limit {route.delivery_limit}): a worker "
                f"stopped while holding it each time (a crash, a kill or a lost connection)"
            )
            copy = failure_copy(
                message,
                event,
                error,
                {
                    envelope.ATTEMPT: event.attempt,
                    envelope.REASON: DELIVERY_LIMIT,
                    envelope.HOST: _HOST,
                },
                handler=name,
                retried=self._from_retry_tier(message),
            )
            if not await self._move(message, acks, copy, route.dead_letter_queue, "dead_letter"):
                return
            logger.error("{} dead-lettered {}: {}", name, event.id, error)
        else:
            decision = Requeue("redelivered")
            extra = {
                envelope.RETURN_TO: probation,
                envelope.ROUTING_KEY: event.type,
                envelope.REDELIVERIES: count,
                # As read (1 unless it came back from a retry): a producer's forged attempt
                # header is not carried to where the probation queue trusts it.
                envelope.ATTEMPT: event.attempt,
            }
            copy = probation_copy(message, event, extra)
            if not await self._move(message, acks, copy, probation, "probation"):
                return
            logger.warning(
                "{}: {} was redelivered (a worker stopped while holding it), {} of at most {}; "
                "moved to {} to run alone",
                name,
                event.id,
                count,
                route.delivery_limit or "unlimited",
                probation,
            )
        acks.ack(message.delivery_tag)
        seconds = time.monotonic() - received
        for observer in self._observers:
            observer.settled(route, event, decision, moved=True, seconds=seconds)

    async def reject_undecodable(self, delivery: Delivery, acks: Settle) -> None:
        """Dead-letter a delivery whose header cannot be decoded, at once and as the broker holds
        it: ``basic.reject`` without requeue, and the work queue's dead-letter exchange moves it
        to the handler's dead-letter queue. The handler never sees it. The observers see a
        dead letter with reason ``undecodable``; the broker's ``x-death`` says ``rejected``,
        and the ``dlq`` commands read the decode error from the message's bytes."""
        route = self.route
        received = time.monotonic()
        event: Event[Any] = envelope.decode(delivery, None, trusted=False, max_attempts=1)
        for observer in self._observers:
            observer.received(route, event)
        logger.warning(
            "{}: message {} [{}] cannot be decoded ({}); rejected to {} as it came",
            route.handler.name,
            OneLine(delivery.message_id or "(no readable id)", 100),
            OneLine(delivery.routing_key, 100),
            OneLine(delivery.undecodable, 500),
            route.dead_letter_queue,
        )
        try:
            await acks.reject(delivery.delivery_tag)
        except CHANNEL_GONE:
            logger.info(
                "{} could not reject {}: channel closed; the broker will redeliver it",
                route.handler.name,
                event.id,
            )
            return
        decision = DeadLetter(envelope.UNDECODABLE)
        seconds = time.monotonic() - received
        for observer in self._observers:
            observer.settled(route, event, decision, moved=True, seconds=seconds)

    def _check_routing_key(self, routing_key: str) -> None:
        """Refuse a delivery none of the handler's binding keys matches (a stale binding, or a
        message put into the queue by name): nobody handles it, so it is dead-lettered, not acked.

        Raises:
            EnvelopeError: reason ``no_handler``.
        """
        if not self._bindings.matches(routing_key):
            raise EnvelopeError(
                "no_handler",
                f"routing key {routing_key[:255]!r} matches none of the handler's binding keys "
                f"({', '.join(self._bindings.keys)})",
            )

    def _data(self, message: Delivered) -> Any:
        data = envelope.decode_body(
            message.body,
            message.content_type,
            message.content_encoding,
            max_body_bytes=self._max_body_bytes,
        )
        model = self.route.handler.model
        if model is None:
            return data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # Field paths and error types only: the input may hold secrets or personal data.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['type']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise EnvelopeError("schema_error", f"{model.__name__}: {problems}") from None

    def _decide(self, event: Event[Any], error: BaseException | None) -> Decision:
        route = self.route
        return decide(
            event.attempt,
            route.policy,
            error,
            tiers=route.tiers,
            retry_on=route.handler.retry_on,
            give_up_on=route.handler.give_up_on,
            delay_levels=self._delay_levels,
        )

    async def _run_once(
        self, inbox: Inbox, event: Event[Any], body: bytes
    ) -> tuple[BaseException | None, Decision]:
        """Run an idempotent handler under its claim in the inbox: a duplicate is skipped, a
        conflicting body dead-lettered; success marks the event done before the ack, failure
        releases the claim so the retry can take it."""
        admission = await inbox.admit(Key(self.route.handler.name, event.id), body)
        match admission:
            case IdempotencyConflictError():
                return admission, DeadLetter(CONFLICT_REASON)
            case AlreadyHandled():
                return None, Duplicate()
            case NotAdmitted(reason=reason):
                return None, Requeue(reason)
        async with inbox.holding(admission):
            error = await self._run(event, transaction=partial(inbox.transaction, admission))
        try:
            decision = self._decide(event, error)
            if isinstance(decision, Ack):
                await inbox.complete(admission)
            else:
                await inbox.release(admission)
            return error, decision
        finally:
            error = None  # the traceback's frames link back to this one: see handle

    async def _run(
        self,
        event: Event[Any],
        *,
        transaction: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> BaseException | None:
        """Run the handler; return what it raised (None on success). Cancellation propagates."""
        handler = self.route.handler
        loop = asyncio.get_running_loop()
        ctx = self._context(event, transaction, loop)
        if self._chain is not None:
            return await self._run_chained(self._chain, event, ctx, loop)
        try:
            with Deadline(self.route.timeout) as deadline:
                if handler.is_async:
                    await handler(event, ctx)  # type: ignore[misc]  # is_async checked
                else:
                    # A thread, so the event loop (heartbeats, acks) never blocks; the context
                    # copy carries the log fields and the trace span into the thread.
                    call = partial(contextvars.copy_context().run, handler.func, event, ctx)
                    await loop.run_in_executor(self._executor, call)
        except TimeoutError as exc:
            if deadline.expired:
                return HandlerTimeoutError(f"handler ran longer than {self.route.timeout:g}s")
            return exc
        except Exception as exc:
            return exc
        return None

    def _context(
        self,
        event: Event[Any],
        transaction: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Context:
        return Context(
            handler=self.route.handler.name,
            event=event,
            _publish=self._publish,
            _loop=loop or asyncio.get_running_loop(),
            _transaction=transaction,
            _resources=self._resources,
        )

    async def _run_chained(
        self, chain: Chain, event: Event[Any], ctx: Context, loop: asyncio.AbstractEventLoop
    ) -> BaseException | None:
        """``_run`` through the middleware: their ``before`` and ``around`` count toward the
        handler's timeout; ``after`` or ``on_failure`` follow it."""
        handler = self.route.handler

        async def call() -> None:
            if handler.is_async:
                await handler(event, ctx)  # type: ignore[misc]  # is_async checked
            else:
                run = partial(contextvars.copy_context().run, handler.func, event, ctx)
                await loop.run_in_executor(self._executor, run)

        error: BaseException | None = None
        try:
            with Deadline(self.route.timeout) as deadline:
                await chain.run(event, ctx, call)
        except TimeoutError as exc:
            error = exc
            if deadline.expired:
                error = HandlerTimeoutError(f"handler ran longer than {self.route.timeout:g}s")
        except Exception as exc:
            error = exc
        if error is None:
            await chain.after(event, ctx)
        else:
            await chain.failed(event, ctx, error)
        return error

    async def _publish(self, routing_key: str, data: Any, **options: Any) -> None:
        """``Context.publish``: a follow-up event, its outcome told to the observers."""
        try:
            await self._events(routing_key, data, **options)
        except PublishError as exc:
            self._published("event", exc.status)
            raise
        self._published("event", "confirmed")

    def _published(self, kind: PublishKind, status: str) -> None:
        for observer in self._observers:
            observer.published(self.route, kind=kind, status=status)

    async def _settle(
        self,
        message: Delivered,
        acks: Settle,
        event: Event[Any],
        error: BaseException | None,
        decision: Decision,
    ) -> bool:
        """Settle the delivery as ``decision`` says; False when its copy could not be moved
        (the message went back to its queue instead)."""
        route = self.route
        name = route.handler.name
        retried = self._from_retry_tier(message)
        match decision:
            case Ack():
                logger.debug("{} handled {} [{}]", name, event.id, OneLine(event.type, 100))
            case Duplicate():
                logger.debug("{} skipped {}: a duplicate of a handled event", name, event.id)
            case Requeue(reason=reason):
                logger.info("{} handed {} back to its queue unrun ({})", name, event.id, reason)
                await _requeue(message, acks)
                return True
            case RetryIn(delay=delay, levels=levels):
                copy = failure_copy(
                    message,
                    event,
                    error,
                    {envelope.ATTEMPT: event.attempt + 1, envelope.RETURN_TO: route.queue},
                    handler=name,
                    retried=retried,
                )
                target: str | tuple[str, str] = route.retry_queues.get(delay, "")
                if levels:
                    # Exact: through the levels to the return exchange, this handler's only.
                    seconds = int(delay)
                    target = (
                        delays.level_name(self._exchange, delays.entry_level(seconds)),
                        delays.return_key(seconds, self._delay_levels),
                    )
                if not await self._move(message, acks, copy, target, "retry"):
                    return False
                logger.warning(
                    "{} attempt {}/{} of {} failed: {}; retry in {:g}s",
                    name,
                    event.attempt,
                    route.policy.max_attempts,
                    event.id,
                    describe_error(error),
                    delay,
                )
            case DeadLetter(reason=reason):
                copy = failure_copy(
                    message,
                    event,
                    error,
                    {
                        envelope.ATTEMPT: event.attempt,
                        envelope.REASON: reason,
                        envelope.TRACEBACK: short_traceback(error),
                        envelope.HOST: _HOST,
                    },
                    handler=name,
                    retried=retried,
                )
                queue = route.dead_letter_queue
                if not await self._move(message, acks, copy, queue, "dead_letter"):
                    return False
                logger.error(
                    "{} dead-lettered {} after attempt {} ({}): {}{}",
                    name,
                    event.id,
                    event.attempt,
                    reason,
                    describe_error(error),
                    where(error),
                )
        # Coalesced; a dead channel's acks are dropped there, never sent on another one.
        acks.ack(message.delivery_tag)
        return True

    async def _move(
        self,
        message: Delivered,
        acks: Settle,
        copy: Properties,
        queue: str | tuple[str, str],
        kind: PublishKind,
    ) -> bool:
        """Publish the body with the ``copy``'s properties to ``queue`` (or an ``(exchange,
        routing key)``) with a confirm; on failure hand the original back."""
        try:
            if isinstance(queue, tuple):
                await self._moves.send_to_exchange(message.body, copy, *queue)
            else:
                await self._moves.send_to_queue(message.body, copy, queue)
            self._published(kind, "confirmed")
            return True
        except PublishError as exc:
            self._published(kind, exc.status)
            logger.error("{}: {}; returning the message to its queue", self.route.handler.name, exc)
            await asyncio.sleep(REQUEUE_PAUSE)
            await _requeue(message, acks)
            return False


async def _requeue(message: Delivered, acks: Settle) -> None:
    """Hand the message back to its queue now (never coalesced)."""
    with contextlib.suppress(*CHANNEL_GONE):  # channel gone: the broker requeues it
        await acks.nack(message.delivery_tag, requeue=True)
