"""``eventworker status`` shows what the broker reports; ``publish`` shows progress on a tty."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import aio_pika

from eventworker.plugins.discovery import discover
from eventworker.settings import Settings
from tests.support.broker import Broker, running
from tests.support.cli import EVENTWORKER, bound_queue, cli, env_for


async def _fill(broker: Broker, queue: str, count: int) -> None:
    channel = await broker.connection.channel()
    for n in range(count):
        await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id=str(n)), queue)
    await channel.close()


async def test_status_shows_the_numbers_the_broker_reports(
    broker: Broker, settings: Settings
) -> None:
    # The installed example handler, its topology declared by a worker that then stopped.
    greet = [reg.handler for reg in discover(names=("greet",))]
    async with running(broker, greet, settings) as worker:
        route = worker.routes[0]
    await _fill(broker, route.queue, 3)
    await _fill(broker, route.dead_letter_queue, 2)
    await _fill(broker, route.retry_queues[300], 1)  # waits 300 s: still there when we look
    result = cli(settings, "status", "--json", EVENTWORKER_HANDLERS="greet")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["handlers"]
    assert row["name"] == "greet" and row["queue"] == route.queue
    assert (row["messages"], row["consumers"], row["dead_letters"]) == (
        await broker.count(route.queue),
        await broker.consumers(route.queue),
        await broker.count(route.dead_letter_queue),
    )
    assert (row["messages"], row["consumers"], row["dead_letters"]) == (3, 0, 2)
    assert {t["queue"]: t["messages"] for t in row["retry"]} == {
        route.retry_queues[1]: 0,
        route.retry_queues[10]: 0,
        route.retry_queues[60]: 0,
        route.retry_queues[300]: 1,
    }
    table = cli(settings, "status", EVENTWORKER_HANDLERS="greet")
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split()[:5] == ["HANDLER", "QUEUE", "READY", "CONSUMERS", "DEAD"]
    assert line.split() == ["greet", route.queue, "3", "0", "2", "1s:0", "10s:0", "60s:0", "300s:1"]


async def test_status_shows_the_delayed_events_waiting_per_level(
    broker: Broker, settings: Settings
) -> None:
    greet = [reg.handler for reg in discover(names=("greet",))]
    levels = settings.model_copy(update={"delay_levels": 25})
    await broker.declare(*greet, settings=levels)
    await _fill(broker, f"{settings.exchange}.delay.10", 2)  # 1024 s: still there when we look
    env = {"EVENTWORKER_HANDLERS": "greet", "EVENTWORKER_DELAY_LEVELS": "25"}
    result = cli(settings, "status", "--json", **env)
    assert result.returncode == 0, result.stderr
    waiting = json.loads(result.stdout)["delay_levels"]
    assert [w["level"] for w in waiting] == list(range(25))
    assert waiting[10] == {
        "level": 10,
        "seconds": 1024,
        "queue": f"{settings.exchange}.delay.10",
        "messages": 2,
    }
    assert sum(w["messages"] for w in waiting) == 2
    table = cli(settings, "status", **env)
    assert table.stdout.splitlines()[-1] == "DELAYED 2 waiting: level 10 (1024s):2"
    off = cli(settings, "status", "--json", EVENTWORKER_HANDLERS="greet")
    assert json.loads(off.stdout)["delay_levels"] == []


def test_status_marks_queues_that_do_not_exist(settings: Settings) -> None:
    result = cli(settings, "status", EVENTWORKER_HANDLERS="flaky")
    assert result.returncode == 0, result.stderr
    _, line, legend = result.stdout.splitlines()
    assert line.split() == ["flaky", f"{settings.queue_prefix}flaky", "-", "-", "-", "1s:-", "2s:-"]
    assert legend.startswith("-: the queue does not exist")
    [row] = json.loads(cli(settings, "status", "--json", EVENTWORKER_HANDLERS="flaky").stdout)[
        "handlers"
    ]
    assert row["messages"] is None and row["dead_letters"] is None


def test_status_of_an_unreachable_broker_fails_without_the_password(settings: Settings) -> None:
    result = cli(settings, "status", EVENTWORKER_URL="amqp://guest:CANARY-p4ss@127.0.0.1:1/")
    assert result.returncode == 6
    assert "CANARY" not in result.stdout + result.stderr


async def test_publish_shows_a_progress_bar_on_a_terminal_only(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    await bound_queue(broker, "progress.event")
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f'{{"n": {n}}}\n' for n in range(50)))
    quiet, _ = _publish_file(settings, events, terminal=False)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""
    assert b"50 confirmed" in quiet.stdout
    shown, drawn = _publish_file(settings, events, terminal=True)
    assert shown.returncode == 0
    assert b"publishing" in drawn and b"50/50" in drawn
    assert b"50 confirmed" in shown.stdout
    assert await broker.count(f"{settings.queue_prefix}sink") == 100


def _publish_file(
    settings: Settings, events: Path, *, terminal: bool
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """``publish --file`` with stderr on a pseudo-terminal or a pipe; what the terminal got."""
    args = [EVENTWORKER, "publish", "progress.event", "--file", str(events)]
    if not terminal:
        return subprocess.run(args, capture_output=True, env=env_for(settings), timeout=60), b""
    controller, side = pty.openpty()
    try:
        done = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=side, env=env_for(settings), timeout=60
        )
        os.close(side)
        drawn = b""
        while chunk := _read(controller):
            drawn += chunk
    finally:
        os.close(controller)
    return done, drawn


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other side is closed and drained
        return b""
