"""The outbox table as relays claim it: several relays at once, publishes that fail, and the
per-key order that must hold whatever they do (PostgreSQL; SQLite serialises its relays)."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from eventworker import outbox
from eventworker.outbox.store import Done, PostgresOutboxStore, Row

KEYS, PER_KEY = 30, 40


async def test_relays_whose_publishes_fail_keep_each_key_in_order(
    pg_dsn: str, pg_table: str
) -> None:
    """A failed row stays pending and holds its key back; another relay taking the key over
    must start from that row. Claiming rows with a snapshot older than the key's lock broke
    this: the relay took the key's later rows past the failed one (seen as 17 sent before 4)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            for n in range(PER_KEY):
                for k in range(KEYS):
                    await outbox.add(
                        conn,
                        "claim.event",
                        {},
                        id=f"k{k}-{n}",
                        aggregate_key=f"k{k}",
                        table=pg_table,
                    )
    finally:
        await conn.close()
    sent: dict[str, list[int]] = {}
    failing = random.Random(7)

    async def send(rows: list[Row]) -> Done:
        """Publish as the relay does: a failed row blocks the later rows of its key."""
        done, blocked = Done(), set()
        for row in rows:
            if row.aggregate_key in blocked:
                continue
            await asyncio.sleep(0)  # a publish awaits its confirm: other relays run meanwhile
            if failing.random() < 0.1:
                done.failed.append((row.seq, "nacked"))
                blocked.add(row.aggregate_key)
            else:
                done.sent.append(row.seq)
                sent.setdefault(str(row.aggregate_key), []).append(int(row.event_id.split("-")[1]))
        return done

    stores = [
        await PostgresOutboxStore.open(pg_dsn, table=pg_table, delete_sent=False) for _ in range(3)
    ]

    async def relay(store: PostgresOutboxStore) -> None:
        while sum(map(len, sent.values())) < KEYS * PER_KEY:
            await store.process(25, send)

    try:
        await asyncio.wait_for(asyncio.gather(*map(relay, stores)), 120)
    finally:
        for store in stores:
            await store.close()
    out_of_order = {key: ns for key, ns in sent.items() if ns != list(range(PER_KEY))}
    assert not out_of_order and len(sent) == KEYS, out_of_order
