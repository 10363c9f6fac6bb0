"""Confirmed, mandatory publishing: an event is published only when the broker confirmed it.

A nack, a return (unroutable), a confirm timeout and a lost connection are all "not
published", reported per event. Batches keep a window of confirms in flight instead of
waiting for each one. Properties are encoded by ``amqp.properties`` (header names whole, up
to 255 bytes), never by pamqp's encoder, which cuts them at 128.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import ChannelFrame
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
)
from aiormq.exceptions import PublishError as ReturnedError
from pamqp.heartbeat import Heartbeat
from pydantic import SecretStr

from eventworker import envelope
from eventworker.amqp import publishes
from eventworker.amqp.connection import CHANNEL_GONE, connect
from eventworker.amqp.properties import PERSISTENT, Properties
from eventworker.errors import BrokerError, InvalidInputError, PublishError
from eventworker.settings import TlsSettings
from eventworker.topology import delays

#: What became of an event. ``interrupted`` and ``not_sent`` only when a stop was asked for:
#: sent without a confirm in time (the broker may hold it), and never handed to the broker.
Status = Literal[
    "confirmed", "nacked", "unroutable", "timeout", "connection_lost", "interrupted", "not_sent"
]

#: How long closing the connection may take: every confirm waited for has arrived by then.
CHANNEL_CLOSE_TIMEOUT = 0.5
#: Confirms in flight at once in a batch: enough to keep the broker busy, bounded memory.
DEFAULT_WINDOW = 1024
#: A publish of at least this many body bytes is followed by a heartbeat frame (see _let_go).
LARGE_PUBLISH = 1_048_576
#: The body bytes one socket write of a batch gathers at most (plus its last event's): a
#: window of large events goes out in several writes, never as one copy of all of them.
WRITE_BYTES = 1_048_576
#: What a publish can end in that :meth:`ConfirmChannel._failure` turns into a result.
_FAILED = (TimeoutError, ChannelInvalidStateError, AMQPError, ConnectionError, RuntimeError)
_HEARTBEAT = ChannelFrame.marshall(channel_number=0, frames=[Heartbeat()])


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: routing key, JSON body bytes and metadata."""

    routing_key: str
    body: bytes
    id: str
    headers: Mapping[str, Any] | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    #: When the event happened; None: now. Set when an exported event is published again.
    timestamp: datetime | None = None
    #: Whole seconds the broker holds the event before routing it (0: at once).
    delay: int = 0


def _take(
    pending: Iterator[tuple[int, Outgoing]], room: int
) -> tuple[list[tuple[int, Outgoing]], bool]:
    """Up to ``room`` events from ``pending`` for one write, fewer once their bodies reach
    :data:`WRITE_BYTES`; and whether ``pending`` may hold more."""
    batch: list[tuple[int, Outgoing]] = []
    size = 0
    while len(batch) < room and size < WRITE_BYTES:
        item = next(pending, None)
        if item is None:
            return batch, False
        batch.append(item)
        size += len(item[1].body)
    return batch, True


class Sent(NamedTuple):
    """A message of a batch written and not yet settled: its confirm and its deadline; its
    ``position`` is the writer's own (an index in what it sends)."""

    position: int
    event_id: str
    routing_key: str
    deadline: float
    confirm: asyncio.Future[object]


@dataclass(frozen=True, slots=True)
class PublishResult:
    event_id: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "confirmed"

    def check(self, what: str) -> None:
        """Raises PublishError unless confirmed; ``what`` names the message, as in
        ``event <id> to 'orders.created'``."""
        if not self.ok:
            raise PublishError(
                f"{what} not published: {self.status} {self.detail}".rstrip(),
                status=self.status,
                event_id=self.event_id,
            )


