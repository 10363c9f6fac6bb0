"""Delayed delivery held by the broker: the level arithmetic and the objects it needs.

A delay of ``d`` whole seconds is written in binary over ``levels`` digits, most significant
first, and put in front of the event's routing key: ``0.0.1.0.1.order.placed`` waits 5 s with
five levels. Level ``k`` is a topic exchange and a quorum queue of the same name, holding
messages for ``2**k`` seconds (``x-message-ttl``) and dead-lettering them to level ``k - 1``'s
exchange (level 0's to the delivery exchange). Each level exchange looks at its own digit: a
``1`` routes the message into its queue, a ``0`` passes it straight on to the next level's
exchange through an exchange-to-exchange binding. Dead-lettering keeps the routing key (no
``x-dead-letter-routing-key``), so every level sees the digits. The message is published to the
level of its highest ``1`` digit, so it makes no hop above it.

RabbitMQ cannot rewrite a routing key, so the digits stay on to the end: the delivery exchange
passes every event to the event exchange (bindings ``0.#`` and ``1.#``: the first digit),
where each handler's queue has, for each of its binding keys ``K``, a second binding
``*.*. … .*.K`` (one ``*`` a digit). The worker takes the digits off again (the event's
``type`` property holds its own routing key) so a handler sees the key it was published with.

A retry copy that waits an exact delay goes through the same levels, but its first word is
``return`` instead of the top digit (a retry never waits in the top level, which is the only
one to read that word), and nothing follows the digits. The delivery exchange passes it
(binding ``return.#``) to the return exchange, not the event exchange: there its
``eventworker-return-to`` header reaches the failing handler's queue only, as from a retry
tier.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

#: The fewest levels allowed: 2**25 - 1 s is a little over a year.
MIN_LEVELS = 25
#: The most: 2**32 - 1 s is 136 years, and 64 bytes of the routing key's 255.
MAX_LEVELS = 32


def level_name(exchange: str, level: int) -> str:
    """``<exchange>.delay.<level>``: the level's exchange and its queue share this name."""
    return f"{exchange}.delay.{level}"


def delivery_exchange(exchange: str) -> str:
    """``<exchange>.delay.delivery`` (topic): where a delay ends, bound to ``exchange``."""
    return f"{exchange}.delay.delivery"


def longest(levels: int) -> int:
    """The longest delay, in seconds, that ``levels`` levels can hold."""
    return int(2**levels) - 1


def digits(delay: int, levels: int) -> str:
    """``delay`` in binary over ``levels`` dot-separated digits, most significant first."""
    if not 0 <= delay <= longest(levels):
        raise ValueError(f"a delay must be 0 to {longest(levels)} s with {levels} levels")
    return ".".join(format(delay, f"0{levels}b"))


def routing_key(delay: int, key: str, levels: int) -> str:
    """The routing key that carries ``delay`` through the levels, then ``key``."""
    return f"{digits(delay, levels)}.{key}"


def entry_level(delay: int) -> int:
    """The level a message with ``delay`` (> 0) is published to: its highest ``1`` digit."""
    if delay < 1:
        raise ValueError("only a positive delay enters the levels")
    return delay.bit_length() - 1


def levels_entered(delay: int, levels: int) -> list[int]:
    """The levels whose queue a message with ``delay`` waits in, highest first: the ``1``
    digits of its routing key, as the levels' bindings read them."""
    bits = digits(delay, levels).split(".")
    return [levels - 1 - n for n, bit in enumerate(bits) if bit == "1"]


def wait_binding(level: int, levels: int) -> str:
    """The binding key of level ``level``'s queue to its exchange: its digit is ``1``."""
    return "*." * (levels - 1 - level) + "1.#"


def skip_binding(level: int, levels: int) -> str:
    """The binding key of level ``level - 1``'s exchange (or the delivery exchange) to level
    ``level``'s exchange: its digit is ``0``."""
    return "*." * (levels - 1 - level) + "0.#"


#: The first word of a retry copy's routing key, in place of the top level's digit.
RETURN_WORD = "return"


def event_bindings() -> tuple[str, str]:
    """The binding keys of the event exchange to the delivery exchange: an event's first
    word is a digit (a retry copy's is ``return``)."""
    return ("0.#", "1.#")


