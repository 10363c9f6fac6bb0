"""uvicorn as ``eventworker serve`` runs the ingress: its limits and timeouts from the settings,
and the one uvicorn lacks, a deadline for a request's line and headers.

uvicorn closes an idle connection after ``timeout_keep_alive``, but only between two requests:
a new connection that sends nothing, or sends its headers a byte at a time, stays open for ever
(slowloris). No ASGI middleware can help, since the app is called only once the headers are
complete. So the HTTP protocol class uvicorn would use is extended with a timer, armed when a
connection opens and when a request begins, disarmed once its headers are complete; on expiry
the connection is closed. The body has its own timeout in the app (``http.body_timeout``, 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from eventworker.settings import HttpSettings


class _HeaderDeadline(asyncio.Protocol):
    """Mixed in before uvicorn's HTTP protocol: closes a connection whose request line and
    headers are not complete within ``header_timeout`` seconds."""

    header_timeout: float
    #: uvicorn's: the connection, and the current request (None before the first).
    transport: asyncio.Transport
    cycle: Any
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if before is None or before.response_complete:  # the first bytes of a new request
            self._arm()
        super().data_received(data)
        if self.cycle is not before:  # uvicorn starts a request once its headers are complete
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server(app: Any, http: HttpSettings) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``http.host:http.port``, with the timeouts and the
    connection cap of ``http`` (beyond ``max_connections``, uvicorn answers 503)."""
    protocol = type(
        "HeaderDeadlineProtocol",
        (_HeaderDeadline, AutoHTTPProtocol),
        {"header_timeout": http.header_timeout},
    )
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            http=protocol,
            timeout_keep_alive=http.keep_alive_timeout,
            limit_concurrency=http.max_connections,
            log_config=None,
            access_log=False,
        )
    )
