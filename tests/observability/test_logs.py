"""Log lines: JSON that parses line by line and carries the event fields; no body, no secret."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from loguru import logger

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.observability import logs
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CANARY_BODY = "CANARY-body-3f9a"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """eventworker configured for JSON lines into a buffer; the logging set-up restored after."""
    root = logging.getLogger()
    saved: tuple[list[logging.Handler], int] = (root.handlers[:], root.level)
    stream = io.StringIO()
    logs.configure("DEBUG", format="json", stream=stream)
    try:
        yield stream
    finally:
        _unconfigure(saved)


def _unconfigure(saved: tuple[list[logging.Handler], int]) -> None:
    """Undo ``logs.configure``: its sinks, its patcher (which would add fields to every later
    test's records), the library's silence and the standard logging set-up."""
    logger.remove()
    logger.configure(patcher=lambda record: None)  # loguru keeps the last patcher otherwise
    logger.disable("eventworker")
    root = logging.getLogger()
    root.handlers[:], root.level = saved


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_json_lines_parse_and_carry_the_event_fields(
    broker: Broker, settings: Settings, json_log: io.StringIO
) -> None:
    done: list[int] = []

    @handler("logs.event", retry=RetryPolicy(max_attempts=2, delays=(0.1,)))
    def plugin(event: Event[Any], ctx: Context) -> None:  # sync: runs in a thread
        ctx.logger.info("plugin line on attempt {}", event.attempt)
        logging.getLogger("acme.plugin").warning("stdlib line from the plugin")
        if event.attempt == 1:
            raise ConnectionError("downstream unavailable")
        done.append(event.attempt)

    async with running(broker, [plugin], settings):
        await broker.publish(
            "logs.event",
            f'{{"password": "{CANARY_BODY}"}}'.encode(),
            message_id="evt-7",
            correlation_id="corr-7",
            headers={"traceparent": TRACEPARENT},
        )
        await wait_for(lambda: done == [2])
    text = json_log.getvalue()
    assert CANARY_BODY not in text
    assert "guest:guest" not in text
    lines = _lines(json_log)  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    during = [line for line in lines if line.get("event_id") == "evt-7"]
    messages = [line["message"] for line in during]
    assert "plugin line on attempt 1" in messages and "plugin line on attempt 2" in messages
    assert "stdlib line from the plugin" in messages
    assert any("retry in 0.1s" in m for m in messages)  # the worker's own settle line
    for line in during:
        assert line["handler"] == "plugin"
        assert line["event_type"] == "logs.event"
        assert line["correlation_id"] == "corr-7"
        assert line["attempt"] in (1, 2)
        assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    stdlib = [line for line in during if line["message"] == "stdlib line from the plugin"]
    assert {line["logger"] for line in stdlib} == {"acme.plugin"}
    assert any(line["message"].startswith("worker connected") for line in lines)


def test_a_json_line_holds_an_exception_as_text_and_fields_a_plugin_bound(
    json_log: io.StringIO,
) -> None:
    try:
        raise ValueError("broken\ninput")
    except ValueError:
        logger.bind(order="o-1").exception("failed with {}", "a\nnewline")
    [line] = _lines(json_log)
    assert line["level"] == "ERROR"
    assert line["message"] == "failed with a\\x0anewline"
    assert line["order"] == "o-1"
    assert "ValueError: broken" in line["exception"]
    assert "Traceback" in line["exception"]


def test_urls_with_passwords_from_libraries_are_redacted(json_log: io.StringIO) -> None:
    logging.getLogger("some.library").error("cannot reach amqp://app:s3cret@rabbit:5672/")
    [line] = _lines(json_log)
    assert "s3cret" not in line["message"]
    assert "amqp://app:***@rabbit:5672/" in line["message"]


def test_library_chatter_below_warning_is_not_routed(json_log: io.StringIO) -> None:
    logging.getLogger("aiormq.connection").info("frame received")
    logging.getLogger("acme.plugin").info("plugin info")
    assert [line["message"] for line in _lines(json_log)] == ["plugin info"]


def test_a_library_record_with_a_traceback_stays_on_one_line() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved: tuple[list[logging.Handler], int] = (root.handlers[:], root.level)
    logs.configure("INFO", stream=stream)
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            logging.getLogger("aiormq.connection").exception("Cancelling cause reader exited")
    finally:
        _unconfigure(saved)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Cancelling cause reader exited: ConnectionResetError:" in lines[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("no_color", [None, "1"])
def test_colours_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    root = logging.getLogger()
    saved: tuple[list[logging.Handler], int] = (root.handlers[:], root.level)
    terminal = _Terminal()
    logs.configure("INFO", stream=terminal)
    try:
        logger.info("coloured?")
    finally:
        _unconfigure(saved)
    assert "coloured?" in terminal.getvalue()
    assert ("\x1b[" in terminal.getvalue()) is (no_color is None)


def _event(event_id: str) -> Event[Any]:
    return Event(
        id=event_id,
        type="logs.event",
        source=None,
        time=datetime.now(UTC),
        data=None,
        headers={},
        attempt=1,
        correlation_id=f"corr-{event_id}",
    )


async def test_concurrent_handlings_each_log_their_own_fields(json_log: io.StringIO) -> None:
    both = asyncio.Barrier(2)

    async def handle(event_id: str) -> None:
        with logs.handling("h", _event(event_id), trace_id=None):
            logger.info("before {}", event_id)
            await both.wait()  # the other handling sets its fields in between
            logger.info("after {}", event_id)
            # A ``def`` handler's thread runs in a copy of the task's context.
            call = partial(contextvars.copy_context().run, logger.info, "thread {}", event_id)
            await asyncio.get_running_loop().run_in_executor(None, call)

    await asyncio.gather(handle("e-1"), handle("e-2"))
    logger.info("outside")
    lines = _lines(json_log)
    for line in lines[:-1]:
        assert line["event_id"] == line["message"].split()[-1]
        assert line["correlation_id"] == f"corr-{line['event_id']}"
        assert line["handler"] == "h"
    assert len(lines) == 7
    assert "event_id" not in lines[-1] and "handler" not in lines[-1]


def test_a_nested_handling_logs_its_own_fields_then_the_outer_ones_again(
    json_log: io.StringIO,
) -> None:
    with logs.handling("outer", _event("e-1"), trace_id="0af7651916cd43dd8448eb211c80319c"):
        with logs.handling("inner", _event("e-2"), trace_id=None):
            logger.info("inner")
            assert logs.handling_fields()["event_id"] == "e-2"
        logger.bind(handler="bound").info("outer")
    assert logs.handling_fields() == {}
    inner, outer = _lines(json_log)
    assert (inner["handler"], inner["event_id"], "trace_id" in inner) == ("inner", "e-2", False)
    # A field the record was bound with wins over the handling's.
    assert (outer["handler"], outer["event_id"]) == ("bound", "e-1")
    assert outer["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_the_pretty_format_shows_the_handling_fields() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        with logs.handling("bill", _event("e-9"), trace_id=None):
            logger.info("charged")
    finally:
        _unconfigure(saved)
    assert "charged [handler=bill event_id=e-9 attempt=1]" in stream.getvalue()
