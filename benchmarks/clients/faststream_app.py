"""FastStream, a peer, in its own virtualenv: ``python -m benchmarks.clients.faststream_app``.

``consume``: a subscriber with a no-op handler on the harness's queue (declared by the harness,
bound to its topic exchange), prefetch 128, FastStream's default acknowledgement (ack after the
handler returns); ``--quiet`` drops the per-message log lines, FastStream's best configuration
here. ``publish``: ``broker.publish`` of each event, persistent, each confirm awaited (its
channels confirm by default). Settings come from ``BENCH_*`` variables.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from benchmarks import probe
from benchmarks.clients import common
from benchmarks.wire import ROUTING_KEY, payload


def _broker(quiet: bool) -> RabbitBroker:
    url = common.env("BENCH_URL")
    if quiet:
        return RabbitBroker(url, logger=None)
    logging.basicConfig(level=logging.INFO)
    return RabbitBroker(url)


def _exchange() -> RabbitExchange:
    return RabbitExchange(common.env("BENCH_EXCHANGE"), type=ExchangeType.TOPIC, durable=True)


async def consume(quiet: bool, prefetch: int) -> None:
    broker = _broker(quiet)
    queue = RabbitQueue(common.env("BENCH_QUEUE"), durable=True, routing_key=ROUTING_KEY)

    @broker.subscriber(queue, _exchange(), channel=Channel(prefetch_count=prefetch))
    async def handle(event: Any) -> None:
        probe.hit()

    stop = common.stopped()
    async with broker:
        await broker.start()
        common.ready()
        await stop.wait()


async def publish(count: int) -> None:
    broker = _broker(quiet=True)
    exchange = _exchange()
    async with broker:
        await broker.connect()
        started, cpu = time.monotonic(), time.process_time()
        for n in range(count):
            await broker.publish(
                payload(n), exchange=exchange, routing_key=ROUTING_KEY, persist=True
            )
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    common.report(count=count, seconds=seconds, cpu=cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    consuming = sub.add_parser("consume")
    consuming.add_argument("--quiet", action="store_true")
    consuming.add_argument("--prefetch", type=int, default=128)
    publishing = sub.add_parser("publish")
    publishing.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.command == "consume":
        common.run(lambda: consume(args.quiet, args.prefetch))
    else:
        common.run(lambda: publish(args.count))


if __name__ == "__main__":
    main()
