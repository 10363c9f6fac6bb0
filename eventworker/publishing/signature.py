"""The signature of a request to the HTTP ingress, modelled on Stripe's and GitHub's webhooks.

The signature header (``http.signature_header``) holds ``t=<unix seconds>,v1=<hex>``, where the
hex is the HMAC-SHA256, keyed with ``http.hmac_secret``, of the canonical string: these fields
joined by one line feed each, the body last and as sent::

    t  METHOD  path  Idempotency-Key  X-Correlation-Id  Content-Type  [hold]  body

``hold`` is there only when the request asks for a delay (``delay=<value>`` or ``at=<value>``,
from the query string or the ``X-Delay`` / ``X-Deliver-At`` header), so a request without one
is signed as before. A JSON or NDJSON body cannot begin with ``delay=`` or ``at=``, so a
signed request cannot be recut into one with a delay, or the other way round.

``path`` is the request path exactly as sent, percent-encoding included, without the query
string (so the routing key is signed); an absent header is an empty field. HTTP allows no line
feed in a method, a path or a header value, so the fields cannot shift into one another.

A signature is accepted when ``t`` is within ``tolerance`` seconds of the server's clock (either
way) and one of its ``v1`` values matches (several allow a secret to be rotated), once: a
:class:`Verifier` remembers each signature it accepted until its timestamp leaves the window,
and refuses it again in the meantime. Comparisons take constant time.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from eventworker.errors import SignatureError

_HEX = re.compile(r"[0-9a-f]{64}")
#: ASCII digits only: str.isdigit() would take "²", which int() then refuses.
_SECONDS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class Signed:
    """The parts of a request the signature covers."""

    method: str
    path: bytes
    idempotency_key: bytes
    correlation_id: bytes
    content_type: bytes
    body: bytes
    #: ``delay=90s`` or ``at=2027-01-01T09:00:00Z`` when the request asks for a delay, else b"".
    hold: bytes = b""

    def canonical(self, timestamp: int) -> bytes:
        """The bytes the HMAC is computed over, for the timestamp ``timestamp``."""
        fields = (
            str(timestamp).encode(),
            self.method.encode("ascii"),
            self.path,
            self.idempotency_key,
            self.correlation_id,
            self.content_type,
            *((self.hold,) if self.hold else ()),
        )
        return b"\n".join(fields) + b"\n" + self.body

    def digest(self, secret: bytes, timestamp: int) -> str:
        return hmac.new(secret, self.canonical(timestamp), hashlib.sha256).hexdigest()

    def header(self, secret: bytes, timestamp: int) -> str:
        """The signature header's value, as a producer computes it."""
        return f"t={timestamp},v1={self.digest(secret, timestamp)}"


def parse(header: str, name: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures of a signature header; other schemes are ignored.

    Raises:
        SignatureError: the header is missing or malformed (``name`` names it).
    """
    expected = "expected t=<unix seconds>,v1=<hex HMAC-SHA256> (see docs/producers.md)"
    if not header:
        raise SignatureError(f"missing signature header {name}: {expected}")
    if header.startswith("sha256="):
        raise SignatureError(
            f"{name} signs the body only (sha256=...); the ingress needs the timestamped "
            f"signature of the whole request: {expected}"
        )
    timestamps, signatures = [], []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value.lower())
    if len(timestamps) != 1 or not _SECONDS.fullmatch(timestamps[0]):
        raise SignatureError(f"malformed {name}: {expected}")
    if not signatures or not all(_HEX.fullmatch(s) for s in signatures):
        raise SignatureError(f"malformed {name}: {expected}")
    return int(timestamps[0]), signatures


class Verifier:
    """Checks signatures with one secret, and refuses each accepted one if it comes again.

    Remembers at most ``capacity`` signatures at once: each until its timestamp leaves the
    window. In one process only: each ingress process keeps its own.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        tolerance: int,
        capacity: int,
        header_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance
        self._capacity = capacity
        self._name = header_name
        self._clock = clock
        #: Accepted signatures and, in a heap, when each may be forgotten.
        self._seen: set[str] = set()
        self._expiries: list[tuple[float, str]] = []

    def verify(self, header: str, request: Signed) -> None:
        """Accept ``request`` signed with ``header``, or refuse it.

        Raises:
            SignatureError: missing, malformed, outside the window, not matching, or used
                already (401); or too many signatures to remember within the window (503).
        """
        timestamp, given = parse(header, self._name)
        now = self._clock()
        if abs(now - timestamp) > self._tolerance:
            raise SignatureError(
                f"{self._name} timestamp t={timestamp} is {abs(now - timestamp):.0f}s away from "
                f"the server's clock, more than the tolerance of {self._tolerance}s: sign each "
                f"request when sending it"
            )
        expected = request.digest(self._secret, timestamp)
        # Every candidate is compared, in constant time each: no early exit to time.
        matches = [hmac.compare_digest(expected, candidate) for candidate in given]
        if not any(matches):
            raise SignatureError(
                f"wrong signature in {self._name}: it does not match the method, path, "
                f"Idempotency-Key, X-Correlation-Id, Content-Type, delay and body of this request"
            )
        self._remember(expected, timestamp + self._tolerance, now)

    def _remember(self, signature: str, expiry: float, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiries)[1])
        if signature in self._seen:
            raise SignatureError(
                f"{self._name} was used already: a request is accepted once per signature "
                f"(sign a retry afresh, with a new t)"
            )
        if len(self._seen) >= self._capacity:
            raise SignatureError(
                f"too many signed requests within {self._tolerance}s to remember them all "
                f"(http.max_seen_signatures = {self._capacity}); retry later",
                status=503,
            )
        self._seen.add(signature)
        heapq.heappush(self._expiries, (expiry, signature))
