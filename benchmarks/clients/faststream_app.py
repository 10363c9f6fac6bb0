"""FastStream, a peer, in its own virtualenv: ``python -m benchmarks.clients.faststream_app``.

``consume``: a subscriber with a no-op handler on the harness's queue (declared by the harness,
bound to its topic exchange), prefetch 128, FastStream's default acknowledgement (ack after the
handler returns), in one of the ``CONFIGS``. ``publish``: ``broker.publish`` of each event,
persistent, each confirm awaited (its channels confirm by default). Settings: ``BENCH_*``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from benchmarks import probe
from benchmarks.clients import common
from benchmarks.wire import ROUTING_KEY, payload

#: FastStream's configurations: its default logs two lines per message (received, processed)
#: at INFO; ``quiet`` logs none; ``bare`` also skips FastDepends (no argument validation).
CONFIGS = {
    "default": {},
    "quiet": {"logger": None},
    "bare": {"logger": None, "apply_types": False},
}


def _broker(config: str) -> RabbitBroker:
    return RabbitBroker(common.env("BENCH_URL"), **CONFIGS[config])


def _exchange() -> RabbitExchange:
    return RabbitExchange(common.env("BENCH_EXCHANGE"), type=ExchangeType.TOPIC, durable=True)


async def consume(config: str, prefetch: int) -> None:
    broker = _broker(config)
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
    broker = _broker("quiet")
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
    consuming.add_argument("--config", choices=CONFIGS, default="default")
    consuming.add_argument("--prefetch", type=int, default=128)
    publishing = sub.add_parser("publish")
    publishing.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.command == "consume":
        common.run(lambda: consume(args.config, args.prefetch))
    else:
        common.run(lambda: publish(args.count))


if __name__ == "__main__":
    main()
