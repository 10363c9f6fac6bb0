"""Queue statistics read from the broker: ready messages and consumers per queue.

Passive ``queue.declare`` answers with both counts, so no management plugin is needed and no
message is touched. ``eventworker status`` reads them once; the metrics read them every
``metrics_poll_interval`` seconds through :func:`poll`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity
from loguru import logger

from eventworker.amqp.connection import CHANNEL_GONE, connect
from eventworker.errors import BrokerError
from eventworker.settings import Settings


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What the broker reported for one queue; counts are None when the queue does not exist.

    ``messages`` counts ready messages only: deliveries a consumer holds unacked are not in it.
    """

    name: str
    messages: int | None
    consumers: int | None

    @property
    def exists(self) -> bool:
        return self.messages is not None


class StatsReader:
    """Reads queue statistics on a connection of its own (role ``stats``)."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    @property
    def is_closed(self) -> bool:
        return self._connection.is_closed

    async def read(self, names: Iterable[str]) -> dict[str, QueueStats]:
        """The statistics of each queue in ``names`` (a missing queue has None counts).

        Raises:
            BrokerError: the connection failed while reading.
        """
        found: dict[str, QueueStats] = {}
        try:
            for name in names:
                if self._channel is None or self._channel.is_closed:
                    self._channel = await self._connection.channel()
                try:
                    queue = await self._channel.declare_queue(name, passive=True)
                except ChannelNotFoundEntity:
                    # The broker closed the channel with 404: the queue does not exist.
                    found[name] = QueueStats(name, None, None)
                    continue
                result = queue.declaration_result
                found[name] = QueueStats(
                    name, result.message_count or 0, result.consumer_count or 0
                )
        except CHANNEL_GONE as exc:
            raise BrokerError(f"reading queue statistics failed: {type(exc).__name__}") from None
        return found

    async def close(self) -> None:
        with contextlib.suppress(*CHANNEL_GONE):
            await self._connection.close()


async def open_reader(settings: Settings) -> StatsReader:
    """A :class:`StatsReader` on a new connection; close it when done.

    Raises:
        BrokerUnreachableError, BrokerAuthError: the connection failed.
    """
    connection = await connect(
        settings.url,
        role="stats",
        timeout=settings.connect_timeout,
        heartbeat=settings.heartbeat,
        tls=settings.tls,
    )
    return StatsReader(connection)


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[StatsReader]:
    """A :class:`StatsReader` on a new connection, closed on exit.

    Raises:
        BrokerUnreachableError, BrokerAuthError: the connection failed.
    """
    reader = await open_reader(settings)
    try:
        yield reader
    finally:
        await reader.close()


async def poll(
    settings: Settings,
    names: Iterable[str],
    *,
    interval: float,
    on_read: Callable[[dict[str, QueueStats], float], None],
    stop: asyncio.Event,
) -> None:
    """Read ``names`` every ``interval`` seconds and pass the result (and the wall-clock time of
    the read) to ``on_read``, until ``stop`` is set (a read under way is finished first, so the
    broker never sees a declare cut short). A broker that cannot be reached is tried again at
    the next interval: statistics are never worth stopping a worker for."""
    queues = list(names)
    reader: StatsReader | None = None
    failing = False
    try:
        while not stop.is_set():
            try:
                if reader is None or reader.is_closed:
                    reader = await open_reader(settings)
                on_read(await reader.read(queues), time.time())
                failing = False
            except BrokerError as exc:
                # Once per outage: the worker's own log already says the broker is away.
                (logger.debug if failing else logger.warning)(
                    "queue statistics not read: {}; trying every {:g}s", exc, interval
                )
                failing = True
                if reader is not None:
                    await reader.close()
                reader = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        if reader is not None:
            await reader.close()
