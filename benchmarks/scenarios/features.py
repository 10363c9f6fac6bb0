"""The cost of real features: a worker draining 10-field orders with a pydantic model, JSON
logs, metrics and the inbox switched on one after another, against the no-op and raw aio-pika."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks.consumers import Consumer, Raw, Target, Worker
from benchmarks.consumption import drain
from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.plugin_features import order_body
from benchmarks.procs import Child
from eventworker.settings import InboxSettings
from tests.support.stores import drop

#: The stores of the inbox cases; PostgreSQL and Redis where the tests find them, unless set.
PG_DSN = os.environ.get("EVENTWORKER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EVENTWORKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The cases drain half the profile's drain backlog; the inbox cases a tenth (a store round
#: trip or two per message: PostgreSQL commits each claim and done mark).
SHARE, INBOX_SHARE = 2, 10
#: What ``--log-format json`` and ``--log-level INFO`` add to the model case.
JSON_LOGS = ("--log-format", "json", "--log-level", "INFO")

GROUP = Group(
    "features",
    "Features: pre-published 10-field ~300-byte orders, prefetch 128, concurrency 16",
    (
        Metric("cpu_us_per_msg", "consumer CPU µs/msg", "lower"),
        Metric("msgs_per_s", "msgs/s", "higher"),
        Metric("peak_rss_mb", "peak RSS MB", "lower"),
    ),
    "The drain of the drain group (half its backlog) with features switched on one after "
    "another, each on top of the one before: a handler taking a pydantic model of 10 fields; "
    "JSON logs at INFO (the worker writes no line for a handling that succeeds); plus "
    "--metrics-port; then either the handler writing one INFO line per event through "
    "ctx.logger, or the inbox "
    "(idempotent=True) on SQLite, PostgreSQL or Redis, draining a tenth of the backlog. x: "
    "against raw aio-pika acking each without awaiting the write, filled with the same bodies; "
    "the derived figures give each against the no-op handler.",
)


@dataclass(frozen=True, slots=True)
class Orders:
    """``consumer``, its queue filled with :func:`order_body` orders instead of the usual body."""

    consumer: Consumer

    @property
    def ready(self) -> str:
        return self.consumer.ready

    @property
    def clean_exit(self) -> bool:
        return self.consumer.clean_exit

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        target = await self.consumer.prepare(bench, scratch, 0)
        await bench.broker.prepublish(target.exchange, count, order_body)
        return target

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        return self.consumer.start(bench, scratch, target, probe_dir)


@dataclass(frozen=True, slots=True)
class WithInbox(Orders):
    """A worker whose settings name an inbox: ``url`` (``sqlite`` for a file of its own)."""

    url: str = "sqlite"
    name: str = "bench_inbox"

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        target = await Orders.prepare(self, bench, scratch, count)
        assert target.config is not None
        url = f"sqlite:///{scratch / 'inbox.db'}" if self.url == "sqlite" else self.url
        with target.config.open("a") as config:
            config.write(f'\n[inbox]\nurl = "{url}"\nname = "{self.name}"\n')
        return target


def free_port() -> int:
    """A TCP port nobody listens on now (for ``--metrics-port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metrics() -> tuple[str, ...]:
    return ("--metrics-port", str(free_port()))


async def _featured(
    bench: Bench, bench_handler: str, logs: bool = False, with_metrics: bool = False
) -> Sample:
    args = (*(JSON_LOGS if logs else ()), *(metrics() if with_metrics else ()))
    return await _orders(bench, Worker((bench_handler,), args=args))


async def _orders(bench: Bench, consumer: Consumer) -> Sample:
    return await drain(bench, Orders(consumer), count=bench.profile.drain // SHARE)


async def _inbox(bench: Bench, url: str) -> Sample:
    """Model, JSON logs, metrics and the inbox at ``url``; its table or keys dropped after."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    worker = Worker(("bench_model_idempotent",), args=(*JSON_LOGS, *metrics()))
    try:
        inbox = WithInbox(worker, url=url, name=name)
        return await drain(bench, inbox, count=bench.profile.drain // INBOX_SHARE)
    finally:
        if url != "sqlite":
            await drop(InboxSettings.model_validate({"url": url, "name": name}))


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "raw-nowait",
            "raw aio-pika, ack each without awaiting the write (wait=False)",
            partial(_orders, consumer=Raw("nowait")),
            baseline=True,
        ),
        case(
            "noop",
            "eventworker run, no-op handler (Event[Any])",
            partial(_featured, bench_handler="bench_noop"),
        ),
        case(
            "model",
            "pydantic model, 10 fields",
            partial(_featured, bench_handler="bench_model"),
        ),
        case(
            "model-json",
            "model + --log-format json --log-level INFO",
            partial(_featured, bench_handler="bench_model", logs=True),
        ),
        case(
            "model-json-metrics",
            "model + JSON logs + --metrics-port",
            partial(_featured, bench_handler="bench_model", logs=True, with_metrics=True),
        ),
        case(
            "model-json-metrics-line",
            "model + JSON logs + metrics + the handler logs one INFO line per event",
            partial(_featured, bench_handler="bench_model_logged", logs=True, with_metrics=True),
        ),
        case(
            "inbox-sqlite",
            "model + JSON logs + metrics + inbox on SQLite",
            partial(_inbox, url="sqlite"),
        ),
        case(
            "inbox-postgres",
            "model + JSON logs + metrics + inbox on PostgreSQL",
            partial(_inbox, url=PG_DSN),
        ),
        case(
            "inbox-redis",
            "model + JSON logs + metrics + inbox on Redis",
            partial(_inbox, url=REDIS_URL),
        ),
    ]
