"""The TCP proxy of the network faults (tests/support/proxy.py) does what each mode says,
shown against an echo server: B4 and B5 and E4 prove nothing if it does not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.support.proxy import Proxy


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """An echo server's port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def opened(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def silent(reader: asyncio.StreamReader, seconds: float = 0.5) -> bool:
    """Nothing, not even an end of stream, comes within ``seconds``."""
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


async def test_pass_through_blackhole_and_heal(echo: int) -> None:
    with Proxy("127.0.0.1", echo) as proxy:
        reader, writer = await opened(proxy)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"

        proxy.blackhole()
        writer.write(b"lost")
        assert await silent(reader), "a byte or a close crossed the blackhole"
        late_reader, late_writer = await opened(proxy)  # accepted, hears nothing
        late_writer.write(b"hello")
        assert await silent(late_reader)

        proxy.pass_through()
        # Both lost bytes: closed, as TCP resets a connection whose peer gave up.
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert await asyncio.wait_for(late_reader.read(), 2) == b""
        reader, writer = await opened(proxy)
        writer.write(b"again")
        assert await reader.readexactly(5) == b"again"
        writer.close()


async def test_cut_and_cut_after_n_bytes_from_the_server(echo: int) -> None:
    with Proxy("127.0.0.1", echo) as proxy:
        connections = [await opened(proxy) for _ in range(2)]
        await asyncio.sleep(0.1)
        proxy.cut()
        for reader, _ in connections:
            assert await asyncio.wait_for(reader.read(), 2) == b""
        assert proxy.cuts == 2

        proxy.cut_after(10, times=2)
        for _ in range(2):
            reader, writer = await opened(proxy)
            writer.write(b"0123456789abcdef")
            assert await asyncio.wait_for(reader.read(), 2) == b"0123456789"
        reader, writer = await opened(proxy)  # two cuts made: passes through again
        writer.write(b"0123456789abcdef")
        assert await reader.readexactly(16) == b"0123456789abcdef"
        writer.close()


def frame(payload: bytes) -> bytes:
    """An AMQP frame: type, channel, payload size, payload, frame end."""
    return b"\x01\x00\x00" + len(payload).to_bytes(4) + payload + b"\xce"


async def test_cut_after_n_frames_from_the_server_cuts_between_two(echo: int) -> None:
    with Proxy("127.0.0.1", echo) as proxy:
        proxy.cut_after(2, frames=True)
        reader, writer = await opened(proxy)
        received = asyncio.ensure_future(read_all(reader))
        sent = frame(b"a") + frame(b"bcdefghijk") + frame(b"lmn")
        with contextlib.suppress(ConnectionError):  # the cut comes while this still writes
            for at in range(0, len(sent), 3):  # in small pieces: headers split across reads
                writer.write(sent[at : at + 3])
                await writer.drain()
                await asyncio.sleep(0.01)
        assert await asyncio.wait_for(received, 2) == frame(b"a") + frame(b"bcdefghijk")


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the end of the stream or an error (a write into the cut connection
    fails its reader too)."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_flaky_cuts_again_and_again_and_keeps_the_order(echo: int) -> None:
    with Proxy("127.0.0.1", echo, seed=5) as proxy:
        proxy.flaky(every=(0.2, 0.4), delay=(0.0, 0.005))
        cut = 0
        for _ in range(3):
            reader, writer = await opened(proxy)
            received = b""
            sent = 0
            while True:
                writer.write(f"{sent:05d}".encode())
                sent += 1
                try:
                    received += await asyncio.wait_for(reader.read(65536), 2)
                except ConnectionError:
                    break
                if reader.at_eof():
                    break
            cut += 1
            numbers = [int(received[i : i + 5]) for i in range(0, len(received) - 4, 5)]
            assert numbers == list(range(len(numbers))), "bytes reordered"
        proxy.pass_through()
        assert cut == 3 and proxy.cuts >= 3
