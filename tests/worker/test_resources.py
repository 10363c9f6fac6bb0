"""Plugins' resources in a worker against the real broker: entered once before consuming, handed
to handlers by type, left after the drain in reverse order, also when start-up fails."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from eventworker import Context, Event, handler
from eventworker.errors import BrokerUnreachableError, ExitCode, ResourceError
from eventworker.handlers import Handler, Resource, resource
from eventworker.plugins.discovery import Registration
from eventworker.settings import Settings
from eventworker.worker.lifecycle import Worker
from tests.support.broker import TEST_PLUGIN, Broker, wait_for
from tests.support.cli import EVENTWORKER, env_for
from tests.support.distributions import install


class Pool:
    def __init__(self, log: list[str]) -> None:
        self.log = log


class Client:
    def __init__(self, log: list[str]) -> None:
        self.log = log


def _declare(log: list[str], *, client_fails: bool = False) -> tuple[Resource[Pool], Resource[Any]]:
    @resource
    async def pool() -> AsyncIterator[Pool]:
        log.append("enter pool")
        try:
            yield Pool(log)
        finally:
            log.append("leave pool")

    @resource
    def client() -> Iterator[Client]:
        if client_fails:
            raise ConnectionRefusedError("client service down")
        log.append("enter client")
        yield Client(log)
        log.append("leave client")

    return pool, client


def _worker(handlers: list[Handler], settings: Settings, *declared: Resource[Any]) -> Worker:
    plugin = dataclasses.replace(TEST_PLUGIN, resources=declared)
    return Worker([Registration(h, plugin) for h in handlers], settings)


async def test_resources_are_entered_before_consuming_and_left_after_the_drain_in_reverse(
    broker: Broker, settings: Settings
) -> None:
    log: list[str] = []
    release = asyncio.Event()

    @handler("res.event")
    async def uses(event: Event[Any], ctx: Context) -> None:
        pool, client = ctx.resource(Pool), ctx.resource(Client)
        pool.log.append(f"handling with {type(pool).__name__} and {type(client).__name__}")
        await release.wait()
        log.append("handled")

    @handler("res.other")
    def other(event: Event[Any], ctx: Context) -> None:
        ctx.resource(Pool).log.append("other handler, same pool")

    worker = _worker([uses, other], settings, *_declare(log))
    broker.track(worker)
    task = asyncio.create_task(worker.run())
    await worker.wait_ready(30)
    assert log == ["enter pool", "enter client"], "entered once, before consuming"
    await broker.publish("res.event", b"{}", message_id="r1")
    await broker.publish("res.other", b"{}", message_id="r2")
    await wait_for(lambda: "other handler, same pool" in log and worker.in_flight == 1)
    worker.stop()
    await asyncio.sleep(0.2)
    assert "leave client" not in log, "left only after the drain"
    release.set()
    await asyncio.wait_for(task, 30)
    assert log[-3:] == ["handled", "leave client", "leave pool"]
    assert log.count("enter pool") == 1
    assert await broker.count(worker.routes[0].queue) == 0


async def test_a_resource_that_fails_to_start_stops_start_up_and_leaves_those_entered(
    broker: Broker, settings: Settings
) -> None:
    log: list[str] = []

    @handler("res.failing")
    async def never(event: Event[Any], ctx: Context) -> None:
        raise AssertionError("must not run")

    worker = _worker([never], settings, *_declare(log, client_fails=True))
    broker.track(worker)
    with pytest.raises(ResourceError) as info:
        await asyncio.wait_for(worker.run(), 30)
    assert info.value.exit_code == ExitCode.PLUGIN
    message = str(info.value)
    assert "plugin 'tests'" in message and "resource client (Client)" in message
    assert "ConnectionRefusedError: client service down" in message
    assert log == ["enter pool", "leave pool"]
    # Nothing was declared nor consumed: start-up stopped before connecting.
    with pytest.raises(Exception, match="NOT_FOUND"):
        await broker.count(worker.routes[0].queue)


async def test_resources_are_left_when_the_broker_cannot_be_reached_at_start(
    settings: Settings,
) -> None:
    log: list[str] = []

    @handler("res.unreachable")
    async def never(event: Event[Any], ctx: Context) -> None:
        raise AssertionError("must not run")

    unreachable = settings.model_copy(
        update={"url": SecretStr("amqp://guest:guest@127.0.0.1:1/"), "connect_timeout": 2.0}
    )
    worker = _worker([never], unreachable, *_declare(log))
    with pytest.raises(BrokerUnreachableError):
        await asyncio.wait_for(worker.run(), 30)
    assert log == ["enter pool", "enter client", "leave client", "leave pool"]


async def test_a_stand_in_replaces_the_plugins_resource_which_is_not_entered(
    broker: Broker, settings: Settings
) -> None:
    log: list[str] = []
    seen: list[Any] = []
    fake = Pool(["fake"])

    @handler("res.fake")
    async def uses(event: Event[Any], ctx: Context) -> None:
        seen.append(ctx.resource(Pool))

    pool, _ = _declare(log)
    plugin = dataclasses.replace(TEST_PLUGIN, resources=(pool,))
    worker = Worker([Registration(uses, plugin)], settings, resources={Pool: fake})
    broker.track(worker)
    task = asyncio.create_task(worker.run())
    await worker.wait_ready(30)
    await broker.publish("res.fake", b"{}", message_id="f1")
    await wait_for(lambda: len(seen) == 1)
    worker.stop()
    await asyncio.wait_for(task, 30)
    assert seen == [fake] and log == []


def test_run_exits_4_with_one_error_line_naming_plugin_resource_and_error(
    settings: Settings, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    source = (
        "from collections.abc import AsyncIterator\n"
        "from eventworker import Context, Event, handler\n"
        "from eventworker import resource\n\n"
        "class Database: ...\n\n"
        "@resource\n"
        "async def database() -> AsyncIterator[Database]:\n"
        "    raise OSError('connection refused by db.internal:5432')\n"
        "    yield Database()\n\n"
        "@handler('res.cli')\n"
        "async def uses(event: Event[object], ctx: Context) -> None:\n"
        "    ctx.resource(Database)\n"
    )
    install(
        site,
        distribution="acme-res",
        entry_points={"eventworker.handlers": "res = acme_res_plugin"},
        files={"acme_res_plugin.py": source},
    )
    env = env_for(settings, EVENTWORKER_PLUGINS="res", PYTHONPATH=str(site))
    result = subprocess.run(
        [EVENTWORKER, "run"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == ExitCode.PLUGIN, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: plugin 'res' (distribution acme-res): resource database (Database) failed to "
        "start: OSError: connection refused by db.internal:5432"
    ]
