"""Sending the events of ``eventworker publish`` through the library :class:`Publisher` (each
confirmed, sent again on a new connection after a lost one), stopped in good order by SIGINT or
SIGTERM.

The first signal stops sending: no further event goes out, and the confirms of the events in
flight are awaited for at most :data:`STOP_WAIT` seconds (a second signal ends the wait). Every
event then has a result: confirmed, refused by the broker, sent without a confirm in time
(``interrupted``: the broker may hold it), or never sent (``not_sent``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

import click

from eventworker.publishing import unrouted
from eventworker.publishing.channel import Outgoing, PublishResult
from eventworker.publishing.publisher import Publisher, Stop
from eventworker.settings import Settings

#: Seconds the first SIGINT/SIGTERM waits for the confirms of the events already sent.
STOP_WAIT = 5.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of each event, in order; the ids that went to the unrouted queue; whether
    a signal stopped the sending."""

    results: list[PublishResult]
    unrouted: set[str]
    interrupted: bool


class SignalStop(Stop):
    """A :class:`Stop` requested by SIGINT and SIGTERM, on the running loop inside a ``with``
    block, saying so on stderr."""

    def __init__(self) -> None:
        super().__init__(STOP_WAIT)

    def __enter__(self) -> SignalStop:
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
        if not self.requested.is_set():
            click.echo(
                f"interrupted: sending no more events; waiting up to {STOP_WAIT:g}s for the "
                f"confirms of those sent (interrupt again not to wait)",
                err=True,
            )
        self.request()


async def send_all(
    settings: Settings,
    outgoing: Sequence[Outgoing],
    on_result: Callable[[PublishResult], None],
    *,
    window: int | None = None,
) -> Sent:
    """Publish ``outgoing`` with the library publisher, up to ``window`` confirms in flight
    (None: the publisher's default); ``on_result`` hears each final result once (a progress
    bar). A lost connection is opened again — the next node of a cluster —
    and the unconfirmed events are sent again with the same ids. A SIGINT or SIGTERM stops
    the sending as the module says.

    Raises:
        BrokerUnreachableError, BrokerAuthError: the first connection failed.
        BrokerError: the broker refused the exchange.
    """
    async with AsyncExitStack() as stack:
        stop = stack.enter_context(SignalStop())
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
        publisher = Publisher.from_settings(settings, source="eventworker")
        stack.push_async_callback(publisher.close)
        await stop.settle(asyncio.ensure_future(publisher.open()))
        results = await publisher.send_many(outgoing, window=window, on_result=on_result, stop=stop)
        confirmed = [r.event_id for r in results if r.ok]
        went_unrouted = await watch.unrouted(confirmed) if watch else set()
    return Sent(results, went_unrouted, stop.requested.is_set())
