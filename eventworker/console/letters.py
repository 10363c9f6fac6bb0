"""One handler's dead letters as the console pages them: listed and filtered, and one read
whole, its body pretty-printed and capped. Reads only; the queue is left as it was."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from eventworker import envelope
from eventworker.deadletters import letter
from eventworker.deadletters import operations as ops
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.operations import Connection, DeadLetterQueue
from eventworker.deadletters.reader import reading

#: Characters of each body kept in a listing: what the text filter searches and rows preview.
PREVIEW_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters a page lists; empty criteria let every one through."""

    reason: str = ""
    id: str = ""
    min_age: float | None = None
    text: str = ""

    def __call__(self, found: Letter, now: datetime) -> bool:
        age = found.age(now)
        return (
            (not self.reason or found.reason == self.reason)
            and (not self.id or self.id in (found.id or ""))
            and (self.min_age is None or (age is not None and age >= self.min_age))
            and (not self.text or self.text.lower() in found.preview.lower())
        )

    @property
    def active(self) -> bool:
        return bool(self.reason or self.id or self.min_age is not None or self.text)


@dataclass(frozen=True, slots=True)
class Listed:
    """A dead letter and its place in the queue when it was read (0 first)."""

    position: int
    letter: Letter


async def listing(connection: Connection, dlq: DeadLetterQueue, *, limit: int) -> list[Listed]:
    """The first ``limit`` dead letters, as ``eventworker dlq show`` reads them."""
    found = await ops.show(connection, dlq, limit=limit, preview_chars=PREVIEW_CHARS)
    return [Listed(n, p) for n, p in enumerate(found)]


@dataclass(frozen=True, slots=True)
class Opened:
    """One dead letter read whole."""

    position: int
    letter: Letter
    body: str
    truncated: bool
    headers: dict[str, Any] = field(default_factory=dict)
    #: What could be read of properties that cannot be decoded.
    readable: dict[str, str] = field(default_factory=dict)


def pretty(body: bytes, limit: int) -> tuple[str, bool]:
    """The body as indented JSON when it is JSON, else as text; at most ``limit`` bytes."""
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode("utf-8")
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", "ignore"), True


async def open_letter(
    connection: Connection,
    dlq: DeadLetterQueue,
    *,
    message_id: str | None,
    position: int | None,
    scan: int,
    body_limit: int,
) -> Opened | None:
    """The first dead letter with ``message_id`` (or at ``position``) among the first ``scan``."""
    found: Opened | None = None
    quorum = dlq.queue_type == "quorum"
    async with reading(connection, dlq.queue, quorum=quorum, limit=scan) as reader:
        n = -1
        async for message in reader.messages():
            n += 1
            if found is not None:
                continue  # read on: a reader hands everything back in order at the end
            described = letter.diagnose(message, preview_chars=0, default_reason=dlq.default_reason)
            if (message_id and described.id == message_id) or n == position:
                body, truncated = pretty(message.body, body_limit)
                _, bad = letter.undecodable(message)
                headers = orjson.loads(letter.export_record(message)).get("headers", {})
                headers.pop(envelope.TRACEBACK, None)  # shown on its own
                found = Opened(
                    n,
                    described,
                    body,
                    truncated,
                    headers=headers,
                    readable=dict(bad.unreadable) if bad is not None else {},
                )
    return found
