"""Reading a queue and handing back, in order, what the reader did not take.

Works over plain AMQP, without the management plugin. A queue is read with ``basic.get``, one
round trip per message, or, given a ``prefetch``, with a consumer that has up to that many
messages on their way at once (each a :class:`~eventworker.amqp.delivery.Delivery`: a message
whose header cannot be decoded is read too, marked ``undecodable``), at most as many as it held
when the operation began (so a steady inflow cannot keep it reading). What an operation takes
(moves or deletes) is acked; every other message read is held unacked and handed back at the
end, one ``basic.nack(requeue)`` per message in the order read, so the queue's order is kept:

- a classic queue puts a returned message back at its old position;
- a quorum queue puts returned messages at its tail (RabbitMQ 3.x without a delivery limit) or
  its head (with one), and reorders returns that arrive in a burst. So on a quorum queue each
  nack waits for a round trip before the next, and a read that held anything goes on to the end
  of what the queue held at the start: handing everything back in order then turns the queue
  full circle. Messages that arrived meanwhile end up ahead of them.

A killed process loses nothing either (the broker takes back what its channel held), but a
quorum queue then returns those messages in no particular order. So an operation is stopped
with ``stop`` (set by a signal handler), checked between two messages, never by cancelling it:
a cancellation that lands in an RPC makes aiormq close the channel, and Python 3.11's
``asyncio.wait_for`` (under every aiormq RPC) can even swallow one.

A consumer's prefetch counts the messages it was given and that are not acked yet, held ones
too: once a consumer holds its whole prefetch the reader starts another (the broker counts per
consumer; the old one's messages stay with the channel, unacked, in order). A consumer is
cancelled only when nothing can be on its way to it: its prefetch spent, or the queue's
messages of the start all given (see ``QueueReader._cancel``). So a ``stop`` ends the messages
only once the consumer's prefetch is spent: what is taken meanwhile is acked after the cancel,
which lets the broker send nothing more, and what it gave is read and taken, not handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import aiormq.abc
from aio_pika.abc import AbstractConnection
from aiormq import spec
from aiormq.exceptions import AMQPChannelError, ChannelAccessRefused, ChannelNotFoundEntity

from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.amqp.delivery import Delivery
from eventworker.errors import BrokerError, Interrupted

#: How long one ``basic.get`` may take (aio-pika's default for ``Queue.get``).
GET_TIMEOUT = 5.0
#: Seconds a consumer may give nothing before the reader asks whether the queue still holds
#: anything for it (another consumer, or an expiry, may have taken the rest).
IDLE = 1.0
STOPPED = "interrupted: every message not reported as taken is in place"
#: Round trips without a delivery after a cancel before the reader takes it that no more
#: messages are on their way to the cancelled consumer.
QUIET_ROUND_TRIPS = 2


def counts_reads(version: str) -> bool:
    """True for RabbitMQ 4.0 to 4.2: there every message a read hands back counts towards a
    quorum queue's delivery limit (20 by default), and past it a dead-letter queue, which has
    no dead-letter exchange, drops the message. 3.x has no default limit; 4.3 counts only
    ``basic.reject``."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return False
    return major == 4 and minor < 3


def broker_version(connection: AbstractConnection) -> str:
    """The broker's version as it announced it ("" when it did not)."""
    properties = connection.transport.connection.server_properties if connection.transport else {}
    version = properties.get("version", "")
    return version.decode() if isinstance(version, bytes) else str(version)


