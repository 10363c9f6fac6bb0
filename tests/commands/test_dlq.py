"""``eventworker dlq`` run as an operator would, against the real broker: list, show, replay,
purge and export, a replay killed half-way, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.errors import ExitCode
from eventworker.plugins import discovery
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.cli import EVENTWORKER, cli, env_for
from tests.support.deadletters import (
    IDS,
    PRODUCED,
    declare,
    drain_ids,
    fill_dead_letters,
    ids_in,
)

H = "x-eventworker-"


async def test_a_spent_message_is_listed_and_shown_with_its_reason(
    broker: Broker, settings: Settings
) -> None:
    [broken] = [r.handler for r in discovery.discover(names=("broken",))]
    async with running(broker, [broken], settings) as worker:
        dead = worker.routes[0].dead_letter_queue
        await broker.publish("demo.broken", b'{"order": 7}', message_id="spent-1")
        await broker.wait_count(dead, 1)
    listed = cli(settings, "dlq", "ls")
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if row.startswith("broken ")]
    assert dead in line and " 1 " in line and "exception 1" in line
    rows = {r["handler"]: r for r in json.loads(cli(settings, "dlq", "ls", "--json").stdout)}
    assert rows["broken"]["messages"] == 1
    assert rows["broken"]["oldest_age_seconds"] >= 0
    assert rows["greet"]["exists"] is False  # never declared: not an error
    shown = cli(settings, "dlq", "show", "broken")
    assert shown.returncode == 0, shown.stderr
    assert "spent-1  demo.broken  exception  attempts=3" in shown.stdout
    assert "RuntimeError: this handler always fails" in shown.stdout
    assert '(12 bytes) {"order": 7}' in shown.stdout
    [row] = json.loads(cli(settings, "dlq", "show", "broken", "--json").stdout)
    assert (row["id"], row["reason"], row["attempts"], row["exception"]) == (
        "spent-1",
        "exception",
        3,
        "RuntimeError",
    )
    assert await broker.count(dead) == 1  # looking took nothing


async def test_a_replayed_message_is_processed_once_and_leaves_the_dead_letter_queue(
    broker: Broker, settings: Settings
) -> None:
    fixed = False
    calls: list[Event[Any]] = []

    @handler("fix.event", name="fixable", retry=RetryPolicy(max_attempts=2, delays=(1,)))
    async def fixable(event: Event[Any], ctx: Context) -> None:
        calls.append(event)
        if not fixed:
            raise ConnectionError("payment service down")

    async with running(broker, [fixable], settings) as worker:
        route = worker.routes[0]
        await broker.publish("fix.event", b'{"n": 1}', message_id="fix-1")
        await wait_for(lambda: len(calls) == 2, timeout=15)
        await wait_for(lambda: worker.in_flight == 0)
        [dead_lettered] = json.loads(cli(settings, "dlq", "show", "fixable", "--json").stdout)
        assert (dead_lettered["id"], dead_lettered["reason"], dead_lettered["attempts"]) == (
            "fix-1",
            "exception",
            2,
        )
        fixed = True  # the operator fixed the cause
        result = cli(settings, "dlq", "replay", "fixable", "--verbose")
        assert result.returncode == 0, result.stderr
        assert "moved fix-1  fix.event  exception" in result.stdout
        assert "1 of 1 message(s)" in result.stdout
        await wait_for(lambda: len(calls) == 3)
        await wait_for(lambda: worker.in_flight == 0)
        await asyncio.sleep(0.5)  # a second delivery would have come by now
        assert await broker.count(route.dead_letter_queue) == 0
        assert await broker.count(route.queue) == 0
    assert [e.attempt for e in calls] == [1, 2, 1]  # the replay starts the count again
    replayed = calls[2]
    assert (replayed.id, replayed.type, replayed.data) == ("fix-1", "fix.event", {"n": 1})
    assert replayed.headers[H + "replays"] == 1


async def test_a_replay_killed_half_way_loses_nothing(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    dlq = await declare(broker, settings)
    ids = [f"k{n:02}" for n in range(40)]
    await fill_dead_letters(broker, dlq.queue, ids)
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "dlq",
        "replay",
        "target",
        "--rate",
        "20/s",
        "--verbose",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(settings),
    )
    assert process.stdout is not None
    moved = []
    while len(moved) < 10:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, (await process.stderr.read()).decode() if process.stderr else ""
        moved.append(line.split()[1].decode())
    process.send_signal(signal.SIGKILL)
    await process.wait()
    await asyncio.sleep(0.5)  # the broker takes back what the killed process held
    dead_lettered_after = await ids_in(broker, dlq.queue)
    replayed = await ids_in(broker, dlq.return_to or "")
    assert set(dead_lettered_after) | set(replayed) == set(ids)  # nothing lost
    assert set(moved) <= set(replayed)  # what it said it moved did move
    assert (
        len(dead_lettered_after) + len(replayed) <= len(ids) + 1
    )  # at most the one in flight twice


async def test_sigterm_stops_a_replay_and_leaves_the_rest_in_order(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)  # quorum: the hard case for order
    await fill_dead_letters(broker, dlq.queue, IDS)
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        *("dlq", "replay", "target", "--id", "m3", "--id", "m8", "--rate", "0.2/s", "--verbose"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(settings),
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 30)
    assert first.startswith(b"moved m3")
    process.send_signal(signal.SIGTERM)  # while it waits five seconds to move m8
    assert await asyncio.wait_for(process.wait(), 30) == ExitCode.INTERRUPTED
    assert await ids_in(broker, dlq.queue) == [i for i in IDS if i != "m3"]
    assert await ids_in(broker, dlq.return_to or "") == ["m3"]


async def test_export_then_purge_then_publish_exported_brings_the_events_back(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:3], **{H + "causation-id": "cause-1"})
    dump = tmp_path / "dead.ndjson"
    exported = cli(settings, "dlq", "export", "target", "--out", str(dump))
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 message(s)" in exported.stdout
    assert await broker.count(dlq.queue) == 3
    refused = cli(settings, "dlq", "purge", "target")
    assert refused.returncode == ExitCode.USAGE and "--yes" in refused.stderr
    purged = cli(settings, "dlq", "purge", "target", "--yes")
    assert purged.returncode == 0 and "purged 3 message(s)" in purged.stdout
    assert await broker.count(dlq.queue) == 0
    # Published again to the exchange: here the handler's work queue is bound for the key.
    published = cli(settings, "publish", "--exported", "--file", str(dump))
    assert published.returncode == 0, published.stderr
    assert "3 confirmed" in published.stdout
    back = await broker.take_all(dlq.return_to or "", expect=3)
    assert [m.message_id for m in back] == IDS[:3]
    assert back[0].body == orjson.dumps({"n": 0})
    assert back[0].headers["tenant"] == "acme"
    assert back[0].headers[H + "causation-id"] == "cause-1"
    assert H + "reason" not in back[0].headers  # the diagnosis stays in the file
    assert back[0].routing_key == "dlq.event"
    assert back[0].timestamp == PRODUCED  # when it happened, not when it was published again


async def test_purge_by_id_deletes_only_those(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:4])
    result = cli(settings, "dlq", "purge", "target", "--id", "m1", "--id", "m2", "--yes")
    assert result.returncode == 0 and "purged 2 message(s)" in result.stdout
    assert await ids_in(broker, dlq.queue) == ["m0", "m3"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["dlq", "replay"], ExitCode.USAGE, "name one HANDLER, or give --all"),
        (["dlq", "replay", "x", "--all"], ExitCode.USAGE, "name one HANDLER"),
        (["dlq", "replay", "x", "--rate", "fast"], ExitCode.USAGE, "messages per second"),
        (["dlq", "replay", "x", "--rate", "0/s"], ExitCode.USAGE, "messages per second"),
        (["dlq", "purge", "x"], ExitCode.USAGE, "--yes"),
        (["publish", "a.b", "--exported"], ExitCode.INVALID_INPUT, "--exported takes --file"),
    ],
)
def test_bad_dlq_input_is_refused_before_connecting(
    settings: Settings, args: list[str], code: int, message: str
) -> None:
    result = cli(settings, *args, EVENTWORKER_URL="amqp://guest:guest@127.0.0.1:1/")
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_an_export_file_that_is_not_one_is_refused_naming_the_line(
    settings: Settings, tmp_path: Path
) -> None:
    dump = tmp_path / "dump.ndjson"
    dump.write_text('{"routing_key": "a.b", "body": "{}"}\n{"n": 1}\n')
    result = cli(
        settings,
        "publish",
        "--exported",
        "--file",
        str(dump),
        EVENTWORKER_URL="amqp://guest:guest@127.0.0.1:1/",
    )
    assert result.returncode == ExitCode.INVALID_INPUT
    assert "line 2" in result.stderr and "no routing_key" in result.stderr


async def test_a_queue_that_does_not_exist_is_named(broker: Broker, settings: Settings) -> None:
    result = cli(settings, "dlq", "show", "nobody")
    assert result.returncode == ExitCode.BROKER_REFUSED
    assert f"{settings.queue_prefix}nobody.dead" in result.stderr
    assert "does not exist" in result.stderr


def _at_a_terminal(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal, as an operator would."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [EVENTWORKER, *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env_for(settings, COLUMNS="100"),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(60), b"".join(chunks).decode(errors="replace")


async def test_at_a_terminal_replay_and_purge_draw_a_bar_not_a_line_per_message(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    ids = [f"t{n:03}" for n in range(300)]
    await fill_dead_letters(broker, dlq.queue, ids)
    code, shown = await asyncio.to_thread(
        _at_a_terminal, settings, "dlq", "replay", "target", "--dry-run"
    )
    assert code == 0, shown
    assert "reading" in shown and "300/300" in shown  # the bar, at its end
    assert "would move t" not in shown  # no line per message
    assert "300 of 300 message(s)" in shown
    code, shown = await asyncio.to_thread(
        _at_a_terminal, settings, "dlq", "purge", "target", "--reason", "exception", "--yes"
    )
    assert code == 0, shown
    assert "300/300" in shown and "purged 150 message(s)" in shown


async def test_quiet_replay_prints_the_summary_only(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS)
    result = cli(settings, "dlq", "replay", "target", "--dry-run", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"target: 10 of 10 message(s) read from {dlq.queue!r} would be replayed to queue "
        f"{dlq.return_to!r}"
    ]
    piped = cli(settings, "dlq", "replay", "target", "--dry-run")  # a pipe: no bar either
    assert piped.stdout == result.stdout and "reading" not in piped.stderr
    verbose = cli(settings, "dlq", "replay", "target", "--dry-run", "--verbose")
    assert verbose.stdout.splitlines()[:-1] == [
        f"would move {i}  dlq.event  " + ("exception" if int(i[1:]) % 2 else "schema_error")
        for i in IDS
    ]


async def test_ctrl_c_waits_for_the_confirms_in_flight_and_leaves_the_rest_in_order(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)  # quorum: the hard case for order
    ids = [f"c{n:04}" for n in range(3000)]
    await fill_dead_letters(broker, dlq.queue, ids)
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        *("dlq", "replay", "target", "--verbose", "--window", "32"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(settings),
    )
    assert process.stdout is not None and process.stderr is not None
    lines = [await asyncio.wait_for(process.stdout.readline(), 30) for _ in range(100)]
    process.send_signal(signal.SIGINT)  # copies in flight, messages read ahead
    assert await asyncio.wait_for(process.wait(), 120) == ExitCode.INTERRUPTED
    lines += (await process.stdout.read()).splitlines(keepends=True)
    moved = [line.split()[1].decode() for line in lines if line.startswith(b"moved ")]
    summary = lines[-1].decode()
    assert summary.startswith(f"target: {len(moved)} of ")
    assert f"interrupted: {len(moved)} message(s) moved" in (await process.stderr.read()).decode()
    # Every message in exactly one place: what it reported moved at the work queue, in order;
    # the rest dead-lettered, in order.
    assert len(moved) >= 100 and moved == ids[: len(moved)]
    assert await drain_ids(broker, dlq.return_to or "") == moved
    assert await drain_ids(broker, dlq.queue) == ids[len(moved) :]


def test_a_window_beyond_what_amqp_can_prefetch_is_refused(settings: Settings) -> None:
    result = cli(settings, "dlq", "replay", "target", "--window", "40000")
    assert result.returncode == 2
    assert "--window" in result.stderr and "40000" in result.stderr
