"""Frames off the wire, and the ``FrameReceiver`` that reads them for aiormq.

aiormq's receiver hands every frame to ``pamqp.frame.unmarshal``: what pamqp cannot decode (a
timestamp out of range, a short string that is not UTF-8) becomes ``InvalidFrameError``, and a
``RecursionError`` (a table nested 500 deep) escapes as it is; either ends the connection,
whatever channel the frame was for. Here the frames of the delivery path are
decoded by eventworker: ``basic.deliver``, ``basic.get-ok`` and ``basic.return`` (a short
string that is not UTF-8 is kept with ``\\xNN`` escapes, and the frame is an
:class:`UndecodableMethod` saying so), content headers (:mod:`.properties`, which never
raises) and bodies. Every other frame goes to pamqp, and whatever pamqp raises becomes
``InvalidFrameError``: a broken frame from the broker may still end the connection, a Python
error never escapes.

aiormq has no hook for frame decoding; its ``Connection.connect`` builds its receiver from the
module global ``aiormq.connection.FrameReceiver``, which :func:`install` replaces (once,
idempotently; tested against the aiormq versions pyproject.toml allows).

The receiver also names a connection that died of silence. When no frame came for the heartbeat
grace, aiormq cancels its reader and then fails every waiter of the connection and its channels
with that bare ``CancelledError``: a caller cannot tell it from a cancel of its own task, and a
worker would take it for one and stop. A receiver that knows the heartbeat (:data:`HEARTBEAT`,
set around the connect) turns that cancel into an ``AMQPConnectionError`` saying no frame came,
the error every other dead connection gives.
"""

from __future__ import annotations

import asyncio
import contextvars
import struct
import time
from collections.abc import Callable
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from eventworker.amqp import properties
from eventworker.amqp._fields import read_short

_HEAD = struct.Struct(">BHI").unpack
_INDEX = struct.Struct(">I").unpack_from
_CONTENT = struct.Struct(">HHQ").unpack_from
#: A delivery tag and the octet of the bit after it; signed, as pamqp reads and writes tags.
_TAG_BIT = struct.Struct(">qB").unpack_from
#: The numbers of the delivery-path methods, by pamqp's type name.
_NUMBERS = {
    "longlong": struct.Struct(">q"),
    "long": struct.Struct(">I"),
    "short": struct.Struct(">H"),
}
Frame = tuple[int, int, pamqp.frame.FrameTypes]
#: The heartbeat, in seconds, of the connection being opened in this context: set around
#: aiormq's connect (``amqp.connection``), read by the receiver it builds. 0 or unset: none.
HEARTBEAT: contextvars.ContextVar[int] = contextvars.ContextVar("eventworker_heartbeat", default=0)


class UndecodableMethod:
    """Marks a delivery-path method frame with a short string that is not UTF-8 (kept with
    ``\\xNN`` escapes, so it can be shown and logged); ``error`` names it."""

    error: str = ""


class UndecodableDeliver(commands.Basic.Deliver, UndecodableMethod):
    """A ``basic.deliver`` with a field that is not UTF-8."""


class UndecodableGetOk(commands.Basic.GetOk, UndecodableMethod):
    """A ``basic.get-ok`` with a field that is not UTF-8."""


class UndecodableReturn(commands.Basic.Return, UndecodableMethod):
    """A ``basic.return`` with a field that is not UTF-8."""


def _short(data: bytes, offset: int) -> tuple[str, int]:
    stop = offset + 1 + data[offset]
    return data[offset + 1 : stop].decode(), stop


def _deliver(data: bytes, end: int) -> commands.Basic.Deliver:
    """The hot one, read straight; anything unusual goes to :func:`_method`."""
    try:
        consumer_tag, offset = _short(data, 4)
        delivery_tag, bits = _TAG_BIT(data, offset)
        exchange, offset = _short(data, offset + 9)
        routing_key, offset = _short(data, offset)
    except UnicodeDecodeError:
        marked: commands.Basic.Deliver = _method(
            commands.Basic.Deliver, UndecodableDeliver, data, end
        )
        return marked
    if offset > end:
        raise InvalidFrameError("basic.deliver runs past the end of its frame")
    frame = object.__new__(commands.Basic.Deliver)
    frame.consumer_tag = consumer_tag
    frame.delivery_tag = delivery_tag
    frame.redelivered = bool(bits & 1)
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


def _method(cls: type[Any], marked: type[Any], data: bytes, end: int) -> Any:
    """A method frame read field by field from pamqp's own description of it (its
    ``__slots__`` and their AMQP types); a short string that is not UTF-8 makes it ``marked``.

    Raises:
        InvalidFrameError: the frame is truncated.
    """
    values: dict[str, Any] = {}
    errors: list[str] = []
    offset = 4
    for name in cls.__slots__:
        kind = cls.amqp_type(name)
        if kind == "shortstr":
            values[name], _, offset = read_short(data, offset, name.replace("_", " "), errors)
        elif kind == "bit":  # one bit alone in its octet in these methods
            values[name] = bool(data[offset] & 1)
            offset += 1
        else:
            reader = _NUMBERS[kind]
            (values[name],) = reader.unpack_from(data, offset)
            offset += reader.size
    if offset > end:
        raise InvalidFrameError(f"{cls.name} runs past the end of its frame")
    frame = object.__new__(marked if errors else cls)
    for name, item in values.items():
        setattr(frame, name, item)
    if errors:
        frame.error = "; ".join(errors)
    return frame


