"""The consumers under test, each able to prepare its queue (declare, pre-publish) and start.

Raw aio-pika, FastStream and eventworker consume the same queue shape: a durable queue bound to
a durable topic exchange, filled by the harness with the same persistent ~300-byte messages.
eventworker's queue is declared as a worker declares it (with its dead-letter arguments).
Dramatiq has its own message format and queues, so its own API fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from benchmarks import worker_process
from benchmarks.clients.common import READY
from benchmarks.harness import Bench
from benchmarks.procs import Child
from benchmarks.publishers import dramatiq_queue, publish_with_dramatiq

#: What a Dramatiq worker process logs when it consumes.
DRAMATIQ_READY = "is ready for action"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a prepared consumer reads: its exchange (to publish more) and queue."""

    exchange: str
    queue: str
    config: Path | None = None


class Consumer(Protocol):
    @property
    def ready(self) -> str:
        """A line every consumer process prints once it consumes."""

    @property
    def clean_exit(self) -> bool:
        """Whether it must exit 0 on SIGTERM (ours do; a peer's exit status is its own)."""

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target: ...

    def start(
        self, bench: Bench, scratch: Path, target: Target, probe_dir: Path
    ) -> list[Child]: ...


async def _plain_queue(bench: Bench, tag: str, count: int, queue_type: str = "classic") -> Target:
    prefix = bench.broker.prefix(tag)
    target = Target(f"{prefix}.x", f"{prefix}.q")
    await bench.broker.declare(target.exchange, target.queue, queue_type=queue_type)
    await bench.broker.prepublish(target.exchange, count)
    return target


@dataclass(frozen=True, slots=True)
class Raw:
    """``benchmarks.clients.raw_consumer`` in ``processes`` processes."""

    mode: str
    processes: int = 1
    uvloop: bool = False
    queue_type: str = "classic"
    latency: bool = False
    ready: str = READY
    clean_exit: bool = True

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        return await _plain_queue(bench, f"raw-{self.mode}", count, self.queue_type)

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        argv = [
            bench.python("uvloop" if self.uvloop else None),
            "-m",
            "benchmarks.clients.raw_consumer",
            self.mode,
            f"--queue={target.queue}",
            f"--prefetch={bench.profile.prefetch}",
            *(["--uvloop"] if self.uvloop else []),
            *(["--latency"] if self.latency else []),
        ]
        env = bench.env(BENCH_PROBE_DIR=str(probe_dir))
        return [
            Child(argv, env=env, cwd=scratch, log=scratch / f"consumer-{n}.log")
            for n in range(self.processes)
        ]


@dataclass(frozen=True, slots=True)
class Worker:
    """``eventworker run`` with handlers of the benchmark plugin (the first one's queue is
    the one filled); ``args`` are extra options (``--processes 2``). With ``declare`` the
    harness declares the topology before filling the queue (a worker restarting); without,
    the worker declares it (a first start)."""

    handlers: tuple[str, ...] = ("bench_noop",)
    queue_type: str = "classic"
    args: tuple[str, ...] = ()
    declare: bool = True
    ready: str = worker_process.STARTED
    clean_exit: bool = True

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        prefix = bench.broker.prefix(f"ew-{self.queue_type}")
        config = scratch / "eventworker.toml"
        worker_process.write_config(
            config,
            prefix,
            self.handlers,
            queue_type=self.queue_type,
            prefetch=bench.profile.prefetch,
        )
        settings = worker_process.settings(bench, config)
        await worker_process.declare(bench, worker_process.plan(settings), apply=self.declare)
        if count:
            await bench.broker.prepublish(settings.exchange, count)
        return Target(settings.exchange, f"{settings.queue_prefix}{self.handlers[0]}", config)

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        assert target.config is not None
        return [
            worker_process.start(bench, scratch, target.config, *self.args, probe_dir=probe_dir)
        ]


@dataclass(frozen=True, slots=True)
class FastStream:
    """A FastStream subscriber (``benchmarks.clients.faststream_app``) in its virtualenv."""

    #: ``default``, ``quiet`` or ``bare`` (see ``faststream_app.CONFIGS``)
    config: str = "default"
    ready: str = READY
    clean_exit: bool = False

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        return await _plain_queue(bench, "faststream", count)

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        argv = [bench.python("faststream"), "-m", "benchmarks.clients.faststream_app", "consume"]
        argv += [f"--prefetch={bench.profile.prefetch}", f"--config={self.config}"]
        env = bench.env(
            BENCH_PROBE_DIR=str(probe_dir),
            BENCH_EXCHANGE=target.exchange,
            BENCH_QUEUE=target.queue,
        )
        return [Child(argv, env=env, cwd=scratch, log=scratch / "faststream.log")]


@dataclass(frozen=True, slots=True)
class Dramatiq:
    """Dramatiq's worker command on ``benchmarks.clients.dramatiq_app`` in its virtualenv."""

    processes: int = 2
    threads: int = 8
    ready: str = DRAMATIQ_READY
    clean_exit: bool = False

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        queue = dramatiq_queue(bench)
        await publish_with_dramatiq(bench, scratch, queue, count)
        return Target("", queue)

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        argv = [bench.python("dramatiq"), "-m", "dramatiq", "benchmarks.clients.dramatiq_app"]
        argv += [f"--processes={self.processes}", f"--threads={self.threads}"]
        env = bench.env(BENCH_PROBE_DIR=str(probe_dir), BENCH_QUEUE=target.queue)
        return [Child(argv, env=env, cwd=scratch, log=scratch / "dramatiq.log")]
