"""A raw aio-pika consumer, the baseline: ``python -m benchmarks.clients.raw_consumer MODE``.

Modes, from the issue's reference table:
``iterator``  ``queue.iterator()`` and ``await message.ack()`` each;
``consume``   ``queue.consume(callback)`` and ``await message.ack()`` each;
``nowait``    ``queue.consume(callback)`` and each ack written without awaiting its drain
              (aiormq ``basic_ack(..., wait=False)``; aio-pika's ``ack()`` always waits);
``noack``     ``queue.consume(callback, no_ack=True)``: the broker forgets each message as it
              sends it. Not at-least-once: the ceiling of what a client can do.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from benchmarks import probe
from benchmarks.clients import common
from benchmarks.wire import SENT_HEADER

MODES = ("iterator", "consume", "nowait", "noack")


def _marker(latency: bool) -> Callable[[AbstractIncomingMessage], None]:
    if latency:
        return lambda message: probe.hit(message.headers[SENT_HEADER])  # type: ignore[arg-type]
    return lambda message: probe.hit()


async def consume(mode: str, queue_name: str, prefetch: int, latency: bool) -> None:
    mark = _marker(latency)
    connection = await aio_pika.connect(common.env("BENCH_URL"))
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(queue_name, ensure=False)
    stop = common.stopped()

    async def ack_each(message: AbstractIncomingMessage) -> None:
        mark(message)
        await message.ack()

    async def ack_unawaited(message: AbstractIncomingMessage) -> None:
        mark(message)
        await message.channel.basic_ack(message.delivery_tag, wait=False)  # type: ignore[arg-type]

    async def no_ack(message: AbstractIncomingMessage) -> None:
        mark(message)

    async def iterate() -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                mark(message)
                await message.ack()

    iterating = None
    if mode == "iterator":
        iterating = asyncio.create_task(iterate())
    else:
        callback = {"consume": ack_each, "nowait": ack_unawaited, "noack": no_ack}[mode]
        await queue.consume(callback, no_ack=mode == "noack")
    common.ready()
    await stop.wait()
    if iterating is not None:
        iterating.cancel()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=128)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--latency", action="store_true", help="record latency samples")
    args = parser.parse_args()
    common.run(
        lambda: consume(args.mode, args.queue, args.prefetch, args.latency),
        use_uvloop=args.uvloop,
    )


if __name__ == "__main__":
    main()
