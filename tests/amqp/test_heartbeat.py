"""A connection whose broker goes silent fails with a connection error naming the missed
heartbeat, as any dead connection does: never with the bare ``CancelledError`` aiormq hands its
waiters, which its caller would take for a cancel of its own task. The silence is made by a TCP
proxy that drops every byte and keeps both sockets open (tests/support/proxy.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiormq.exceptions import AMQPConnectionError
from pydantic import SecretStr
from yarl import URL

from eventworker.amqp.connection import connect
from tests.support.proxy import Proxy

HEARTBEAT = 1
#: aiormq's heartbeat grace: (heartbeat + 1) x 3 seconds without a frame.
GRACE = (HEARTBEAT + 1) * 3


@pytest.fixture
def proxy(broker_url: str) -> Iterator[Proxy]:
    target = URL(broker_url)
    with Proxy(target.host or "127.0.0.1", target.port or 5672) as running:
        yield running


async def test_a_silent_broker_fails_the_connection_with_an_error_naming_the_heartbeat(
    proxy: Proxy, broker_url: str
) -> None:
    connection = await connect(
        SecretStr(proxy.url(broker_url)), role="test", timeout=5, heartbeat=HEARTBEAT
    )
    closed: list[BaseException | None] = []
    connection.close_callbacks.add(lambda _, exc: closed.append(exc))
    try:
        channel = await connection.channel()
        proxy.blackhole()
        silent_since = time.monotonic()
        with pytest.raises(AMQPConnectionError, match="heartbeat missed"):
            # Waits, unanswered, until the connection is given up.
            await asyncio.wait_for(channel.declare_queue(exclusive=True), GRACE + 10)
        took = time.monotonic() - silent_since
    finally:
        proxy.pass_through()
        await connection.close()

    assert GRACE - 1 <= took <= GRACE + 5
    assert len(closed) == 1 and isinstance(closed[0], AMQPConnectionError), closed


async def test_a_connection_closed_while_quiet_is_closed_cleanly(
    proxy: Proxy, broker_url: str
) -> None:
    """A close of a healthy connection, the broker's heartbeats arriving, is no error."""
    connection = await connect(
        SecretStr(proxy.url(broker_url)), role="test", timeout=5, heartbeat=HEARTBEAT
    )
    closed: list[BaseException | None] = []
    connection.close_callbacks.add(lambda _, exc: closed.append(exc))
    await connection.channel()
    await asyncio.sleep(GRACE + 1)  # quiet, but for heartbeats
    await connection.close()
    assert closed and not any("heartbeat" in str(exc) for exc in closed), closed
