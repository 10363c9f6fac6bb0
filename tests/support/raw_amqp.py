"""A minimal AMQP 0-9-1 client for tests: any content-header bytes onto the wire, and a queue's
messages read back as the broker holds them, bytes untouched.

pamqp builds the handshake and the method frames; the content header is ours, byte for byte,
so a test can publish what no library would (a non-UTF-8 short string, an out-of-range
timestamp, a table nested 500 deep, an unknown field type) and read it back undecoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import pamqp.frame
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ProtocolHeader

T = TypeVar("T")
_FRAME_HEADER = struct.Struct(">BHI")
#: Property flags of Basic.Properties, in wire order.
FLAGS = {
    "content_type": 0x8000,
    "content_encoding": 0x4000,
    "headers": 0x2000,
    "delivery_mode": 0x1000,
    "priority": 0x0800,
    "correlation_id": 0x0400,
    "reply_to": 0x0200,
    "expiration": 0x0100,
    "message_id": 0x0080,
    "timestamp": 0x0040,
    "type": 0x0020,
    "user_id": 0x0010,
    "app_id": 0x0008,
}


def shortstr(value: bytes) -> bytes:
    return bytes([len(value)]) + value


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(*entries: bytes) -> bytes:
    """A field table of raw entries (each from :func:`entry`)."""
    return longstr(b"".join(entries))


def entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    """One table entry: a name, a type byte and the value's bytes as they go on the wire."""
    return shortstr(name) + kind + value


def nested(depth: int) -> bytes:
    """A table holding a table ``depth`` levels deep (``{"n": {"n": ...}}``)."""
    inner = table()
    for _ in range(depth):
        inner = table(entry(b"n", b"F", inner))
    return inner


def properties(**fields: bytes) -> bytes:
    """The property block of a content header: flags, then each field's raw bytes (short
    strings need :func:`shortstr`, ``delivery_mode``/``priority`` one byte, ``timestamp``
    eight, ``headers`` a :func:`table`)."""
    flags = 0
    parts = []
    for name, flag in FLAGS.items():
        if name in fields:
            flags |= flag
            parts.append(fields[name])
    return struct.pack(">H", flags) + b"".join(parts)


def split(block: bytes) -> dict[str, bytes]:
    """Each property's bytes in a property block, undecoded (a table with its length first)."""
    (flags,) = struct.unpack_from(">H", block)
    offset = 2
    fields = {}
    for name, flag in FLAGS.items():
        if not flags & flag:
            continue
        if name == "headers":
            size = 4 + struct.unpack_from(">I", block, offset)[0]
        elif name in ("delivery_mode", "priority"):
            size = 1
        elif name == "timestamp":
            size = 8
        else:
            size = 1 + block[offset]
        fields[name] = block[offset : offset + size]
        offset += size
    return fields


@dataclass(frozen=True, slots=True)
class Raw:
    """A message as the broker delivered it: the method, the property bytes, the body."""

    method: commands.Basic.GetOk
    properties: bytes
    body: bytes


class BrokerClosed(Exception):
    """The broker closed the channel or the connection; ``args[0]`` is its reply text."""


