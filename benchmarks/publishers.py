"""Running a publisher program to its end and reading its report; Dramatiq's own publishing,
which also fills its queue for the drain (its messages have its own format)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.harness import Bench
from benchmarks.procs import ChildFailed, run_to_end


def dramatiq_queue(bench: Bench) -> str:
    """A queue name for Dramatiq, which declares it with its delay and dead-letter queues on
    the first send; all three are remembered for clean-up."""
    queue = f"{bench.broker.prefix('dramatiq')}.q"
    bench.broker.track(queues=[queue, f"{queue}.DQ", f"{queue}.XQ"])
    return queue


async def publish_with_dramatiq(
    bench: Bench, scratch: Path, queue: str, count: int
) -> dict[str, float]:
    """``actor.send`` ``count`` times in Dramatiq's virtualenv; returns its report."""
    return await run_publisher(
        bench,
        scratch,
        [bench.python("dramatiq"), "-m", "benchmarks.clients.dramatiq_app", f"--count={count}"],
        BENCH_QUEUE=queue,
    )


async def run_publisher(
    bench: Bench, scratch: Path, argv: list[str], **env: str
) -> dict[str, float]:
    """Run a publisher program to its end; returns the JSON line it reports.

    Raises:
        ChildFailed: it failed, or printed no report.
    """
    log = scratch / f"{Path(argv[2]).name.rsplit('.', 1)[-1]}.log"
    done = await run_to_end(argv, env=bench.env(**env), cwd=scratch, log=log, timeout=600)
    lines = [line for line in done.output.splitlines() if line.startswith("{")]
    if done.code != 0 or not lines:
        tail = "\n".join(done.output.splitlines()[-15:])
        raise ChildFailed(f"{' '.join(argv[1:4])} exited {done.code}\n{tail}")
    report: dict[str, float] = json.loads(lines[-1])
    return report
