"""Catalogue tests G1 and G2 (docs/reliability.md): worker *processes* sharing a real
inbox store (SQLite file, PostgreSQL, Redis), duplicates, conflicting bodies and SIGKILLs.

Side effects are counted in a ledger the worker processes write and this test reads: a SQLite
file for the SQLite and Redis inboxes, a table in the inbox's own database for PostgreSQL
(written in the inbox's transaction, ``ctx.transaction()``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from eventworker.inbox.protocol import HandlerStats
from eventworker.inbox.stores import open_store
from eventworker.publishing.channel import ConfirmChannel, Outgoing
from eventworker.settings import InboxSettings, Settings
from eventworker.worker.lifecycle import Worker
from tests.support.broker import Broker, registrations
from tests.support.inbox_worker import effect, effect_tx

ROOT = Path(__file__).resolve().parents[2]
ROUTING_KEY = "inbox.test"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 120.0) -> None:
    """Wait until ``check()`` holds, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.2)


class Ledger:
    """The side effects the worker processes made: one row per run of a handler."""

    def __init__(self, inbox: InboxSettings, tmp_path: Path) -> None:
        self.postgres = inbox.url.get_secret_value().startswith("postgresql")
        self.dsn = inbox.url.get_secret_value()
        self.where = f"{inbox.name}_fx" if self.postgres else str(tmp_path / "ledger.db")
        self.handler = "effect_tx" if self.postgres else "effect"

    async def create(self) -> None:
        if self.postgres:
            await self._pg(f"CREATE TABLE {self.where} (event_id text, variant text, pid int)")

    async def drop(self) -> None:
        if self.postgres:
            await self._pg(f"DROP TABLE IF EXISTS {self.where}")

    async def rows(self) -> list[tuple[str, str, int]]:
        sql = f"SELECT event_id, variant, pid FROM {'effects' if not self.postgres else self.where}"
        if self.postgres:
            return [tuple(r) for r in await self._pg(sql)]  # type: ignore[misc]
        return await asyncio.to_thread(self._sqlite_rows, sql)

    def _sqlite_rows(self, sql: str) -> list[tuple[str, str, int]]:
        if not Path(self.where).exists():
            return []
        with sqlite3.connect(self.where, timeout=30) as db:
            try:
                rows = db.execute(sql).fetchall()
            except sqlite3.OperationalError:  # the table is not created yet
                rows = []
        db.close()
        return rows

    async def counts(self) -> collections.Counter[str]:
        return collections.Counter(event_id for event_id, _, _ in await self.rows())

    async def _pg(self, sql: str) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()


