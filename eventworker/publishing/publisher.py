"""The publisher for application code: validated, confirmed events, and nothing lost on a
dropped connection.

:class:`Publisher` owns its connection. Every event is checked before anything is sent (routing
key, headers, id, size, JSON), published with ``mandatory`` and a broker confirm, and reported
per event (``confirmed``, ``nacked``, ``unroutable``, ``timeout``, ``connection_lost``). Events
whose confirm was lost with the connection, or with a channel the broker closed, are published
again on a new connection, with the same id, so a consumer sees at most a duplicate it can
recognise; an event the broker closed the channel over is found and reported ``nacked``. It
sends through :class:`eventworker.publishing.channel.ConfirmChannel`, the confirm channel the worker
uses too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from aio_pika.abc import AbstractConnection
from loguru import logger
from pydantic import SecretStr

from eventworker import envelope
from eventworker.amqp.connection import CHANNEL_GONE, connect
from eventworker.backoff import Backoff
from eventworker.errors import (
    BrokerError,
    BrokerUnreachableError,
    InvalidInputError,
)
from eventworker.publishing.channel import (
    CHANNEL_CLOSE_TIMEOUT,
    DEFAULT_WINDOW,
    ConfirmChannel,
    Outgoing,
    PublishResult,
)
from eventworker.settings import Settings, TlsSettings
from eventworker.topology import delays

#: How often one event is sent at most when its confirm keeps getting lost (connection or channel).
MAX_SENDS = 5
#: First pause between reconnection attempts, in seconds; it doubles up to RECONNECT_PAUSE_MAX.
RECONNECT_PAUSE, RECONNECT_PAUSE_MAX = 0.2, 5.0
_HEADER_VALUES = (str, bytes, int, float, bool, Decimal, datetime, date, type(None))


class Stop:
    """Asks :meth:`Publisher.send_many` to stop part-way, in good order.

    After :meth:`request`, no event not yet handed to the broker goes out, and the confirms of
    the events in flight are awaited for at most ``wait`` seconds; a second :meth:`request`
    ends that wait. Every event still gets a result: the broker's, ``interrupted`` (sent, no
    confirm in time: the broker may hold it) or ``not_sent``.
    """

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.requested = asyncio.Event()
        self.hurried = asyncio.Event()

    def request(self) -> None:
        """The first call stops the sending; a second also stops the waiting for confirms."""
        (self.hurried if self.requested.is_set() else self.requested).set()

    async def settle(self, task: asyncio.Future[Any]) -> None:
        """Await ``task``; once a stop is requested, for at most ``wait`` seconds more (no
        longer once hurried), then cancel it.

        Raises:
            Whatever ``task`` raised, unless it was cancelled here.
        """
        requested = asyncio.ensure_future(self.requested.wait())
        hurried = asyncio.ensure_future(self.hurried.wait())
        try:
            await asyncio.wait({task, requested}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait(
                    {task, hurried}, timeout=self.wait, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            requested.cancel()
            hurried.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not task.cancelled():
            task.result()


class _Batch:
    """The events one channel sends, in order, until a stop is requested; :attr:`handed`
    lists, by position, the indices of those handed to the broker."""

    def __init__(self, outgoing: Sequence[Outgoing], todo: list[int], stop: Stop | None) -> None:
        self._outgoing, self._todo, self._stop = outgoing, todo, stop
        self.handed: list[int] = []

    def __iter__(self) -> Iterator[Outgoing]:
        for i in self._todo:
            if self._stop is not None and self._stop.requested.is_set():
                return
            self.handed.append(i)
            yield self._outgoing[i]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event to publish: ``data`` becomes the JSON body; ``id`` defaults to a new UUID.

    ``delay`` (seconds, rounded up to whole ones, or a timedelta) or ``at`` (an aware datetime;
    one that has passed is delivered at once) has the broker hold the event first.
    """

    routing_key: str
    data: Any
    id: str | None = None
    headers: Mapping[str, Any] | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    delay: float | timedelta | None = None
    at: datetime | None = None


