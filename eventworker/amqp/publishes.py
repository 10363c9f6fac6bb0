"""Many confirmed publishes written to the socket at once, on aiormq's channel and its confirm
bookkeeping.

aiormq's ``Channel.basic_publish`` takes the channel's lock, opens a timeout, queues one
write and waits for it to drain, for every message: with thousands of confirms in flight,
that per-message work is most of a publisher's CPU. :func:`write` does what it does for a
whole run of messages under one lock and one drained write: each message gets the next
delivery tag and a confirm future in ``channel.confirmations`` (and its message id in
``message_id_delivery_tag``, which a ``basic.return`` is matched by), exactly where
``basic_publish`` puts them, so aiormq's reader resolves them as its own: an ack, a nack
(``DeliveryError``), a return (``PublishError``), or the channel's close reason.

The method and header frames are encoded here (the ``basic.publish`` method is a few fixed
fields; the properties by :class:`eventworker.amqp.properties.Properties`); a test checks the
bytes against pamqp's.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import aiormq
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

from eventworker.amqp.properties import Properties

_FRAME = struct.Struct(">BHI")
_PUBLISH = struct.Struct(">HHH")  # class 60 (basic), method 40 (publish), reserved ticket
_HEADER = struct.Struct(">HHQ")  # class 60, weight 0, body size
_END = b"\xce"
_METHOD, _CONTENT_HEADER, _BODY = 1, 2, 3
_MANDATORY = 1


class Message(NamedTuple):
    """One publish: where to, its body, its properties (with a ``message_id``)."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Properties


def _short(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"{text[:100]!r}... is over 255 bytes")
    return bytes((len(data),)) + data


def encode(message: Message, channel: int, max_content: int, *, mandatory: bool = True) -> bytes:
    """The method, content header and body frames of ``message`` on ``channel``, bodies cut at
    ``max_content`` bytes a frame.

    Raises:
        ValueError, TypeError: an exchange or routing key over 255 bytes, or a property AMQP
            cannot carry.
    """
    method = (
        _PUBLISH.pack(60, 40, 0)
        + _short(message.exchange)
        + _short(message.routing_key)
        + bytes((_MANDATORY if mandatory else 0,))
    )
    body = message.body
    header = _HEADER.pack(60, 0, len(body)) + message.properties.marshal()
    parts = [
        _FRAME.pack(_METHOD, channel, len(method)),
        method,
        _END,
        _FRAME.pack(_CONTENT_HEADER, channel, len(header)),
        header,
        _END,
    ]
    for start in range(0, len(body), max_content):
        chunk = body[start : start + max_content]
        parts += (_FRAME.pack(_BODY, channel, len(chunk)), chunk, _END)
    return b"".join(parts)


def _quiet(drained: asyncio.Future[None]) -> None:
    """Read a failed drain's exception (the channel's close reason, which every confirm future
    carries too), so that asyncio does not log it as never retrieved."""
    if not drained.cancelled():
        drained.exception()


def _forget(channel: aiormq.Channel, message_id: str, tag: int, _: object) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)


async def write(
    channel: aiormq.Channel, messages: Sequence[Message], *, timeout: float | None = None
) -> list[asyncio.Future[object]]:
    """Publish ``messages`` (mandatory) on ``channel``, a confirm channel, in one socket write,
    in order; returns each one's confirm future, in order, once the write drained, the channel
    closed, or ``timeout`` seconds passed (a broker that blocks publishers reads nothing
    more). A future ends as aiormq's own ``basic_publish`` would: a frame on an ack,
    ``DeliveryError`` on a nack, ``PublishError`` on a return, the channel's close exception
    when it closes.

    Raises:
        ChannelInvalidStateError: the channel is closed (nothing was written).
        TimeoutError: no turn on the channel, or no room in the connection's write queue,
            within ``timeout`` seconds (nothing was written).
        ValueError, TypeError: a message could not be encoded (nothing was written).
    """
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    futures: list[asyncio.Future[object]] = []
    # Every ``max_content`` a frame holds: the frame size less its 8 bytes of framing.
    max_content = channel.max_content_size
    async with asyncio.timeout(timeout), channel.lock:  # tags in other publishers' order
        first = channel.delivery_tag + 1
        sent = False
        try:
            parts = []
            for message in messages:
                parts.append(encode(message, channel.number, max_content))
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                future: asyncio.Future[object] = channel.create_future()
                channel.confirmations[tag] = future
                message_id = message.properties.message_id or ""
                channel.message_id_delivery_tag[message_id] = tag
                future.add_done_callback(partial(_forget, channel, message_id, tag))
                futures.append(future)
            drained: asyncio.Future[None] = channel.create_future()
            drained.add_done_callback(_quiet)
            await channel.write_queue.put(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
            )
            sent = True
        finally:
            if not sent:  # the broker saw none of them: their tags are free again
                for tag in range(first, channel.delivery_tag + 1):
                    channel.confirmations.pop(tag, None)
                for future in futures:
                    future.cancel()
                channel.delivery_tag = first - 1
    # Closed meanwhile (every future then carries the reason), or not drained in time (their
    # confirms will not come in time either): the futures say which.
    await asyncio.wait((drained,), timeout=timeout)
    return futures
