"""The harness's own broker work, with plain aio-pika: names, declarations, pre-publishing,
queue depths, the paced publisher of the latency scenario, and clean-up.

The broker is shared: every name starts with this run's unique prefix, and only what this run
declared is ever deleted. Nothing here purges, reconfigures or stops anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from benchmarks.wire import ROUTING_KEY, SENT_HEADER, body

#: Confirms in flight while pre-publishing: fast, and the broker never holds more unconfirmed.
PREPUBLISH_WINDOW = 1000


def message(n: int, *, sent_ns: int | None = None) -> aio_pika.Message:
    """A persistent message with the properties an eventworker producer sets."""
    return aio_pika.Message(
        body(n),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(uuid.uuid4()),
        type=ROUTING_KEY,
        timestamp=datetime.now(UTC),
        app_id="bench",
        headers={SENT_HEADER: sent_ns} if sent_ns is not None else None,
    )


def _properties(headers: dict[str, object] | None = None) -> aiormq.spec.Basic.Properties:
    """The properties of :func:`message` (without a send time), for aiormq."""
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=str(uuid.uuid4()),
        message_type=ROUTING_KEY,
        timestamp=datetime.now(UTC),
        app_id="bench",
        headers=headers,
    )


class Broker:
    """The harness's connection; remembers what it declared so :meth:`cleanup` removes it."""

    def __init__(self, connection: AbstractConnection, run_prefix: str) -> None:
        self.connection = connection
        self.run_prefix = run_prefix
        self._serial = itertools.count(1)
        self._queues: set[str] = set()
        self._exchanges: set[str] = set()

    @classmethod
    async def connect(cls, url: str, run_prefix: str) -> Broker:
        connection = await aio_pika.connect(
            url, client_properties={"connection_name": f"eventworker-bench {run_prefix}"}
        )
        return cls(connection, run_prefix)

    def prefix(self, case: str) -> str:
        """A name prefix for one measurement: ``bench.<run>.<case>.<n>``."""
        return f"{self.run_prefix}.{case}.{next(self._serial)}"

    def track(self, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        """Names declared by somebody else for this run (a worker, a peer) to delete later."""
        self._queues.update(queues)
        self._exchanges.update(exchanges)

    def server_version(self) -> str:
        props = self.connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = props.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)

    async def declare(self, exchange: str, queue: str, *, queue_type: str = "classic") -> None:
        """A durable topic exchange and a durable queue bound to it with :data:`ROUTING_KEY`."""
        self.track(queues=[queue], exchanges=[exchange])
        async with self._channel() as channel:
            ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await channel.declare_queue(
                queue, durable=True, arguments={"x-queue-type": queue_type}
            )
            await q.bind(ex, ROUTING_KEY)

    async def prepublish(
        self,
        exchange: str,
        count: int,
        make_body: Callable[[int], bytes] = body,
        *,
        routing_key: str = ROUTING_KEY,
        headers: dict[str, object] | None = None,
    ) -> None:
        """Publish ``count`` persistent messages, every one confirmed (message ``n``'s body is
        ``make_body(n)``; ``exchange`` "" and a queue's name as ``routing_key``: straight into
        that queue).

        Straight on aiormq's channel: a third less harness CPU than through aio-pika's
        ``Message``, and pre-publishing is most of the suite's wall time. Same properties.
        """
        async with self._channel(confirms=True) as channel:
            raw = cast(aiormq.Channel, await channel.get_underlay_channel())
            for start in range(0, count, PREPUBLISH_WINDOW):
                stop = min(start + PREPUBLISH_WINDOW, count)
                await asyncio.gather(
                    *(
                        raw.basic_publish(
                            make_body(n),
                            exchange=exchange,
                            routing_key=routing_key,
                            properties=_properties(headers),
                        )
                        for n in range(start, stop)
                    )
                )

    async def paced_publish(self, exchange: str, count: int, rate: float) -> None:
        """Publish ``count`` messages at a fixed ``rate`` per second, each stamped with its send
        time; on schedule (not after the previous one), so a slow consumer cannot slow it."""
        async with self._channel() as channel:
            target = await channel.get_exchange(exchange, ensure=False)
            start = time.monotonic()
            for n in range(count):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await target.publish(message(n, sent_ns=time.monotonic_ns()), ROUTING_KEY)

    async def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of ``queue``; unacknowledged messages are not counted."""
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return result.message_count or 0, result.consumer_count or 0

    async def cleanup(self) -> None:
        """Delete every queue and exchange of this run; what cannot be deleted is named."""
        queues, exchanges = sorted(self._queues), sorted(self._exchanges)
        self._queues.clear()
        self._exchanges.clear()
        left = []
        for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
            try:
                async with self._channel() as channel:
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
            except Exception as exc:  # keep deleting the others
                left.append(f"{kind} {name} ({type(exc).__name__})")
        if left:
            print(f"warning: could not delete {', '.join(left)}", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def _channel(self, *, confirms: bool = False) -> AsyncIterator[AbstractChannel]:
        channel = await self.connection.channel(publisher_confirms=confirms)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()