def _check_value(name: str, value: Any, depth: int = 0) -> None:
    if depth > 10:
        raise InvalidInputError(f"header {name!r}: nested deeper than 10 levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"header {name!r}: NaN and infinity cannot be sent")
    if isinstance(value, str):
        try:
            envelope.check_utf8(value, f"header {name!r}: the value")
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    elif isinstance(value, list | tuple):
        for item in value:
            _check_value(name, item, depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"header {name!r}: table keys must be strings")
            _check_value(name, item, depth + 1)
    elif not isinstance(value, _HEADER_VALUES):
        raise InvalidInputError(
            f"header {name!r}: a {type(value).__name__} cannot be an AMQP header value"
        )


def _short(value: str | None, what: str) -> None:
    if value is None:
        return
    try:
        envelope.check_utf8(value, what)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not 0 < len(value.encode("utf-8")) <= 255:
        raise InvalidInputError(f"{what} must be 1 to 255 bytes")


def prepare(event: NewEvent, *, max_body_bytes: int, delay_levels: int = 0) -> Outgoing:
    """The wire form of ``event``, checked as ``eventworker publish`` checks its input.

    Raises:
        InvalidInputError: a bad routing key, a reserved or malformed header, an id or
            correlation id outside 1-255 bytes or not valid UTF-8, data that is not
            JSON-serialisable, a body over ``max_body_bytes``, or a delay that is negative,
            given with ``at``, or more than ``delay_levels`` levels hold.
    """
    try:
        envelope.check_routing_key(event.routing_key)
        hold = delays.seconds(event.delay, event.at)
        delays.check(hold, event.routing_key, delay_levels)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    _short(event.id, "the event id")
    _short(event.correlation_id, "the correlation id")
    _short(event.causation_id, "the causation id")
    for name, value in (event.headers or {}).items():
        try:
            envelope.check_header(name)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        _check_value(name, value)
    try:
        body = envelope.encode_data(event.data)
    except TypeError as exc:
        raise InvalidInputError(str(exc)) from None
    if len(body) > max_body_bytes:
        raise InvalidInputError(
            f"body of {len(body)} bytes exceeds max_body_bytes {max_body_bytes}"
        )
    return Outgoing(
        event.routing_key,
        body,
        event.id or envelope.new_id(),
        dict(event.headers) if event.headers else None,
        event.correlation_id,
        event.causation_id,
        delay=hold,
    )


class Publisher:
    """Publishes events to a topic exchange on a connection of its own, with confirms.

    Safe to share between tasks of one event loop. Use :meth:`connect` (an async context
    manager), or build one and call :meth:`open` and :meth:`close`. A lost connection, or a
    channel the broker closed, is re-opened on the next publish (waiting up to
    ``reconnect_timeout``), and every event whose confirm it took along is published again with
    the same id, up to ``MAX_SENDS`` times (see :meth:`send_many`).
    """

    def __init__(
        self,
        url: str | SecretStr,
        *,
        exchange: str,
        source: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        tls: TlsSettings | None = None,
        max_body_bytes: int = 1_048_576,
        reconnect_timeout: float = 30.0,
        window: int = DEFAULT_WINDOW,
        delay_levels: int = 0,
    ) -> None:
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.exchange = exchange
        self._source = source
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._tls = tls
        self.max_body_bytes = max_body_bytes
        self.reconnect_timeout = reconnect_timeout
        self._window = window
        #: Levels of delayed delivery declared for the exchange (the ``delay_levels`` setting).
        self.delay_levels = delay_levels
        self._connection: AbstractConnection | None = None
        self._channel: ConfirmChannel | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: Times the connection was opened again, and events sent again after a lost confirm.
        self.reconnects = 0
        self.republished = 0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Publisher:
        """A publisher for the broker, exchange and limits of ``settings``; ``options`` win."""
        values: dict[str, Any] = {
            "exchange": settings.exchange,
            "timeout": settings.publish_timeout,
            "connect_timeout": settings.connect_timeout,
            "heartbeat": settings.heartbeat,
            "tls": settings.tls,
            "max_body_bytes": settings.max_body_bytes,
            "delay_levels": settings.delay_levels,
        }
        urls = ",".join(u.get_secret_value() for u in settings.urls())  # in url_order
        return cls(SecretStr(urls), **(values | options))

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str | SecretStr, **options: Any) -> AsyncIterator[Publisher]:
        """``async with Publisher.connect(url, exchange=...) as pub``: connected on entry,
        closed on exit. ``options`` are those of the constructor.

        Raises:
            BrokerUnreachableError, BrokerAuthError: the first connection failed.
            BrokerError: the exchange does not exist.
        """
        publisher = cls(url, **options)
        await publisher.open()
        try:
            yield publisher
        finally:
            await publisher.close()

    @property
    def connected(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def open(self) -> None:
        """Connect now rather than on the first publish (one try, no waiting).

        Raises:
            BrokerUnreachableError, BrokerAuthError, BrokerError: as :meth:`connect`.
        """
        async with self._lock:
            await self._reopen(deadline=time.monotonic())

    async def close(self) -> None:
        """Close the connection; publishing afterwards reports ``connection_lost``."""
        self._closed = True
        async with self._lock:
            await self._drop()

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
    ) -> PublishResult:
        """Publish one event and wait until the broker confirmed it.

        With ``delay`` (seconds, rounded up to whole ones, or a timedelta) or ``at`` (an aware
        datetime), the broker holds the event that long before routing it; the confirm comes
        when the broker has it in the first level (docs/time.md). Needs ``delay_levels``.

        Returns the confirmed result (its ``event_id`` is the id the event carries).

        Raises:
            InvalidInputError: the event was refused before sending (see :func:`prepare`).
            PublishError: not confirmed; ``status`` says why (``nacked``, ``unroutable``,
                ``timeout``, ``connection_lost``).
        """
        event = NewEvent(
            routing_key, data, id, headers, correlation_id, causation_id, delay=delay, at=at
        )
        [result] = await self.publish_many([event])
        result.check(f"event {result.event_id} to {routing_key!r}")
        return result

    async def publish_many(
        self, events: Iterable[NewEvent], *, window: int | None = None
    ) -> list[PublishResult]:
        """Publish ``events`` with up to ``window`` confirms in flight; one result per event, in
        order. Every event is checked before the first is sent.

        Raises:
            InvalidInputError: an event was refused (the message names its position); nothing
                was sent.
        """
        outgoing = []
        for n, event in enumerate(events):
            try:
                outgoing.append(
                    prepare(
                        event, max_body_bytes=self.max_body_bytes, delay_levels=self.delay_levels
                    )
                )
            except InvalidInputError as exc:
                raise InvalidInputError(f"event {n} ({event.routing_key[:100]!r}): {exc}") from None
        return await self.send_many(outgoing, window=window)

    async def send_many(
        self,
        outgoing: Sequence[Outgoing],
        *,
        window: int | None = None,
        on_result: Callable[[PublishResult], None] | None = None,
        stop: Stop | None = None,
    ) -> list[PublishResult]:
        """Publish events already in wire form (checked by the caller, e.g. with
        :func:`prepare`); results as :meth:`publish_many`. ``on_result`` hears each event's
        final result once, as it comes (a progress bar); ``stop`` ends the sending part-way
        (see :class:`Stop`).

        Events whose confirm was lost with the connection, or with a channel the broker closed,
        are sent again, with the same id, on a new one. A broker that closes the channel over
        one publish (406 for a message over its size limit) fails every confirm in flight with
        it and does not say which one it refused, so the unconfirmed events are then sent one
        at a time: the one it closes the channel over, alone in flight, is reported ``nacked``
        with the broker's reason, and the rest go on at the full window."""
        results = [PublishResult(o.id, "connection_lost") for o in outgoing]
        sends = [0] * len(outgoing)
        todo = list(range(len(outgoing)))
        failed: ConfirmChannel | None = None
        alone = False

        def final(i: int, result: PublishResult) -> None:
            results[i] = result
            if on_result is not None:
                on_result(result)

        while todo and not (stop is not None and stop.requested.is_set()):
            again = sum(1 for i in todo if sends[i])
            if again:
                how = " one at a time" if alone else ""
                logger.warning("publishing {} unconfirmed event(s) again{}", again, how)
            batch = _Batch(outgoing, todo, stop)
            heard: dict[int, PublishResult] = {}

            def hear(
                position: int,
                result: PublishResult,
                batch: _Batch = batch,
                heard: dict[int, PublishResult] = heard,
            ) -> None:
                heard[position] = result
                if result.status != "connection_lost":  # else decided once the batch is over
                    final(batch.handed[position], result)

            used: list[ConfirmChannel] = []
            try:
                if alone:
                    work = self._one_by_one(batch, hear, used)
                else:
                    work = self._on_current(failed, batch, hear, used, window or self._window)
                await (stop.settle(asyncio.ensure_future(work)) if stop else work)
            except BrokerError as exc:
                for i in todo:
                    if results[i].status == "connection_lost":
                        final(i, PublishResult(outgoing[i].id, "connection_lost", str(exc)))
                return results
            channel = used[-1] if used else None
            if not alone:
                failed = channel
            lost = []
            for position, i in enumerate(batch.handed):
                result = heard.get(position)
                if result is None:  # its confirm cut short by the stop
                    detail = f"no confirm within {stop.wait if stop else 0:g}s of the stop"
                    final(i, PublishResult(outgoing[i].id, "interrupted", detail))
                    continue
                if sends[i]:
                    self.republished += 1
                sends[i] += 1
                if result.status != "connection_lost":
                    continue  # heard and reported as it came
                if channel is not None and outgoing[i].id == channel.refused_id:
                    # Alone in flight when the broker closed the channel: refused, not lost.
                    reason = f"the broker closed the channel over it: {channel.refused}"
                    final(i, PublishResult(outgoing[i].id, "nacked", reason))
                elif sends[i] < MAX_SENDS:
                    lost.append(i)
                else:
                    final(i, result)
            handed = set(batch.handed)
            # One by one stops at the first lost event: the rest were not handed yet.
            todo = lost + [i for i in todo if i not in handed]
            # Closed over an event it could not single out: one at a time until one is alone.
            alone = channel is not None and bool(channel.refused) and not channel.refused_id
        for i in todo:  # left by a stop: lost with a connection, or never handed over
            if sends[i]:
                left = PublishResult(outgoing[i].id, "connection_lost", "stopped before resending")
            else:
                left = PublishResult(outgoing[i].id, "not_sent", "stopped before it was sent")
            final(i, left)
        return results

    async def _on_current(
        self,
        failed: ConfirmChannel | None,
        batch: _Batch,
        hear: Callable[[int, PublishResult], None],
        used: list[ConfirmChannel],
        window: int,
    ) -> None:
        channel = await self._current(failed)
        used.append(channel)
        await channel.send_many(batch, window=window, on_result=hear)

    async def _one_by_one(
        self,
        batch: _Batch,
        hear: Callable[[int, PublishResult], None],
        used: list[ConfirmChannel],
    ) -> None:
        """Send ``batch`` one event at a time, each confirmed before the next, until one is
        lost: then the broker closed the channel over that one (the channel's ``refused_id``),
        or the connection went. On a connection of their own, so that no publish of another
        task is in flight beside them.

        Raises:
            BrokerError: closed, or no connection within ``reconnect_timeout``.
        """
        if self._closed:
            raise BrokerError("the publisher is closed")
        deadline = time.monotonic() + self.reconnect_timeout
        connection, channel = await self._open_channel(deadline)
        used.append(channel)
        try:
            for position, event in enumerate(batch):
                result = await channel.send(event)
                hear(position, result)
                if result.status == "connection_lost":
                    break
        finally:
            await self._close_quietly(connection)

    async def _current(self, failed: ConfirmChannel | None) -> ConfirmChannel:
        """The live channel, reconnecting when it is gone or is the one that just ``failed``.

        Raises:
            BrokerError: closed, or no connection within ``reconnect_timeout``.
        """
        async with self._lock:
            if self._closed:
                raise BrokerError("the publisher is closed")
            channel = self._channel
            if channel is not None and channel is not failed and not channel.is_closed:
                return channel
            if channel is not None:
                self.reconnects += 1
                if channel.refused:
                    # Reconnected rather than a channel opened beside it: aiormq can still write
                    # frames on the closed channel, which the broker answers by closing the
                    # whole connection (504 CHANNEL_ERROR).
                    logger.warning(
                        "the broker closed the publisher channel ({}); reconnecting",
                        channel.refused,
                    )
                else:
                    logger.warning("publisher connection lost; reconnecting")
            await self._drop()
            return await self._reopen(deadline=time.monotonic() + self.reconnect_timeout)

    async def _reopen(self, *, deadline: float) -> ConfirmChannel:
        self._connection, channel = await self._open_channel(deadline)
        self._channel = channel
        return channel

    async def _open_channel(self, deadline: float) -> tuple[AbstractConnection, ConfirmChannel]:
        backoff = Backoff(RECONNECT_PAUSE, RECONNECT_PAUSE_MAX)
        while True:
            try:
                connection = await connect(
                    self._url,
                    role="publisher",
                    timeout=self._connect_timeout,
                    heartbeat=self._heartbeat,
                    tls=self._tls,
                )
            except BrokerUnreachableError:
                if time.monotonic() + backoff.peek() > deadline:
                    raise
                await asyncio.sleep(backoff.next())
                continue
            try:
                channel = await ConfirmChannel.open(
                    connection,
                    self.exchange,
                    source=self._source,
                    timeout=self._timeout,
                    delay_levels=self.delay_levels,
                )
            except BaseException:
                await connection.close()
                raise
            return connection, channel

    async def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        await self._close_quietly(connection)

    async def _close_quietly(self, connection: AbstractConnection | None) -> None:
        # Every confirm waited for has arrived or timed out by now, and a broker blocked by a
        # resource alarm may never answer Connection.Close: answering the caller beats waiting.
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), CHANNEL_CLOSE_TIMEOUT)
            except (TimeoutError, *CHANNEL_GONE):
                pass  # already broken: nothing left to close cleanly
