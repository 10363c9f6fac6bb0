"""The ledger (reliability guide §6.1): a SQLite file that the test publisher, the test
handlers in every worker process and the final drain of the dead-letter queues write to.

    published(id, attempt_ts, status)     status: confirmed | nacked | unknown | refused
    invocations(id, pid, delivery_tag, redelivered, attempt_hdr, started_ts, finished_ts,
                outcome, data)            one row per handler call, in any process
    effects(id PRIMARY KEY, count)        the side effect, guarded by an idempotency check
    dead-lettered(id, reason, attempts, headers_json, body_sha256)   read from dead-letter queues

WAL mode and a busy timeout let several worker processes and the test write at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS published (
    id TEXT NOT NULL, attempt_ts REAL NOT NULL, status TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS published_id ON published (id);
CREATE TABLE IF NOT EXISTS invocations (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL, pid INTEGER NOT NULL, delivery_tag INTEGER,
    redelivered INTEGER NOT NULL, attempt_hdr INTEGER NOT NULL, started_ts REAL NOT NULL,
    finished_ts REAL, outcome TEXT, data TEXT
);
CREATE INDEX IF NOT EXISTS invocations_id ON invocations (id);
CREATE TABLE IF NOT EXISTS effects (id TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_lettered (
    id TEXT NOT NULL, reason TEXT, attempts INTEGER, headers_json TEXT, body_sha256 TEXT,
    queue TEXT, properties_json TEXT
);
"""

#: Statuses of ``published``, as docs/reliability.md names them.
CONFIRMED, NACKED, UNKNOWN, REFUSED = "confirmed", "nacked", "unknown", "refused"


@dataclass(frozen=True, slots=True)
class Invocation:
    id: str
    pid: int
    redelivered: bool
    attempt: int
    started: float
    finished: float | None
    outcome: str | None
    data: str | None


class Ledger:
    """One ledger file; each thread gets its own SQLite connection."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves where it matters.
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    # -- writers ---------------------------------------------------------------------------
    def record_published(self, rows: Iterable[tuple[str, float, str, str]]) -> None:
        """``(id, attempt_ts, status, detail)`` rows, each a publish attempt's outcome."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO published (id, attempt_ts, status, detail) VALUES (?, ?, ?, ?)", rows
        )
        db.execute("COMMIT")

    def start_invocation(
        self, event_id: str, *, pid: int, redelivered: bool, attempt: int, data: str
    ) -> tuple[int, int]:
        """Record a handler call; returns its row and how many calls of this id came before."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        (before,) = db.execute(
            "SELECT COUNT(*) FROM invocations WHERE id = ?", (event_id,)
        ).fetchone()
        cur = db.execute(
            "INSERT INTO invocations (id, pid, redelivered, attempt_hdr, started_ts, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, pid, int(redelivered), attempt, time.time(), data),
        )
        db.execute("COMMIT")
        assert cur.lastrowid is not None
        return cur.lastrowid, int(before)

    def finish_invocation(self, row: int, outcome: str) -> None:
        """When and how a call ended (``cancelled`` too: a timeout or a shutdown)."""
        self._db().execute(
            "UPDATE invocations SET outcome = ?, finished_ts = ? WHERE rowid = ?",
            (outcome, time.time(), row),
        )

    def apply_effect(self, event_id: str) -> bool:
        """The handler's side effect, guarded by an idempotency check in the same transaction
        (the shape of an inbox); False when it had been applied already (a duplicate)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        done = db.execute("SELECT 1 FROM effects WHERE id = ?", (event_id,)).fetchone()
        if done is None:
            db.execute(
                "INSERT INTO effects (id, count) VALUES (?, 1) "
                "ON CONFLICT (id) DO UPDATE SET count = count + 1",
                (event_id,),
            )
        db.execute("COMMIT")
        return done is None

    def record_dead_lettered(
        self, rows: Iterable[tuple[str, str, int, str, str, str, str]]
    ) -> None:
        """``(id, reason, attempts, headers_json, body_sha256, queue, properties_json)`` per
        dead letter; replaces what an earlier read recorded."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM dead_lettered")
        db.executemany("INSERT INTO dead_lettered VALUES (?, ?, ?, ?, ?, ?, ?)", list(rows))
        db.execute("COMMIT")

    # -- readers ---------------------------------------------------------------------------
    def _ids(self, sql: str, *args: Any) -> set[str]:
        return {row[0] for row in self._db().execute(sql, args)}

    def attempted(self) -> set[str]:
        """P: every id a publish was attempted for."""
        return self._ids("SELECT DISTINCT id FROM published")

    def with_status(self, status: str) -> set[str]:
        """Ids with at least one publish attempt of ``status`` (C, U, ...)."""
        return self._ids("SELECT DISTINCT id FROM published WHERE status = ?", status)

    def confirmed(self) -> set[str]:
        return self.with_status(CONFIRMED)

    def unknown(self) -> set[str]:
        return self.with_status(UNKNOWN)

    def processed(self) -> set[str]:
        """S: ids whose effect happened."""
        return self._ids("SELECT id FROM effects WHERE count >= 1")

    def dead_lettered_ids(self) -> set[str]:
        """D: ids found in the dead-letter queues at the final drain."""
        return self._ids("SELECT DISTINCT id FROM dead_lettered")

    def dead_lettered_rows(self) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT id, reason, attempts, headers_json, body_sha256, queue, properties_json "
            "FROM dead_lettered"
        )
        return [
            {
                "id": r[0],
                "reason": r[1],
                "attempts": r[2],
                "headers": json.loads(r[3]),
                "body_sha256": r[4],
                "queue": r[5],
                "properties": json.loads(r[6]),
            }
            for r in rows
        ]

    def effect_counts(self) -> dict[str, int]:
        return dict(self._db().execute("SELECT id, count FROM effects").fetchall())

    def _calls(self, where: str = "", *args: Any) -> list[Invocation]:
        rows = self._db().execute(
            "SELECT id, pid, redelivered, attempt_hdr, started_ts, finished_ts, outcome, data "
            f"FROM invocations {where} ORDER BY rowid",
            args,
        )
        return [Invocation(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def invocations_since(self, started: float) -> list[Invocation]:
        """The calls that started at or after ``started`` (epoch seconds)."""
        return self._calls("WHERE started_ts >= ?", started)

    def invocations(self, event_id: str | None = None) -> list[Invocation]:
        """Every call, or every call of ``event_id``, in the order they started."""
        return self._calls("WHERE id = ?", event_id) if event_id else self._calls()

    def published_at(self) -> dict[str, float]:
        """When each confirmed id was published (its confirmed attempt)."""
        rows = self._db().execute(
            "SELECT id, MIN(attempt_ts) FROM published WHERE status = ? GROUP BY id", (CONFIRMED,)
        )
        return dict(rows.fetchall())

    def count_invocations(self) -> int:
        (n,) = self._db().execute("SELECT COUNT(*) FROM invocations").fetchone()
        return int(n)

    def count_processed(self) -> int:
        (n,) = self._db().execute("SELECT COUNT(*) FROM effects").fetchone()
        return int(n)
