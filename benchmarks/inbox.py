"""What the inbox costs per message: each store against no store, measured in one run.

    .venv/bin/python benchmarks/inbox.py [--messages 2000] [--concurrency 16] [--repeat 3]
                                         [--stores none,memory,sqlite,postgres,redis]

For each variant a worker in this process consumes ``--messages`` events already waiting in its
queue, with a handler that does nothing, so the time is the worker's and the store's alone;
``none`` runs the handler without an inbox (the baseline). Each variant runs ``--repeat`` times
and the best run counts (the least disturbed by other load on the machine). Printed per
variant: events per second, milliseconds per event, the extra milliseconds per event over the
baseline, and the ratio of its time to the baseline's. Then the store alone, without the
broker: one claim plus one done mark, one event after another (round-trip latency).

Needs the RabbitMQ at $EVENTWORKER_URL (default localhost), and for the postgres and redis
variants the servers at $EVENTWORKER_TEST_POSTGRES_URL / $EVENTWORKER_TEST_REDIS_URL (defaults
as in the tests); a store that cannot be reached is reported and left out. Every run uses
names of its own (exchange, queues, table, key prefix) and removes them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventworker import Context, Event, handler  # noqa: E402
from eventworker.amqp.connection import connect  # noqa: E402
from eventworker.errors import EventworkerError  # noqa: E402
from eventworker.inbox.protocol import Key  # noqa: E402
from eventworker.inbox.stores import open_store  # noqa: E402
from eventworker.plugins.resolved import ResolvedHandler  # noqa: E402
from eventworker.publishing.channel import ConfirmChannel, Outgoing  # noqa: E402
from eventworker.settings import InboxSettings, Settings, load_settings  # noqa: E402
from eventworker.topology import declare, layout  # noqa: E402
from eventworker.worker.decisions import Decision  # noqa: E402
from eventworker.worker.lifecycle import Worker  # noqa: E402
from tests.support.broker import registrations  # noqa: E402
from tests.support.stores import POSTGRES_URL, REDIS_URL, drop  # noqa: E402

STORES = ("none", "memory", "sqlite", "postgres", "redis")


@handler("bench.event", idempotent=True)
async def noop(event: Event[Any], ctx: Context) -> None:
    pass


class Counter:
    """Sets ``done`` when ``target`` deliveries were settled."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()

    def received(self, route: ResolvedHandler, event: Event[Any]) -> None:
        pass

    def settled(
        self,
        route: ResolvedHandler,
        event: Event[Any],
        decision: Decision,
        *,
        moved: bool,
        seconds: float,
    ) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


def inbox_settings(store: str, folder: Path) -> InboxSettings:
    url = {
        "none": "memory://",
        "memory": "memory://",
        "sqlite": f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}",
        "postgres": POSTGRES_URL,
        "redis": REDIS_URL,
    }[store]
    return InboxSettings.model_validate({"url": url, "name": f"bench_{uuid.uuid4().hex[:10]}"})


async def consume(base: Settings, store: str, messages: int, folder: Path) -> float:
    """Seconds a worker takes to settle ``messages`` waiting events."""
    tag = uuid.uuid4().hex[:8]
    s = base.model_copy(
        update={
            "exchange": f"bench.{tag}",
            "queue_prefix": f"bench.{tag}.",
            "inbox": inbox_settings(store, folder),
        }
    )
    bench = noop if store != "none" else handler("bench.event", idempotent=False)(noop.func)
    counter = Counter(messages)
    worker = Worker(registrations(bench), s, observers=[counter])
    connection = await connect(s.url, role="benchmark", timeout=10, heartbeat=30)
    try:
        channel = await connection.channel()
        await declare.apply(worker.plan, channel)
        publisher = await ConfirmChannel.open(connection, s.exchange, source="bench", timeout=30)
        body = b'{"order_id": "o-1", "total": 12.5}'
        outgoing = [Outgoing("bench.event", body, f"e{n}") for n in range(messages)]
        assert all(r.ok for r in await publisher.send_many(outgoing))
        task = asyncio.create_task(worker.run())
        await worker.wait_ready()
        started = time.perf_counter()
        await asyncio.wait_for(counter.done.wait(), 600)
        elapsed = time.perf_counter() - started
        worker.stop()
        await task
        for queue in worker.plan.queues:
            await channel.queue_delete(queue.name)
        for name in (s.exchange, layout.return_exchange(s.exchange)):
            await channel.exchange_delete(name)
    finally:
        await connection.close()
        await drop(s.inbox)
    return elapsed


async def round_trips(store: str, folder: Path, events: int) -> float:
    """Milliseconds per claim + done mark, one event after another, without the broker."""
    settings = inbox_settings(store, folder)
    inbox = open_store(settings)
    await inbox.open()
    try:
        started = time.perf_counter()
        for n in range(events):
            key = Key("bench", f"e{n}")
            await inbox.claim(key, body_hash="h", owner="bench", token=str(n), lease=30)
            await inbox.complete(key, token=str(n))
        return (time.perf_counter() - started) * 1000 / events
    finally:
        await inbox.close()
        await drop(settings)


async def main(args: argparse.Namespace) -> None:
    base = load_settings(
        url=os.environ.get("EVENTWORKER_URL"), concurrency=args.concurrency, log_level="ERROR"
    )
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        raise SystemExit(f"unknown store(s): {', '.join(sorted(unknown))}")
    if "none" not in stores:
        stores.insert(0, "none")
    print(
        f"{args.messages} events per run, concurrency {args.concurrency}, best of "
        f"{args.repeat}; a handler that does nothing"
    )
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for store in stores:
            try:
                runs = [
                    await consume(base, store, args.messages, folder) for _ in range(args.repeat)
                ]
            except (EventworkerError, OSError) as exc:
                print(f"{store:<9} left out: {exc}")
                continue
            best[store] = min(runs)
        baseline = best["none"] / args.messages * 1000
        print(f"{'store':<9} {'events/s':>9} {'ms/event':>9} {'+ms/event':>10} {'x none':>7}")
        for store, seconds in best.items():
            per = seconds / args.messages * 1000
            print(
                f"{store:<9} {args.messages / seconds:>9,.0f} {per:>9.3f} "
                f"{per - baseline:>10.3f} {per / baseline:>7.2f}"
            )
        print("store alone, one event after another: claim + done mark")
        for store in best:
            if store != "none":
                ms = await round_trips(store, folder, min(args.messages, 1000))
                print(f"{store:<9} {ms:>9.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES))
    asyncio.run(main(parser.parse_args()))
