"""E: publishing faults, CLI and library (reliability guide §7 E1-E5). Broker stops,
policies and size limits are applied to the private node; E4 cuts this test's own connection
with a TCP proxy, on the shared broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventworker import Publisher
from eventworker.errors import ExitCode
from eventworker.publishing.channel import Outgoing, PublishResult
from tests.faults import traffic
from tests.faults.plugin import Spec
from tests.faults.processes import settings_env
from tests.faults.rig import Rig
from tests.support.private_node import PrivateNode
from tests.support.proxy import Proxy

EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))


def cli(rig: Rig, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTWORKER, *args],
        env=settings_env(rig.settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=rig.folder,
    )


def jsonl(path: Path, bodies: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in bodies))
    return path


async def test_e1_publishing_across_a_broker_restart_never_claims_a_lost_event(
    node_rig: Rig, node: PrivateNode
) -> None:
    rig = node_rig
    spec = Spec("e1", ("e1.event",))
    await rig.declare([spec])
    connections = contextlib.AsyncExitStack()
    early = await connections.enter_async_context(library(rig))

    # (b) 5,000 events through the library while the broker stops and starts again.
    ids = traffic.new_ids(5000, "e1")
    publishing = asyncio.create_task(
        send_all(rig, traffic.outgoing("e1.event", [{"n": i} for i in range(5000)], ids))
    )
    await asyncio.sleep(0.3)
    await asyncio.to_thread(node.stop_app)

    # (a) the CLI against the stopped broker.
    started = time.monotonic()
    down = await asyncio.to_thread(cli, rig, "publish", "e1.event", "{}")
    took = time.monotonic() - started
    results = await publishing
    await asyncio.to_thread(node.start_app)
    await rig.reconnect()

    # (c) the first publish after the restart, on a connection opened before it.
    [first_after] = traffic.new_ids(1, "e1c")
    [result] = await early.send_many([Outgoing("e1.event", b'{"n": -1}', first_after)])
    traffic.record(rig.ledger, [(result, time.time())])
    await connections.aclose()

    worker = rig.started([spec])
    await rig.wait_processed(rig.ledger.confirmed())
    await rig.finish(workers=[worker])

    assert down.returncode == ExitCode.BROKER_UNREACHABLE, down.stderr
    assert took <= rig.settings.connect_timeout + 1 + 1  # + the CLI's own start-up
    assert f"127.0.0.1:{node.port}" in down.stderr and "guest:guest" not in down.stderr
    assert "published" not in down.stdout
    assert len(results) == len(ids)
    assert {r.status for r in results} <= {"confirmed", "connection_lost", "timeout"}
    assert result.status in ("confirmed", "connection_lost"), result
    print(
        f"{sum(r.ok for r in results)} of {len(ids)} confirmed across the restart; the "
        f"first publish after it: {result.status}"
    )


def library(rig: Rig, **options: Any) -> contextlib.AbstractAsyncContextManager[Publisher]:
    """The library publisher of applications (``eventworker.Publisher``), which re-opens a
    lost connection or channel and sends the unconfirmed events again, same ids."""
    return Publisher.connect(
        rig.url, exchange=rig.settings.exchange, timeout=10, reconnect_timeout=60, **options
    )


async def send_all(rig: Rig, events: list[Outgoing], **options: Any) -> list[PublishResult]:
    """``events`` through the library publisher, every outcome in the ledger."""
    async with library(rig, **options) as publisher:
        sent = time.time()
        results = await publisher.send_many(events)
    traffic.record(rig.ledger, [(r, sent) for r in results])
    return results


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_e2_a_full_queue_nacks_the_overflow_and_the_cli_lists_every_one(
    node_rig: Rig, node: PrivateNode, queue_type: str
) -> None:
    """A classic queue nacks exactly what exceeds ``max-length``; a quorum queue applies the
    limit a little late, letting some publishes already in flight in. Either way every
    confirmed event is in the queue and every other one is reported, by id."""
    rig = node_rig.with_settings(queue_type=queue_type)
    spec = Spec("e2", ("e2.event",))
    queue = rig.work_queue("e2")
    await rig.declare([spec])
    node.ctl.set_policy(
        "e2-full", f"^{re.escape(queue)}$", {"max-length": 100, "overflow": "reject-publish"}
    )
    ids = traffic.new_ids(500, "e2")
    events = rig.folder / "events.jsonl"
    jsonl(events, [{"n": i} for i in range(500)])
    failed_out = rig.folder / "failed.jsonl"
    done = await asyncio.to_thread(
        cli, rig, "publish", "e2.event", "--file", str(events), "--failed-out", str(failed_out)
    )
    exact = queue_type == "classic"
    assert done.returncode == ExitCode.FAILED
    confirmed = int(re.findall(r"(\d+) confirmed", done.stdout)[0])
    assert confirmed == 100 if exact else 100 <= confirmed < 500
    failed = [json.loads(line) for line in failed_out.read_text().splitlines()]
    assert len(failed) == 500 - confirmed and {f["status"] for f in failed} == {"nacked"}
    assert len(done.stderr.splitlines()) <= 22, "stderr lists them all"
    assert await rig.view.count(queue) == confirmed

    # The library says the same, per event.
    await purge(rig, queue)
    results = await rig.publish_results("e2.event", [{"n": i} for i in range(500)], ids)
    nacked = {r.event_id for r in results if r.status == "nacked"}
    confirmed = len(rig.ledger.confirmed())
    assert confirmed == 100 if exact else 100 <= confirmed < 500
    assert len(nacked) == 500 - confirmed
    assert await queued_ids(rig, queue) == rig.ledger.confirmed()


async def queued_ids(rig: Rig, queue: str) -> set[str]:
    """The ids of every message in ``queue`` (got and left there: the channel's close
    requeues them)."""
    channel = await rig.connection.channel()
    ids = set()
    try:
        source = await channel.get_queue(queue, ensure=False)
        while (message := await source.get(fail=False)) is not None:
            ids.add(message.message_id or "")
    finally:
        await channel.close()
    return ids


async def purge(rig: Rig, queue: str) -> None:
    channel = await rig.connection.channel()
    try:
        await (await channel.get_queue(queue, ensure=False)).purge()
    finally:
        await channel.close()


def unroutable_counters(node: PrivateNode) -> tuple[int, int]:
    """The node's (returned, dropped) unroutable message counters."""
    text = node.ctl.eval("rabbit_global_counters:overview().")
    returned = re.search(r"messages_unroutable_returned_total => (\d+)", text)
    dropped = re.search(r"messages_unroutable_dropped_total => (\d+)", text)
    assert returned and dropped, text
    return int(returned[1]), int(dropped[1])


