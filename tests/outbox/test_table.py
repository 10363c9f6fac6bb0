"""outbox.add and outbox.create with each driver: rows land in the caller's transaction, and
only there; bad events are refused before anything is written."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from eventworker import outbox
from eventworker.errors import ConfigError, InvalidInputError
from eventworker.outbox.table import DELIVER_AT


@pytest.fixture
def lite(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "app.db")
    outbox.create(conn)
    conn.commit()
    return conn


def pending(conn: sqlite3.Connection) -> list[tuple[str, str, str | None, bytes]]:
    return conn.execute(
        "SELECT event_id, routing_key, aggregate_key, body FROM eventworker_outbox ORDER BY seq"
    ).fetchall()


def test_a_sqlite3_row_exists_only_if_the_transaction_commits(lite: sqlite3.Connection) -> None:
    lite.execute("CREATE TABLE orders (id TEXT)")
    lite.execute("INSERT INTO orders VALUES ('o-1')")
    first = outbox.add(lite, "orders.created", {"id": "o-1"}, aggregate_key="o-1")
    lite.rollback()
    assert pending(lite) == []
    second = outbox.add(lite, "orders.created", {"id": "o-2"}, id="o-2", aggregate_key="o-2")
    lite.commit()
    assert second == "o-2" and first != second
    assert pending(lite) == [("o-2", "orders.created", "o-2", b'{"id":"o-2"}')]


def test_creating_the_table_twice_is_harmless(lite: sqlite3.Connection) -> None:
    outbox.create(lite)
    outbox.add(lite, "a.b", 1, headers={"tenant": "acme"})
    lite.commit()
    assert lite.execute("SELECT headers FROM eventworker_outbox").fetchone() == (
        '{"tenant": "acme"}',
    )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"routing_key": "orders.*", "data": {}}, "wildcard"),
        ({"routing_key": "a.b", "data": {}, "headers": {"BCC": "x"}}, "reserved"),
        ({"routing_key": "a.b", "data": {1, 2}}, "JSON"),
        ({"routing_key": "a.b", "data": "x" * 100, "max_body_bytes": 50}, "max_body_bytes"),
        ({"routing_key": "a.b", "data": {}, "id": "i" * 256}, "1 to 255 bytes"),
        ({"routing_key": "a.b", "data": {}, "delay": -1}, "negative"),
        ({"routing_key": "a.b", "data": {}, "delay": 1, "at": datetime.now(UTC)}, "not both"),
        ({"routing_key": "a.b", "data": {}, "at": datetime(2030, 1, 1)}, "time zone"),
        ({"routing_key": "a.b", "data": {}, "delay": 2**32}, "longer than any delay levels"),
    ],
)
def test_a_bad_event_is_refused_and_nothing_is_written(
    lite: sqlite3.Connection, kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        outbox.add(lite, **kwargs)  # type: ignore[arg-type]  # the parametrised keywords
    lite.commit()
    assert pending(lite) == []


def test_a_delayed_row_keeps_its_due_time_absolute_in_its_headers(
    lite: sqlite3.Connection,
) -> None:
    before = datetime.now(UTC)
    outbox.add(lite, "a.b", 1, headers={"tenant": "acme"}, delay=timedelta(minutes=15))
    outbox.add(lite, "a.c", 2, at=datetime(2027, 1, 1, 10, tzinfo=timezone(timedelta(hours=1))))
    lite.commit()
    [(first,), (second,)] = lite.execute(
        "SELECT headers FROM eventworker_outbox ORDER BY seq"
    ).fetchall()
    held = json.loads(first)
    assert held["tenant"] == "acme"
    due = datetime.fromisoformat(held[DELIVER_AT])
    assert timedelta(minutes=15) <= due - before < timedelta(minutes=15, seconds=5)
    assert json.loads(second) == {DELIVER_AT: "2027-01-01T09:00:00+00:00"}


def test_unknown_connections_and_unsafe_table_names_are_refused(lite: sqlite3.Connection) -> None:
    with pytest.raises(TypeError, match="does not know"):
        outbox.add(object(), "a.b", {})
    with pytest.raises(ConfigError, match="lower-case"):
        outbox.add(lite, "a.b", {}, table="x; DROP TABLE orders")
    with pytest.raises(ConfigError):
        outbox.schema("postgresql", "Outbox")


def test_a_sqlalchemy_session_writes_in_its_transaction(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    with engine.begin() as conn:
        outbox.create(conn)
    with Session(engine) as session:
        outbox.add(session, "orders.created", {"n": 1}, id="sa-1")
        session.rollback()
        outbox.add(session, "orders.created", {"n": 2}, id="sa-2")
        session.commit()
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT event_id, body FROM eventworker_outbox").all()
    assert [tuple(r) for r in rows] == [("sa-2", b'{"n":2}')]


async def test_asyncpg_writes_in_the_transaction_and_refuses_a_pool(
    pg_dsn: str, pg_table: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await outbox.add(conn, "orders.created", {"n": 1}, id="rolled-back", table=pg_table)
        await tx.rollback()
        async with conn.transaction():
            event_id = await outbox.add(conn, "orders.created", {"n": 2}, table=pg_table)
        rows = await conn.fetch(f"SELECT event_id, body, sent_at FROM {pg_table}")
    finally:
        await conn.close()
    assert [(r["event_id"], r["body"], r["sent_at"]) for r in rows] == [
        (event_id, b'{"n":2}', None)
    ]
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        with pytest.raises(TypeError, match="not a pool"):
            outbox.add(pool, "a.b", {}, table=pg_table)
    finally:
        await pool.close()


async def test_psycopg_sync_and_async_connections_write_rows(pg_dsn: str, pg_table: str) -> None:
    with psycopg.connect(pg_dsn) as conn:  # commits on a clean exit
        outbox.add(conn, "orders.created", {"n": 1}, id="sync-1", table=pg_table)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        assert await outbox.add(aconn, "orders.created", {"n": 2}, id="async-1", table=pg_table)
    with psycopg.connect(pg_dsn) as conn:
        ids = [r[0] for r in conn.execute(f"SELECT event_id FROM {pg_table} ORDER BY seq")]
    assert ids == ["sync-1", "async-1"]


async def test_a_sqlalchemy_connection_to_postgresql_writes_rows(
    pg_dsn: str, pg_table: str
) -> None:
    engine = create_engine(pg_dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        outbox.add(conn, "orders.created", {"n": 3}, id="sa-pg", table=pg_table)
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT event_id FROM {pg_table}").scalar() == "sa-pg"
    engine.dispose()
