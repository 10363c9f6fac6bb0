"""Handlers that wait: a 5 ms await (an I/O stand-in) at concurrency 16, 64 and 256, against
the Little's-law bound (concurrency / 5 ms) and raw aio-pika at the same concurrency; and the
curve, drawn with matplotlib (``--plot PATH``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks.clients.common import READY
from benchmarks.consumers import Raw, Target, Worker
from benchmarks.consumption import drain
from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.plugin_features import WAIT_SECONDS
from benchmarks.procs import Child
from benchmarks.results import Results

CONCURRENCIES = (16, 64, 256)
#: Each case drains what its bound would handle in this many seconds, at most the profile's
#: drain backlog.
SECONDS_AT_BOUND = 3.0

GROUP = Group(
    "waiting",
    "Waiting: a handler that awaits 5 ms, at concurrency 16, 64 and 256 (prefetch 2x)",
    (
        Metric("msgs_per_s", "msgs/s", "higher", ratio=False),
        Metric("bound_fraction", "of the bound", "higher", ratio=False),
        Metric("cpu_us_per_msg", "consumer CPU µs/msg", "lower", ratio=False),
        Metric("core_share", "CPU cores busy", "lower", ratio=False),
    ),
    "A backlog of the drain's messages (3 s at the bound, at most the drain's count) consumed "
    "by a handler that awaits asyncio.sleep(0.005) and returns. Little's law bounds the "
    "throughput at concurrency / 5 ms (3,200, 12,800 and 51,200 msgs/s); 'of the bound' is "
    "the throughput over that. Raw aio-pika runs the same: prefetch twice the concurrency, a "
    "semaphore of the concurrency, sleep, ack. CPU cores busy: the consumer's CPU seconds per "
    "second; past about one core (two with the broker) the CPU, not the waiting, limits it.",
)


def bound(concurrency: int) -> float:
    """Little's law: messages per second when ``concurrency`` handlings each last 5 ms."""
    return concurrency / WAIT_SECONDS


@dataclass(frozen=True, slots=True)
class RawWaiting:
    """``benchmarks.clients.raw_waiting`` at ``concurrency``, on a plain queue."""

    concurrency: int
    ready: str = READY
    clean_exit: bool = True

    async def prepare(self, bench: Bench, scratch: Path, count: int) -> Target:
        return await Raw("consume").prepare(bench, scratch, count)

    def start(self, bench: Bench, scratch: Path, target: Target, probe_dir: Path) -> list[Child]:
        argv = [bench.python(), "-m", "benchmarks.clients.raw_waiting"]
        argv += [f"--queue={target.queue}", f"--concurrency={self.concurrency}"]
        argv += [f"--wait={WAIT_SECONDS}"]
        env = bench.env(BENCH_PROBE_DIR=str(probe_dir))
        return [Child(argv, env=env, cwd=scratch, log=scratch / "consumer.log")]


async def _waiting(bench: Bench, concurrency: int, raw: bool) -> Sample:
    count = min(int(bound(concurrency) * SECONDS_AT_BOUND), bench.profile.drain)
    consumer = (
        RawWaiting(concurrency)
        if raw
        else Worker(("bench_wait",), args=("--concurrency", str(concurrency), "--prefetch", "0"))
    )
    sample = await drain(bench, consumer, count=count)
    sample["bound_fraction"] = sample["msgs_per_s"] / bound(concurrency)
    sample["core_share"] = sample["msgs_per_s"] * sample["cpu_us_per_msg"] / 1e6
    del sample["peak_rss_mb"]
    return sample


def case_id(concurrency: int, raw: bool) -> str:
    return f"{GROUP.name}.{'raw' if raw else 'eventworker'}-c{concurrency}"


def cases() -> list[Case]:
    found = []
    for concurrency in CONCURRENCIES:
        for raw in (True, False):
            who = "raw aio-pika" if raw else "eventworker run"
            found.append(
                GROUP.case(
                    case_id(concurrency, raw).split(".", 1)[1],
                    f"{who}, concurrency {concurrency}",
                    partial(_waiting, concurrency=concurrency, raw=raw),
                    baseline=raw and concurrency == CONCURRENCIES[0],
                )
            )
    return found


def of_attainable(results: Results, concurrency: int) -> float | None:
    """eventworker's throughput over what is attainable at ``concurrency``: the Little's-law
    bound, or raw aio-pika's throughput at the same concurrency where that is lower (the CPU or
    the broker limits both). Paired by repetition, the median."""
    ours, raw = (
        results.outcome(case_id(concurrency, False)),
        results.outcome(case_id(concurrency, True)),
    )
    if ours is None or raw is None:
        return None
    mine, theirs = ours.values("msgs_per_s"), raw.values("msgs_per_s")
    limit = bound(concurrency)
    fractions = [mine[r] / min(limit, theirs[r]) for r in mine if theirs.get(r)]
    return statistics.median(fractions) if fractions else None


def plot(results: Results, path: Path) -> bool:
    """Draw throughput against concurrency (eventworker, raw aio-pika, the bound) as a PNG at
    ``path``; False when the group was not measured."""
    series = {}
    for raw in (False, True):
        points = [(c, results.median(case_id(c, raw), "msgs_per_s")) for c in CONCURRENCIES]
        series[raw] = [(c, v) for c, v in points if v is not None]
    if not series[False] and not series[True]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    axes.plot(CONCURRENCIES, [bound(c) for c in CONCURRENCIES], "k--", label="bound: C / 5 ms")
    for raw, style, label in ((False, "o-", "eventworker run"), (True, "s-", "raw aio-pika")):
        if series[raw]:
            xs, ys = zip(*series[raw], strict=True)
            axes.plot(xs, ys, style, label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(CONCURRENCIES, [str(c) for c in CONCURRENCIES])
    axes.set_xlabel("concurrency (handlers awaiting 5 ms at once)")
    axes.set_ylabel("messages per second (median)")
    axes.set_title("A handler that waits 5 ms: throughput against Little's law")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return True
