"""Sending the events of ``eventworker publish``: each confirmed, sent again on a new connection
after a lost one, and stopped in good order by SIGINT or SIGTERM.

The first signal stops sending: no further event goes out, and the confirms of the events in
flight are awaited for at most :data:`STOP_WAIT` seconds (a second signal ends the wait). Every
event then has a result: confirmed, refused by the broker, sent without a confirm in time
(``interrupted``: the broker may hold it), or never sent (``not_sent``).
"""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal

import click

from eventworker.errors import BrokerUnreachableError
from eventworker.publishing import unrouted
from eventworker.publishing.channel import ConfirmChannel, Outgoing, PublishResult
from eventworker.settings import Settings

#: Seconds the first SIGINT/SIGTERM waits for the confirms of the events already sent.
STOP_WAIT = 5.0
#: How often events whose connection was lost are sent again on a new connection.
RECONNECTS = 3
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """An event a signal left without the broker's answer: sent without a confirm in time
    (``interrupted``), or never sent (``not_sent``)."""

    event_id: str
    status: Literal["interrupted", "not_sent"]
    detail: str
    ok: ClassVar[bool] = False


Result = PublishResult | Unconfirmed


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of each event, in order; the ids that went to the unrouted queue; whether
    a signal stopped the sending."""

    results: list[Result]
    unrouted: set[str]
    interrupted: bool


class Stop:
    """SIGINT and SIGTERM while events are sent, on the running loop inside a ``with`` block:
    the first sets :attr:`requested`, a second :attr:`hurried`."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurried = asyncio.Event()

    def __enter__(self) -> Stop:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.requested.is_set():
            self.hurried.set()
            return
        self.requested.set()
        click.echo(
            f"interrupted: sending no more events; waiting up to {STOP_WAIT:g}s for the "
            f"confirms of those sent (interrupt again not to wait)",
            err=True,
        )

    async def settle(self, task: asyncio.Future[Any]) -> None:
        """Await ``task``; once a stop is requested, for at most STOP_WAIT seconds more (no
        longer after a second signal), then cancel it.

        Raises:
            Whatever ``task`` raised, unless it was cancelled here.
        """
        requested = asyncio.ensure_future(self.requested.wait())
        hurried = asyncio.ensure_future(self.hurried.wait())
        try:
            await asyncio.wait({task, requested}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait(
                    {task, hurried}, timeout=STOP_WAIT, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            requested.cancel()
            hurried.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not task.cancelled():
            task.result()


class _Round:
    """The events one connection sends, in order, until a stop is requested; pairs each
    result with its event."""

    def __init__(
        self, outgoing: Sequence[Outgoing], indices: list[int], stop: asyncio.Event
    ) -> None:
        self._outgoing, self._indices, self._stop = outgoing, indices, stop
        self._waiting: dict[str, deque[int]] = {}
        #: Indices of the events handed to the broker.
        self.sent: list[int] = []

    def __len__(self) -> int:  # so that send_many starts no more slots than events
        return len(self._indices)

    def __iter__(self) -> Iterator[Outgoing]:
        for i in self._indices:
            if self._stop.is_set():
                return
            event = self._outgoing[i]
            self._waiting.setdefault(event.id, deque()).append(i)
            self.sent.append(i)
            yield event

    def index(self, result: PublishResult) -> int:
        """The index of the event ``result`` answers (the oldest in flight with its id)."""
        return self._waiting[result.event_id].popleft()


async def send_all(
    settings: Settings, outgoing: Sequence[Outgoing], on_result: Callable[[Result], None]
) -> Sent:
    """Publish ``outgoing``; ``on_result`` hears each final result once (a progress bar).

    Events whose connection was lost before their confirm are sent again (same id) on a new
    connection — the next node of a cluster — up to RECONNECTS times. A lost confirm may mean
    the broker has it: a duplicate, never a loss. A SIGINT or SIGTERM stops the sending as the
    module says.

    Raises:
        BrokerUnreachableError, BrokerAuthError: the first connection failed.
        BrokerError: the broker refused the exchange.
    """
    results: list[Result | None] = [None] * len(outgoing)
    sent: set[int] = set()
    async with AsyncExitStack() as stack:
        stop = stack.enter_context(Stop())
        watch = None
        if settings.unrouted_queue:
            watch = await stack.enter_async_context(
                unrouted.watch(
                    settings.url,
                    settings.exchange,
                    connect_timeout=settings.connect_timeout,
                    heartbeat=settings.heartbeat,
                )
            )
            if watch.problem:
                click.echo(f"note: {watch.problem}", err=True)
        pending = list(range(len(outgoing)))
        for round_ in range(RECONNECTS + 1):
            if stop.requested.is_set():  # while the watch connected: nothing to send
                break
            last = round_ == RECONNECTS
            sending = _Round(outgoing, pending, stop.requested)

            def settled(
                result: PublishResult, sending: _Round = sending, last: bool = last
            ) -> None:
                results[sending.index(result)] = result
                if last or result.status != "connection_lost":
                    on_result(result)

            try:
                await stop.settle(asyncio.ensure_future(_send(settings, sending, settled)))
            except BrokerUnreachableError:
                if round_ == 0:
                    raise
                break  # the lost ones stay reported as connection_lost
            finally:
                sent.update(sending.sent)
            pending = [i for i in pending if _lost(results[i])]
            if not pending or last or stop.requested.is_set():
                break
            click.echo(
                f"connection lost: publishing {len(pending)} unconfirmed event(s) again", err=True
            )
        final = [_or_unconfirmed(r, outgoing[i].id, i in sent) for i, r in enumerate(results)]
        confirmed = [r.event_id for r in final if r.ok]
        went_unrouted = await watch.unrouted(confirmed) if watch else set()
    return Sent(final, went_unrouted, stop.requested.is_set())


async def _send(
    settings: Settings, sending: _Round, settled: Callable[[PublishResult], None]
) -> None:
    async with ConfirmChannel.connect(
        settings.urls(),
        exchange=settings.exchange,
        source="eventworker",
        timeout=settings.publish_timeout,
        connect_timeout=settings.connect_timeout,
        heartbeat=settings.heartbeat,
        tls=settings.tls,
    ) as publisher:
        await publisher.send_many(sending, on_result=settled)


def _lost(result: Result | None) -> bool:
    return result is not None and result.status == "connection_lost"


def _or_unconfirmed(result: Result | None, event_id: str, was_sent: bool) -> Result:
    if result is not None:
        return result
    if was_sent:
        return Unconfirmed(
            event_id,
            "interrupted",
            f"no confirm within {STOP_WAIT:g}s of the interrupt: the broker may hold it",
        )
    return Unconfirmed(event_id, "not_sent", "interrupted before it was sent")
