"""The outbox relay against the real broker and databases: every row sent, in per-key order,
across a SIGKILL mid-batch; two relays never send the same row; NOTIFY wakes it; retention."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage
from pydantic import SecretStr

from eventworker import Context, Event, handler, outbox
from eventworker.outbox.relay import Relay, RelayOptions, rounds
from eventworker.outbox.store import open_store
from eventworker.publishing.publisher import Publisher
from eventworker.settings import Settings
from tests.support.broker import Broker, wait_for
from tests.support.cli import EVENTWORKER, env_for
from tests.support.queues import drain, sink
from tests.support.timing import TTL_EARLY


def ordered_per_key(messages: Sequence[AbstractIncomingMessage]) -> dict[str, list[int]]:
    """For each aggregate key, the ``n`` of its events in the order each was FIRST delivered."""
    seen: set[str] = set()
    order: dict[str, list[int]] = {}
    for m in messages:
        if m.message_id in seen:
            continue
        seen.add(m.message_id or "")
        data = orjson.loads(m.body)
        order.setdefault(data["key"], []).append(data["n"])
    return order


async def fill(dsn: str, table: str, *, keys: int, per_key: int, keyless: int = 0) -> set[str]:
    """Rows interleaved across ``keys`` aggregate keys (``n`` counts up per key), plus keyless
    ones; written in transactions of 100 as an application would. Returns the event ids."""
    conn = await asyncpg.connect(dsn)
    ids: set[str] = set()
    try:
        rows = [(f"k{k}", n) for n in range(per_key) for k in range(keys)]
        rows += [("none", n) for n in range(keyless)]
        for start in range(0, len(rows), 100):
            async with conn.transaction():
                for key, n in rows[start : start + 100]:
                    ids.add(
                        await outbox.add(
                            conn,
                            "relay.event",
                            {"key": key, "n": n},
                            id=f"{key}-{n}",
                            aggregate_key=None if key == "none" else key,
                            table=table,
                        )
                    )
    finally:
        await conn.close()
    return ids


async def pending(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE sent_at IS NULL"))
    finally:
        await conn.close()


@asynccontextmanager
async def relay_of(
    settings: Settings, dsn: str, table: str, *, levels: int = 0, **options: float
) -> AsyncIterator[Relay]:
    """A relay running in this event loop; stopped (batch finished) on exit."""
    async with Publisher.connect(
        settings.url, exchange=settings.exchange, timeout=5.0, delay_levels=levels
    ) as pub:
        opts = RelayOptions(**{"poll_interval": 0.2, "batch_size": 200, **options})  # type: ignore[arg-type]
        relay = Relay(
            partial(open_store, SecretStr(dsn), table=table, delete_sent=opts.retention == 0),
            pub,
            opts,
        )
        task = asyncio.create_task(relay.run())
        try:
            yield relay
        finally:
            relay.stop()
            await asyncio.wait_for(task, 30)


def test_rounds_take_one_row_per_key_and_every_keyless_row_first() -> None:
    from eventworker.outbox.store import Row

    rows = [
        Row(s, f"e{s}", "r.k", k, b"{}", None, None)
        for s, k in [(1, "a"), (2, "a"), (3, None), (4, "b"), (5, "a"), (6, None)]
    ]
    assert [[r.seq for r in batch] for batch in rounds(rows)] == [[1, 3, 4, 6], [2], [5]]


async def test_a_relay_killed_mid_batch_and_restarted_sends_every_row_in_key_order(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    queue = await sink(broker, "relay.#")
    # Enough rows that the relay (a batch of 200 in one write) is still busy when the kill
    # lands: with 2,000 it could send the last batch first.
    per_key = 500
    ids = await fill(pg_dsn, pg_table, keys=20, per_key=per_key)
    env = env_for(
        settings,
        EVENTWORKER_OUTBOX__DSN=pg_dsn,
        EVENTWORKER_OUTBOX__TABLE=pg_table,
        EVENTWORKER_OUTBOX__BATCH_SIZE="200",
    )
    first = await asyncio.create_subprocess_exec(EVENTWORKER, "outbox", "relay", env=env)
    try:
        # SIGKILL once some batches are through, while the relay is busy with the next one.
        deadline = time.monotonic() + 60
        while await broker.count(queue) < 400:
            assert first.returncode is None, "the relay stopped by itself"
            assert time.monotonic() < deadline, "the relay sent nothing"
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        await asyncio.wait_for(first.wait(), 30)
    left = await pending(pg_dsn, pg_table)
    assert 0 < left < len(ids), "the kill came after the last batch; the test proves nothing"
    second = await asyncio.create_subprocess_exec(EVENTWORKER, "outbox", "relay", env=env)
    try:
        deadline = time.monotonic() + 60
        while await pending(pg_dsn, pg_table):
            assert second.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    messages = await drain(broker, queue, expect=len(ids))
    delivered = [m.message_id or "" for m in messages]
    assert set(delivered) == ids  # every row, and nothing that was not a row
    assert ordered_per_key(messages) == {f"k{k}": list(range(per_key)) for k in range(20)}
    print(f"{len(delivered) - len(ids)} duplicate(s) after the kill, {left} rows were pending")


async def test_two_relays_in_parallel_never_send_a_row_twice(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    queue = await sink(broker, "relay.#")
    ids = await fill(pg_dsn, pg_table, keys=20, per_key=30, keyless=400)
    async with (
        relay_of(settings, pg_dsn, pg_table) as one,
        relay_of(settings, pg_dsn, pg_table) as two,
    ):
        await wait_for(lambda: one.sent + two.sent >= len(ids), timeout=60)
    messages = await drain(broker, queue, expect=len(ids))
    delivered = [m.message_id for m in messages]
    assert len(delivered) == len(set(delivered)) == len(ids)  # no row twice
    assert one.sent + two.sent == len(ids) and one.sent > 0 and two.sent > 0
    order = ordered_per_key(messages)
    keyless = order.pop("none")  # no key: any order
    # The whole list of a key out of order, and which relay sent how much in how many batches.
    # This failed once when a publish timed out on a loaded machine: the other relay took the
    # key over past the failed row (tests/outbox/test_store.py reproduces that at will).
    wrong = {k: v for k, v in order.items() if v != list(range(30))}
    relays = [(r.sent, r.batches, r.failed) for r in (one, two)]
    assert not wrong and len(order) == 20, (wrong, relays)
    assert sorted(keyless) == list(range(400))
    assert await pending(pg_dsn, pg_table) == 0


async def test_a_notify_wakes_an_idle_relay_long_before_its_poll(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    queue = await sink(broker, "relay.#")
    async with relay_of(settings, pg_dsn, pg_table, poll_interval=120.0) as relay:
        await asyncio.sleep(0.5)  # let it find the table empty and go to sleep
        started = time.monotonic()
        await fill(pg_dsn, pg_table, keys=1, per_key=1)
        await wait_for(lambda: relay.sent == 1, timeout=10)
        assert time.monotonic() - started < 10
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["k0-0"]


async def test_a_row_that_fails_holds_back_the_later_rows_of_its_key_only(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    queue = await sink(broker, "relay.#")
    conn = await asyncpg.connect(pg_dsn)
    try:
        for key, routing_key, event_id in [
            ("a", "nobody.listens", "a-0"),
            ("a", "relay.event", "a-1"),
            ("b", "relay.event", "b-0"),
        ]:
            await outbox.add(conn, routing_key, {}, id=event_id, aggregate_key=key, table=pg_table)
        async with Publisher.connect(settings.url, exchange=settings.exchange) as pub:
            relay = Relay(
                partial(open_store, SecretStr(pg_dsn), table=pg_table, delete_sent=False),
                pub,
                RelayOptions(),
            )
            claimed, done = await relay.run_once()
        rows = await conn.fetch(
            f"SELECT event_id, sent_at IS NOT NULL AS sent, attempts, last_error "
            f"FROM {pg_table} ORDER BY seq"
        )
    finally:
        await conn.close()
    assert claimed == 3 and len(done.sent) == 1
    assert [(r["event_id"], r["sent"], r["attempts"]) for r in rows] == [
        ("a-0", False, 1),
        ("a-1", False, 0),
        ("b-0", True, 1),
    ]
    assert "unroutable" in rows[0]["last_error"]
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["b-0"]


async def test_sent_rows_are_kept_for_the_retention_then_purged(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    await sink(broker, "relay.#")
    await fill(pg_dsn, pg_table, keys=2, per_key=2)
    async with relay_of(settings, pg_dsn, pg_table) as relay:
        await wait_for(lambda: relay.sent == 4)
    store = await open_store(SecretStr(pg_dsn), table=pg_table, delete_sent=False)
    try:
        assert await store.purge(3600) == 0  # sent just now: kept
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute(f"UPDATE {pg_table} SET sent_at = now() - interval '2 hours'")
        await conn.close()
        assert await store.purge(3600) == 4
    finally:
        await store.close()


async def test_retention_zero_deletes_each_row_once_sent(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    await sink(broker, "relay.#")
    await fill(pg_dsn, pg_table, keys=3, per_key=3)
    async with relay_of(settings, pg_dsn, pg_table, retention=0.0) as relay:
        await wait_for(lambda: relay.sent == 9)
    conn = await asyncpg.connect(pg_dsn)
    assert await conn.fetchval(f"SELECT count(*) FROM {pg_table}") == 0
    await conn.close()


async def test_two_relays_on_sqlite_send_every_row_once_in_order(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    queue = await sink(broker, "relay.#")
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.create(conn)
        for n in range(300):
            outbox.add(
                conn, "relay.event", {"key": f"k{n % 3}", "n": n // 3}, aggregate_key=f"k{n % 3}"
            )
    dsn = f"sqlite:///{path}"
    async with (
        relay_of(settings, dsn, "eventworker_outbox", batch_size=50) as one,
        relay_of(settings, dsn, "eventworker_outbox", batch_size=50) as two,
    ):
        await wait_for(lambda: one.sent + two.sent >= 300, timeout=60)
    messages = await drain(broker, queue, expect=300)
    assert len({m.message_id for m in messages}) == len(messages) == 300
    assert ordered_per_key(messages) == {f"k{k}": list(range(100)) for k in range(3)}


def test_outbox_init_creates_the_table_and_a_bad_dsn_is_a_config_error(
    settings: Settings, tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    made = subprocess.run(
        [EVENTWORKER, "outbox", "init", "--dsn", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        env=env_for(settings),
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM eventworker_outbox").fetchone() == (0,)
    bad = subprocess.run(
        [EVENTWORKER, "outbox", "relay", "--dsn", "mysql://u:hunter2@h/db"],
        capture_output=True,
        text=True,
        env=env_for(settings),
        timeout=60,
    )
    assert bad.returncode == 3 and "expected postgresql" in bad.stderr
    assert "hunter2" not in bad.stderr + bad.stdout


@handler("relay.*", name="later")
async def later(event: Event[Any], ctx: Context) -> None:
    pass


async def delayed_rows(broker: Broker, settings: Settings, add: Any) -> tuple[str, float]:
    """Declare a handler's queue with delay levels, write three rows through ``add``: one due
    in 3 s, one at a time already past, one not delayed; the queue and when they were added."""
    worker = await broker.declare(later, settings=settings.model_copy(update={"delay_levels": 25}))
    added = time.monotonic()
    await add("relay.soon", {"n": 1}, delay=3)
    await add("relay.past", {"n": 2}, at=datetime.now(UTC) - timedelta(hours=1))
    await add("relay.now", {"n": 3})
    return worker.routes[0].queue, added


async def test_a_delayed_row_is_held_until_its_due_time_on_postgresql(
    broker: Broker, settings: Settings, pg_dsn: str, pg_table: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)

    async def add(key: str, data: Any, **when: Any) -> None:
        async with conn.transaction():
            await outbox.add(conn, key, data, id=key, table=pg_table, **when)

    try:
        queue, added = await delayed_rows(broker, settings, add)
    finally:
        await conn.close()
    async with relay_of(settings, pg_dsn, pg_table, levels=25) as relay:
        await wait_for(lambda: relay.sent == 3, timeout=10)
        await broker.wait_count(queue, 2, timeout=5)  # the past one and the plain one
        assert await broker.count(queue) == 2
        await broker.wait_count(queue, 3, timeout=10)
    assert time.monotonic() - added >= 3 - TTL_EARLY


async def test_a_delayed_row_is_held_until_its_due_time_on_sqlite(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    outbox.create(conn)

    async def add(key: str, data: Any, **when: Any) -> None:
        outbox.add(conn, key, data, id=key, **when)
        conn.commit()

    try:
        queue, added = await delayed_rows(broker, settings, add)
    finally:
        conn.close()
    async with relay_of(settings, f"sqlite:///{path}", "eventworker_outbox", levels=25) as relay:
        await wait_for(lambda: relay.sent == 3, timeout=10)
        await broker.wait_count(queue, 2, timeout=5)
        await broker.wait_count(queue, 3, timeout=10)
    assert time.monotonic() - added >= 3 - TTL_EARLY


async def test_a_delayed_row_waits_pending_while_the_relay_has_no_delay_levels(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    await sink(broker, "relay.#")
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.create(conn)
        outbox.add(conn, "relay.soon", {"n": 1}, delay=60)
    async with relay_of(settings, f"sqlite:///{path}", "eventworker_outbox") as relay:
        await wait_for(lambda: relay.failed >= 1, timeout=10)
    with sqlite3.connect(path) as conn:
        [(sent_at, error)] = conn.execute(
            "SELECT sent_at, last_error FROM eventworker_outbox"
        ).fetchall()
    assert sent_at is None and "delayed publishing is off" in error
