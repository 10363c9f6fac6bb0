"""The SQLite inbox (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``).

The embedded default, for the worker processes of one machine sharing one file. WAL lets
readers go on while one process writes; the busy timeout makes a process wait for the write
lock instead of failing; every operation is one autocommitted statement, so no process holds
the lock for longer than a statement. ``synchronous=NORMAL`` with WAL survives a crash of any
process; a power loss may forget the last done marks, which at worst lets a duplicate run
again (never loses a message). The file must not be on a network file system: SQLite's locks
are not reliable there.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from eventworker.errors import InboxError
from eventworker.inbox.stores.sql import SqlInboxStore

#: Seconds a statement waits for another process's write lock before failing.
BUSY_TIMEOUT = 5.0
_PLACEHOLDER = re.compile(r"\$(\d+)")


class SqliteInboxStore(SqlInboxStore):
    """The inbox table in a SQLite file; one connection (and thread) per worker process."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: str | Path, *, name: str) -> None:
        super().__init__(name=name)
        self.path = Path(path)
        self.url = f"sqlite:///{path}"
        self._db: aiosqlite.Connection | None = None

    def _dialect(self, sql: str) -> str:
        return _PLACEHOLDER.sub(r"?\1", sql)

    async def open(self, *, create: bool = True) -> None:
        if not create and not self.path.is_file():
            raise InboxError(f"no SQLite inbox at {self.path}")
        if not self.path.parent.is_dir():
            # Checked here rather than left to SQLite: its error says only "unable to open".
            raise InboxError(
                f"cannot open the SQLite inbox {self.path}: folder {self.path.parent} does not "
                f"exist"
            )
        try:
            self._db = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT
            )
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")
            for statement in self.schema if create else ():
                await self._db.execute(statement)
        except sqlite3.Error as exc:
            await self.close()
            raise InboxError(f"cannot open the SQLite inbox {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise InboxError(f"the SQLite inbox {self.path} is not open")
        return self._db

    async def _fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        try:
            return list(await self._connection().execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise InboxError(f"the SQLite inbox {self.path}: {exc}") from exc

    async def _count(self, sql: str, *args: Any) -> int:
        try:
            async with self._connection().execute(sql, args) as cursor:
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise InboxError(f"the SQLite inbox {self.path}: {exc}") from exc