class WorkerProcess:
    """``python -m tests.support.inbox_worker`` with the test's settings; its log in a file."""

    def __init__(
        self, name: str, settings: Settings, ledger: Ledger, log: Path, **env: str
    ) -> None:
        inbox = settings.inbox
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("EVENTWORKER_", "EWTEST_"))
        }
        environ.update(
            EVENTWORKER_URL=settings.url.get_secret_value(),
            EVENTWORKER_EXCHANGE=settings.exchange,
            EVENTWORKER_QUEUE_PREFIX=settings.queue_prefix,
            EVENTWORKER_CONCURRENCY=str(settings.concurrency),
            EVENTWORKER_GRACE="10",
            EVENTWORKER_INBOX__URL=inbox.url.get_secret_value(),
            EVENTWORKER_INBOX__NAME=inbox.name,
            EVENTWORKER_INBOX__LEASE=str(inbox.lease),
            EWTEST_LEDGER=ledger.where,
            **env,
        )
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.inbox_worker", name],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )

    async def exited(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running; its log:\n{self.log.read_text()}")
            await asyncio.sleep(0.1)
        return self.process.returncode

    async def stop(self) -> collections.Counter[str]:
        """SIGTERM (a graceful drain); the decisions it settled."""
        self.process.send_signal(signal.SIGTERM)
        code = await self.exited()
        assert code == 0, self.log.read_text()
        assert self.process.stdout is not None
        return collections.Counter(json.loads(self.process.stdout.read().splitlines()[-1]))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Rig:
    """One test's broker, inbox store, ledger and worker processes."""

    def __init__(
        self, broker: Broker, settings: Settings, inbox: InboxSettings, ledger: Ledger, tmp: Path
    ) -> None:
        self.broker = broker
        self.base = settings
        self.inbox = inbox
        self.ledger = ledger
        self.tmp = tmp
        self.settings = settings
        self.started: list[WorkerProcess] = []
        self.queue = f"{settings.queue_prefix}{ledger.handler}"
        handler = effect if ledger.handler == "effect" else effect_tx
        broker.track(Worker(registrations(handler), settings))

    def configure(self, *, concurrency: int, lease: float = 30.0) -> None:
        self.inbox = self.inbox.model_copy(update={"lease": lease})
        self.settings = self.base.model_copy(
            update={"inbox": self.inbox, "concurrency": concurrency}
        )

    async def spawn(self, **env: str) -> WorkerProcess:
        """A worker process of the ledger's handler, consuming when returned."""
        log = self.tmp / f"worker{len(self.started)}.log"
        worker = WorkerProcess(self.ledger.handler, self.settings, self.ledger, log, **env)
        self.started.append(worker)

        async def consuming() -> bool:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker exited at start:\n{worker.log.read_text()}")
            try:
                alive = sum(w.process.poll() is None for w in self.started)
                return await self.broker.consumers(self.queue) >= alive
            except Exception:  # the queue is not declared yet
                return False

        await until(consuming, timeout=60)
        return worker

    async def crash(self, fault: str, ids: list[str]) -> None:
        """A worker with the fault hook ``fault`` (POINT:N) gets ``ids`` and is killed by it."""
        doomed = await self.spawn(EWTEST_FAULT=fault)
        await self.publish([(i, b"{}") for i in ids])
        assert await doomed.exited() == -signal.SIGKILL

    async def publish(self, events: list[tuple[str, bytes]]) -> None:
        s = self.settings
        # A generous confirm timeout: the broker is shared with other tests on 2 cores.
        async with ConfirmChannel.connect(s.url, exchange=s.exchange, timeout=120) as publisher:
            results = await publisher.send_many(
                [Outgoing(ROUTING_KEY, body, event_id) for event_id, body in events]
            )
        assert all(r.ok for r in results), [r for r in results if not r.ok][:5]

    async def stats(self) -> HandlerStats:
        store = open_store(self.inbox)
        await store.open(create=False)
        try:
            rows = await store.stats()
        finally:
            await store.close()
        return rows[0] if rows else HandlerStats("", 0, 0, 0, 0)

    async def drained(self) -> tuple[int, int]:
        """Messages left in the work queue and the dead-letter queue."""
        return (
            await self.broker.count(self.queue),
            await self.broker.count(f"{self.queue}.dead"),
        )


@pytest.fixture
async def rig(
    broker: Broker, settings: Settings, shared_inbox: InboxSettings, tmp_path: Path
) -> AsyncIterator[Rig]:
    ledger = Ledger(shared_inbox, tmp_path)
    await ledger.create()
    made = Rig(broker, settings, shared_inbox, ledger, tmp_path)
    try:
        yield made
    finally:
        for worker in made.started:
            worker.kill()
        await ledger.drop()


async def test_g1_duplicates_across_two_worker_processes_run_each_effect_once(rig: Rig) -> None:
    rig.configure(concurrency=16)
    workers = [await rig.spawn(), await rig.spawn()]
    ids = [f"g1-{n:04d}" for n in range(1000)]
    copies = [(i, f'{{"n": "{i}"}}'.encode()) for i in ids for _ in range(3)]
    # Interleaved: shuffled within windows of 30, so copies of one id are often in flight
    # at once in the two processes, and as often handled one after the other.
    rng = random.Random(6)
    events: list[tuple[str, bytes]] = []
    for start in range(0, len(copies), 30):
        window = copies[start : start + 30]
        rng.shuffle(window)
        events += window
    conflicts = [f"g1-conflict-{n}" for n in range(10)]
    for c in conflicts:
        events += [
            (c, f'{{"v": "a", "id": "{c}"}}'.encode()),
            (c, f'{{"v": "b", "id": "{c}"}}'.encode()),
        ]
    await rig.publish(events)

    async def settled() -> bool:
        st = await rig.stats()
        return st.completed == 1010 and st.duplicates == 2000

    await until(settled, timeout=300)
    dead = await rig.broker.take_all(f"{rig.queue}.dead", expect=10)
    decisions: collections.Counter[str] = collections.Counter()
    for w in workers:
        decisions += await w.stop()

    rows = await rig.ledger.rows()
    counts = collections.Counter(event_id for event_id, _, _ in rows)
    assert set(counts) == set(ids) | set(conflicts)
    assert max(counts.values()) == 1, "INV-ONCE: one effect per id"
    assert len({pid for _, _, pid in rows}) == 2, "both worker processes made effects"
    assert decisions["Duplicate"] == 2000, decisions
    assert decisions["Ack"] == 1010, decisions
    assert (await rig.stats()).duplicates == 2000
    # Each conflicting id: one copy ran, the other is dead-lettered with the reason, not skipped.
    ran = {event_id: variant for event_id, variant, _ in rows if event_id in conflicts}
    assert sorted(m.message_id or "" for m in dead) == sorted(conflicts)
    for m in dead:
        assert (m.headers or {})["x-eventworker-reason"] == "idempotency_key_conflict"
        assert json.loads(m.body)["v"] != ran[m.message_id or ""]
    assert await rig.drained() == (0, 0), "INV-DRAINED: all 3,020 deliveries settled"


async def test_g2a_a_worker_killed_between_the_effect_and_the_ack_leaves_one_effect_per_id(
    rig: Rig,
) -> None:
    # With PostgreSQL the effect commits together with the done mark, and the kill comes
    # right after that commit; the other stores have no transaction, so the kill comes right
    # after the done mark (a crash between their effect and the mark: the last test).
    rig.configure(concurrency=64)
    ids = [f"g2a-{n:02d}" for n in range(50)]
    await rig.crash(f"{'after_effect' if rig.ledger.postgres else 'after_done'}:50", ids)
    assert await rig.ledger.counts() == {i: 1 for i in ids}, "every effect made before the kill"

    survivor = await rig.spawn()

    async def skipped() -> bool:
        return (await rig.stats()).duplicates == 50

    await until(skipped)
    assert await survivor.stop() == {"Duplicate": 50}, "each copy detected as done and acked"
    assert await rig.ledger.counts() == {i: 1 for i in ids}
    assert await rig.drained() == (0, 0)


async def test_g2b_a_worker_killed_between_the_claim_and_the_effect_is_taken_over(
    rig: Rig,
) -> None:
    rig.configure(concurrency=64, lease=2.0)
    ids = [f"g2b-{n:02d}" for n in range(50)]
    await rig.crash("before_effect:50", ids)
    assert await rig.ledger.counts() == {}
    held = await rig.stats()
    assert held.in_progress + held.expired == 50, "the dead worker's claims are left behind"

    survivor = await rig.spawn()

    async def done() -> bool:
        return (await rig.stats()).completed == 50

    await until(done)
    assert await survivor.stop() == {"Ack": 50}, "the effect happens: once, not zero times"
    assert await rig.ledger.counts() == {i: 1 for i in ids}
    if not rig.inbox.url.get_secret_value().startswith("redis"):
        # Redis lets an expired claim vanish instead, so the next copy claims afresh.
        assert survivor.log.read_text().count("took over") == 50
    assert await rig.drained() == (0, 0)


async def test_without_a_transaction_a_crash_between_effect_and_done_mark_repeats_the_effect(
    rig: Rig,
) -> None:
    """What exactly-once does not cover (docs/idempotency.md): an effect outside the inbox's
    transaction made just before a crash is made again by the copy that takes over."""
    if rig.ledger.postgres:
        pytest.skip("with PostgreSQL the effect is in the inbox's transaction")
    rig.configure(concurrency=8, lease=1.0)
    ids = [f"gap-{n}" for n in range(5)]
    await rig.crash("after_effect:5", ids)
    survivor = await rig.spawn()

    async def repeated() -> bool:
        return await rig.ledger.counts() == {i: 2 for i in ids}

    await until(repeated)
    await survivor.stop()
    assert await rig.drained() == (0, 0)