async def test_e3_unroutable_events_are_each_reported_and_none_dropped_in_silence(
    node_rig: Rig, node: PrivateNode
) -> None:
    rig = node_rig
    await rig.declare([Spec("e3", ("e3.event",))])
    events = jsonl(rig.folder / "events.jsonl", [{"n": i} for i in range(50)])
    failed_out = rig.folder / "failed.jsonl"
    returned, dropped = await asyncio.to_thread(unroutable_counters, node)
    done = await asyncio.to_thread(
        cli,
        rig,
        "publish",
        "nobody.listens.here",
        "--file",
        str(events),
        "--failed-out",
        str(failed_out),
    )
    now_returned, now_dropped = await asyncio.to_thread(unroutable_counters, node)

    assert done.returncode == ExitCode.FAILED and "0 confirmed" in done.stdout
    failed = [json.loads(line) for line in failed_out.read_text().splitlines()]
    assert len(failed) == 50 and {f["status"] for f in failed} == {"unroutable"}
    assert (now_returned - returned, now_dropped - dropped) == (50, 0)


async def queued_counts(rig: Rig, queue: str) -> Counter[str]:
    """How many messages of each id ``queue`` holds (got and left there: the channel's close
    requeues them)."""
    channel = await rig.connection.channel()
    counts: Counter[str] = Counter()
    try:
        source = await channel.get_queue(queue, ensure=False)
        while (message := await source.get(fail=False)) is not None:
            counts[message.message_id or ""] += 1
    finally:
        await channel.close()
    return counts


#: Frames from the broker after which the proxy cuts the publisher's connection: past the
#: handshake (5 frames), within the stream of confirms. Counted in frames, not bytes: the
#: publisher writes a window of events at once and the broker confirms them with few
#: ``basic.ack(multiple)`` frames of 21 bytes, so a byte budget could outlast the run.
CONFIRM_FRAMES = 12


