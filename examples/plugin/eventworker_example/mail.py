"""A resource: one mail client per worker process, opened at start and closed after the drain."""

from __future__ import annotations

from collections.abc import AsyncIterator

from eventworker import resource


class Mailer:
    """Stands in for an SMTP or HTTP mail client with a connection worth keeping open: it
    records what it would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.closed = False

    async def send(self, to: str, subject: str) -> None:
        if self.closed:
            raise RuntimeError("mailer closed")
        self.sent.append((to, subject))

    async def close(self) -> None:
        self.closed = True


@resource
async def mailer() -> AsyncIterator[Mailer]:
    """Opened once when the worker starts; handlers get it with ``ctx.resource(Mailer)``."""
    client = Mailer()
    try:
        yield client
    finally:
        await client.close()
