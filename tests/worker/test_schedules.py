"""Periodic events on the real broker: `eventworker run` processes elect one emitter, each tick
is published once (by message id) across a SIGKILL of the emitter, and catch_up decides what a
stop spanning ticks gives."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pydantic import SecretStr

from eventworker.settings import Settings
from eventworker.topology import layout
from eventworker.worker.emitter import CAUGHT_UP_HEADER
from tests.support import distributions
from tests.support.broker import Broker

ROOT = Path(__file__).resolve().parents[2]
NOW_EMITTER = "this worker is now the emitter"
NO_LONGER = "this worker is no longer the emitter"


#: A plugin whose module declares the every-second schedule and a handler of its ticks.
TICKS_PLUGIN = """
import os

from eventworker import Context, Event, handler, schedule


@schedule(
    "* * * * * *",
    os.environ["TICKS_KEY"],
    name="every-second",
    data={"hello": "tick"},
    catch_up=os.environ["TICKS_CATCH_UP"],
)
@handler(os.environ["TICKS_KEY"], name="ticker")
async def ticker(event: Event[dict[str, str]], ctx: Context) -> None:
    pass
"""


class Fleet:
    """`eventworker run` processes with one every-second schedule: declared by a plugin
    (``ticks``, with its handler ``ticker``) or in the settings (next to the example plugin's
    ``greet``)."""

    def __init__(
        self, settings: Settings, folder: Path, routing_key: str, catch_up: str, *, plugin: bool
    ) -> None:
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
        self.env.update(
            EVENTWORKER_URL=settings.url.get_secret_value(),
            EVENTWORKER_EXCHANGE=settings.exchange,
            EVENTWORKER_QUEUE_PREFIX=settings.queue_prefix,
            EVENTWORKER_LOG_LEVEL="INFO",
        )
        if plugin:
            site = folder / "site"
            distributions.install(
                site,
                distribution="ticks-plugin",
                entry_points={"eventworker.handlers": "ticks = ticks_plugin.handlers"},
                files={"ticks_plugin/handlers.py": TICKS_PLUGIN},
            )
            self.env.update(
                PYTHONPATH=str(site),
                EVENTWORKER_PLUGINS="ticks",
                TICKS_KEY=routing_key,
                TICKS_CATCH_UP=catch_up,
            )
            self.args = ["run"]
        else:
            schedule = {
                "name": "every-second",
                "cron": "* * * * * *",
                "routing_key": routing_key,
                "data": {"hello": "tick"},
                "catch_up": catch_up,
            }
            self.env["EVENTWORKER_SCHEDULES"] = json.dumps([schedule])
            self.args = ["run", "--handler", "greet"]
        self.started = 0
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = self.folder / f"worker-{self.started}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "eventworker", *self.args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        self.processes.append((process, log))
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return next(p[1] for p in self.processes if p[0] is process).read_text()

    def emitters(self) -> list[subprocess.Popen[bytes]]:
        """The running processes whose log says they are the emitter now."""
        found = []
        for process, log in self.processes:
            text = log.read_text()
            if process.poll() is None and text.rfind(NOW_EMITTER) > text.rfind(NO_LONGER):
                found.append(process)
        return found

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, self.log(process)

    def kill_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def fleet_of(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(routing_key: str, catch_up: str, *, plugin: bool = False) -> Fleet:
        fleet = Fleet(settings, tmp_path, routing_key, catch_up, plugin=plugin)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.kill_all()


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.1)


async def _tick_queue(broker: Broker, settings: Settings, routing_key: str) -> str:
    """A queue of the test's own bound to the ticks' routing key."""
    name = f"{settings.queue_prefix}ticks"
    channel = await broker.connection.channel()
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, routing_key)
    await channel.close()
    broker._queues.update({name, f"{settings.queue_prefix}schedules.leader"})
    for handler in ("greet", "ticker"):
        broker._queues.update(
            {f"{settings.queue_prefix}{handler}", f"{settings.queue_prefix}{handler}.dead"}
        )
    # The retry tiers the workers declare, shared by their handlers.
    broker._queues.update(
        layout.retry_queue(settings.queue_prefix, d) for d in settings.retry.delays
    )
    return name


def _listing(fleet: Fleet) -> dict[str, Any]:
    """What `eventworker schedules --json --next 2` says with the fleet's settings."""
    listing = subprocess.run(
        [sys.executable, "-m", "eventworker", "schedules", "--json", "--next", "2"],
        env=fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    document: dict[str, Any] = json.loads(listing.stdout)
    return document


def _tick(message_id: str) -> datetime:
    name, _, when = message_id.partition("@")
    assert name == "every-second"
    return datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def _ticks(broker: Broker, queue: str) -> list[tuple[datetime, bool]]:
    taken = await broker.take_all(queue)
    return [
        (_tick(m.message_id or ""), bool((m.headers or {}).get(CAUGHT_UP_HEADER))) for m in taken
    ]


def _holes(ticks: list[datetime]) -> list[datetime]:
    """The seconds missing between the first and the last tick."""
    present = set(ticks)
    second, last, missing = min(ticks), max(ticks), []
    while second < last:
        second += timedelta(seconds=1)
        if second not in present:
            missing.append(second)
    return missing


@pytest.mark.timeout(180)
async def test_three_workers_one_killed_emit_each_tick_once(
    broker: Broker, settings: Settings, fleet_of: Callable[..., Fleet], prefix: str
) -> None:
    key = f"{prefix}.tick"
    queue = await _tick_queue(broker, settings, key)
    fleet = fleet_of(key, "all", plugin=True)
    workers = [fleet.start() for _ in range(3)]
    await _until(lambda: len(fleet.emitters()) == 1, 60, "one emitter")
    document = _listing(fleet)
    (row,) = document["schedules"]
    assert (row["name"], row["source"], len(row["next"])) == (
        "every-second",
        "plugin 'ticks'",
        2,
    )
    # Without management_url AMQP tells that a worker is active, not which one (nor how many
    # wait: a single-active-consumer queue counts its active consumer only).
    assert document["emitter"]["detail"].startswith("unknown: a worker is the emitter")
    await asyncio.sleep(3)
    (first,) = fleet.emitters()
    killed_at = datetime.now(UTC)
    first.kill()  # SIGKILL: no drain, no goodbye; the broker hands the token on
    first.wait()
    await _until(lambda: len(fleet.emitters()) == 1, 30, "a new emitter")
    (second,) = fleet.emitters()
    assert second is not first
    await asyncio.sleep(4)
    # The standby first, then the emitter: no handover while stopping.
    for process in [w for w in workers if w not in (first, second)] + [second]:
        fleet.stop(process)
    assert NO_LONGER in fleet.log(second)
    # One token is left in the queue: the seeds of the three starts and the killed emitter's
    # token were absorbed into the state of the last one.
    await broker.wait_count(f"{settings.queue_prefix}schedules.leader", 1)

    ticks = await _ticks(broker, queue)
    times = [t for t, _ in ticks]
    # Ticks on both sides of the kill (about 3 s before it, 4 s after the new emitter).
    assert min(times) <= killed_at - timedelta(seconds=2), (min(times), killed_at)
    assert max(times) >= killed_at + timedelta(seconds=3), (max(times), killed_at)
    # No tick missing, none of the 8 s before and after the kill (catch_up "all" publishes the
    # ones due while no worker was the emitter, late).
    assert _holes(times) == []
    # Each tick once. One may come twice, with the same id, and only at the kill: the one the
    # killed emitter published and had not yet recorded in its token (at-least-once; an
    # idempotent handler skips it by id).
    twice = [t for t, n in collections.Counter(times).items() if n > 1]
    assert len(twice) <= 1, twice
    assert all(abs((t - killed_at).total_seconds()) < 3 for t in twice), (twice, killed_at)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("catch_up", ["none", "last", "all"])
async def test_catch_up_after_a_stop_spanning_ticks(
    broker: Broker,
    settings: Settings,
    fleet_of: Callable[..., Fleet],
    prefix: str,
    catch_up: str,
) -> None:
    key = f"{prefix}.tick"
    queue = await _tick_queue(broker, settings, key)
    fleet = fleet_of(key, catch_up)
    worker = fleet.start()
    await _until(lambda: fleet.emitters() == [worker], 60, "the emitter")
    await asyncio.sleep(3)
    fleet.stop(worker)
    before = await _ticks(broker, queue)
    assert before and not any(late for _, late in before)
    stopped_after = max(t for t, _ in before)
    await asyncio.sleep(7)  # ticks pass with no worker running
    worker = fleet.start()
    await _until(lambda: fleet.emitters() == [worker], 60, "the emitter again")
    await asyncio.sleep(3)
    fleet.stop(worker)

    after = await _ticks(broker, queue)
    caught_up = sorted(t for t, late in after if late)
    on_time = sorted(t for t, late in after if not late)
    assert on_time and all(t > stopped_after for t, _ in after)
    gap = _holes([stopped_after, *on_time])
    # The gap: every tick after the last one before the stop and before the first on time.
    missed = [t for t in gap if t < on_time[0]]
    if catch_up == "none":
        assert caught_up == [] and len(missed) >= 5, missed
    elif catch_up == "last":
        # One late tick, the latest of the gap (the next second is the first one on time).
        assert len(caught_up) == 1 and caught_up[0] + timedelta(seconds=1) == on_time[0]
        assert len([t for t in missed if t not in caught_up]) >= 4
    else:
        # Each tick of the gap, late.
        assert caught_up == missed and len(caught_up) >= 5


async def test_an_in_process_worker_emits_and_counts_its_ticks(
    broker: Broker, settings: Settings, prefix: str
) -> None:
    from eventworker import Context, Event, handler
    from eventworker.schedules import schedule
    from eventworker.worker.metrics import Metrics
    from tests.support.broker import running, wait_for

    received: list[str] = []

    @handler(f"{prefix}.beat", name="beat")
    async def beat(event: Event[dict[str, int]], ctx: Context) -> None:
        received.append(event.id)

    metrics = Metrics()
    every = schedule("* * * * * *", f"{prefix}.beat", data={"n": 1}, name="beat")
    async with running(broker, [beat], settings, observers=[metrics], schedules=[every]) as w:
        metrics.watch(w)
        await wait_for(lambda: len(received) >= 3, timeout=20)
        sample = metrics.registry.get_sample_value
        assert sample("eventworker_schedule_emitter") == 1
        emitted = sample(
            "eventworker_schedule_ticks_total", {"schedule": "beat", "outcome": "emitted"}
        )
        assert emitted is not None and emitted >= 3
        assert (
            sample("eventworker_schedule_ticks_total", {"schedule": "beat", "outcome": "missed"})
            == 0
        )
    assert metrics.registry.get_sample_value("eventworker_schedule_emitter") == 0
    assert all(i.startswith("beat@") and i.endswith("Z") for i in received), received
    # The queue keeps one token, with the state, for the next emitter.
    await broker.wait_count(f"{settings.queue_prefix}schedules.leader", 1)


async def test_the_emitter_replaces_its_token_with_no_tick_due(
    broker: Broker, settings: Settings, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ticks the token would stay unacked until the broker's consumer_timeout closed
    the channel: the emitter replaces it every REFRESH seconds (shortened here)."""
    from eventworker import Context, Event, handler
    from eventworker.schedules import schedule
    from eventworker.worker import emitter
    from tests.support.broker import running, wait_for

    monkeypatch.setattr(emitter, "REFRESH", 0.3)
    monkeypatch.setattr(emitter, "MAX_PAUSE", 0.1)

    @handler(f"{prefix}.yearly", name="yearly")
    async def yearly(event: Event[None], ctx: Context) -> None: ...

    new_year = schedule("0 0 1 1 *", f"{prefix}.yearly", name="new-year")
    async with running(broker, [yearly], settings, schedules=[new_year]) as worker:
        elected = worker.emitter
        assert elected is not None
        await wait_for(lambda: elected.active and bool(elected._token), timeout=20)
        first = elected._token
        await wait_for(lambda: elected._token != first, timeout=10)
        # The one it holds is the new one: the old was acked.
        await wait_for(lambda: set(elected._held.values()) == {elected._token}, timeout=10)


async def test_the_emitter_shown_is_the_active_consumer_the_management_api_reports(
    broker: Broker, settings: Settings, prefix: str
) -> None:
    """With management_url, the emitter is the consumer the queue's consumer_details mark
    ``single_active``, named as its client named its connection (an HTTP stand-in answers for
    the management plugin, in the shapes RabbitMQ's API gives; the test after this one asks a
    real one)."""
    from aiohttp import web

    from eventworker import Context, Event, handler
    from eventworker.schedules import schedule
    from eventworker.worker.emitter import elected
    from tests.support.broker import running, wait_for

    leader = f"{settings.queue_prefix}schedules.leader"
    asked: list[str] = []

    async def queue(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        return web.json_response(
            {
                "consumer_details": [
                    {
                        "consumer_tag": "amq.ctag-A",
                        "activity_status": "waiting",
                        "channel_details": {"connection_name": "10.0.0.1:1 -> 10.0.0.9:5672"},
                    },
                    {
                        "consumer_tag": "amq.ctag-B",
                        "activity_status": "single_active",
                        "channel_details": {"connection_name": "10.0.0.2:2 -> 10.0.0.9:5672"},
                    },
                ],
            }
        )

    async def connections(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        return web.json_response(
            [
                {"name": "10.0.0.1:1 -> 10.0.0.9:5672", "user_provided_name": "a"},
                {"name": "10.0.0.2:2 -> 10.0.0.9:5672", "user_provided_name": "b"},
            ]
        )

    app = web.Application()
    app.router.add_get("/api/queues/{vhost}/{name}", queue)
    app.router.add_get("/api/vhosts/{vhost}/connections", connections)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    @handler(f"{prefix}.beat", name="beat")
    async def beat(event: Event[None], ctx: Context) -> None: ...

    every = schedule("* * * * *", f"{prefix}.beat", name="beat")
    try:
        async with running(broker, [beat], settings, schedules=[every]) as worker:
            assert worker.emitter is not None
            await wait_for(lambda: worker.emitter is not None and worker.emitter.active, 20)
            without = await elected(settings)
            assert without.connection is None and without.detail.startswith("unknown: a worker")
            managed = settings.model_copy(
                update={"management_url": SecretStr(f"http://127.0.0.1:{port}")}
            )
            found = await elected(managed)
    finally:
        await runner.cleanup()
    assert (found.connection, found.candidates) == ("b", 2)
    assert asked[0] == f"/api/queues/%2F/{leader}"
    assert asked[1:] == ["/api/vhosts/%2F/connections?columns=name,user_provided_name"]


@pytest.mark.timeout(240)
async def test_the_emitter_is_named_by_a_real_management_api(prefix: str) -> None:
    """Two workers stand for election on a node with the management plugin: the emitter shown
    is one of them, by the name eventworker gave its connection, with two standing."""
    from eventworker import Context, Event, handler
    from eventworker.amqp.connection import connection_name
    from eventworker.schedules import schedule
    from eventworker.settings import load_settings
    from eventworker.worker.emitter import elected
    from tests.support.broker import running, wait_for
    from tests.support.private_node import private_node

    @handler(f"{prefix}.beat", name="beat")
    async def beat(event: Event[None], ctx: Context) -> None: ...

    every = schedule("0 0 1 1 *", f"{prefix}.beat", name="beat")
    with private_node() as node:
        settings = load_settings(
            url=node.url,
            exchange=f"{prefix}.x",
            queue_prefix=f"{prefix}.",
            management_url=f"http://127.0.0.1:{node.management_port}",
            connect_timeout=5.0,
            grace=5.0,
        )
        connection = await aio_pika.connect(node.url)
        broker = Broker(connection, settings)
        try:
            async with (
                running(broker, [beat], settings, schedules=[every]) as first,
                running(broker, [beat], settings, schedules=[every]) as second,
            ):
                await wait_for(
                    lambda: any(
                        w.emitter is not None and w.emitter.active for w in (first, second)
                    ),
                    30,
                )
                # The management API's view lags the broker by its statistics interval.
                found = await elected(settings)
                deadline = time.monotonic() + 30
                while found.candidates != 2 and time.monotonic() < deadline:
                    await asyncio.sleep(1)
                    found = await elected(settings)
        finally:
            await connection.close()
    assert (found.connection, found.candidates) == (connection_name("worker [beat]"), 2), (
        found.detail
    )