async def test_e4_confirms_lost_with_the_connection_are_resent_with_the_same_ids(
    shared_rig: Rig, proxy: Proxy
) -> None:
    """The library publisher's connection is cut three times after so many bytes from the
    broker, so publishes that reached the broker lose their confirms. It sends those again,
    same ids: every event ends confirmed and in the queue, and what is there twice is an id
    that was sent."""
    rig = shared_rig
    spec = Spec("e4", ("e4.event",))
    queue = rig.work_queue("e4")
    await rig.declare([spec])
    n = 3000
    ids = traffic.new_ids(n, "e4")
    events = traffic.outgoing("e4.event", [{"n": i} for i in range(n)], ids)
    async with Publisher.connect(
        proxy.url(rig.url), exchange=rig.settings.exchange, timeout=10, reconnect_timeout=60
    ) as publisher:
        proxy.cut_after(CONFIRM_FRAMES, frames=True, times=3)
        sent = time.time()
        results = await publisher.send_many(events)
    traffic.record(rig.ledger, [(r, sent) for r in results])
    queued = await queued_counts(rig, queue)
    duplicates = sum(queued.values()) - len(queued)

    assert proxy.cuts >= 3 and publisher.reconnects >= 3, (proxy.cuts, publisher.reconnects)
    assert [r.status for r in results] == ["confirmed"] * n, Counter(r.status for r in results)
    assert set(ids) <= set(queued), "a confirmed event is not in the queue"
    assert set(queued) <= set(ids), "the queue holds an id that was never sent"
    assert publisher.republished > 0 and duplicates > 0, "no confirm was lost at a cut"
    worker = rig.started([spec])
    await rig.wait_processed(ids)
    report = await rig.finish(workers=[worker])
    print(
        f"{proxy.cuts} cuts; {publisher.republished} events sent again; {duplicates} "
        f"duplicates in the queue (publishes whose confirm was lost); dup {report.dup}"
    )


async def test_e5_an_oversize_body_in_a_file_is_refused_before_anything_is_sent(
    shared_rig: Rig,
) -> None:
    """The CLI checks every line before connecting, so one oversize line refuses the whole
    file (the catalogue's variant sends the 999 others; ours sends nothing and names the line)."""
    rig = shared_rig
    await rig.declare([Spec("e5", ("e5.event",))])
    bodies: list[Any] = [{"n": i} for i in range(1000)]
    bodies[500] = {"n": 500, "pad": "x" * (2 * 1024 * 1024)}
    events = jsonl(rig.folder / "events.jsonl", bodies)
    done = await asyncio.to_thread(cli, rig, "publish", "e5.event", "--file", str(events))
    assert done.returncode == ExitCode.INVALID_INPUT
    assert "line 501" in done.stderr and "max_body_bytes" in done.stderr
    assert await rig.view.count(rig.work_queue("e5")) == 0


async def oversize_on_one_channel(rig: Rig, node: PrivateNode) -> list[PublishResult]:
    """1,000 events through the library, a 2 MiB one at position 500, with the broker's own
    limit lowered to 1 MiB (and the client's check bypassed), so the broker closes the channel
    with the 999 others in flight around it."""
    node.ctl.eval("application:set_env(rabbit, max_message_size, 1048576).")
    await rig.declare([Spec("e5b", ("e5b.event",))])
    bodies: list[Any] = [{"n": i} for i in range(1000)]
    bodies[500] = {"n": 500, "pad": "x" * (2 * 1024 * 1024)}
    ids = traffic.new_ids(1000, "e5b")
    try:
        return await send_all(rig, traffic.outgoing("e5b.event", bodies, ids))
    finally:
        node.ctl.eval("application:set_env(rabbit, max_message_size, 134217728).")


async def test_e5_after_the_broker_closes_a_channel_the_other_999_are_still_confirmed(
    node_rig: Rig, node: PrivateNode
) -> None:
    """The broker closes the channel over the oversize message (406), failing the confirms
    in flight with it; the library publisher sends those again, the same ids on a new
    channel, so only the oversize one is reported and nothing confirmed is lost."""
    rig = node_rig
    results = await oversize_on_one_channel(rig, node)
    assert len(results) == 1000
    assert [r.event_id for r in results if not r.ok] == [results[500].event_id]
    assert results[500].status == "nacked" and "PRECONDITION_FAILED" in results[500].detail
    worker = rig.started([Spec("e5b", ("e5b.event",))])
    await rig.wait_processed(rig.ledger.confirmed())
    report = await rig.finish(workers=[worker])
    assert rig.ledger.processed() == rig.ledger.confirmed()
    print(f"999 of 1000 confirmed; {report.dup} duplicate deliveries of republished ids")
