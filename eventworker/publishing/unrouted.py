"""Where unroutable events went, when the ``unrouted_queue`` setting is on.

Then the exchange has an alternate exchange (``<exchange>.unrouted``, fanout) that takes every
event no binding matches and feeds the unrouted queue; RabbitMQ no longer returns such a publish
to its publisher, so a mandatory publish cannot tell. A :func:`watch` binds a private queue to
the same alternate exchange while a batch is published: the broker confirms a publish only once
every queue it was routed to has it, so after the confirms the watch holds a copy of each event
of ours that went unrouted (and of other producers' at the same time, which it ignores).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.exceptions import AMQPChannelError, ChannelNotFoundEntity
from pydantic import SecretStr

from eventworker.amqp.connection import CHANNEL_GONE, connect
from eventworker.topology.layout import unrouted_exchange


class Watch:
    """A private queue bound to the alternate exchange; :meth:`unrouted` reads it."""

    def __init__(self, queue: AbstractQueue | None, problem: str = "") -> None:
        self._queue = queue
        #: Why there is no watch ("" when there is one).
        self.problem = problem

    async def unrouted(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` reached the alternate exchange so far; drains the watch."""
        seen: set[str] = set()
        while self._queue is not None:
            message = await self._queue.get(fail=False, no_ack=True)
            if message is None:
                break
            if message.message_id:
                seen.add(message.message_id)
        return seen & set(ids)


@asynccontextmanager
async def watch(
    url: SecretStr, exchange: str, *, connect_timeout: float, heartbeat: int
) -> AsyncIterator[Watch]:
    """Watch ``exchange``'s alternate exchange for the duration of the block.

    A :class:`Watch` without a queue (and with its ``problem``) when the alternate exchange
    does not exist (then unroutable publishes come back to the publisher as before) or cannot
    be watched.

    Raises:
        BrokerUnreachableError, BrokerAuthError: the connection failed.
    """
    connection = await connect(
        url, role="unrouted-watch", timeout=connect_timeout, heartbeat=heartbeat
    )
    try:
        channel: AbstractChannel = await connection.channel()
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(unrouted_exchange(exchange))
        except ChannelNotFoundEntity:
            yield Watch(
                None,
                f"exchange {exchange!r} has no alternate exchange yet (no worker has declared "
                f"it with unrouted_queue): an event no binding matches is unroutable",
            )
            return
        except AMQPChannelError as exc:
            yield Watch(None, f"cannot watch the unrouted exchange of {exchange!r}: {exc}")
            return
        yield Watch(queue)
    finally:
        with contextlib.suppress(*CHANNEL_GONE):
            await connection.close()
