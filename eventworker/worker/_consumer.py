"""Consuming one handler's queue, on probation after every (re)connect.

A message whose handler kills the worker (segfault, out-of-memory kill, ``os._exit``) is never
settled: it goes back to the queue together with every other message the worker had fetched,
and on a quorum queue each such return counts towards ``x-delivery-limit``. A restarted worker
that fetched the same batch again would crash again, and after a few rounds the innocent
messages fetched with the poison one would pass the limit and be dead-lettered with it.

So a consumer starts with prefetch 1: messages the broker redelivers (``redelivered``: handed
out before and not settled) are run one at a time, and when one of them kills the worker it
alone goes back and counts a delivery. The first delivery that was never handed out before
means the redelivered ones ahead of it are done (a queue hands returned messages out before
new ones): probation ends and the consumer subscribes again with the handler's prefetch
(``basic.qos`` applies to consumers started after it).

It consumes through aiormq's channel directly: aio-pika's ``queue.consume`` runs each delivery
in a second task of its own on top of aiormq's, and builds an ``IncomingMessage`` whose every
field goes through a checking ``__setattr__``; both cost measurable CPU per message. A
:class:`Delivery` reads the same fields straight from the frame instead. Every delivery's tag is
registered with the channel's :class:`~eventworker.worker._acks.Acks` first thing, in arrival
order, so a coalesced ack can never cover a delivery it has not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import cast

import aiormq
import aiormq.abc
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractQueue,
)
from loguru import logger

from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.amqp.delivery import Delivery
from eventworker.observability.logs import one_line
from eventworker.worker._acks import Acks

#: Runs one delivery and settles it through the channel's acks.
OnMessage = Callable[[Delivery, Acks], Awaitable[None]]
#: Parks one delivery that cannot be decoded, through the channel's acks.
OnUndecodable = Callable[[Delivery, Acks], Awaitable[None]]


class Consumer:
    """Consumes ``queue`` on ``channel`` (a channel of its own), starting on probation."""

    def __init__(
        self,
        channel: AbstractChannel,
        underlay: aiormq.abc.AbstractChannel,
        queue: AbstractQueue,
        *,
        prefetch: int,
        on_message: OnMessage,
        on_undecodable: OnUndecodable,
        name: str,
        probation: bool = True,
    ) -> None:
        self._channel = channel
        self._underlay = underlay
        self._queue = queue
        #: The channel's acks (delivery tags are per channel).
        self.acks = Acks(underlay, prefetch=prefetch)
        self._prefetch = prefetch
        self._on_message = on_message
        self._on_undecodable = on_undecodable
        self._name = name
        self._tag: str | None = None
        self._cancelled = False
        self._widening = asyncio.Lock()
        self._widen: asyncio.Future[None] | None = None
        #: True while deliveries run one at a time.
        self.on_probation = probation and prefetch > 1

    @property
    def queue(self) -> AbstractQueue:
        return self._queue

    @property
    def is_closed(self) -> bool:
        """Whether its channel is closed (the broker or a lost connection closed it)."""
        return self._channel.is_closed

    @property
    def tag(self) -> str | None:
        """The current consumer tag (it changes when probation ends)."""
        return self._tag

    async def is_serving(self) -> bool:
        """Whether our consumer is on the queue as far as this client knows (the switch at the
        end of probation counts as serving). The broker's side is the watchdog's to check."""
        if self._channel.is_closed:
            return False
        if self._widening.locked():
            return True
        underlay = cast(aiormq.Channel, self._underlay)  # the abstract type lacks .consumers
        return self._tag is not None and self._tag in underlay.consumers

    async def start(self) -> None:
        await self._channel.set_qos(prefetch_count=1 if self.on_probation else self._prefetch)
        await self._consume()

    async def _consume(self) -> None:
        ok = await self._underlay.basic_consume(self._queue.name, self._deliver, no_ack=False)
        self._tag = ok.consumer_tag

    async def _cancel(self) -> None:
        if self._tag is not None:
            await self._underlay.basic_cancel(self._tag)

    async def cancel(self) -> None:
        """Stop the deliveries (unsettled ones stay with the channel)."""
        self._cancelled = True
        async with self._widening:  # not between ending probation and its new consumer tag
            await self._cancel()

    async def close(self) -> None:
        """Write the pending acks, then close the channel: its close is queued after them, so
        the broker has every ack before it requeues what stayed unacked."""
        await self.acks.flush()
        await self._channel.close()

    async def _deliver(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        delivery = Delivery(delivered)
        # First, before any await: tasks start in delivery order, so tags register in order.
        self.acks.delivered(delivery.delivery_tag)
        if delivery.undecodable is not None:
            await self._on_undecodable(delivery, self.acks)
            return
        if self.on_probation:
            if delivery.redelivered:
                # If this one kills the worker, this line is the last the log has of it.
                logger.info(
                    "{} on probation: running redelivered message {} alone",
                    self._name,
                    one_line(delivery.message_id or "(no id)", 100),
                )
            elif self._widen is None:
                # In the background: this message goes to its handler now, ahead of those
                # the wider consumer will bring (awaiting the switch here let them overtake
                # it, breaking the order a single active consumer promises).
                self._widen = asyncio.ensure_future(self._end_probation())
                self._widen.add_done_callback(_switch_failed)
        await self._on_message(delivery, self.acks)

    async def _end_probation(self) -> None:
        async with self._widening:
            if not self.on_probation or self._cancelled:
                return
            self.on_probation = False
            await self._cancel()
            if self._cancelled:
                return
            await self._channel.set_qos(prefetch_count=self._prefetch)
            await self._consume()
            logger.debug(
                "{}: no redelivered messages left; prefetch {}", self._name, self._prefetch
            )


def _switch_failed(task: asyncio.Future[None]) -> None:
    # The channel died during the switch: the session sees the loss through the channel's
    # close callbacks and subscribes again; nothing to do here but not leave it unretrieved.
    if not task.cancelled() and task.exception() is not None:
        logger.debug("end of probation interrupted: {}", task.exception())


async def unserved(connection: AbstractConnection, consumers: list[Consumer]) -> list[str]:
    """The queues among ``consumers`` that our consumer no longer serves: its channel closed,
    its tag gone, or the broker counting no consumer on the queue (a passive declare)."""
    missing = []
    probe = await connection.channel()
    try:
        for consumer in consumers:
            if not await consumer.is_serving():
                missing.append(consumer.queue.name)
                continue
            declared = await probe.declare_queue(consumer.queue.name, passive=True)
            if not declared.declaration_result.consumer_count:
                missing.append(consumer.queue.name)
    except CHANNEL_GONE:
        # The probe channel died: a queue was deleted (404) or the connection went.
        missing.append("(queue gone or connection lost)")
    finally:
        with contextlib.suppress(*CHANNEL_GONE):
            await probe.close()
    return missing