_METHODS: dict[int, Callable[[bytes, int], Any]] = {
    commands.Basic.Deliver.index: _deliver,
    commands.Basic.GetOk.index: lambda data, end: _method(
        commands.Basic.GetOk, UndecodableGetOk, data, end
    ),
    commands.Basic.Return.index: lambda data, end: _method(
        commands.Basic.Return, UndecodableReturn, data, end
    ),
}


def decode(kind: int, channel: int, head: bytes, rest: bytes) -> Frame:
    """One frame: ``head`` its 7 header bytes, ``rest`` its payload and end byte. Returns what
    ``pamqp.frame.unmarshal`` returns: (bytes consumed, channel, frame).

    Raises:
        InvalidFrameError: the frame is malformed (never another exception).
    """
    end = len(rest) - 1
    if end > 0 and rest[end] == 0xCE:
        try:
            if kind == 3:
                body = object.__new__(ContentBody)
                body.value = rest[:end]
                return end + 8, channel, body
            if kind == 2:
                header = object.__new__(ContentHeader)
                header.class_id, header.weight, header.body_size = _CONTENT(rest, 0)
                header.properties = properties.decode(rest, 12, end)
                return end + 8, channel, header
            if kind == 1 and (method := _METHODS.get(_INDEX(rest, 0)[0])) is not None:
                return end + 8, channel, method(rest, end)
        except InvalidFrameError:
            raise
        except Exception as exc:  # a truncated method or header prefix: a broken frame
            raise InvalidFrameError(f"malformed frame of type {kind}: {exc}") from None
    try:
        return pamqp.frame.unmarshal(head + rest)
    except Exception as exc:  # pamqp's errors and any other: a frame aiormq cannot use
        raise InvalidFrameError(f"{type(exc).__name__}: {exc}") from None


class FrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's frame receiver with eventworker's decoding (:func:`decode`); it reads a frame
    in two reads (header, then payload and end byte) where aiormq's takes three."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        heartbeat = HEARTBEAT.get()
        #: aiormq gives up on a connection silent for longer than this (its heartbeat grace).
        self.silence_limit = (
            (heartbeat + 1) * aiormq.connection.Connection.HEARTBEAT_GRACE_MULTIPLIER
            if heartbeat > 0
            else None
        )
        self.last_frame = time.monotonic()

    async def get_frame(self) -> Frame:
        """The next frame, as aiormq's own receiver returns it.

        Raises:
            StopAsyncIteration: the broker closed the connection cleanly.
            AMQPConnectionError: the connection failed mid-frame, or stayed silent past the
                heartbeat grace (aiormq then cancels this read).
            ProtocolSyntaxError: the broker answered with a protocol header (a version
                mismatch); InvalidFrameError: a malformed frame.
        """
        reader = self.reader
        if reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        async with self.lock:
            try:
                head = await reader.readexactly(7)
                if not self.started:
                    if head.startswith(b"AMQP"):
                        raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                    self.started = True
                kind, channel, size = _HEAD(head)
                rest = await reader.readexactly(size + 1)
            except (asyncio.IncompleteReadError, OSError) as exc:
                raise _connection_error(exc) from exc
            except asyncio.CancelledError:
                silent = time.monotonic() - self.last_frame
                # aiormq cancels a read for two reasons: a close of the connection, and a
                # silence past the grace. A live broker sends a heartbeat every half heartbeat,
                # so a silence of half the grace already means the second (measured with
                # room for clocks that tick apart: aiormq's is the event loop's).
                if self.silence_limit is None or silent <= self.silence_limit / 2:
                    raise
                raise AMQPConnectionError(
                    f"Server connection dead: no frame from the broker in {silent:.0f}s "
                    f"(heartbeat missed)"
                ) from None
        self.last_frame = time.monotonic()
        return decode(kind, channel, head, rest)


def _connection_error(exc: BaseException) -> AMQPConnectionError:
    """The error aiormq's own receiver raises for a failed read."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return AMQPConnectionError(
            f"Server connection unexpectedly closed. Read {len(exc.partial)} bytes but "
            f"{exc.expected} bytes expected"
        )
    for kind, what in (
        (ConnectionRefusedError, "refused"),
        (ConnectionResetError, "reset"),
        (ConnectionError, "error"),
    ):
        if isinstance(exc, kind):
            return AMQPConnectionError(f"Server connection {what}: {exc!r}")
    return AMQPConnectionError(f"Server communication error: {exc!r}")


def install() -> None:
    """Make every aiormq connection opened from now on in this process read its frames with
    :class:`FrameReceiver`. Idempotent. (tests/amqp/test_hook.py fails if an aiormq release
    stops building its receiver from this global.)"""
    setattr(aiormq.connection, "FrameReceiver", FrameReceiver)  # noqa: B010 - mypy forbids assigning a class
