"""What a fault test sends and reads back: events published through the library publisher
(every outcome written to the ledger), raw AMQP messages, queue counts over AMQP, and the
final read of the dead-letter queues into the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from eventworker.deadletters import letter
from eventworker.errors import BrokerError
from eventworker.publishing.channel import ConfirmChannel, Outgoing, PublishResult
from tests.faults.ledger import CONFIRMED, NACKED, UNKNOWN, Ledger

#: A publish result's status as the ledger classes it (guide §6.1).
LEDGER_STATUS = {
    "confirmed": CONFIRMED,
    "nacked": NACKED,
    "unroutable": NACKED,
    "timeout": UNKNOWN,
    "connection_lost": UNKNOWN,
}


def new_ids(n: int, tag: str = "m") -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{tag}-{run}-{i:06d}" for i in range(n)]


def record(ledger: Ledger, results: Sequence[tuple[PublishResult, float]]) -> None:
    ledger.record_published(
        (r.event_id, ts, LEDGER_STATUS[r.status], r.detail) for r, ts in results
    )


async def send_all(
    publisher: ConfirmChannel, events: Sequence[Outgoing], *, window: int = 256
) -> list[tuple[PublishResult, float]]:
    """Every event with up to ``window`` confirms in flight; each result with its send time."""
    slots = asyncio.Semaphore(window)

    async def one(event: Outgoing) -> tuple[PublishResult, float]:
        async with slots:
            sent = time.time()
            return await publisher.send(event), sent

    return list(await asyncio.gather(*(one(e) for e in events)))


def outgoing(routing_key: str, bodies: Sequence[Any], ids: Sequence[str]) -> list[Outgoing]:
    return [Outgoing(routing_key, orjson.dumps(b), i) for b, i in zip(bodies, ids, strict=True)]


async def publish(
    url: str,
    exchange: str,
    ledger: Ledger,
    events: Sequence[Outgoing],
    *,
    timeout: float = 10.0,
    window: int = 256,
) -> list[PublishResult]:
    """Publish ``events`` on one connection with the library publisher; record each outcome."""
    async with ConfirmChannel.connect(url, exchange=exchange, timeout=timeout) as publisher:
        results = await send_all(publisher, events, window=window)
    record(ledger, results)
    return [r for r, _ in results]


async def publish_through_faults(
    url: str,
    exchange: str,
    ledger: Ledger,
    events: Sequence[Outgoing],
    *,
    timeout: float = 5.0,
    chunk: int = 200,
    give_up_after: float = 120.0,
) -> list[PublishResult]:
    """Publish like a producer that outlives broker restarts: a chunk at a time, reconnecting
    after a lost connection. Each id is attempted once: a lost confirm stays ``unknown``."""
    results: list[PublishResult] = []
    pending = list(events)
    deadline = time.monotonic() + give_up_after
    while pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"publisher could not reconnect; {len(pending)} never sent")
        try:
            async with ConfirmChannel.connect(
                url, exchange=exchange, timeout=timeout, connect_timeout=timeout
            ) as publisher:
                while pending and not publisher.is_closed:
                    batch, pending = pending[:chunk], pending[chunk:]
                    sent = await send_all(publisher, batch)
                    record(ledger, sent)
                    results += [r for r, _ in sent]
                    if any(r.status in ("connection_lost", "timeout") for r, _ in sent):
                        break
        except (BrokerError, *CONNECTION_ERRORS):
            pass
        if pending:
            await asyncio.sleep(0.5)
    return results


CONNECTION_ERRORS = (ConnectionError, OSError, aio_pika.exceptions.AMQPError)


async def paced(
    url: str, exchange: str, ledger: Ledger, events: Sequence[Outgoing], *, per_second: int
) -> list[PublishResult]:
    """``events`` published a chunk every 0.2 s, a producer still sending when a fault comes;
    each chunk as :func:`publish_through_faults` sends it (across lost connections, each id
    attempted once)."""
    chunk = max(1, per_second // 5)
    results: list[PublishResult] = []
    for start in range(0, len(events), chunk):
        results += await publish_through_faults(
            url, exchange, ledger, events[start : start + chunk]
        )
        await asyncio.sleep(0.2)
    return results


async def publish_raw(
    connection: AbstractConnection,
    exchange: str,
    ledger: Ledger,
    messages: Sequence[tuple[str, aio_pika.Message]],
    *,
    window: int = 64,
) -> None:
    """Publish ``(routing_key, message)`` pairs as any AMQP client could (confirms, not
    mandatory), bypassing every check of ours; record them by ``message_id``."""
    channel = await connection.channel(publisher_confirms=True)
    slots = asyncio.Semaphore(window)
    try:
        target = await channel.get_exchange(exchange, ensure=False)

        async def one(key: str, message: aio_pika.Message) -> tuple[str, float, str, str]:
            async with slots:
                sent = time.time()
                await target.publish(message, key)
                return (message.message_id or "", sent, CONFIRMED, "raw")

        rows = await asyncio.gather(*(one(key, message) for key, message in messages))
        ledger.record_published(rows)
    finally:
        await channel.close()


async def read_dead_lettered(
    connection: AbstractConnection, queues: Sequence[str], ledger: Ledger, *, unrouted: str = ""
) -> int:
    """Record every message of the dead-letter ``queues`` in the ledger, and leave them there:
    they are got unacknowledged on one channel, which is closed (so requeued) at the end.
    Messages of the ``unrouted`` queue carry no diagnosis: their reason is "unrouted", as
    ``eventworker dlq`` shows them."""
    channel = await connection.channel()
    rows = []
    try:
        for name in queues:
            queue = await channel.get_queue(name, ensure=False)
            while (message := await queue.get(fail=False, no_ack=False)) is not None:
                headers = message.headers or {}
                # The library's own diagnosis: our headers on copies the worker dead-lettered, the
                # broker's x-death on messages it moved itself (quorum delivery limit, C4).
                default = "unrouted" if name == unrouted else ""
                diagnosis = letter.diagnose(message, preview_chars=0, default_reason=default)
                rows.append(
                    (
                        message.message_id or "",
                        diagnosis.reason,
                        diagnosis.attempts or 0,
                        json.dumps(_plain(headers)),
                        hashlib.sha256(message.body).hexdigest(),
                        name,
                        json.dumps(_plain(properties(message))),
                    )
                )
    finally:
        await channel.close()
    ledger.record_dead_lettered(rows)
    return len(rows)


def properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The AMQP properties of a delivered message, by name."""
    return {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "expiration": message.expiration,
        "type": message.type,
        "app_id": message.app_id,
        "delivery_mode": int(message.delivery_mode or 0),
        "routing_key": message.routing_key,
    }


def _plain(value: Any) -> Any:
    """Header values as JSON can hold them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)
