"""Publish throughput, every event confirmed (except Dramatiq, which does not confirm)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.procs import ChildFailed, run_to_end
from benchmarks.publishers import dramatiq_queue, publish_with_dramatiq, run_publisher
from benchmarks.wire import ROUTING_KEY, body

GROUP = Group(
    "publish",
    "Publish: persistent ~300-byte events to a topic exchange, each confirmed",
    (
        Metric("msgs_per_s", "msgs/s", "higher"),
        Metric("cpu_us_per_msg", "publisher CPU µs/msg", "lower"),
    ),
    "Events per second from the first publish to the last confirm (connecting excluded; the "
    "CLI's own figure includes its connect), and the publisher's CPU per event (the CLI's "
    "includes its start-up and reading the file). Every event is mandatory and confirmed, "
    "except Dramatiq's (its default sends without confirms). Baseline: raw aio-pika with 256 "
    "confirms in flight.",
)
#: What ``eventworker publish`` prints: ``... confirmed in 0.85s (11,765 events/s)``.
_RATE = re.compile(r"\(([\d,]+) events/s\)")


async def _queue(bench: Bench) -> tuple[str, str]:
    prefix = bench.broker.prefix("publish")
    exchange, queue = f"{prefix}.x", f"{prefix}.q"
    await bench.broker.declare(exchange, queue)
    return exchange, queue


async def _landed(bench: Bench, queue: str, count: int, report: dict[str, float]) -> Sample:
    """The figures, once the broker holds every event that was reported sent."""
    held, _ = await bench.broker.depth(queue)
    if held < count or report["count"] < count:
        raise ChildFailed(f"published {report['count']:g} of {count}; {held} in {queue}")
    return {
        "msgs_per_s": report["count"] / report["seconds"],
        "cpu_us_per_msg": report["cpu"] / report["count"] * 1e6,
    }


async def raw(bench: Bench, window: int) -> Sample:
    count = bench.profile.publish_await if window == 1 else bench.profile.publish
    exchange, queue = await _queue(bench)
    argv = [bench.python(), "-m", "benchmarks.clients.raw_publisher", f"--exchange={exchange}"]
    report = await run_publisher(
        bench, bench.scratch(), [*argv, f"--count={count}", f"--window={window}"]
    )
    return await _landed(bench, queue, count, report)


async def library(bench: Bench) -> Sample:
    count = bench.profile.publish
    exchange, queue = await _queue(bench)
    argv = [bench.python(), "-m", "benchmarks.clients.library_publisher", f"--exchange={exchange}"]
    report = await run_publisher(bench, bench.scratch(), [*argv, f"--count={count}"])
    return await _landed(bench, queue, count, report)


async def cli(bench: Bench, count: int | None = None) -> Sample:
    """``eventworker publish --file`` of ``count`` events (default: the profile's): a user's
    command, so the process is timed whole too."""
    count = count or bench.profile.publish
    exchange, queue = await _queue(bench)
    scratch = bench.scratch()
    events = _events_file(bench.workdir, count)
    argv = [bench.python(), "-m", "eventworker", "publish", ROUTING_KEY, "--file", str(events)]
    env = bench.env(EVENTWORKER_URL=bench.url, EVENTWORKER_EXCHANGE=exchange)
    done = await run_to_end(argv, env=env, cwd=scratch, log=scratch / "publish.log", timeout=600)
    rate = _RATE.search(done.output)
    if done.code != 0 or rate is None:
        raise ChildFailed(f"eventworker publish exited {done.code}: {done.output[-500:]}")
    events_per_s = float(rate.group(1).replace(",", ""))
    report = {"count": count, "seconds": count / events_per_s, "cpu": done.cpu}
    return await _landed(bench, queue, count, report)


def _events_file(directory: Path, count: int) -> Path:
    path = directory / f"events-{count}.jsonl"
    if not path.exists():
        path.write_bytes(b"".join(body(n) + b"\n" for n in range(count)))
    return path


async def faststream(bench: Bench) -> Sample:
    count = bench.profile.publish_await  # it awaits each confirm: as slow as raw-await
    exchange, queue = await _queue(bench)
    argv = [bench.python("faststream"), "-m", "benchmarks.clients.faststream_app", "publish"]
    report = await run_publisher(
        bench, bench.scratch(), [*argv, f"--count={count}"], BENCH_EXCHANGE=exchange
    )
    return await _landed(bench, queue, count, report)


async def dramatiq(bench: Bench) -> Sample:
    count = bench.profile.publish
    queue = dramatiq_queue(bench)
    report = await publish_with_dramatiq(bench, bench.scratch(), queue, count)
    return await _landed(bench, queue, count - 1, report)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case("raw-await", "raw aio-pika, each confirm awaited", partial(raw, window=1)),
        case(
            "raw-window256",
            "raw aio-pika, 256 confirms in flight",
            partial(raw, window=256),
            baseline=True,
        ),
        case("eventworker-library", "eventworker Publisher.send_many", library),
        case(
            "eventworker-cli",
            "eventworker publish --file (a process; CPU incl. start-up)",
            cli,
        ),
        case(
            "faststream",
            "FastStream broker.publish, each confirm awaited",
            faststream,
            peer=True,
            venv="faststream",
        ),
        case(
            "dramatiq",
            "Dramatiq actor.send (no confirms)",
            dramatiq,
            peer=True,
            venv="dramatiq",
        ),
    ]
