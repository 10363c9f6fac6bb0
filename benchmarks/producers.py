"""Throughput of the HTTP ingress (requests/s) and the outbox relay (rows/s), each next to a raw
aio-pika publisher with confirms measured in the same run, and their ratio.

    .venv/bin/python benchmarks/producers.py [--requests N] [--rows N] [--concurrency C]

Needs the broker at $EVENTWORKER_URL (default localhost) and, for the relay on PostgreSQL,
$EVENTWORKER_BENCH_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test); without
PostgreSQL the relay runs on a SQLite file. A measurement, not a test: nothing is asserted.
Everything it declares or creates is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import aio_pika
from pydantic import SecretStr

from eventworker import outbox
from eventworker.outbox.relay import Relay, RelayOptions
from eventworker.outbox.store import open_store
from eventworker.publishing.publisher import Publisher

URL = os.environ.get("EVENTWORKER_URL", "amqp://guest:guest@localhost:5672/")
PG_DSN = os.environ.get("EVENTWORKER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BODY = b'{"order_id": "o-1", "total": 12.5}'


async def raw_publishes(exchange: str, count: int, concurrency: int) -> float:
    """Raw aio-pika: ``count`` confirmed publishes, ``concurrency`` in flight; per second."""
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await target.publish(
                    aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    "bench.event",
                    mandatory=True,
                )

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def ingress_requests(exchange: str, count: int, concurrency: int) -> float:
    """``eventworker serve`` in a subprocess; ``count`` POSTs, ``concurrency`` at once."""
    port = _free_port()
    env = {**os.environ, "EVENTWORKER_URL": URL, "EVENTWORKER_EXCHANGE": exchange}
    eventworker = str(Path(sys.executable).with_name("eventworker"))
    server = await asyncio.create_subprocess_exec(
        eventworker, "serve", "--port", str(port), "--log-level", "WARNING", env=env
    )
    try:
        for _ in range(100):  # wait until it listens, ~10 s at most
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
                probe.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        # A minimal keep-alive client on plain sockets: httpx's own overhead (several ms per
        # request here) would be what this measures otherwise.
        request = (
            f"POST /events/bench.event HTTP/1.1\r\nHost: bench\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        todo = iter(range(count))

        async def client() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for _ in todo:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 202"):
                        raise RuntimeError(head.split(b"\r\n")[0].decode())
                    length = re.search(rb"(?i)content-length: (\d+)", head)
                    await reader.readexactly(int(length.group(1)) if length else 0)
            finally:
                writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


async def relay_rows(exchange: str, count: int, keys: int) -> tuple[float, str]:
    """Rows/s of one relay emptying a table of ``count`` rows over ``keys`` aggregate keys."""
    table = f"bench_{uuid.uuid4().hex[:10]}"
    cleanup: Callable[[], Awaitable[None]]
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN, timeout=5)
        await outbox.create(conn, table)
        await conn.copy_records_to_table(
            table,
            columns=["event_id", "routing_key", "aggregate_key", "body"],
            records=[
                (str(uuid.uuid4()), "bench.event", f"k{n % keys}", BODY) for n in range(count)
            ],
        )
        dsn, where = PG_DSN, "PostgreSQL"

        async def cleanup() -> None:
            await conn.execute(f"DROP TABLE {table}; DROP FUNCTION {table}_notify")
            await conn.close()

    except (ImportError, OSError) as exc:
        path = Path(tempfile.mkdtemp()) / "bench.db"
        with sqlite3.connect(path) as db:
            outbox.create(db, table)
            for n in range(count):
                outbox.add(db, "bench.event", {"n": n}, aggregate_key=f"k{n % keys}", table=table)
        dsn, where = f"sqlite:///{path}", f"SQLite ({type(exc).__name__} for PostgreSQL)"

        async def cleanup() -> None:
            path.unlink()

    try:
        async with Publisher.connect(URL, exchange=exchange) as publisher:
            relay = Relay(
                partial(open_store, SecretStr(dsn), table=table, delete_sent=False),
                publisher,
                RelayOptions(batch_size=500),
            )
            started = time.perf_counter()
            while (await relay.run_once())[0]:
                pass
            return relay.sent / (time.perf_counter() - started), where
    finally:
        await cleanup()


async def main(requests: int, rows: int, concurrency: int, keys: int) -> None:
    name = f"bench.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, "topic", auto_delete=False)
        queue = await channel.declare_queue(f"{name}.sink", arguments={"x-max-length": 10})
        await queue.bind(exchange, "#")
        try:
            raw_single = await raw_publishes(name, requests, concurrency)
            http = await ingress_requests(name, requests, concurrency)
            raw_pipelined = await raw_publishes(name, rows, 1024)
            relayed, where = await relay_rows(name, rows, keys)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
    print(f"{'measure':<44}{'per second':>12}{'raw aio-pika':>14}{'ratio':>8}")
    print(
        f"{f'HTTP ingress, {requests} requests, {concurrency} at once':<44}"
        f"{http:>12,.0f}{raw_single:>14,.0f}{http / raw_single:>8.2f}"
    )
    print(
        f"{f'outbox relay, {rows} rows, {keys} keys, {where}':<44}"
        f"{relayed:>12,.0f}{raw_pipelined:>14,.0f}{relayed / raw_pipelined:>8.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rows, args.concurrency, args.keys))
