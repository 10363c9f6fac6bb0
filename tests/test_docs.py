"""The docs stay true: the generated reference sections are fresh, every Python example is a
real file, and those files work against the real broker and databases."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sqlite3
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from eventworker import Context, Event, handler
from eventworker.publishing.ingress import create_app
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.queues import sink

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_sections_are_fresh() -> None:
    generator = load(ROOT / "scripts" / "gen_docs.py")
    for page, (name, make) in generator.PAGES.items():
        text = page.read_text()
        assert generator.render(text, name, make()) == text, (
            f"{page.name} is stale: run .venv/bin/python scripts/gen_docs.py"
        )


def test_every_setting_has_a_row_with_a_meaning_in_the_configuration_reference() -> None:
    generator = load(ROOT / "scripts" / "gen_docs.py")
    table = generator.settings_table()
    for path in generator._fields():
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{path}` |")]
        assert row.rstrip(" |").split("|")[-1].strip(), f"{path} has no meaning"


def test_python_examples_in_the_docs_are_included_from_files() -> None:
    inline = {
        page.name: len(re.findall(r'^```python\n(?!--8<-- "[^"]+"\n```$)', page.read_text(), re.M))
        for page in (ROOT / "docs").glob("*.md")
    }
    assert {name: n for name, n in inline.items() if n} == {}
    for page in (ROOT / "docs").glob("*.md"):
        for included in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            assert (ROOT / included).is_file(), f"{page.name} includes missing {included}"


async def test_the_async_publishing_example_publishes_confirmed_events(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    example = load(EXAMPLES / "publish_async.py")
    url = settings.url.get_secret_value()
    assert await example.place_order(url, settings.exchange) == ["confirmed", "confirmed"]
    assert len(await broker.take_all(queue, expect=3)) == 3


async def test_the_sync_publishing_example_works_from_a_thread(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    example = load(EXAMPLES / "publish_sync.py")

    def app() -> dict[str, str]:
        example.start(settings.url.get_secret_value(), settings.exchange)
        try:
            return dict(example.create_order_view("o-9"))
        finally:
            example.stop()

    assert await asyncio.to_thread(app) == {"event_id": "o-9-created"}
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["o-9-created"]


def test_the_sqlite_outbox_example_writes_the_order_and_its_event_together(
    tmp_path: Path,
) -> None:
    example = load(EXAMPLES / "outbox_sqlite.py")
    db = sqlite3.connect(tmp_path / "app.db")
    example.setup(db)
    event_id = example.place_order(db, "o-1", 12.5)
    with pytest.raises(sqlite3.IntegrityError):  # a duplicate order: no second event either
        example.place_order(db, "o-1", 1.0)
    rows = db.execute("SELECT event_id, aggregate_key FROM eventworker_outbox").fetchall()
    assert rows == [(event_id, "o-1")]


async def test_the_asyncpg_outbox_example_commits_the_order_and_its_event(pg_dsn: str) -> None:
    from eventworker import outbox

    example = load(EXAMPLES / "outbox_asyncpg.py")
    schema = f"docs_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path TO {schema}")
        await conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total FLOAT)")
        await outbox.create(conn)
        event_id = await example.place_order(conn, "o-1", 12.5)
        row = await conn.fetchrow("SELECT event_id, aggregate_key FROM eventworker_outbox")
        assert tuple(row) == (event_id, "o-1")
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_the_webhook_sender_example_gets_a_202_with_its_signature(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    example = load(EXAMPLES / "webhook_sender.py")
    configured = settings.model_copy(
        update={"http": settings.http.model_copy(update={"hmac_secret": SecretStr("whsec")})}
    )
    transport = httpx.ASGITransport(app=create_app(configured))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        assert await example.send(client, "whsec", "o-5") == "o-5-created"
        with pytest.raises(httpx.HTTPStatusError):
            await example.send(client, "wrong-secret", "o-6")
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["o-5-created"]


async def test_the_plain_aio_pika_example_produces_a_worker_readable_event(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    example = load(EXAMPLES / "plain_aio_pika.py")
    await example.publish_plain(settings.url.get_secret_value(), settings.exchange)
    [message] = await broker.take_all(queue, expect=1)
    assert message.message_id == "o-1-created" and message.content_type == "application/json"


async def test_the_kombu_example_produces_an_event_a_worker_handles(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("orders.#", name="kombu_example")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    example = load(EXAMPLES / "kombu_producer.py")
    async with running(broker, [record], settings):
        url = settings.url.get_secret_value()
        await asyncio.to_thread(example.publish_with_kombu, url, settings.exchange)
        await wait_for(lambda: len(seen) == 1)
    [event] = seen
    assert (event.id, event.source, event.data) == (
        "o-1-created",
        "billing-api",
        {"order_id": "o-1", "total": 12.5},
    )