class QueueReader:
    """Reads messages one by one; :meth:`take` acks one, the rest go back in order on close."""

    def __init__(
        self,
        channel: aiormq.abc.AbstractChannel,
        queue: str,
        *,
        budget: int,
        limit: int | None,
        quorum: bool,
        stop: asyncio.Event | None = None,
        prefetch: int = 0,
    ) -> None:
        self._channel = channel
        self._stop = stop
        self._queue = queue
        self._budget = budget  # messages the queue held at the start, not yet read
        self._limit = limit
        self._quorum = quorum
        #: Delivery tags in the order read -> the consumer that was given each ("" basic.get).
        self._held: dict[int, str] = {}
        self._prefetch = prefetch  # 0: basic.get
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
        self._consumer = ""  # the current consumer's tag ("": none)
        self._unsettled: Counter[str] = Counter()  # per consumer: given, not acked yet
        self._arrivals = 0  # messages any consumer of this reader was given
        #: Stopping: what is taken is acked only once the consumer is cancelled (tag ->
        #: consumer), so that its prefetch fills up and nothing is left on its way to it.
        self._closing = False
        self._deferred: dict[int, str] = {}

    def ready(self) -> int:
        """Messages the broker has given that :meth:`messages` has not yielded yet (0 when
        reading with ``basic.get``): while there are some, a caller may gather more work
        before writing."""
        return self._inbox.qsize()

    async def messages(self) -> AsyncIterator[Delivery]:
        """The queue's messages in order, at most ``limit``."""
        shown = 0
        while self._limit is None or shown < self._limit:
            if self._stop is not None and self._stop.is_set():
                if not self._consumer or (self._inbox.empty() and self._credit_spent()):
                    raise Interrupted(STOPPED)
                # A consumer may have messages on their way: read on until its prefetch is
                # spent (then nothing is), taking without acking yet (see _cancel).
                self._closing = True
            message = await self._get()
            if message is None:
                break
            shown += 1
            yield message
        if self._stop is not None and self._stop.is_set():
            raise Interrupted(STOPPED)

    async def _get(self) -> Delivery | None:
        if self._budget <= 0:
            return None
        if self._prefetch:
            got = await self._delivered()
        else:
            got = await self._channel.basic_get(self._queue, no_ack=False, timeout=GET_TIMEOUT)
        if got is None or isinstance(got.delivery, spec.Basic.GetEmpty):
            self._budget = 0
            return None
        self._budget -= 1
        return self._hold(got)

    def _hold(self, got: aiormq.abc.DeliveredMessage) -> Delivery:
        message = Delivery(got)
        self._held[message.delivery_tag] = getattr(got.delivery, "consumer_tag", None) or ""
        return message

    async def _delivered(self) -> aiormq.abc.DeliveredMessage | None:
        """The consumers' next message; None when the queue has no more to give."""
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                return self._inbox.get_nowait()
            if not self._consumer or self._credit_spent():
                await self._consume()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._inbox.get(), IDLE)
            # Nothing for a while: taken by someone else, or this consumer's prefetch is full.
            declared = await self._channel.queue_declare(self._queue, passive=True)
            if not declared.message_count:
                await asyncio.sleep(IDLE / 4)  # a message on its way when the queue said "none"
                if self._inbox.empty():
                    return None

    def _credit_spent(self) -> bool:
        """The current consumer holds its whole prefetch: the broker sends it nothing more, so
        nothing is on its way to it."""
        return self._unsettled[self._consumer] >= self._prefetch

    async def _consume(self) -> None:
        """Start a consumer: the first, or one beside a consumer whose prefetch is spent."""
        if self._consumer:
            await self._cancel()
        else:
            await self._channel.basic_qos(prefetch_count=self._prefetch)
        consumed = await self._channel.basic_consume(self._queue, self._arrived)
        self._consumer = consumed.consumer_tag or ""

    async def _cancel(self) -> None:
        """Cancel the consumer, still taking what it was given.

        Cancelled with messages on their way to it, a quorum queue puts those back at its tail
        (out of order), so the reader cancels a consumer only once its prefetch is spent or
        the queue has given all it held at the start (:meth:`_wind_down`). aiormq drops a
        delivery to a consumer it no longer knows, which would leave it unacked, out of the
        reader's sight: the cancelled consumer's tag keeps leading to the inbox (set again with
        no await in between: aiormq forgets it as the ``nowait`` cancel goes out).
        """
        tag, self._consumer = self._consumer, ""
        await self._channel.basic_cancel(tag, nowait=True)
        cast(aiormq.Channel, self._channel).consumers[tag] = self._arrived

    async def _arrived(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._arrivals += 1
        self._unsettled[getattr(message.delivery, "consumer_tag", None) or ""] += 1
        self._inbox.put_nowait(message)

    async def take(self, message: Delivery) -> None:
        await self.take_many([message])

    async def take_many(self, messages: Sequence[Delivery]) -> None:
        """Ack ``messages``, given in the order read: one ``basic.ack(multiple)`` when they are
        the oldest held (nothing held before them would go with it), else one ack each."""
        tags = [m.delivery_tag for m in messages]
        if not tags:
            return
        if self._closing:
            for tag in tags:
                self._deferred[tag] = self._held.pop(tag, "")
            return
        if list(itertools.islice(self._held, len(tags))) == tags:
            await self._channel.basic_ack(tags[-1], multiple=True, wait=False)
        else:
            for tag in tags:
                await self._channel.basic_ack(tag, wait=False)
        for tag in tags:
            self._settled(tag)

    def _settled(self, tag: int) -> None:
        consumer = self._held.pop(tag, None)
        if consumer:
            self._unsettled[consumer] -= 1

    async def _wind_down(self) -> None:
        """Read on (holding) until the consumer's prefetch is spent or the queue has given all
        it held at the start, then cancel it: nothing is then on its way to it."""
        while self._consumer and self._budget > 0:
            if self._inbox.empty() and self._credit_spent():
                break
            if await self._get() is None:
                break
        if not self._consumer:
            return
        await self._cancel()
        quiet = 0
        while quiet < QUIET_ROUND_TRIPS:  # what arrives past the budget, into the inbox
            before = self._arrivals
            await self._channel.basic_qos(prefetch_count=self._prefetch)
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._arrivals == before else 0
        while not self._inbox.empty():
            self._budget -= 1
            self._hold(self._inbox.get_nowait())

    async def _ack_deferred(self) -> None:
        """Ack what was taken while stopping (the consumer is cancelled by now)."""
        self._closing = False
        for tag, consumer in self._deferred.items():
            await self._channel.basic_ack(tag, wait=False)
            self._unsettled[consumer] -= 1
        self._deferred.clear()

    async def release(self) -> None:
        """Hand back every held message, one nack each, in the order read."""
        await self._wind_down()
        await self._ack_deferred()
        if self._quorum and self._held:
            while await self._get() is not None:
                pass  # a full turn: see the module docstring
            await self._wind_down()
        ready = await self._ready() if self._quorum else 0
        previous: str | None = None
        for handed, (tag, consumer) in enumerate(self._held.items()):
            if self._quorum and previous not in (None, consumer):
                # A quorum queue's channel sends each consumer's returns on their own, in
                # order, but not those of two consumers: wait until the queue counts every
                # message handed back so far before handing back the next consumer's.
                await self._counted(ready + handed)
            await self._channel.basic_nack(tag, multiple=False, requeue=True)
            if self._quorum:
                # basic.nack has no reply; a round trip (basic.qos, harmless here: this channel
                # consumes nothing) makes sure it reached the queue before the next one.
                await self._channel.basic_qos(prefetch_count=0)
            previous = consumer
        if self._quorum and self._held:
            await self._counted(ready + len(self._held))  # back in the queue when this returns
        self._held.clear()
        # Acks go out without waiting for the socket: a round trip makes sure every one has
        # reached the broker before the channel closes (which would hand their messages back).
        await self._channel.basic_qos(prefetch_count=0)

    async def _ready(self) -> int:
        declared = await self._channel.queue_declare(self._queue, passive=True)
        return declared.message_count or 0

    async def _counted(self, ready: int) -> None:
        """Wait until the queue holds ``ready`` messages ready (at most ``GET_TIMEOUT``)."""
        deadline = asyncio.get_running_loop().time() + GET_TIMEOUT
        # Polled: the broker announces no change of a queue's count.
        while True:
            if await self._ready() >= ready or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.005)


