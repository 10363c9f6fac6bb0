"""eventworker's frame decoding is really what aiormq uses: the one hook (the module global
``aiormq.connection.FrameReceiver``) is in place, aiormq still builds its receiver from it,
the installed aiormq is one pyproject.toml allows, and a live connection reads a header pamqp
cannot decode. Any of these failing means the hook silently stopped working."""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import aiormq.connection
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from packaging.requirements import Requirement
from pamqp.heartbeat import Heartbeat
from pydantic import SecretStr

from eventworker.amqp import frames
from eventworker.amqp.connection import connect
from eventworker.amqp.delivery import Delivery
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.raw_amqp import RawClient, properties, shortstr

ROOT = Path(__file__).resolve().parents[2]


def test_eventworker_connections_install_its_frame_receiver() -> None:
    assert aiormq.connection.FrameReceiver is frames.FrameReceiver
    frames.install()  # idempotent
    assert aiormq.connection.FrameReceiver is frames.FrameReceiver


def test_aiormq_still_builds_its_receiver_from_the_module_global() -> None:
    source = inspect.getsource(aiormq.connection.Connection.connect)
    assert "frame_receiver = FrameReceiver(reader)" in source
    assert "frame_receiver.get_frame()" in source
    assert "self.__reader(frame_receiver)" in source


def test_the_installed_aiormq_and_pamqp_are_the_pinned_ones() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {r.name: r for r in map(Requirement, project["dependencies"])}
    for name in ("aiormq", "pamqp"):
        assert pins[name].specifier.contains(version(name)), (name, version(name))


async def test_a_live_connection_reads_a_header_pamqp_cannot_decode(
    broker: Broker, settings: Settings
) -> None:
    queue = f"{settings.queue_prefix}hook"
    channel = await broker.connection.channel()
    await channel.declare_queue(queue, arguments={"x-queue-type": "classic"})
    await channel.close()
    broker._queues.add(queue)
    raw = await RawClient.open(settings.url.get_secret_value())
    try:
        await raw.publish("", queue, b"{}", properties(content_type=shortstr(b"text/\xe9")))
    finally:
        await raw.close()
    url = SecretStr(settings.url.get_secret_value())
    connection = await connect(url, role="test", timeout=5, heartbeat=10)
    try:
        underlay = await (await connection.channel()).get_underlay_channel()
        delivery = Delivery(await underlay.basic_get(queue, no_ack=True))
        assert delivery.undecodable is not None and "content_type" in delivery.undecodable
        assert not connection.is_closed
    finally:
        await connection.close()


async def _receive(data: bytes, *, eof: bool = True) -> object:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return await frames.FrameReceiver(reader).get_frame()


async def test_the_receiver_reads_frames_and_fails_as_aiormqs_own_does() -> None:
    heartbeat = await _receive(Heartbeat.marshal(), eof=False)
    assert isinstance(heartbeat, tuple) and isinstance(heartbeat[2], Heartbeat)
    with pytest.raises(ProtocolSyntaxError, match="protocol header"):
        await _receive(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
        await _receive(Heartbeat.marshal()[:5])
    with pytest.raises(StopAsyncIteration):
        await _receive(b"")
    with pytest.raises(InvalidFrameError):  # the frame-end octet is not 0xCE
        await _receive(b"\x03\x00\x01\x00\x00\x00\x02ab\x00")
