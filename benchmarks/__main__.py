"""``python -m benchmarks``: run the suite and write ``benchmarks/results/latest.{json,md}``.

See docs/performance.md for what each scenario measures and how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import environment, goals, report, runner, scenarios
from benchmarks.amqp import Broker
from benchmarks.harness import Bench
from benchmarks.profile import FULL, QUICK
from benchmarks.results import Results
from benchmarks.scenarios import waiting

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure eventworker against raw aio-pika and its peers, interleaved, and "
        "write a JSON result file and a Markdown table (see docs/performance.md).",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, 1 run (smoke test)")
    parser.add_argument("--runs", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=[],
        help="groups, case ids or globs (drain, drain.raw-*, startup.help); "
        "each group's baseline is added",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run FastStream and Dramatiq, in virtualenvs under benchmarks/.venvs/",
    )
    parser.add_argument(
        "--dlq",
        type=int,
        metavar="N",
        help="dead letters per replay (default 100,000; quick 2,000)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTWORKER_URL", DEFAULT_URL),
        help="broker URL (default $EVENTWORKER_URL, else the local broker)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--name", default="latest", help="result file name, without suffix")
    parser.add_argument(
        "--keep", action="store_true", help="keep the children's logs and configs (printed path)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw the waiting group's throughput against concurrency there (needs matplotlib, "
        "the bench extra); docs/performance.md shows docs/images/waiting.png",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    profile = QUICK if args.quick else FULL
    if args.dlq:
        profile = replace(profile, dlq=args.dlq)
    runs = args.runs or profile.runs
    cases = runner.select(scenarios.all_cases(), args.only, peers=args.peers)
    run_id = f"bench.{datetime.now(UTC):%Y%m%dT%H%M%S}.{uuid.uuid4().hex[:6]}"
    meta: dict[str, Any] = {
        "suite": "eventworker benchmarks",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": asdict(profile),
        "runs": runs,
        "environment": environment.describe(),
        "load": {"before": environment.load()},
    }
    broker = await Broker.connect(args.url, run_id)
    workdir = Path(tempfile.mkdtemp(prefix="eventworker-bench-"))
    bench = Bench(broker, args.url, profile, workdir)
    outcomes = runner.prepare(cases, bench)
    meta["environment"]["rabbitmq"] = broker.server_version()
    meta["environment"]["venvs"] = {n: v.packages or v.problem for n, v in bench.venvs.items()}
    interrupted = True
    try:
        await runner.measure(outcomes, bench, runs)
        interrupted = False
    finally:
        await broker.cleanup()
        await broker.connection.close()
        meta.update(
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            interrupted=interrupted,
        )
        meta["load"]["after"] = environment.load()
        results = Results(scenarios.groups(), outcomes)
        doc = report.document(results, meta, goals.judge_all(results), goals.differences(results))
        json_path, md_path = report.write(doc, args.out, args.name)
        print(report.markdown(doc))
        print(f"wrote {json_path} and {md_path}", file=sys.stderr)
        if args.plot and waiting.plot(results, args.plot):
            print(f"wrote {args.plot}", file=sys.stderr)
        if args.keep:
            print(f"kept the children's logs in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = any(o.failures for o in outcomes)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        for case in scenarios.all_cases():
            print(f"{case.id:<28} {case.label}{'  [peer]' if case.peer else ''}")
        return 0
    try:
        runner.select(scenarios.all_cases(), args.only, peers=args.peers)
    except runner.UnknownScenario as exc:
        print(f"error: no scenario matches {exc}; see --list", file=sys.stderr)
        return 2
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("error: --plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        code = asyncio.run(_cancellable(run(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: children stopped, broker cleaned up", file=sys.stderr)
        return 130
    print(f"done in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return code


async def _cancellable(coro: Any) -> int:
    """Ctrl-C and SIGTERM cancel the run: children are stopped, names deleted, and what was
    measured so far is written (marked interrupted)."""
    task = asyncio.ensure_future(coro)
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    result: int = await task
    return result


if __name__ == "__main__":
    sys.exit(main())
