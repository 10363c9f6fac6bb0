"""Headers arrive whole: the retry and dead-letter copies the worker publishes keep each of the
producer's header entries as the bytes it sent (names of up to 255 bytes, two names sharing
their first 128 bytes, every AMQP type as it was), and ``eventworker publish --header`` sends a
long name whole or refuses it before connecting."""

from __future__ import annotations

import struct
from typing import Any

from pydantic import SecretStr

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.errors import ExitCode
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.cli import bound_queue, cli
from tests.support.raw_amqp import RawClient, entry, longstr, properties, shortstr, split, table

NAME_200 = b"n" * 200
SHARED_ONE, SHARED_TWO = b"a" * 128 + b"-one", b"a" * 128 + b"-two"
#: What the producer sends, entry by entry: long names, and types pamqp's encoder would change
#: (``b`` to ``b`` is kept, but ``u``, ``f``, ``x`` and a non-UTF-8 ``S`` are not).
ENTRIES = (
    entry(NAME_200, b"S", longstr(b"two hundred")),
    entry(SHARED_ONE, b"I", struct.pack(">i", 1)),
    entry(SHARED_TWO, b"I", struct.pack(">i", 2)),
    entry(b"unsigned", b"u", struct.pack(">H", 65535)),
    entry(b"single", b"f", struct.pack(">f", 1.5)),
    entry(b"octets", b"x", longstr(b"\xe9\x00")),
    entry(b"latin-1", b"S", longstr(b"caf\xe9")),
)


async def test_retry_and_dead_letter_copies_keep_every_header_entry_byte_for_byte(
    broker: Broker, settings: Settings
) -> None:
    seen: list[dict[str, Any]] = []

    @handler("copy.event", name="copier", retry=RetryPolicy(max_attempts=2, delays=(1,)))
    async def copier(event: Event[Any], ctx: Context) -> None:
        seen.append(dict(event.headers))
        raise RuntimeError("fails twice: one retry copy, then a dead-letter copy")

    async with running(broker, [copier], settings) as worker:
        route = worker.routes[0]
        raw = await RawClient.open(settings.url.get_secret_value())
        try:
            block = properties(
                content_type=shortstr(b"application/json"),
                message_id=shortstr(b"long-1"),
                headers=table(*ENTRIES),
            )
            await raw.publish(settings.exchange, "copy.event", b"{}", block)
            await broker.wait_count(route.dead_letter_queue, 1, timeout=20)
            await wait_for(lambda: worker.in_flight == 0)
            dead_lettered = await raw.get(route.dead_letter_queue)
        finally:
            await raw.close()
    assert len(seen) == 2  # the first delivery, then the retry copy back from its tier
    first, retried = seen
    assert first[NAME_200.decode()] == retried[NAME_200.decode()] == "two hundred"
    for headers in (first, retried):
        assert (headers[SHARED_ONE.decode()], headers[SHARED_TWO.decode()]) == (1, 2)
    assert dead_lettered is not None
    kept = split(dead_lettered.properties)["headers"]
    for sent in ENTRIES:
        assert sent in kept  # the dead-letter copy, after the retry hop, byte for byte


async def test_publish_sends_a_long_header_name_whole(broker: Broker, settings: Settings) -> None:
    queue = await bound_queue(broker, "long.names")
    names = ["h" * 200, "a" * 128 + "-one", "a" * 128 + "-two"]
    args = [arg for n, name in enumerate(names) for arg in ("--header", f"{name}={n}")]
    result = cli(settings, "publish", "long.names", "{}", *args)
    assert result.returncode == 0, result.stderr
    [message] = await broker.take_all(queue, expect=1)
    assert {name: message.headers[name] for name in names} == {
        n: str(i) for i, n in enumerate(names)
    }


def test_publish_refuses_a_header_name_over_255_bytes_before_connecting(
    settings: Settings,
) -> None:
    nowhere = settings.model_copy(update={"url": SecretStr("amqp://guest:guest@127.0.0.1:1/")})
    result = cli(nowhere, "publish", "long.names", "{}", "--header", f"{'n' * 256}=v")
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr
    assert "255 bytes" in result.stderr
