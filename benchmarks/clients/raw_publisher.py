"""A raw aio-pika publisher, the baseline: ``python -m benchmarks.clients.raw_publisher``.

Every message is persistent, mandatory and confirmed, like an eventworker event: either each
confirm awaited before the next publish (``--window 1``), or up to ``--window`` confirms in
flight. Prints one JSON line: count, seconds and CPU seconds from the first publish to the last
confirm (connecting is not timed), and the wall-clock time of the first publish.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika

from benchmarks.amqp import message
from benchmarks.clients import common
from benchmarks.wire import ROUTING_KEY


async def publish(exchange_name: str, count: int, window: int) -> None:
    connection = await aio_pika.connect(common.env("BENCH_URL"))
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(exchange_name, ensure=False)
    slots = asyncio.Semaphore(window)

    async def one(n: int) -> None:
        try:
            await exchange.publish(message(n), ROUTING_KEY, mandatory=True)
        finally:
            slots.release()

    began = time.time()
    started, cpu = time.monotonic(), time.process_time()
    if window == 1:
        for n in range(count):
            await exchange.publish(message(n), ROUTING_KEY, mandatory=True)
    else:
        tasks = []
        for n in range(count):
            await slots.acquire()
            tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.gather(*tasks)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    common.report(count=count, seconds=seconds, cpu=cpu, started=began)
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--window", type=int, default=1)
    args = parser.parse_args()
    common.run(lambda: publish(args.exchange, args.count, args.window))


if __name__ == "__main__":
    main()
