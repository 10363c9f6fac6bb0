"""What every benchmark message looks like, for the harness and for the consumers in any
virtualenv (standard library only): routing key, the send-time header, the body."""

from __future__ import annotations

import json

#: The routing key every scenario publishes with and binds its queue to.
ROUTING_KEY = "bench.order.created"
#: The header carrying ``time.monotonic_ns()`` at publish time, for the latency scenario.
SENT_HEADER = "bench-sent-ns"
#: Body size of every message, as in the reference figures.
BODY_SIZE = 300


def payload(n: int, size: int = BODY_SIZE) -> dict[str, object]:
    """The JSON value of message ``n``, padded so that its encoding is ``size`` bytes."""
    data: dict[str, object] = {
        "order_id": f"o-{n:08d}",
        "customer_id": f"c-{n % 9973:06d}",
        "total": 12.5,
        "pad": "",
    }
    data["pad"] = "x" * max(0, size - len(body_of(data)))
    return data


def body_of(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def body(n: int, size: int = BODY_SIZE) -> bytes:
    return body_of(payload(n, size))
