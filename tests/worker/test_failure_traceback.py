"""Seeing where a handler failed: the dead-letter log line names the last frames of its
traceback, and ``eventworker dlq show --traceback`` prints the traceback the copy carries."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.settings import Settings
from eventworker.worker._copies import where
from tests.support.broker import Broker, running
from tests.support.cli import cli

ONCE = RetryPolicy(max_attempts=1, delays=(1,))
FILE = "test_failure_traceback.py"


class MailError(Exception):
    pass


def _deliver(to: str) -> None:
    raise MailError(f"mailbox {to} unavailable")


def _send(to: str) -> None:
    _deliver(to)


def _line(lines: list[str], handler_name: str) -> str:
    [found] = [line for line in lines if f"{handler_name} dead-lettered" in line]
    return found


def _lineno(func: Any, text: str) -> int:
    """The line of ``text`` in ``func``'s source file."""
    source = func.__code__.co_filename
    with open(source) as f:
        return next(n for n, line in enumerate(f, 1) if text in line)


async def test_the_dead_letter_line_names_the_handlers_last_frames_innermost_first(
    broker: Broker, settings: Settings, log_lines: list[str]
) -> None:
    @handler("tb.async", retry=ONCE)
    async def send_mail(event: Event[Any], ctx: Context) -> None:
        _send("ada@example.org")  # the handler's line

    @handler("tb.sync", retry=ONCE)
    def send_mail_sync(event: Event[Any], ctx: Context) -> None:
        _send("bob@example.org")  # the sync handler's line

    async with running(broker, [send_mail, send_mail_sync], settings) as worker:
        await broker.publish("tb.async", b"{}", message_id="a1")
        await broker.publish("tb.sync", b"{}", message_id="s1")
        for route in worker.routes:
            await broker.wait_count(route.dead_letter_queue, 1)
    inner = _lineno(_deliver, "raise MailError")
    middle = _lineno(_send, "    _deliver(to)")
    for name, marker in (("send_mail", "the handler's line"), ("send_mail_sync", "sync handler")):
        outer = _lineno(_send, marker)
        line = _line(log_lines, name)
        assert line.rstrip().endswith(
            f"MailError: mailbox {'ada' if name == 'send_mail' else 'bob'}@example.org "
            f"unavailable | at {FILE}:{inner} in _deliver < {FILE}:{middle} in _send < "
            f"{FILE}:{outer} in {name}"
        ), line
        assert "dispatch.py" not in line and "thread.py" not in line


async def test_a_failure_outside_the_handler_has_no_frames_on_its_line(
    broker: Broker, settings: Settings, log_lines: list[str]
) -> None:
    @handler("tb.slow", retry=ONCE, timeout=0.1)
    async def too_slow(event: Event[Any], ctx: Context) -> None:
        await asyncio.sleep(5)

    async with running(broker, [too_slow], settings) as worker:
        await broker.publish("tb.slow", b"{}", message_id="t1")
        await broker.publish("tb.slow", b"not json", message_id="t2")
        await broker.wait_count(worker.routes[0].dead_letter_queue, 2)
    lines = [line for line in log_lines if "too_slow dead-lettered" in line]
    assert len(lines) == 2 and not any(" | at " in line for line in lines), lines


def test_where_keeps_at_most_three_frames_and_nothing_for_no_traceback() -> None:
    def level(n: int) -> None:
        if n == 0:
            raise ValueError("deep")
        level(n - 1)

    try:
        level(5)
    except ValueError as exc:
        shown = where(exc)
    assert re.fullmatch(
        rf" \| at {FILE}:\d+ in level < {FILE}:\d+ in level < {FILE}:\d+ in level", shown
    ), shown
    assert where(ValueError("never raised")) == "" and where(None) == ""


async def test_dlq_show_traceback_prints_the_whole_traceback_header(
    broker: Broker, settings: Settings
) -> None:
    @handler("tb.show", retry=ONCE, name="tb_show")
    async def tb_show(event: Event[Any], ctx: Context) -> None:
        _send("eve@example.org")

    async with running(broker, [tb_show], settings) as worker:
        await broker.publish("tb.show", b"{}", message_id="show-1")
        await broker.wait_count(worker.routes[0].dead_letter_queue, 1)
    plain = cli(settings, "dlq", "show", "tb_show")
    assert plain.returncode == 0, plain.stderr
    assert "traceback:" not in plain.stdout
    shown = cli(settings, "dlq", "show", "tb_show", "--traceback")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(cli(settings, "dlq", "show", "tb_show", "--json").stdout)
    recorded = row["traceback"]
    assert recorded.startswith("Traceback (most recent call last):")
    assert recorded.rstrip().endswith("MailError: mailbox eve@example.org unavailable")
    assert f'{FILE}", line {_lineno(_deliver, "raise MailError")}, in _deliver' in recorded
    printed = shown.stdout.split("    traceback:\n", 1)[1].splitlines()
    assert printed == ["      " + text for text in recorded.rstrip("\n").splitlines()]