async def count(connection: AbstractConnection, queue: str) -> int | None:
    """Messages ready in ``queue`` (passive declare), or None when it does not exist."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return None
    except ChannelAccessRefused as exc:
        raise BrokerError(f"no permission to read queue {queue!r}: {exc}") from exc
    try:
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


@asynccontextmanager
async def reading(
    connection: AbstractConnection,
    queue: str,
    *,
    quorum: bool,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
    prefetch: int = 0,
) -> AsyncIterator[QueueReader]:
    """A :class:`QueueReader` of at most ``limit`` messages (and of no more than the queue held at
    the start); held messages go back in order when the block ends, however it ends. With a
    ``prefetch``, a consumer reads with up to that many messages on their way (else
    ``basic.get``, one round trip each).

    Raises:
        BrokerError: the queue does not exist, or reading it is not permitted.
    """
    ready = await count(connection, queue)
    if ready is None:
        raise BrokerError(f"queue {queue!r} does not exist on the broker")
    channel = await connection.channel()
    try:
        reader = QueueReader(
            await channel.get_underlay_channel(),
            queue,
            budget=ready,
            limit=limit,
            quorum=quorum,
            stop=stop,
            prefetch=prefetch,
        )
        try:
            yield reader
        finally:
            # A dead channel has handed everything back already (in no set order on quorum).
            with contextlib.suppress(*CHANNEL_GONE):
                await reader.release()
    except AMQPChannelError as exc:
        raise BrokerError(f"reading queue {queue!r} failed: {exc}") from exc
    finally:
        if not channel.is_closed:
            await channel.close()
