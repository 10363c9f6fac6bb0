"""The transactional outbox with sqlite3 (docs/producers.md)."""

from __future__ import annotations

import sqlite3

from eventworker import outbox


def setup(db: sqlite3.Connection) -> None:
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total REAL)")
        outbox.create(db)  # or: eventworker outbox init --dsn sqlite:///app.db


def place_order(db: sqlite3.Connection, order_id: str, total: float) -> str:
    with db:  # one transaction: the order and its event are committed together, or neither
        db.execute("INSERT INTO orders (id, total) VALUES (?, ?)", (order_id, total))
        return outbox.add(  # the event id; `eventworker outbox relay` publishes the row
            db,
            "orders.created",
            {"order_id": order_id, "total": total},
            aggregate_key=order_id,  # events of one order are published in this order
        )
