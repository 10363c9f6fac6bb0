"""Dramatiq, a peer, in its own virtualenv.

Consume: ``python -m dramatiq benchmarks.clients.dramatiq_app --processes P --threads T`` runs
its workers on the actor below (a no-op; Dramatiq acks after the actor returns). Publish:
``python -m benchmarks.clients.dramatiq_app --count N`` sends N messages with ``actor.send``,
Dramatiq's own API, which does not wait for confirms (its default, ``confirm_delivery=False``).
The actor's queue is ``$BENCH_QUEUE``; Dramatiq declares it with its ``.DQ`` and ``.XQ`` queues.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from benchmarks import probe
from benchmarks.clients import common
from benchmarks.wire import BODY_SIZE, payload

dramatiq.set_broker(RabbitmqBroker(url=os.environ.get("BENCH_URL", "amqp://localhost")))


@dramatiq.actor(queue_name=os.environ.get("BENCH_QUEUE", "bench"), max_retries=0)
def handle(event: Any) -> None:
    probe.hit()


def publish(count: int) -> None:
    # Dramatiq wraps the payload in its own envelope (actor, ids, options); a smaller payload
    # keeps the message near the same size as everyone else's.
    size = BODY_SIZE - 180
    handle.send(payload(0, size))  # declares the queues (not timed)
    started, cpu = time.monotonic(), time.process_time()
    for n in range(1, count):
        handle.send(payload(n, size))
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    common.report(count=count - 1, seconds=seconds, cpu=cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    publish(parser.parse_args().count)


if __name__ == "__main__":
    main()
