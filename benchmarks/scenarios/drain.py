"""Drain throughput: a pre-published backlog consumed by a no-op handler, acked (except the
ceiling), by raw aio-pika, eventworker and the peers."""

from __future__ import annotations

from functools import partial

from benchmarks.consumers import Dramatiq, FastStream, Raw, Worker
from benchmarks.consumption import drain
from benchmarks.harness import Case, Group, Metric

GROUP = Group(
    "drain",
    "Drain: pre-published persistent ~300-byte messages, no-op handler, prefetch 128",
    (
        Metric("msgs_per_s", "msgs/s", "higher"),
        Metric("cpu_us_per_msg", "consumer CPU µs/msg", "lower"),
        Metric("peak_rss_mb", "peak RSS MB", "lower"),
    ),
    "Throughput from the first handled message to the last, the consuming processes' CPU over "
    "the same span per message, and the peak resident memory of all the consumer's processes. "
    "Baseline: raw aio-pika acking each message without awaiting the write, the best raw "
    "consumer that acks each message.",
)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "raw-iterator",
            "raw aio-pika, queue.iterator(), await ack()",
            partial(drain, consumer=Raw("iterator")),
        ),
        case(
            "raw-consume",
            "raw aio-pika, queue.consume(callback), await ack()",
            partial(drain, consumer=Raw("consume")),
        ),
        case(
            "raw-nowait",
            "raw aio-pika, ack each without awaiting the write (wait=False)",
            partial(drain, consumer=Raw("nowait")),
            baseline=True,
        ),
        case(
            "raw-noack",
            "raw aio-pika, no ack: the ceiling (asyncio)",
            partial(drain, consumer=Raw("noack")),
        ),
        case(
            "raw-noack-uvloop",
            "raw aio-pika, no ack: the ceiling (uvloop)",
            partial(drain, consumer=Raw("noack", uvloop=True)),
            venv="uvloop",
        ),
        case(
            "raw-2proc",
            "raw aio-pika, await ack(), 2 processes (uvloop)",
            partial(drain, consumer=Raw("consume", processes=2, uvloop=True)),
            venv="uvloop",
        ),
        case(
            "raw-quorum",
            "raw aio-pika, queue.consume(callback), await ack(), quorum queue",
            partial(drain, consumer=Raw("consume", queue_type="quorum")),
        ),
        case(
            "eventworker",
            "eventworker run, classic queue",
            partial(drain, consumer=Worker()),
        ),
        case(
            "eventworker-quorum",
            "eventworker run, quorum queue (its default)",
            partial(drain, consumer=Worker(queue_type="quorum")),
        ),
        case(
            "eventworker-2proc",
            "eventworker run --processes 2, classic queue",
            partial(drain, consumer=Worker(args=("--processes", "2"))),
            feature="processes",
        ),
        case(
            "faststream",
            "FastStream (default: log lines per message)",
            partial(drain, consumer=FastStream()),
            peer=True,
            venv="faststream",
        ),
        case(
            "faststream-quiet",
            "FastStream, no per-message log",
            partial(drain, consumer=FastStream("quiet")),
            peer=True,
            venv="faststream",
        ),
        case(
            "faststream-bare",
            "FastStream, no per-message log, no FastDepends (apply_types=False)",
            partial(drain, consumer=FastStream("bare")),
            peer=True,
            venv="faststream",
        ),
        case(
            "dramatiq-2x8",
            "Dramatiq default (2 processes x 8 threads)",
            partial(drain, consumer=Dramatiq(processes=2)),
            peer=True,
            venv="dramatiq",
        ),
        case(
            "dramatiq-1x8",
            "Dramatiq, 1 process x 8 threads",
            partial(drain, consumer=Dramatiq(processes=1)),
            peer=True,
            venv="dramatiq",
        ),
    ]
