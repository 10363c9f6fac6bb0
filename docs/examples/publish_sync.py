"""Publishing from sync code, e.g. a Flask or Django app (docs/producers.md)."""

from __future__ import annotations

from eventworker import BlockingPublisher

#: One per process, shared by all request threads: it keeps one connection open.
publisher: BlockingPublisher | None = None


def start(url: str, exchange: str) -> None:
    """At application start-up (Flask app factory, Django AppConfig.ready)."""
    global publisher
    publisher = BlockingPublisher.connect(url, exchange=exchange)


def create_order_view(order_id: str) -> dict[str, str]:
    """A request handler: blocks until the broker confirmed the event."""
    assert publisher is not None, "start() first"
    result = publisher.publish("orders.created", {"order_id": order_id}, id=f"{order_id}-created")
    return {"event_id": result.event_id}


def stop() -> None:
    """At shutdown."""
    if publisher is not None:
        publisher.close()
