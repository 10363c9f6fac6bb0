"""One fault test's world: its broker (shared or private), settings, ledger, worker
processes, publishing, and the final invariant checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection

from eventworker.plugins.discovery import Registration
from eventworker.publishing.channel import PublishResult
from eventworker.settings import Settings
from eventworker.topology import declare, layout
from eventworker.worker.lifecycle import Worker
from tests.faults import invariants, traffic
from tests.faults.invariants import Report
from tests.faults.ledger import Ledger
from tests.faults.plugin import Spec, build
from tests.faults.processes import WorkerProcess
from tests.faults.worker_main import PLUGIN
from tests.support.broker import Broker
from tests.support.control import Control, QueueState

#: Added to the upper bound of a timing assertion: a retried copy rejoins its work queue at
#: the tail, behind the backlog, and this machine's two cores are shared with other test
#: runs. A copy held behind a longer delay or redelivered much later still fails the bound.
LOAD_SLACK = 3.0


class Rig:
    def __init__(
        self, settings: Settings, control: Control, folder: Path, connection: AbstractConnection
    ) -> None:
        self.settings = settings
        self.ctl = control
        self.folder = folder
        self.connection = connection
        self.ledger_path = folder / "ledger.sqlite"
        self.ledger = Ledger(self.ledger_path)
        self.view = Broker(connection, settings)  # queue counts over AMQP, quick to poll
        self.workers: list[WorkerProcess] = []
        #: Every queue a worker or :meth:`declare` of this test declares.
        self.planned_queues: set[str] = set()
        #: Queues a test declared itself (spies): deleted at the end, never checked.
        self.other_queues: set[str] = set()

    @property
    def url(self) -> str:
        return self.settings.url.get_secret_value()

    @property
    def prefix(self) -> str:
        return self.settings.queue_prefix

    def with_settings(self, **changes: Any) -> Rig:
        self.settings = self.settings.model_copy(update=changes)
        return self

    # -- names -----------------------------------------------------------------------------
    def work_queue(self, handler: str) -> str:
        return layout.work_queue(self.prefix, handler)

    def dead_letter_queue(self, handler: str) -> str:
        return layout.dead_letter_queue(self.work_queue(handler))

    def retry_queue(self, delay: float) -> str:
        return layout.retry_queue(self.prefix, delay)

    # -- workers ---------------------------------------------------------------------------
    async def declare(self, specs: Sequence[Spec]) -> None:
        """Declare the topology a worker with ``specs`` would, without starting one (to
        preload a backlog)."""
        plan = self._plan(specs)
        channel = await self.connection.channel()
        try:
            await declare.apply(plan, channel)
        finally:
            await channel.close()

    def _plan(self, specs: Sequence[Spec], settings: Settings | None = None) -> layout.Plan:
        registrations = [Registration(build(s, self.ledger), PLUGIN) for s in specs]
        plan = Worker(registrations, settings or self.settings).plan
        self.planned_queues |= {q.name for q in plan.queues}
        return plan

    def worker(self, specs: Sequence[Spec], **options: Any) -> WorkerProcess:
        settings = options.pop("settings", self.settings)
        self._plan(specs, settings)
        worker = WorkerProcess(self.folder, self.ledger_path, specs, settings, **options)
        self.workers.append(worker)
        return worker

    def started(self, specs: Sequence[Spec], **options: Any) -> WorkerProcess:
        worker = self.worker(specs, **options).start()
        worker.wait_started()
        return worker

    # -- publishing ------------------------------------------------------------------------
    async def publish(
        self,
        routing_key: str,
        bodies: Sequence[Any],
        *,
        ids: Sequence[str] | None = None,
        tag: str = "m",
        window: int = 256,
        timeout: float | None = None,
    ) -> list[str]:
        """Publish one event per body with the library publisher; return the ids (all
        outcomes are in the ledger)."""
        ids = list(ids or traffic.new_ids(len(bodies), tag))
        await traffic.publish(
            self.url,
            self.settings.exchange,
            self.ledger,
            traffic.outgoing(routing_key, bodies, ids),
            timeout=timeout or self.settings.publish_timeout,
            window=window,
        )
        return ids

    async def publish_results(
        self, routing_key: str, bodies: Sequence[Any], ids: Sequence[str]
    ) -> list[PublishResult]:
        return await traffic.publish(
            self.url,
            self.settings.exchange,
            self.ledger,
            traffic.outgoing(routing_key, bodies, ids),
            timeout=self.settings.publish_timeout,
        )

    async def publish_raw(self, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
        await traffic.publish_raw(self.connection, self.settings.exchange, self.ledger, messages)

    # -- looking ---------------------------------------------------------------------------
    def queues(self) -> Mapping[str, QueueState]:
        return self.ctl.queues(self.prefix)

    async def wait(
        self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {timeout:g}s")
            await asyncio.sleep(0.1)

    async def wait_processed(self, ids: Sequence[str] | set[str], timeout: float = 60.0) -> None:
        wanted = set(ids)
        await self.wait(
            lambda: wanted <= self.ledger.processed(),
            timeout,
            f"all {len(wanted)} ids processed "
            f"(missing e.g. {sorted(wanted - self.ledger.processed())[:3]})",
        )

    async def wait_dead_lettered(self, handler: str, count: int, timeout: float = 60.0) -> None:
        queue = self.dead_letter_queue(handler)
        deadline = time.monotonic() + timeout
        while (have := await self.view.count(queue)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{queue} holds {have} messages, expected {count}")
            await asyncio.sleep(0.1)

    # -- the end ---------------------------------------------------------------------------
    async def drained(self, timeout: float = 90.0) -> Mapping[str, QueueState]:
        """Wait until this test's work and retry queues hold nothing, and return the last
        rabbitmqctl snapshot of them.

        Calm first: for ``STABLE_SECONDS`` in a row no work or retry queue has a message
        ready (AMQP, live) and no handler starts. Then rabbitmqctl must count no message at
        all, unacked included. Its counts of a quorum queue are refreshed only every 5 s, so
        the snapshot may predate the calm; what it could then miss is a delivery made within
        the last ``QUORUM_TICK`` seconds and still unacked, which is a handler of a live
        worker that started then and has not finished: calm also waits for those."""
        deadline = time.monotonic() + timeout
        unrouted = self.settings.unrouted_queue
        busy = sorted(q for q in self.planned_queues if not invariants.is_dead_letter(q, unrouted))
        calm_since = time.monotonic()
        while True:
            if any([await self.view.count(q) for q in busy]) or self._handlers_busy():
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= invariants.STABLE_SECONDS:
                queues = await asyncio.to_thread(self.queues)
                problems = invariants.drained_problems(queues, None, unrouted)
                if not problems:
                    return queues
                calm_since = time.monotonic()
            if time.monotonic() > deadline:
                queues = await asyncio.to_thread(self.queues)
                problems = invariants.drained_problems(queues, None, unrouted)
                raise AssertionError("INV-DRAINED: " + "; ".join(problems or ["not stable"]))
            await asyncio.sleep(0.2)

    def _handlers_busy(self) -> bool:
        """A handler of a live worker started within ``QUORUM_TICK`` seconds and still runs,
        or one started within ``STABLE_SECONDS``."""
        now = time.time()
        live = {w.pid for w in self.workers if w.alive()}
        for call in self.ledger.invocations_since(now - invariants.QUORUM_TICK):
            if call.started > now - invariants.STABLE_SECONDS:
                return True
            if call.finished is None and call.pid in live:
                return True
        return False

    async def finish(
        self,
        *,
        workers: Sequence[WorkerProcess] = (),
        expected_starts: int = 1,
        drain_timeout: float = 90.0,
        duplicate_dead_letters: bool = False,
    ) -> Report:
        """Wait for the drain, read the dead-letter queues into the ledger and assert every
        invariant: LOST, UNEXPECTED, ONCE, EXCL, DRAINED, and ALIVE for ``workers``."""
        queues = await self.drained(drain_timeout)
        unrouted = self.settings.unrouted_queue
        dead_letter = [q for q in queues if invariants.is_dead_letter(q, unrouted)]
        await traffic.read_dead_lettered(
            self.connection, dead_letter, self.ledger, unrouted=unrouted
        )
        queues = await self._dead_letter_counted(
            queues, len(self.ledger.dead_lettered_rows()), unrouted
        )
        invariants.inv_drained(
            queues, self.ledger, unrouted, duplicate_dead_letters=duplicate_dead_letters
        )
        invariants.inv_lost(self.ledger)
        invariants.inv_unexpected(self.ledger)
        invariants.inv_once(self.ledger)
        invariants.inv_excl(self.ledger)
        for worker in workers:
            invariants.inv_alive(
                worker.all_logs(), pids=worker.pids, expected_starts=expected_starts
            )
        result = invariants.report(self.ledger)
        print(f"ledger: {result}")
        return result

    async def _dead_letter_counted(
        self, queues: Mapping[str, QueueState], dead_lettered: int, unrouted: str
    ) -> Mapping[str, QueueState]:
        """``queues`` again once rabbitmqctl counts ``dead-lettered`` (|D|, read over AMQP) messages
        in the dead-lettering queues, or after two quorum ticks: its count of a quorum queue can
        predate what was dead-lettered within the last tick (seen in F6 on a loaded machine)."""
        deadline = time.monotonic() + 2 * invariants.QUORUM_TICK
        while time.monotonic() < deadline:
            held = [
                q.messages for q in queues.values() if invariants.is_dead_letter(q.name, unrouted)
            ]
            if sum(held) == dead_lettered:
                break
            await asyncio.sleep(0.5)
            queues = await asyncio.to_thread(self.queues)
        return queues

    async def reconnect(self) -> None:
        """A new connection of the test's own, after a broker restart closed the old one."""
        with contextlib.suppress(Exception):
            await self.connection.close()
        self.connection = await aio_pika.connect(self.url)
        self.view.connection = self.connection

    async def cleanup(self) -> None:
        for worker in self.workers:
            worker.cleanup()
        with contextlib.suppress(Exception):
            names = self.planned_queues or set(self.ctl.queues(self.prefix))
            names |= self.other_queues
            channel = await self.connection.channel()
            for name in names:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for exchange in (
                self.settings.exchange,
                layout.return_exchange(self.settings.exchange),
                layout.unrouted_exchange(self.settings.exchange),
            ):
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
            with contextlib.suppress(Exception):
                await channel.close()
