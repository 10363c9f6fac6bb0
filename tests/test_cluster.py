"""Beyond one machine: workers and the publish CLI on a local three-node RabbitMQ cluster.

The cluster is three private nodes started by scripts/cluster.sh (never the shared broker on
5672). Node losses are real: ``rabbitmqctl stop_app`` on the node a worker is connected to, or
on the node that leads a work queue; every confirmed event must still be processed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from eventworker import Context, Event, handler
from eventworker.publishing.channel import ConfirmChannel, Outgoing
from eventworker.settings import Settings
from eventworker.worker.lifecycle import State, Worker
from tests.support.broker import registrations, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cluster.sh"
EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        shutil.which("rabbitmq-server") is None
        or shutil.which("rabbitmqctl") is None
        or os.geteuid() != 0,
        reason="the cluster tests start private RabbitMQ nodes: need rabbitmq-server, "
        "rabbitmqctl and root",
    ),
]


#: The script's default node names and ports (EW_CLUSTER_NAME / EW_CLUSTER_PORT move them).
CLUSTER_NAME = "ew-c"
CLUSTER_PORT = 5701


def node(n: int) -> str:
    return f"{CLUSTER_NAME}{n}@localhost"


def ctl(n: int, *args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", "-n", node(n), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


@pytest.fixture(scope="session")
def cluster() -> Iterator[list[str]]:
    """The three nodes' AMQP URLs (node 1 first); the cluster is stopped at the end."""
    # Not under pytest's tmp_path: that is private to root, and the nodes run as rabbitmq.
    folder = Path(tempfile.mkdtemp(prefix="eventworker-cluster-"))
    folder.chmod(0o755)
    env = {
        **os.environ,
        "EW_CLUSTER_DIR": str(folder),
        "EW_CLUSTER_NAME": CLUSTER_NAME,
        "EW_CLUSTER_PORT": str(CLUSTER_PORT),
    }
    started = subprocess.run(
        [str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=600
    )
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip().splitlines()[-1].split(",")
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=300, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def all_nodes_up(cluster: list[str]) -> Iterator[list[str]]:
    """Every node running before and after the test, whatever the test stopped."""
    yield cluster
    for n in (1, 2, 3):
        ctl(n, "start_app")
    ctl(1, "await_online_nodes", "3")


def on(urls: list[str], *order: int) -> str:
    """The URL list in the given node order, comma-separated."""
    return ",".join(urls[n - 1] for n in order)


def cluster_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    return settings.model_copy(
        update={"url": type(settings.url)(url), "connect_timeout": 5.0, "heartbeat": 5, **extra}
    )


class Seen:
    """Which ids a handler processed, and how often."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.calls = 0

    def handler(self, key: str, **options: Any) -> Any:
        @handler(key, name="counted", **options)
        async def counted(event: Event[Any], ctx: Context) -> None:
            self.ids.add(event.id)
            self.calls += 1

        return counted


async def publish_many(url: str, settings: Settings, key: str, count: int) -> list[str]:
    """Publish ``count`` events through ``url``; the ids the broker confirmed."""
    events = [Outgoing(key, f'{{"n": {n}}}'.encode(), f"id-{n}") for n in range(count)]
    async with ConfirmChannel.connect(url, exchange=settings.exchange, timeout=30) as publisher:
        results = await publisher.send_many(events, window=256)
    return [r.event_id for r in results if r.ok]


async def run_worker(worker: Worker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.run())
    await worker.wait_ready(60)
    return task


async def stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, 60)


async def test_workers_keep_processing_while_their_node_stops(
    all_nodes_up: list[str], settings: Settings
) -> None:
    urls = all_nodes_up
    s = cluster_settings(settings, on(urls, 1, 2, 3))
    seen = Seen()
    worker = Worker(registrations(seen.handler("load.#")), s)
    task = await run_worker(worker)
    try:
        publishing = asyncio.create_task(publish_many(urls[2], s, "load.event", 10_000))
        await wait_for(lambda: len(seen.ids) >= 3_000, 120)
        stopped = time.monotonic()
        ctl(1, "stop_app")  # the node the worker is connected to
        await wait_for(lambda: worker.reconnects == 1, 60)
        await worker.wait_ready(60)
        restored = time.monotonic() - stopped
        confirmed = await publishing
        await wait_for(lambda: set(confirmed) <= seen.ids, 180)
    finally:
        await stop_worker(worker, task)
    assert len(confirmed) == 10_000
    assert seen.ids <= {f"id-{n}" for n in range(10_000)}
    assert restored < 15, f"consumers restored after {restored:.1f}s"
    # The only duplicates the ledger explains: deliveries in flight (at most a prefetch's
    # worth) when the connection died, redelivered to the reconnected consumer.
    assert seen.calls - len(seen.ids) <= worker.routes[0].prefetch * worker.reconnects


async def test_workers_keep_processing_while_the_queue_leader_stops(
    all_nodes_up: list[str], settings: Settings
) -> None:
    urls = all_nodes_up
    s = cluster_settings(settings, on(urls, 1, 2, 3))
    seen = Seen()
    regs = registrations(seen.handler("lead.#"))
    # Declared first through node 2: quorum queues get their leader on the declaring node.
    leader_first = Worker(regs, cluster_settings(settings, on(urls, 2)))
    await stop_worker(leader_first, await run_worker(leader_first))
    queue = leader_first.routes[0].queue
    assert (
        node(2)
        in ctl(1, "list_queues", "name", "leader", "--no-table-headers")
        .split(queue, 1)[1]
        .splitlines()[0]
    )
    seen.ids.clear()
    seen.calls = 0
    worker = Worker(regs, s)  # connected to node 1
    task = await run_worker(worker)
    try:
        publishing = asyncio.create_task(publish_many(urls[2], s, "lead.event", 10_000))
        await wait_for(lambda: len(seen.ids) >= 3_000, 120)
        ctl(2, "stop_app")
        confirmed = await publishing
        await wait_for(lambda: set(confirmed) <= seen.ids, 180)
        assert worker.state is State.RUNNING
    finally:
        await stop_worker(worker, task)
    assert len(confirmed) == 10_000
    assert seen.ids <= {f"id-{n}" for n in range(10_000)}
    # A new leader keeps the replicated record of what is unacked: at most what was in flight
    # comes again.
    assert seen.calls - len(seen.ids) <= worker.routes[0].prefetch


async def test_the_publish_cli_keeps_publishing_through_a_node_loss(
    all_nodes_up: list[str], settings: Settings, tmp_path: Path
) -> None:
    urls = all_nodes_up
    connection = await aio_pika.connect(urls[2])
    channel = await connection.channel()
    exchange = await channel.declare_exchange(settings.exchange, "topic", durable=True)
    queue = await channel.declare_queue(
        f"{settings.queue_prefix}sink", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, "bulk.#")
    events = tmp_path / "bulk.jsonl"
    events.write_text("".join(f'{{"n": {n}}}\n' for n in range(10_000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env.update(EVENTWORKER_URL=on(urls, 1, 2, 3), EVENTWORKER_EXCHANGE=settings.exchange)
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "publish",
        "bulk.load",
        "--file",
        str(events),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )

    async def depth() -> int:
        declared = await channel.declare_queue(queue.name, passive=True)
        return declared.declaration_result.message_count or 0

    deadline = time.monotonic() + 60
    # Polls the broker: there is no event to await for "1,000 messages arrived".
    while await depth() < 1_000 and process.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    ctl(1, "stop_app")  # the node the CLI publishes through
    out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), 300)
    out, err = out_bytes.decode(), err_bytes.decode()
    confirmed = int(out.split(": ")[1].split(" confirmed")[0])
    failed = [line for line in err.splitlines() if line.startswith("not published")]
    listed = len(failed) + (int(err.rsplit("and ", 1)[1].split()[0]) if "more not" in err else 0)
    assert confirmed + listed == 10_000, (out, err)
    assert process.returncode == (0 if confirmed == 10_000 else 1)
    await asyncio.sleep(1)
    assert await depth() >= confirmed  # nothing confirmed is missing (duplicates allowed)
    await connection.close()


async def test_a_single_active_consumer_keeps_order_across_a_failover(
    all_nodes_up: list[str], settings: Settings
) -> None:
    urls = all_nodes_up
    order: list[tuple[str, int]] = []

    def make(worker_name: str) -> Any:
        @handler("seq.#", name="ordered", single_active_consumer=True)
        async def ordered(event: Event[dict[str, int]], ctx: Context) -> None:
            order.append((worker_name, event.data["n"]))
            await asyncio.sleep(0.001)

        return ordered

    first = Worker(registrations(make("w1")), cluster_settings(settings, on(urls, 1, 2, 3)))
    second = Worker(registrations(make("w2")), cluster_settings(settings, on(urls, 2, 3, 1)))
    tasks = [await run_worker(first), await run_worker(second)]
    try:
        async with ConfirmChannel.connect(urls[2], exchange=settings.exchange) as publisher:
            for n in range(2_000):
                await publisher.publish("seq.n", {"n": n}, id=f"s{n}")
        await wait_for(lambda: len(order) >= 500, 60)
        active = order[-1][0]
        assert {w for w, _ in order} == {active}, "one consumer at a time"
        before_failover = len(order)
        ctl(1 if active == "w1" else 2, "stop_app")  # the active consumer's node
        await wait_for(lambda: len({n for _, n in order}) == 2_000, 180)
    finally:
        for worker, task in zip((first, second), tasks, strict=True):
            await stop_worker(worker, task)
    firsts: dict[int, int] = {}
    for position, (_, n) in enumerate(order):
        firsts.setdefault(n, position)
    by_first_delivery = sorted(firsts, key=firsts.__getitem__)
    assert by_first_delivery == list(range(2_000)), "the order of first deliveries changed"
    assert len(order) > before_failover
    # Which worker is active after the failover is the broker's choice (the reconnected one
    # may queue up first); the order holds either way.
