"""Shared fixtures: a real RabbitMQ, fresh names per test, and helpers to look into queues.

The broker is the one at $EVENTWORKER_TEST_URL, else localhost:5672 when it answers, else one
started with testcontainers where a Docker engine runs. Every test gets its own exchange and
queue-name prefix, and its queues and exchanges are deleted afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import aio_pika
import pytest

from eventworker.settings import Settings, load_settings
from tests.broker import Broker

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "localhost", parts.port or 5672), 2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("EVENTWORKER_TEST_URL", DEFAULT_URL)
    if _answers(url):
        yield url
        return
    try:
        from testcontainers.rabbitmq import RabbitMqContainer
    except ImportError:  # pragma: no cover
        pytest.exit(f"no RabbitMQ at {url} and testcontainers is not installed", 3)
    try:
        container = RabbitMqContainer("rabbitmq:3.13-management")
        container.start()
    except Exception as exc:  # pragma: no cover - no Docker engine either
        pytest.exit(f"no RabbitMQ at {url} and none could be started with Docker: {exc}", 3)
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"
    finally:
        container.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A name prefix of this test alone: ``t.<test name>.<random>.``"""
    name = request.node.name.replace("[", ".").replace("]", "")[:60]
    return f"t.{name}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(
    broker_url: str,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings for this test's own exchange and queues; fast timeouts; no stray config file."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    for key in list(os.environ):
        if key.startswith("EVENTWORKER_") and key != "EVENTWORKER_TEST_URL":
            monkeypatch.delenv(key)
    return load_settings(
        url=broker_url,
        exchange=f"{prefix}.x",
        queue_prefix=f"{prefix}.",
        grace=5.0,
        publish_timeout=5.0,
        connect_timeout=5.0,
        heartbeat=10,
        concurrency=4,
    )


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every line eventworker logs during the test (the library is silent by default)."""
    from loguru import logger

    lines: list[str] = []
    logger.enable("eventworker")
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink)
        logger.disable("eventworker")


@pytest.fixture
async def broker(broker_url: str, settings: Settings) -> AsyncIterator[Broker]:
    """A connection for looking into queues; deletes this test's queues and exchanges after."""
    connection = await aio_pika.connect(broker_url)
    helper = Broker(connection, settings)
    try:
        yield helper
    finally:
        await helper.cleanup()
        await connection.close()
