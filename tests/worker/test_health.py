"""/healthz and /readyz of a running worker: ready only while it consumes every queue."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from eventworker import Context, Event, handler
from eventworker.amqp.connection import connect
from eventworker.errors import ConfigError
from eventworker.settings import Settings
from eventworker.worker import lifecycle as worker_module
from eventworker.worker.health import serving
from eventworker.worker.lifecycle import State, Worker
from tests.support.broker import (
    Broker,
    close_worker_connections,
    needs_rabbitmqctl,
    registrations,
    running,
    wait_for,
)


async def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def until_status(port: int, path: str, status: int, timeout: float = 20) -> dict[str, Any]:
    """Poll ``path`` until it answers ``status``; its body then."""

    async def poll() -> dict[str, Any]:
        while True:
            got, body = await get(port, path)
            if got == status:
                return body
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


@needs_rabbitmqctl
async def test_readyz_turns_unready_when_the_connection_closes_and_ready_after_reconnect(
    broker: Broker, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    @handler("ready.event")
    async def ready(event: Event[Any], ctx: Context) -> None:
        pass

    # A reconnect on loopback can finish between two polls; a slow one (as across a network)
    # leaves an unready window the poll cannot miss. The first session connects at once.
    connections = 0

    async def slow_reconnect(*args: Any, **kwargs: Any) -> Any:
        nonlocal connections
        connections += 1
        if connections > 2:  # a session opens two: consuming and publishing
            await asyncio.sleep(1.5)
        return await connect(*args, **kwargs)

    monkeypatch.setattr(worker_module, "connect", slow_reconnect)
    async with (
        running(broker, [ready], settings) as worker,
        serving(worker, None, host="127.0.0.1", port=0) as port,
    ):
        status, body = await get(port, "/readyz")
        assert status == 200
        assert body == {
            "ready": True,
            "state": "running",
            "consuming": {worker.routes[0].queue: True},
        }
        await asyncio.to_thread(close_worker_connections)
        unready = await until_status(port, "/readyz", 503)
        assert unready["ready"] is False
        assert (await get(port, "/healthz"))[0] == 200  # alive all along: no restart wanted
        back = await until_status(port, "/readyz", 200)
        assert back["state"] == "running"
        assert worker.reconnects == 1


async def test_readyz_is_unready_while_draining_and_healthz_stays_alive(
    broker: Broker, settings: Settings
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    @handler("drain.event")
    async def slow(event: Event[Any], ctx: Context) -> None:
        started.append(event.id)
        await release.wait()

    async with (
        running(broker, [slow], settings) as worker,
        serving(worker, None, host="127.0.0.1", port=0) as port,
    ):
        assert (await get(port, "/readyz"))[0] == 200
        await broker.publish("drain.event", b"{}", message_id="d1")
        await wait_for(lambda: started == ["d1"])
        worker.stop()
        body = await until_status(port, "/readyz", 503, timeout=5)
        await wait_for(lambda: worker.state is State.DRAINING)
        status, alive = await get(port, "/healthz")
        assert (status, alive["alive"]) == (200, True)
        assert body["ready"] is False
        release.set()


def test_a_port_that_cannot_be_bound_is_a_config_error_naming_it(settings: Settings) -> None:
    @handler("port.event")
    async def port_user(event: Event[Any], ctx: Context) -> None:
        pass

    worker = Worker(registrations(port_user), settings)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def bind() -> None:
        async with serving(worker, None, host="127.0.0.1", port=port):
            pass

    try:
        with pytest.raises(ConfigError) as caught:
            asyncio.run(bind())
    finally:
        taken.close()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "metrics_port" in str(caught.value)
