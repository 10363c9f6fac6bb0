"""A blocking :class:`~eventworker.publishing.publisher.Publisher` for sync code (Django, Flask,
scripts).

One event loop in a daemon thread owns the connection; calls from any thread hand their
publish to it and block until the broker confirmed. Create one per process at start-up and
share it: a connection per request would cost a TCP and AMQP handshake each time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from pydantic import SecretStr

from eventworker.errors import BrokerError
from eventworker.publishing.channel import PublishResult
from eventworker.publishing.publisher import NewEvent, Publisher

T = TypeVar("T")


class BlockingPublisher:
    """``with BlockingPublisher.connect(url, exchange=...) as pub: pub.publish(...)``.

    Thread-safe. The methods are those of
    :class:`~eventworker.publishing.publisher.Publisher`, blocking, with the same results and
    errors.
    """

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="eventworker-publisher", daemon=True
        )
        self._thread.start()

    @classmethod
    def connect(cls, url: str | SecretStr, **options: Any) -> BlockingPublisher:
        """Connected on return; ``options`` are those of :class:`Publisher`.

        Raises:
            BrokerUnreachableError, BrokerAuthError, BrokerError: as ``Publisher.open``.
        """
        return cls.start(Publisher(url, **options))

    @classmethod
    def start(cls, publisher: Publisher) -> BlockingPublisher:
        """Run ``publisher`` (not yet opened) in a thread of its own and connect it.

        Raises:
            BrokerUnreachableError, BrokerAuthError, BrokerError: as ``Publisher.open``.
        """
        blocking = cls(publisher)
        try:
            blocking._call(publisher.open())
        except BaseException:
            blocking.close()
            raise
        return blocking

    def publish(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> PublishResult:
        """Publish one event; blocks until confirmed. ``delay`` and ``at`` as
        :meth:`Publisher.publish`.

        Raises:
            InvalidInputError: refused before sending.
            PublishError: not confirmed; ``status`` says why.
        """
        return self._call(
            self._publisher.publish(
                routing_key,
                data,
                id=id,
                headers=headers,
                correlation_id=correlation_id,
                causation_id=causation_id,
                delay=delay,
                at=at,
            )
        )

    def publish_many(
        self, events: Iterable[NewEvent], *, window: int | None = None
    ) -> list[PublishResult]:
        """Publish many events with confirms in flight; one result per event, in order.

        Raises:
            InvalidInputError: an event was refused; nothing was sent.
        """
        return self._call(self._publisher.publish_many(list(events), window=window))

    def close(self) -> None:
        """Close the connection and stop the thread (idempotent)."""
        if not self._loop.is_closed():
            if self._thread.is_alive():
                try:
                    self._call(self._publisher.close())
                finally:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join()
            self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed() or not self._thread.is_alive():
            coroutine.close()
            raise BrokerError("the publisher is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def __enter__(self) -> BlockingPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
