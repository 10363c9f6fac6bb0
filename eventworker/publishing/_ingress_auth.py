"""Who may publish through the HTTP ingress: the bearer token (``http.token``) and the request
signature (``http.hmac_secret``, :mod:`eventworker.publishing.signature`), each checked when
set, for every event request and, with ``http.docs = "auth"``, for ``/docs`` and ``/openapi.json``.

Secrets are compared in constant time and never appear in an answer.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from eventworker.errors import SignatureError
from eventworker.publishing.signature import Signed, Verifier
from eventworker.settings import HttpSettings

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER = "5"


def _header(request: Request, name: str) -> bytes:
    """A header's value as sent: Starlette decodes header bytes as Latin-1."""
    return request.headers.get(name, "").encode("latin-1")


def signed(request: Request, body: bytes, hold: str = "") -> Signed:
    """What the signature covers; the path as sent, without the query string; ``hold``, the
    delay the request asks for (``delay=90s``, ``at=...``), wherever it was given."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return Signed(
        request.method,
        raw.partition(b"?")[0],
        _header(request, "idempotency-key"),
        _header(request, "x-correlation-id"),
        _header(request, "content-type"),
        body,
        hold.encode("utf-8"),
    )


class Guard:
    """The token and signature checks of one app; it remembers the signatures it accepted."""

    def __init__(self, http: HttpSettings) -> None:
        self.http = http
        secret = http.hmac_secret
        self.verifier = (
            Verifier(
                secret.get_secret_value().encode(),
                tolerance=http.signature_tolerance,
                capacity=http.max_seen_signatures,
                header_name=http.signature_header,
            )
            if secret is not None
            else None
        )

    def authenticate(self, request: Request) -> None:
        """Raises HTTPException 401 unless the bearer token (when set) matches."""
        token = self.http.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def verify(self, request: Request, body: bytes, hold: str = "") -> None:
        """Raises HTTPException 401 unless the request's signature (when a secret is set) is
        valid, within the window and not used before; 503 when the ingress cannot remember one
        more signature. ``hold``: the delay the request asks for, which it signs too."""
        if self.verifier is None:
            return
        try:
            header = request.headers.get(self.http.signature_header, "")
            self.verifier.verify(header, signed(request, body, hold))
        except SignatureError as exc:
            retry = {"Retry-After": RETRY_AFTER} if exc.status == 503 else None
            raise HTTPException(exc.status, str(exc), headers=retry) from None

    def docs(self, request: Request) -> None:
        """Raises HTTPException as for an event without a body, for ``/docs`` and
        ``/openapi.json`` when ``http.docs`` is ``auth``."""
        if self.http.docs == "auth":
            self.authenticate(request)
            self.verify(request, b"")
