"""Dead letters: ``eventworker dlq replay`` moving a full dead-letter queue back to its handler."""

from __future__ import annotations

import re

from benchmarks import worker_process
from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.procs import ChildFailed, run_to_end
from benchmarks.scenarios import publish
from benchmarks.wire import ROUTING_KEY
from eventworker.topology import layout

GROUP = Group(
    "dlq",
    "Dead letters: replaying a dead-letter queue (quorum, eventworker's default) to its handler",
    (
        Metric("msgs_per_s", "msgs/s", "higher"),
        Metric("cpu_us_per_msg", "CLI CPU µs/msg", "lower"),
    ),
    "`eventworker dlq replay HANDLER --quiet`, as an operator runs it, on a dead-letter queue "
    "filled with persistent ~300-byte dead letters: messages per second as the command reports "
    "them (reading to the last ack; connecting excluded), and its CPU per message (start-up "
    "included). Every copy is confirmed before its original is acked. Baseline: `eventworker "
    "publish --file` of as many events in the same run.",
)
#: What ``eventworker dlq replay`` prints: ``... in 3.21s (6,230 messages/s)``.
_RATE = re.compile(r"\(([\d,]+) messages/s\)")
#: The handler whose dead letters are replayed.
HANDLER = "bench_noop"


async def replay(bench: Bench) -> Sample:
    count = bench.profile.dlq
    scratch = bench.scratch()
    config = scratch / "eventworker.toml"
    prefix = bench.broker.prefix("dlq")
    worker_process.write_config(config, prefix, [HANDLER], queue_type="quorum", prefetch=128)
    settings = worker_process.settings(bench, config)
    await worker_process.declare(bench, worker_process.plan(settings))
    queues = layout.handler_queues(HANDLER, (), prefix=settings.queue_prefix)
    await bench.broker.prepublish(
        "",
        count,
        routing_key=queues.dead_letter_queue,
        headers={
            "x-eventworker-routing-key": ROUTING_KEY,
            "x-eventworker-reason": "exception",
            "x-eventworker-attempt": 3,
        },
    )
    env = bench.env(
        PYTHONPATH=str(worker_process.install_plugin(bench.workdir / "plugin")),
        EVENTWORKER_URL=bench.url,
        EVENTWORKER_CONFIG=str(config),
    )
    argv = [bench.python(), "-m", "eventworker", "dlq", "replay", HANDLER, "--quiet"]
    done = await run_to_end(argv, env=env, cwd=scratch, log=scratch / "replay.log", timeout=900)
    rate = _RATE.search(done.output)
    if done.code != 0 or rate is None:
        raise ChildFailed(f"eventworker dlq replay exited {done.code}: {done.output[-500:]}")
    moved, _ = await bench.broker.depth(queues.queue)
    left, _ = await bench.broker.depth(queues.dead_letter_queue)
    if moved != count or left:
        raise ChildFailed(f"replayed {moved} of {count}; {left} left dead-lettered")
    return {
        "msgs_per_s": float(rate.group(1).replace(",", "")),
        "cpu_us_per_msg": done.cpu / count * 1e6,
    }


async def publish_file(bench: Bench) -> Sample:
    return await publish.cli(bench, bench.profile.dlq)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "publish-file",
            "eventworker publish --file, as many events (a process)",
            publish_file,
            baseline=True,
        ),
        case("eventworker-replay", "eventworker dlq replay (a process)", replay),
    ]