def return_binding() -> str:
    """The binding key of the return exchange to the delivery exchange: retry copies."""
    return f"{RETURN_WORD}.#"


def longest_retry(levels: int) -> int:
    """The longest exact retry delay, in seconds: a retry copy never enters the top level."""
    return longest(levels - 1)


def return_key(delay: int, levels: int) -> str:
    """The routing key of a retry copy that waits ``delay`` s (1 to :func:`longest_retry`):
    ``return`` then the digits of the levels below the top one."""
    if not 1 <= delay <= longest_retry(levels):
        raise ValueError(f"a retry delay must be 1 to {longest_retry(levels)} s")
    return f"{RETURN_WORD}.{digits(delay, levels - 1)}"


def is_level_queue(exchange: str, queue: str) -> bool:
    """True for the queue of one of ``exchange``'s levels (``<exchange>.delay.<k>``)."""
    head = f"{exchange}.delay."
    return queue.startswith(head) and queue[len(head) :].isdigit()


def is_delay_exchange(exchange: str, name: str) -> bool:
    """True for one of ``exchange``'s level exchanges or its delivery exchange: where a
    message dead-lettered out of a level (or published into one) is said to come from."""
    return name == delivery_exchange(exchange) or is_level_queue(exchange, name)


def is_return_key(routing_key: str) -> bool:
    """True for the routing key of a retry copy that waited in the levels."""
    return routing_key.startswith(f"{RETURN_WORD}.")


def delayed_binding(key: str, levels: int) -> str:
    """The binding key under which a queue bound with ``key`` receives delayed events."""
    return "*." * levels + key


def seconds(delay: float | timedelta | None = None, at: datetime | None = None) -> int:
    """Whole seconds to hold an event: ``delay`` rounded up (never early), or the time until
    ``at`` (0 when ``at`` has passed); 0 for neither.

    Raises:
        ValueError: both given, a negative or non-finite delay, or ``at`` without a time zone.
    """
    if delay is not None and at is not None:
        raise ValueError("give a delay or a time to deliver at, not both")
    if at is not None:
        if at.tzinfo is None:
            raise ValueError("the time to deliver at needs a time zone (for example UTC)")
        delay = at - datetime.now(UTC)
        return max(0, math.ceil(delay.total_seconds()))
    if delay is None:
        return 0
    value = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"the delay must be a number of seconds or a timedelta, not {delay!r}")
    if value < 0:
        raise ValueError(f"the delay must not be negative (got {value:g} s)")
    return math.ceil(value)


#: ``90s``, ``15m``, ``2h``, ``3d``: a whole number and its unit.
_DURATION = re.compile(r"(?P<n>[0-9]{1,12})(?P<unit>[smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``2h`` or ``3d`` (the command line's and the ingress's form).

    Raises:
        ValueError: another form; the message says which forms are good.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text[:40]!r}: give a whole number and a unit s, m, h or d (90s, 15m, 2h, 3d)"
        )
    return int(match["n"]) * _UNIT_SECONDS[match["unit"]]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with its time zone: ``2027-01-01T09:00:00Z`` or ``...+02:00``.

    Raises:
        ValueError: not ISO 8601, or no time zone; the message says which.
    """
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text[:40]!r}: not an ISO 8601 time (for example 2027-01-01T09:00:00Z)"
        ) from None
    if at.tzinfo is None:
        raise ValueError(f"{text[:40]!r}: give the time zone (Z for UTC, or +02:00)")
    return at


def check(delay: int, key: str, levels: int) -> None:
    """That an event for ``key`` can be held ``delay`` s with ``levels`` levels.

    Raises:
        ValueError: delayed delivery is off, the delay is too long, or the routing key with the
            digits in front passes AMQP's 255 bytes.
    """
    if not delay:
        return
    if not levels:
        raise ValueError(
            "delayed publishing is off: set delay_levels (25 to 32) and declare the topology"
        )
    if delay > longest(levels):
        raise ValueError(
            f"a delay of {delay} s is longer than {levels} levels hold ({longest(levels)} s)"
        )
    if len(key.encode("utf-8")) + 2 * levels > 255:
        raise ValueError(
            f"the routing key must be at most {255 - 2 * levels} bytes to be delayed "
            f"({levels} levels take {2 * levels} of AMQP's 255)"
        )
