"""Log records: one line each, whoever logs them (ours, aio-pika's, a plugin's)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from eventworker import logs


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What ``logs.configure`` sends to stderr, for the test; the logging set-up restored."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    saved = logging.root.handlers[:], logging.root.level
    logs.configure("INFO")
    try:
        yield stderr
    finally:
        logger.remove()
        logger.add(sys.__stderr__)
        logger.disable("eventworker")
        logging.root.handlers, level = saved
        logging.root.setLevel(level)


def test_a_library_record_with_a_traceback_stays_on_one_line(
    configured: io.StringIO,
) -> None:
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        logging.getLogger("aiormq.connection").exception("Cancelling cause reader exited")
    lines = configured.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Cancelling cause reader exited: ConnectionResetError:" in lines[0]
    assert "Traceback" not in lines[0]


def test_a_library_record_never_shows_a_password(configured: io.StringIO) -> None:
    logging.getLogger("aiormq.connection").error("lost amqp://u:CANARY-p4ss-7d2e@host/")
    err = configured.getvalue()
    assert "CANARY" not in err and "amqp://u:***@host/" in err
