"""Start-up: the CLI's help, a worker until it consumes, and declaring many handlers."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

from benchmarks import worker_process
from benchmarks.consumers import Raw, Worker
from benchmarks.consumption import start_up
from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.plugin import FLEET, fleet_name
from benchmarks.procs import ChildFailed, run_to_end

GROUP = Group(
    "startup",
    "Start-up: wall time, quorum queues (eventworker's default), topology not yet declared",
    (Metric("seconds", "seconds", "lower", ratio=False),),
    "`eventworker --help` as a user runs it (the console script); `eventworker run` from the "
    "process start until it logs that every queue has its consumer, on a fresh topology; and "
    "the declaration of a 200-handler topology alone (`declare.apply`, in the harness). "
    "`python -c pass` and a raw aio-pika consumer show what any Python program pays.",
)


async def _command(bench: Bench, argv: list[str]) -> Sample:
    scratch = bench.scratch()
    done = await run_to_end(argv, env=bench.env(), cwd=scratch, log=scratch / "out.log", timeout=60)
    if done.code != 0:
        raise ChildFailed(f"{' '.join(argv)} exited {done.code}: {done.output[-300:]}")
    return {"seconds": done.wall}


async def _help(bench: Bench) -> Sample:
    return await _command(bench, [str(Path(sys.executable).parent / "eventworker"), "--help"])


async def _python(bench: Bench) -> Sample:
    return await _command(bench, [sys.executable, "-c", "pass"])


async def _declare(bench: Bench, handlers: int) -> Sample:
    """``declare.apply`` of a worker with ``handlers`` handlers, on fresh names."""
    scratch = bench.scratch()
    config = scratch / "eventworker.toml"
    prefix = bench.broker.prefix("declare")
    names = [fleet_name(n) for n in range(handlers)]
    worker_process.write_config(config, prefix, names, queue_type="quorum", prefetch=128)
    plan = worker_process.plan(worker_process.settings(bench, config))
    started = time.monotonic()
    await worker_process.declare(bench, plan)
    return {"seconds": time.monotonic() - started}


def _fleet(size: int) -> Worker:
    return Worker(tuple(fleet_name(n) for n in range(size)), queue_type="quorum", declare=False)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case("python", "python -c pass (interpreter start-up)", _python),
        case("help", "eventworker --help", _help),
        case(
            "raw-consumer",
            "raw aio-pika consumer until consuming (queue exists)",
            partial(start_up, consumer=Raw("consume")),
        ),
        case(
            "run-20",
            "eventworker run, 20 handlers, until consuming",
            partial(start_up, consumer=_fleet(20)),
        ),
        case(
            "run-200",
            "eventworker run, 200 handlers, until consuming",
            partial(start_up, consumer=_fleet(FLEET)),
        ),
        case(
            "declare-200",
            "topology declaration, 200 handlers (declare.apply)",
            partial(_declare, handlers=FLEET),
        ),
    ]
