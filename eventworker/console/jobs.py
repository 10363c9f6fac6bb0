"""Replays and purges started from the console: each a job run in the background with its
progress, through the same operations as ``eventworker dlq`` (each copy confirmed before its
original goes, order kept), and an audit log line when it starts and when it ends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from loguru import logger

from eventworker.deadletters import operations as ops
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.operations import Connection, DeadLetterQueue, Selection
from eventworker.errors import EventworkerError

Kind = Literal["replay", "purge"]


@dataclass(slots=True)
class Job:
    """One action and how far it got."""

    id: int
    kind: Kind
    handler: str
    user: str
    what: str
    read: int = 0
    done: int = 0
    finished: bool = False
    error: str = ""
    refused: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def counted(self, _letter: Letter | None = None) -> None:
        self.done += 1

    def seen(self) -> None:
        self.read += 1


class Jobs:
    """The jobs of this console process, newest last (kept in memory)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._ids = itertools.count(1)
        self.all: dict[int, Job] = {}

    def start(
        self,
        kind: Kind,
        dlq: DeadLetterQueue,
        select: Selection | None,
        *,
        user: str,
        what: str,
        connection: Connection,
        publish_timeout: float,
        on_end: Callable[[], None],
    ) -> Job:
        job = Job(next(self._ids), kind, dlq.label, user, what)
        self.all[job.id] = job
        logger.bind(audit=True).info(
            "console audit: {} started {} of {} dead letter(s) of handler {!r} (queue {!r})",
            user,
            kind,
            what,
            dlq.label,
            dlq.queue,
        )

        async def work() -> None:
            if kind == "replay":
                outcome = await ops.replay(
                    connection,
                    dlq,
                    select=select or Selection(),
                    limit=None,
                    rate=None,
                    dry_run=False,
                    publish_timeout=publish_timeout,
                    on_move=job.counted,
                    stop=self._stop,
                    on_read=job.seen,
                )
                job.refused = len(outcome.refused)
                if outcome.error is not None:
                    job.error = str(outcome.error)
            else:
                job.done = await ops.purge(
                    connection, dlq, select=select, stop=self._stop, on_read=job.seen
                )

        job.task = asyncio.create_task(self._run(job, work, on_end))
        return job

    async def _run(
        self, job: Job, work: Callable[[], Awaitable[object]], on_end: Callable[[], None]
    ) -> None:
        try:
            await work()
        except EventworkerError as exc:
            job.error = str(exc)
        finally:
            job.finished = True
            on_end()
            logger.bind(audit=True).info(
                "console audit: {}'s {} of handler {!r} ended: {} dead letter(s) {}{}",
                job.user,
                job.kind,
                job.handler,
                job.done,
                "replayed" if job.kind == "replay" else "purged",
                f"; error: {job.error}" if job.error else "",
            )
