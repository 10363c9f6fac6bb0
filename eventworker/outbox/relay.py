"""The outbox relay: publish pending outbox rows with confirms, in order per aggregate key.

A claimed batch is published in rounds: round k holds the k-th row of every aggregate key in
the batch (rows without a key all go in the first round), so different keys share pipelined
confirms while one key's rows go out one after another. When a row is not confirmed, the
later rows of its key wait for the next batch: a key's events never overtake each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from loguru import logger

from eventworker import envelope
from eventworker.backoff import Backoff
from eventworker.errors import InvalidInputError, OutboxError
from eventworker.observability.logs import one_line
from eventworker.outbox.store import Done, OutboxStore, Row
from eventworker.outbox.table import DELIVER_AT
from eventworker.publishing.channel import Outgoing
from eventworker.publishing.publisher import Publisher
from eventworker.topology import delays

#: Seconds between purges of sent rows older than the retention.
PURGE_INTERVAL = 60.0
#: Longest pause between attempts to reach a database that failed.
BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class RelayOptions:
    batch_size: int = 500
    #: Seconds between looks at the table when no notification came (always, on SQLite).
    poll_interval: float = 5.0
    #: Seconds a sent row is kept; 0 deletes it once sent.
    retention: float = 7 * 24 * 3600.0


def outgoing(row: Row, *, max_body_bytes: int, delay_levels: int = 0) -> Outgoing:
    """The wire form of a row, checked as the publisher checks an event (rows written by other
    means than ``outbox.add`` may be anything). A delayed row is held what remains until its
    due time (none once it is past).

    Raises:
        InvalidInputError: the row cannot be published (a delayed one: not with these levels).
    """
    headers = dict(row.headers or {})
    due = headers.pop(DELIVER_AT, None)
    try:
        envelope.check_routing_key(row.routing_key)
        for name in headers:
            envelope.check_header(name)
        orjson.loads(row.body)
        hold = 0
        if due is not None:
            hold = delays.seconds(at=datetime.fromisoformat(str(due)))
            delays.check(hold, row.routing_key, delay_levels)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidInputError(str(exc)) from None
    if len(row.body) > max_body_bytes:
        raise InvalidInputError(f"body of {len(row.body)} bytes exceeds {max_body_bytes}")
    return Outgoing(
        row.routing_key,
        row.body,
        row.event_id,
        headers or None,
        row.correlation_id,
        delay=hold,
    )


def rounds(rows: list[Row]) -> list[list[Row]]:
    """Round k: the k-th row (in seq order) of every aggregate key; keyless rows in round 0."""
    result: list[list[Row]] = [[]]
    depth: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: r.seq):
        if row.aggregate_key is None:
            result[0].append(row)
            continue
        k = depth.get(row.aggregate_key, 0)
        depth[row.aggregate_key] = k + 1
        if k == len(result):
            result.append([])
        result[k].append(row)
    return result


class Relay:
    """Runs until :meth:`stop`: claim a batch, publish it, mark it, repeat; wait for a
    notification or ``poll_interval`` when nothing is pending. A database that fails is
    reopened with back-off; rows whose publish failed stay pending and are tried again."""

    def __init__(
        self,
        open_store: Callable[[], Awaitable[OutboxStore]],
        publisher: Publisher,
        options: RelayOptions,
    ) -> None:
        self._open_store = open_store
        self._publisher = publisher
        self.options = options
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._store: OutboxStore | None = None
        #: Rows published and marked, rows whose publish failed, batches processed.
        self.sent = self.failed = self.batches = 0

    def stop(self) -> None:
        """Finish the batch in progress, then return from :meth:`run` (signal-safe)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped.

        Raises:
            OutboxError, ConfigError: the database cannot be opened at start.
        """
        await self._connect()
        next_purge = time.monotonic()
        backoff = Backoff(self.options.poll_interval, BACKOFF_MAX)
        try:
            while not self._stopping.is_set():
                if self.options.retention and time.monotonic() >= next_purge:
                    await self._purge()
                    next_purge = time.monotonic() + PURGE_INTERVAL
                self._wake.clear()  # before the claim: a NOTIFY during the batch is not lost
                try:
                    claimed, done = await self.run_once()
                except OutboxError as exc:
                    pause = backoff.next()
                    logger.error("{}; reconnecting in {:g}s", one_line(exc), pause)
                    await self._wait(pause)
                    await self._reconnect()
                    continue
                backoff.reset()
                if claimed and len(done.sent) == claimed:
                    continue  # a full success: there may be more pending right away
                await self._wait(self.options.poll_interval)
        finally:
            await self._close()

    async def run_once(self) -> tuple[int, Done]:
        """Claim, publish and mark one batch; (rows claimed, what became of them).

        Raises:
            OutboxError: the database failed; the batch stays pending.
        """
        if self._store is None:
            await self._connect()
        assert self._store is not None
        claimed, done = await self._store.process(self.options.batch_size, self._send)
        self.batches += bool(claimed)
        self.sent += len(done.sent)
        self.failed += len(done.failed)
        return claimed, done

    async def _send(self, rows: list[Row]) -> Done:
        done = Done()
        blocked: set[str] = set()
        limit, levels = self._publisher.max_body_bytes, self._publisher.delay_levels
        for batch in rounds(rows):
            ready: list[tuple[Row, Outgoing]] = []
            for row in batch:
                if row.aggregate_key in blocked:
                    continue
                try:
                    ready.append((row, outgoing(row, max_body_bytes=limit, delay_levels=levels)))
                except InvalidInputError as exc:
                    self._failed(row, f"refused: {exc}", done, blocked)
            results = await self._publisher.send_many([o for _, o in ready])
            for (row, _), result in zip(ready, results, strict=True):
                if result.ok:
                    done.sent.append(row.seq)
                else:
                    self._failed(row, f"{result.status} {result.detail}".strip(), done, blocked)
        if done.failed:
            # One line per batch: a broker outage fails every row of it alike.
            seq, error = done.failed[0]
            logger.error(
                "{} outbox row(s) not published, kept pending; first: row {}: {}",
                len(done.failed),
                seq,
                one_line(error, 300),
            )
        return done

    @staticmethod
    def _failed(row: Row, error: str, done: Done, blocked: set[str]) -> None:
        done.failed.append((row.seq, error[:1000]))
        if row.aggregate_key is not None:
            blocked.add(row.aggregate_key)

    async def _purge(self) -> None:
        assert self._store is not None
        try:
            purged = await self._store.purge(self.options.retention)
        except OutboxError as exc:
            logger.warning("purging sent outbox rows failed: {}", one_line(exc))
            return
        if purged:
            logger.info("purged {} sent outbox row(s)", purged)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _connect(self) -> None:
        self._store = await self._open_store()
        await self._store.listen(self._wake.set)

    async def _reconnect(self) -> None:
        await self._close()
        try:
            await self._connect()
        except OutboxError as exc:
            logger.error("{}", one_line(exc))

    async def _close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to close cleanly
                await store.close()