class ConfirmChannel:
    """Publishes events to the topic exchange, and raw copies to queues, with confirms.

    Use :meth:`connect` for a publisher with its own connection; the worker builds one on its
    publishing connection (separate from consuming, so a blocked publisher cannot stop acks).
    """

    def __init__(
        self,
        channel: AbstractChannel,
        underlay: aiormq.abc.AbstractChannel,
        exchange: AbstractExchange,
        *,
        source: str | None,
        timeout: float,
        delay_levels: int = 0,
    ) -> None:
        self._channel = channel
        #: Publishes go to aiormq's channel directly: aio-pika's ``Message`` and
        #: ``Exchange.publish`` add CPU per event and nothing this class uses.
        self._underlay = underlay
        self._exchange = exchange
        self._source = source
        self._timeout = timeout
        #: Levels of delayed delivery declared for the exchange (0: none, no delay possible).
        self.delay_levels = delay_levels
        #: The broker's reply text when it closed this channel with a channel error while a
        #: publish was in flight, as it does for a publish it refuses outright (406 for an
        #: oversize message); "" otherwise (open, or gone with the connection).
        self.refused = ""
        #: The id of the event the broker closed the channel over, when it was the only
        #: publish in flight then (else "": the broker does not say which one it refused).
        self.refused_id = ""
        self._in_flight = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str | SecretStr | Sequence[SecretStr],
        *,
        exchange: str,
        source: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        tls: TlsSettings | None = None,
    ) -> AsyncIterator[ConfirmChannel]:
        """A publisher on a connection of its own, closed on exit.

        Raises:
            BrokerUnreachableError, BrokerAuthError: the connection failed.
            BrokerError: the exchange does not exist.
        """
        urls = SecretStr(url) if isinstance(url, str) else url
        connection = await connect(
            urls, role="publisher", timeout=connect_timeout, heartbeat=heartbeat, tls=tls
        )
        try:
            yield await cls.open(connection, exchange, source=source, timeout=timeout)
        finally:
            # A broker that blocks publishers (resource alarm) reads nothing more, not even
            # Connection.Close: answering the caller beats waiting for its reply.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.close(), CHANNEL_CLOSE_TIMEOUT)

    @classmethod
    async def open(
        cls,
        connection: AbstractConnection,
        exchange: str,
        *,
        source: str | None,
        timeout: float,
        delay_levels: int = 0,
    ) -> ConfirmChannel:
        """A publisher on a new confirm channel of ``connection``.

        Raises:
            BrokerError: the exchange does not exist.
            ConnectionError: the connection was lost meanwhile.
        """
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except Exception as exc:
            # aiormq fails a channel's waiters with a bare Exception when its connection dies
            # under them (the reader ended): say what it is, an error callers retry on.
            if type(exc) is Exception:
                raise ConnectionError("the connection was lost while opening a channel") from exc
            raise
        try:
            target = await channel.get_exchange(exchange, ensure=True)
        except ChannelNotFoundEntity:
            await channel.close()
            raise BrokerError(
                f"exchange {exchange!r} does not exist on the broker (a worker "
                f"declares it at start; or check the exchange setting)"
            ) from None
        if channel.is_closed:  # pragma: no cover - the passive declare closed it
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        underlay = await channel.get_underlay_channel()
        return cls(
            channel, underlay, target, source=source, timeout=timeout, delay_levels=delay_levels
        )

    @property
    def is_closed(self) -> bool:
        return self._channel.is_closed

    async def close(self) -> None:
        """Close the channel (not the connection); a channel already gone is left alone."""
        if not self._channel.is_closed:
            with contextlib.suppress(*CHANNEL_GONE):
                await self._channel.close()

    def on_close(self, callback: Callable[..., Any]) -> None:
        """Call ``callback`` when the channel closes. The broker may close it alone, with the
        connection still up (a publish to an exchange deleted under us: 404)."""
        self._channel.close_callbacks.add(callback)

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
        """Publish one event and wait for its confirm; with ``delay`` (seconds, rounded up) or
        ``at``, the broker holds it that long first (see :mod:`eventworker.topology.delays`).

        Raises:
            PublishError: not confirmed; ``status`` says why.
            TypeError: ``data`` is not JSON-serialisable.
            InvalidInputError: a negative delay, both ``delay`` and ``at``, or a delay that
                the levels cannot hold.
        """
        try:
            hold = delays.seconds(delay, at)
            delays.check(hold, routing_key, self.delay_levels)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        result = await self.send(
            Outgoing(
                routing_key,
                envelope.encode_data(data),
                id or envelope.new_id(),
                headers,
                correlation_id,
                causation_id,
                delay=hold,
            )
        )
        result.check(f"event {result.event_id} to {routing_key!r}")

    def _message(self, event: Outgoing) -> publishes.Message:
        """Where ``event`` goes (the exchange, or the delay level that holds it first), its
        body and its properties."""
        fields = envelope.properties(
            event_id=event.id,
            routing_key=event.routing_key,
            source=self._source,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            headers=event.headers,
            timestamp=event.timestamp,
        )
        fields["message_type"] = fields.pop("type")  # the AMQP property's name in pamqp
        properties = Properties.build(delivery_mode=PERSISTENT, **fields)
        if event.delay:
            # Checked by the callers; the levels keep the event's own key in ``type``.
            levels = self.delay_levels
            delays.check(event.delay, event.routing_key, levels)
            return publishes.Message(
                delays.level_name(self._exchange.name, delays.entry_level(event.delay)),
                delays.routing_key(event.delay, event.routing_key, levels),
                event.body,
                properties,
            )
        return publishes.Message(self._exchange.name, event.routing_key, event.body, properties)

    async def send(self, event: Outgoing) -> PublishResult:
        """Publish one event to the exchange; the result says whether it was confirmed."""
        message = self._message(event)
        return await self._confirmed(
            message.exchange, message.body, message.properties, message.routing_key, event.id
        )

    async def send_many(
        self,
        events: Iterable[Outgoing],
        *,
        window: int = DEFAULT_WINDOW,
        on_result: Callable[[int, PublishResult], None] | None = None,
    ) -> list[PublishResult]:
        """Publish many events, in order, with up to ``window`` confirms in flight; results in
        order. ``on_result`` hears each result as it comes, with the event's position in
        ``events`` (the results of a batch cancelled mid-way are the ones it heard).

        The events that fit in the window go out together, in one socket write of at most
        about :data:`WRITE_BYTES` (:func:`eventworker.amqp.publishes.write`); each confirm that
        comes back makes room for the next ones. An event whose confirm takes longer than the
        timeout is reported ``timeout``."""
        loop = asyncio.get_running_loop()
        pending = iter(enumerate(events))
        results: dict[int, PublishResult] = {}
        in_flight: deque[Sent] = deque()  # oldest first

        def report(index: int, result: PublishResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        more = True
        try:
            while True:
                while more and len(in_flight) < window:
                    batch, more = _take(pending, window - len(in_flight))
                    if batch:
                        items = [(i, event.id, self._message(event)) for i, event in batch]
                        written, failed = await self.write(items)
                        in_flight.extend(written)
                        for position, result in failed:
                            report(position, result)
                if not in_flight:
                    break
                head = in_flight[0]
                if not head.confirm.done():
                    wait = max(head.deadline - loop.time(), 0)
                    await asyncio.wait((head.confirm,), timeout=wait)
                while in_flight and (
                    in_flight[0].confirm.done() or in_flight[0].deadline <= loop.time()
                ):
                    sent = in_flight.popleft()
                    report(sent.position, self.outcome(sent))
        finally:
            for sent in in_flight:  # cancelled part-way: no one waits for them
                self.abandon(sent)
        return [results[i] for i in range(len(results))]

    async def write(
        self, items: Sequence[tuple[int, str, publishes.Message]]
    ) -> tuple[list[Sent], list[tuple[int, PublishResult]]]:
        """Write ``items`` (a position of the caller's, the event id, the message) in one
        socket write, in order (:func:`eventworker.amqp.publishes.write`). Returns the ones
        whose confirms are in flight, each to be settled once with :meth:`outcome` (or
        :meth:`abandon`), and, when the channel could not take them, each one's result as a
        publish on it would have ended.

        Raises:
            ValueError, TypeError: a message could not be encoded (nothing was written).
        """
        assert isinstance(self._underlay, aiormq.Channel)  # what aio-pika's channel wraps
        messages = [message for _, _, message in items]
        self._in_flight += len(items)
        deadline = asyncio.get_running_loop().time() + self._timeout  # as in basic_publish
        try:
            futures = await publishes.write(self._underlay, messages, timeout=self._timeout)
        except _FAILED as exc:
            failed = []
            for position, event_id, message in items:
                failed.append((position, self._failure(event_id, message.routing_key, exc)))
                self._in_flight -= 1
            return [], failed
        except BaseException:
            self._in_flight -= len(items)
            raise
        if sum(len(m.body) for m in messages) >= LARGE_PUBLISH:
            self._let_go()
        written = [
            Sent(position, event_id, message.routing_key, deadline, future)
            for (position, event_id, message), future in zip(items, futures, strict=True)
        ]
        return written, []

    def copy_of(self, body: bytes, properties: Properties, routing_key: str) -> publishes.Message:
        """A prepared message (a replayed copy) to this publisher's exchange, for :meth:`write`."""
        return publishes.Message(self._exchange.name, routing_key, body, properties)

    def outcome(self, sent: Sent) -> PublishResult:
        """The result of a publish whose confirm ended, or did not by its deadline."""
        try:
            future = sent.confirm
            if not future.done():
                future.cancel()  # aiormq ignores a confirm that comes later
                return self._failure(sent.event_id, sent.routing_key, TimeoutError())
            if future.cancelled():
                return PublishResult(sent.event_id, "connection_lost", "its confirm was cancelled")
            exc = future.exception()
            if exc is None:
                return PublishResult(sent.event_id, "confirmed")
            return self._failure(sent.event_id, sent.routing_key, exc)
        finally:  # after _failure, which reads whether it was the only one in flight
            self._in_flight -= 1

    def abandon(self, sent: Sent) -> None:
        """Stop waiting for ``sent``'s confirm (its writer was cancelled part-way)."""
        sent.confirm.cancel()
        self._in_flight -= 1

    def _failure(self, event_id: str, routing_key: str, exc: BaseException) -> PublishResult:
        """What a publish to ``routing_key`` that ended in ``exc`` became (see :data:`Status`)."""
        if isinstance(exc, ReturnedError):
            return PublishResult(event_id, "unroutable", f"no queue is bound to {routing_key!r}")
        if isinstance(exc, DeliveryError):
            return PublishResult(event_id, "nacked", "the broker refused it")
        if isinstance(exc, TimeoutError):
            return PublishResult(
                event_id,
                "timeout",
                f"no confirm within {self._timeout:g}s (broker blocked by a resource alarm?)",
            )
        if isinstance(exc, AMQPChannelError):
            # The channel's close reason, given to every publish in flight on it at once: the
            # first to see it sees the others still counted in flight.
            reply = " ".join(str(arg) for arg in exc.args if arg is not None) or repr(exc)
            if not self.refused:
                self.refused = reply
                self.refused_id = event_id if self._in_flight == 1 else ""
            return PublishResult(event_id, "connection_lost", reply)
        return PublishResult(event_id, "connection_lost", type(exc).__name__)

    async def send_to_queue(self, body: bytes, properties: Properties, queue: str) -> None:
        """Put a message straight into ``queue`` (retry tier or dead-letter queue), confirmed.

        Raises:
            PublishError: not confirmed, or the queue does not exist (returned).
            ValueError, TypeError: a property or header AMQP cannot carry.
        """
        await self._copy(
            self._channel.default_exchange, body, properties, queue, f"queue {queue!r}"
        )

    async def send_to_exchange(
        self, body: bytes, properties: Properties, exchange: str, routing_key: str
    ) -> None:
        """Publish a prepared message (a retry copy into the delay levels) to ``exchange``
        with ``routing_key``, confirmed and mandatory.

        Raises:
            PublishError: not confirmed, or nothing is bound for it (returned).
            ValueError, TypeError: a property or header AMQP cannot carry.
        """
        result = await self._confirmed(
            exchange, body, properties, routing_key, properties.message_id or ""
        )
        result.check(f"copy of {result.event_id} to exchange {exchange!r}")

    @property
    def destination(self) -> str:
        """Where :meth:`copy_of` messages go, as error messages name it."""
        return f"exchange {self._exchange.name!r}"

    async def _copy(
        self,
        exchange: AbstractExchange,
        body: bytes,
        properties: Properties,
        routing_key: str,
        where: str,
    ) -> None:
        result = await self._confirmed(
            exchange.name, body, properties, routing_key, properties.message_id or ""
        )
        result.check(f"copy of {result.event_id} to {where}")

    async def _confirmed(
        self,
        exchange: str,
        body: bytes,
        properties: Properties,
        routing_key: str,
        event_id: str,
    ) -> PublishResult:
        self._in_flight += 1
        try:
            await self._underlay.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._timeout,
            )
        except _FAILED as exc:
            return self._failure(event_id, routing_key, exc)
        finally:
            self._in_flight -= 1
            if len(body) >= LARGE_PUBLISH:
                self._let_go()
        return PublishResult(event_id, "confirmed")

    def _let_go(self) -> None:
        """aiormq's writer keeps the last frame it wrote in a local until the next one comes,
        so an idle connection would hold a large publish (its whole body, marshalled) until its
        next heartbeat: 15 s later with the default heartbeat of 30 s, never with heartbeats
        off. A heartbeat frame, which a client may send at any time, takes its place at once.
        A full frame queue has frames coming anyway."""
        with contextlib.suppress(asyncio.QueueFull):
            self._underlay.connection.write_queue.put_nowait(_HEARTBEAT)
