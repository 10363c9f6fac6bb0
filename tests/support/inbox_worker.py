"""A worker process for the inbox fault tests: ``python -m tests.support.inbox_worker HANDLER``.

Test handlers are no installed plugin, so this builds the worker itself. Settings come from the
environment as for ``eventworker run`` (EVENTWORKER_URL, EVENTWORKER_INBOX__URL, ...). Each
handler records its side effect, one row per run, in a ledger: the SQLite file named by
EWTEST_LEDGER (``effect``), or the table EWTEST_LEDGER in the inbox's own PostgreSQL database,
written in the inbox's transaction (``effect_tx``). EWTEST_FAULT=POINT:N kills the process
with SIGKILL once N handlings have reached POINT, holding them all there until then:

- ``before_effect``: claimed, the effect not made (the handler's first line);
- ``after_effect``: the effect made (for ``effect_tx``: committed with the done mark);
- ``after_done``: the inbox's done mark written, the message not acked yet.

On a graceful stop it prints one JSON line: the settle decisions it counted, by kind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import sys
from typing import Any

from eventworker import Context, Event, handler
from eventworker.inbox.protocol import InboxStore, Key
from eventworker.inbox.stores import open_store
from eventworker.observability import logs
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import load_settings
from eventworker.worker.decisions import Decision
from eventworker.worker.lifecycle import Worker
from tests.support.broker import registrations

LEDGER = os.environ.get("EWTEST_LEDGER", "")
POINT, _, _COUNT = os.environ.get("EWTEST_FAULT", "").partition(":")
#: Schema of the SQLite ledger; the PostgreSQL one is made by the test.
LEDGER_SCHEMA = "CREATE TABLE IF NOT EXISTS effects (event_id TEXT, variant TEXT, pid INTEGER)"


class Fault:
    """Holds every handling that reaches the fault point; the Nth kills the process."""

    def __init__(self) -> None:
        self.arrived = 0
        self.n = int(_COUNT or 0)

    async def at(self, point: str) -> None:
        if point != POINT:
            return
        self.arrived += 1
        if self.arrived >= self.n:
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.Event().wait()  # until the kill


FAULT = Fault()


def _record(event_id: str, variant: str) -> None:
    with sqlite3.connect(LEDGER, timeout=30) as db:
        db.execute("INSERT INTO effects VALUES (?, ?, ?)", (event_id, variant, os.getpid()))
    db.close()


@handler("inbox.test", idempotent=True)
async def effect(event: Event[Any], ctx: Context) -> None:
    await FAULT.at("before_effect")
    await asyncio.to_thread(_record, event.id, str(event.data.get("v", "")))
    await FAULT.at("after_effect")


@handler("inbox.test", idempotent=True)
async def effect_tx(event: Event[Any], ctx: Context) -> None:
    await FAULT.at("before_effect")
    async with ctx.transaction() as conn:
        await conn.execute(
            f"INSERT INTO {LEDGER} VALUES ($1, $2, $3)",
            event.id,
            str(event.data.get("v", "")),
            os.getpid(),
        )
    await FAULT.at("after_effect")


class KillAfterDone:
    """The store, with the ``after_done`` fault point right after a done mark is written."""

    def __init__(self, store: InboxStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def complete(self, key: Key, *, token: str) -> bool:
        done = await self._store.complete(key, token=token)
        await FAULT.at("after_done")
        return done


class Decisions:
    """An observer that counts settle decisions by kind (what metrics will export)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def received(self, route: ResolvedHandler, event: Event[Any]) -> None:
        pass

    def settled(
        self,
        route: ResolvedHandler,
        event: Event[Any],
        decision: Decision,
        *,
        moved: bool,
        seconds: float,
    ) -> None:
        self.counts[type(decision).__name__] += 1

    def published(self, route: ResolvedHandler, *, kind: str, status: str) -> None:
        pass


async def main(name: str) -> None:
    settings = load_settings()
    logs.configure(settings.log_level)
    if name == "effect":
        with sqlite3.connect(LEDGER, timeout=30) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(LEDGER_SCHEMA)
        db.close()
    chosen = {"effect": effect, "effect_tx": effect_tx}[name]
    store = None
    if POINT == "after_done":
        store = KillAfterDone(open_store(settings.inbox, connections=settings.concurrency))
    seen = Decisions()
    worker = Worker(registrations(chosen), settings, observers=[seen], inbox_store=store)
    await worker.run(handle_signals=True)
    print(json.dumps(dict(seen.counts)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