class RawClient:
    """One connection, one confirm channel. Use :meth:`open`; :meth:`close` when done."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frame_max = 131072

    @classmethod
    async def open(cls, url: str) -> RawClient:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 5672)
        client = cls(reader, writer)
        await client._handshake(
            unquote(parts.username or "guest"),
            unquote(parts.password or "guest"),
            unquote(parts.path[1:]) or "/",
        )
        return client

    async def _handshake(self, user: str, password: str, vhost: str) -> None:
        self._writer.write(ProtocolHeader().marshal())
        await self._expect(commands.Connection.Start)
        self._send(
            0,
            commands.Connection.StartOk(
                client_properties={"connection_name": "eventworker tests raw client"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = await self._expect(commands.Connection.Tune)
        self._frame_max = tune.frame_max or self._frame_max
        self._send(0, commands.Connection.TuneOk(tune.channel_max, self._frame_max, 0))
        self._send(0, commands.Connection.Open(vhost))
        await self._expect(commands.Connection.OpenOk)
        self._send(1, commands.Channel.Open())
        await self._expect(commands.Channel.OpenOk)
        self._send(1, commands.Confirm.Select())
        await self._expect(commands.Confirm.SelectOk)

    def _send(self, channel: int, frame: pamqp.frame.FrameTypes) -> None:
        self._writer.write(pamqp.frame.marshal(frame, channel))

    def _raw_frame(self, kind: int, channel: int, payload: bytes) -> None:
        self._writer.write(_FRAME_HEADER.pack(kind, channel, len(payload)) + payload + b"\xce")

    async def _read(self) -> tuple[int, bytes]:
        """The next frame other than a heartbeat: its type and payload."""
        while True:
            kind, _, size = _FRAME_HEADER.unpack(await self._reader.readexactly(7))
            payload = (await self._reader.readexactly(size + 1))[:-1]
            if kind != 8:
                return kind, payload

    async def _method(self) -> object:
        kind, payload = await self._read()
        assert kind == 1, f"expected a method frame, got type {kind}"
        _, _, frame = pamqp.frame.unmarshal(
            _FRAME_HEADER.pack(kind, 0, len(payload)) + payload + b"\xce"
        )
        if isinstance(frame, commands.Channel.Close | commands.Connection.Close):
            raise BrokerClosed(f"{frame.reply_code} {frame.reply_text}")
        return frame

    async def _expect(self, kind: type[T]) -> T:
        frame = await self._method()
        assert isinstance(frame, kind), f"expected {kind.__name__}, got {frame!r}"
        return frame

    async def publish(
        self,
        exchange: str,
        routing_key: str | bytes,
        body: bytes,
        props: bytes,
        *,
        mandatory: bool = False,
    ) -> None:
        """Publish ``body`` with the property bytes ``props`` exactly; return once confirmed.

        ``routing_key`` as bytes goes on the wire as given (a non-UTF-8 key).

        Raises:
            BrokerClosed: the broker refused the message by closing the channel or connection.
            AssertionError: it nacked or returned it.
        """
        key = routing_key if isinstance(routing_key, bytes) else routing_key.encode()
        exchange_bytes = exchange.encode()
        method = (
            struct.pack(">HHH", 60, 40, 0)
            + shortstr(exchange_bytes)
            + shortstr(key)
            + bytes([1 if mandatory else 0])
        )
        self._raw_frame(1, 1, method)
        self._raw_frame(2, 1, struct.pack(">HHQ", 60, 0, len(body)) + props)
        chunk = self._frame_max - 8
        for start in range(0, len(body), chunk):
            self._writer.write(pamqp.frame.marshal(ContentBody(body[start : start + chunk]), 1))
        await self._writer.drain()
        while True:
            frame = await self._method()
            if isinstance(frame, commands.Basic.Ack):
                return
            assert not isinstance(frame, commands.Basic.Nack), "the broker nacked the message"
            assert not isinstance(frame, commands.Basic.Return), "the broker returned it"

    async def get(self, queue: str, *, settle: str = "ack") -> Raw | None:
        """The head of ``queue`` as the broker holds it, or None when empty; then ``settle``
        it: ``ack`` (removed), ``requeue`` (handed back) or ``reject`` (dead-lettered)."""
        self._send(1, commands.Basic.Get(queue=queue, no_ack=False))
        reply = await self._method()
        if isinstance(reply, commands.Basic.GetEmpty):
            return None
        assert isinstance(reply, commands.Basic.GetOk)
        kind, header = await self._read()
        assert kind == 2
        (size,) = struct.unpack_from(">Q", header, 4)
        body = b""
        while len(body) < size:
            kind, chunk = await self._read()
            assert kind == 3
            body += chunk
        tag = reply.delivery_tag
        if settle == "ack":
            self._send(1, commands.Basic.Ack(tag))
        else:
            self._send(1, commands.Basic.Reject(tag, requeue=settle == "requeue"))
        return Raw(reply, header[12:], body)

    async def get_all(self, queue: str) -> Sequence[Raw]:
        taken = []
        while (raw := await self.get(queue)) is not None:
            taken.append(raw)
        return taken

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # the broker closed it first
            await self._writer.wait_closed()
