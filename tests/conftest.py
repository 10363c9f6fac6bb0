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
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest

from eventworker.settings import InboxSettings, Settings, load_settings
from tests.support import stores
from tests.support.broker import Broker

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a RabbitMQ ``broker``: those using the broker fixtures, and
    the fault, interop and cluster suites. ``pytest -m "not broker"`` runs the others. A slow
    test (soak, minutes-long broker timers) may take half an hour instead of the default limit."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(1800))
        path = item.path.as_posix()
        fixtures = getattr(item, "fixturenames", ())
        if (
            "broker_url" in fixtures
            or "/tests/faults/" in path
            or "/tests/interop/" in path
            or path.endswith("/tests/test_cluster.py")
        ):
            item.add_marker(pytest.mark.broker)


def _inbox(kind: str, tmp_path: Path) -> Iterator[InboxSettings]:
    reason = stores.unavailable(kind)
    if reason:
        stores.skip_or_fail(f"{kind} inbox tests cannot run: {reason}")
    inbox = InboxSettings.model_validate(
        {"url": stores.store_url(kind, tmp_path), "name": stores.unique_name()}
    )
    yield inbox
    stores.run_sync(stores.drop(inbox))


@pytest.fixture(params=stores.ALL_STORES)
def inbox_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InboxSettings]:
    """Inbox settings of each store in turn (memory, SQLite, PostgreSQL, Redis), with a table
    name / key prefix of this test alone; skipped for a store that is not reachable."""
    yield from _inbox(request.param, tmp_path)


@pytest.fixture(params=stores.SHARED_STORES)
def shared_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InboxSettings]:
    """As ``inbox_settings``, for the stores worker processes can share (not memory)."""
    yield from _inbox(request.param, tmp_path)


# -- PostgreSQL, for the outbox -----------------------------------------------------------------
#: The database the outbox tests use; trust authentication on the local server by default.
#: The same server as the inbox tests (scripts/bootstrap.sh sets that password on a fresh one).
PG_DSN = os.environ.get("EVENTWORKER_TEST_PG_DSN") or os.environ.get(
    "EVENTWORKER_TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test PostgreSQL; the tests that need it skip, saying why, when it does not answer
    (scripts/bootstrap.sh starts or installs one where it can)."""
    skip = os.environ.get("EVENTWORKER_TEST_PG_SKIP")
    if skip:
        stores.skip_or_fail(f"no PostgreSQL: {skip}")
    parts = urlsplit(PG_DSN)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2).close()
    except OSError:
        stores.skip_or_fail(f"no PostgreSQL answers at {parts.hostname}:{parts.port or 5432}")
    return PG_DSN


@pytest.fixture
async def pg_table(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh outbox table name of this test alone, created and dropped with its trigger."""
    import asyncpg

    from eventworker import outbox

    table = f"outbox_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await outbox.create(conn, table)
        yield table
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}; DROP FUNCTION IF EXISTS {table}_notify")
        await conn.close()
