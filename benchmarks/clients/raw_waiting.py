"""A raw aio-pika consumer whose callback waits, then acks: the reference of the waiting group.
``python -m benchmarks.clients.raw_waiting --queue Q --concurrency C --wait 0.005``.

Like an eventworker worker, it takes ``--prefetch`` messages ahead (default twice the
concurrency) and runs at most ``--concurrency`` callbacks at once (a semaphore: aiormq starts
a task per delivery).
"""

from __future__ import annotations

import argparse
import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from benchmarks import probe
from benchmarks.clients import common


async def consume(queue_name: str, concurrency: int, prefetch: int, wait: float) -> None:
    connection = await aio_pika.connect(common.env("BENCH_URL"))
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(queue_name, ensure=False)
    stop = common.stopped()
    slots = asyncio.Semaphore(concurrency)

    async def wait_then_ack(message: AbstractIncomingMessage) -> None:
        async with slots:
            await asyncio.sleep(wait)
            probe.hit()
            await message.ack()

    await queue.consume(wait_then_ack)
    common.ready()
    await stop.wait()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--prefetch", type=int, help="default: twice the concurrency")
    parser.add_argument("--wait", type=float, required=True, help="seconds each callback waits")
    args = parser.parse_args()
    prefetch = args.prefetch or 2 * args.concurrency
    common.run(lambda: consume(args.queue, args.concurrency, prefetch, args.wait))


if __name__ == "__main__":
    main()
