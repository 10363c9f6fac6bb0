"""Exactly-once effects with the PostgreSQL inbox: ``ctx.transaction()`` commits the handler's
writes and the inbox's done mark together, or neither."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.errors import ClaimLostError
from eventworker.inbox.protocol import Claimed, Completed, Key
from eventworker.inbox.stores import open_store
from eventworker.inbox.stores.postgres import PostgresInboxStore
from eventworker.settings import InboxSettings, Settings
from tests.support import stores
from tests.support.broker import Broker, running, wait_for
from tests.support.inbox_worker import Decisions


@pytest.fixture
def pg_inbox(tmp_path: Path) -> InboxSettings:
    reason = stores.unavailable("postgres")
    if reason:
        stores.skip_or_fail(f"postgres inbox tests cannot run: {reason}")
    return InboxSettings.model_validate({"url": stores.POSTGRES_URL, "name": stores.unique_name()})


@pytest.fixture
async def db(pg_inbox: InboxSettings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the inbox's database, with an ``orders`` table of this test."""
    conn = await asyncpg.connect(stores.POSTGRES_URL)
    await conn.execute(f"CREATE TABLE {pg_inbox.name}_orders (event_id text, n int)")
    yield conn
    await conn.execute(f"DROP TABLE IF EXISTS {pg_inbox.name}_orders")
    await stores.drop(pg_inbox)
    await conn.close()


async def orders(db: asyncpg.Connection, inbox: InboxSettings) -> collections.Counter[str]:
    rows = await db.fetch(f"SELECT event_id FROM {inbox.name}_orders")
    return collections.Counter(r["event_id"] for r in rows)


async def test_the_handlers_writes_and_the_done_mark_commit_together(
    broker: Broker, settings: Settings, pg_inbox: InboxSettings, db: asyncpg.Connection
) -> None:
    seen = Decisions()

    @handler("pg.order", idempotent=True)
    async def record(event: Event[Any], ctx: Context) -> None:
        async with ctx.transaction() as conn:
            await conn.execute(f"INSERT INTO {pg_inbox.name}_orders VALUES ($1, 1)", event.id)

    s = settings.model_copy(update={"inbox": pg_inbox})
    async with running(broker, [record], s, observers=[seen]):
        for _ in range(2):
            await broker.publish("pg.order", b"{}", message_id="o1")
        await wait_for(lambda: sum(seen.counts.values()) == 2)
    assert await orders(db, pg_inbox) == {"o1": 1}
    assert seen.counts == {"Ack": 1, "Duplicate": 1}
    state = await db.fetchval(f"SELECT state FROM {pg_inbox.name} WHERE event_id = 'o1'")
    assert state == "done"


async def test_a_failure_inside_the_transaction_rolls_back_both_and_the_retry_commits_once(
    broker: Broker, settings: Settings, pg_inbox: InboxSettings, db: asyncpg.Connection
) -> None:
    attempts: list[int] = []
    seen = Decisions()

    @handler("pg.flaky", idempotent=True, retry=RetryPolicy(max_attempts=3, delays=(0.2,)))
    async def flaky(event: Event[Any], ctx: Context) -> None:
        attempts.append(event.attempt)
        async with ctx.transaction() as conn:
            await conn.execute(f"INSERT INTO {pg_inbox.name}_orders VALUES ($1, 1)", event.id)
            if event.attempt == 1:
                raise RuntimeError("fails after its write, before the commit")

    s = settings.model_copy(update={"inbox": pg_inbox})
    async with running(broker, [flaky], s, observers=[seen]):
        await broker.publish("pg.flaky", b"{}", message_id="f1")
        await wait_for(lambda: seen.counts["Ack"] == 1)
    assert attempts == [1, 2]
    assert await orders(db, pg_inbox) == {"f1": 1}


async def test_a_failure_after_the_commit_leaves_the_event_done_and_the_retry_skipped(
    broker: Broker, settings: Settings, pg_inbox: InboxSettings, db: asyncpg.Connection
) -> None:
    seen = Decisions()

    @handler("pg.late", idempotent=True, retry=RetryPolicy(max_attempts=3, delays=(0.2,)))
    async def late(event: Event[Any], ctx: Context) -> None:
        async with ctx.transaction() as conn:
            await conn.execute(f"INSERT INTO {pg_inbox.name}_orders VALUES ($1, 1)", event.id)
        raise RuntimeError("fails after the commit")

    s = settings.model_copy(update={"inbox": pg_inbox})
    async with running(broker, [late], s, observers=[seen]):
        await broker.publish("pg.late", b"{}", message_id="l1")
        await wait_for(lambda: seen.counts["Duplicate"] == 1)
    assert seen.counts == {"RetryIn": 1, "Duplicate": 1}
    assert await orders(db, pg_inbox) == {"l1": 1}


async def test_a_transaction_whose_claim_was_taken_over_rolls_back(
    pg_inbox: InboxSettings, db: asyncpg.Connection
) -> None:
    store = open_store(pg_inbox)
    assert isinstance(store, PostgresInboxStore)
    await store.open()
    key = Key("h", "e1")
    try:
        assert await store.claim(key, body_hash="x", owner="me", token="mine", lease=30) == (
            Claimed()
        )
        with pytest.raises(ClaimLostError, match="rolled back"):
            async with store.transaction(key, token="mine") as conn:
                await conn.execute(f"INSERT INTO {pg_inbox.name}_orders VALUES ('e1', 1)")
                # Meanwhile the lease ran out and another worker took the event over.
                await db.execute(f"UPDATE {pg_inbox.name} SET token = 'theirs'")
        assert await orders(db, pg_inbox) == {}
        assert await store.complete(key, token="theirs")
        assert await store.claim(key, body_hash="x", owner="me", token="t", lease=30) == (
            Completed()
        )
    finally:
        await store.close()
