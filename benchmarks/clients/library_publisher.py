"""eventworker's library publisher: ``ConfirmChannel.send_many`` with its default window of
confirms in flight; with ``--delay``, each event held that many seconds by the broker's delay
levels (``--levels`` of them, declared by the harness). Prints one JSON line like
``raw_publisher`` (connecting is not timed)."""

from __future__ import annotations

import argparse
import time

from benchmarks.clients import common
from benchmarks.wire import ROUTING_KEY, body
from eventworker.envelope import new_id
from eventworker.publishing.channel import ConfirmChannel, Outgoing


async def publish(exchange: str, count: int, delay: int = 0, levels: int = 0) -> None:
    events = [Outgoing(ROUTING_KEY, body(n), new_id(), delay=delay) for n in range(count)]
    async with ConfirmChannel.connect(common.env("BENCH_URL"), exchange=exchange) as publisher:
        publisher.delay_levels = levels
        began = time.time()
        started, cpu = time.monotonic(), time.process_time()
        results = await publisher.send_many(events)
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    confirmed = sum(r.ok for r in results)
    common.report(count=confirmed, seconds=seconds, cpu=cpu, started=began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--delay", type=int, default=0)
    parser.add_argument("--levels", type=int, default=0)
    args = parser.parse_args()
    common.run(lambda: publish(args.exchange, args.count, args.delay, args.levels))


if __name__ == "__main__":
    main()
