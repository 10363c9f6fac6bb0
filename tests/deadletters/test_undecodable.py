"""The ``dlq`` commands with messages whose AMQP header cannot be decoded among good ones, put
there as the worker dead-letters them (a raw client publishes them to the work queue and
rejects them: the queue's dead-letter exchange moves them). Every command reads them; show and
export give what could be read, the error and the header's bytes; replay keeps them, in place."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

from eventworker.errors import ExitCode
from eventworker.plugins import discovery as registry
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.cli import cli
from tests.support.deadletters import fill_dead_letters
from tests.support.raw_amqp import RawClient, entry, nested, properties, shortstr, table

CONTENT_TYPE = shortstr(b"application/json\xe9")
DEEP = entry(b"deep", b"F", nested(500))
HOSTILE = {
    "bad-1": properties(content_type=CONTENT_TYPE, message_id=shortstr(b"bad-1")),
    "id\\xe9": properties(message_id=shortstr(b"id\xe9"), headers=table(DEEP)),
}


async def _reject_into_dead_letters(
    raw: RawClient, broker: Broker, queue: str, props: bytes
) -> None:
    """Dead-letter a message as the worker dead-letters an undecodable one: rejected, moved by
    the broker."""
    dead = f"{queue}.dead"
    before = await broker.count(dead)
    await raw.publish("", queue, b'{"hostile": true}', props)
    assert await raw.get(queue, settle="reject") is not None
    await broker.wait_count(dead, before + 1)


def _shown_ids(settings: Settings) -> list[str]:
    shown = cli(settings, "dlq", "show", "broken", "--json")
    assert shown.returncode == 0, shown.stderr
    return [row["id"] for row in json.loads(shown.stdout)]


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_every_dlq_command_works_with_undecodable_messages_among_good_ones(
    broker: Broker, settings: Settings, tmp_path: Path, queue_type: str
) -> None:
    s = settings.model_copy(update={"queue_type": queue_type})
    [broken] = [r.handler for r in registry.discover(names=("broken",))]
    route = (await broker.declare(broken, settings=s)).routes[0]
    dead = route.dead_letter_queue
    raw = await RawClient.open(s.url.get_secret_value())
    try:
        await fill_dead_letters(broker, dead, ["g1", "g2"])
        await _reject_into_dead_letters(raw, broker, route.queue, HOSTILE["bad-1"])
        await fill_dead_letters(broker, dead, ["g3"])
        await _reject_into_dead_letters(raw, broker, route.queue, HOSTILE["id\\xe9"])
        await fill_dead_letters(broker, dead, ["g4"])
    finally:
        await raw.close()
    order = ["g1", "g2", "bad-1", "g3", "id\\xe9", "g4"]

    listed = cli(s, "dlq", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["handler"]: row for row in json.loads(listed.stdout)}
    assert rows["broken"]["messages"] == 6
    assert {"reason": "undecodable", "count": 2} in rows["broken"]["top_reasons"]
    assert rows["greet"]["exists"] is False  # the other queues are listed too

    shown = cli(s, "dlq", "show", "broken", "--json")
    assert shown.returncode == 0, shown.stderr
    by_id = {row["id"]: row for row in json.loads(shown.stdout)}
    assert list(by_id) == order
    assert by_id["bad-1"]["reason"] == by_id["id\\xe9"]["reason"] == "undecodable"
    assert "content_type 'application/json\\\\xe9' is not UTF-8" in by_id["bad-1"]["error"]
    assert (
        "message_id" in by_id["id\\xe9"]["error"] and "nested deeper" in by_id["id\\xe9"]["error"]
    )
    assert CONTENT_TYPE in base64.b64decode(by_id["bad-1"]["header_base64"])
    assert DEEP in base64.b64decode(by_id["id\\xe9"]["header_base64"])
    assert by_id["g1"]["reason"] == "schema_error" and by_id["g1"]["header_base64"] is None
    text = cli(s, "dlq", "show", "broken")
    assert text.returncode == 0, text.stderr
    assert "bad-1  " in text.stdout and "  undecodable" in text.stdout
    assert "bytes as received, undecodable" in text.stdout

    out = tmp_path / "dead-lettered.ndjson"
    exported = cli(s, "dlq", "export", "broken", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(records) == 6
    undecodable = [r for r in records if r.get("reason") == "undecodable"]
    assert [r["properties"].get("message_id") for r in undecodable] == ["bad-1", None]
    assert CONTENT_TYPE in base64.b64decode(undecodable[0]["header_base64"])
    assert "content_type" in undecodable[0]["error"]
    again = cli(s, "publish", "--exported", "--file", str(out))
    assert again.returncode == ExitCode.INVALID_INPUT
    assert "line 3" in again.stderr and "could not be decoded" in again.stderr

    replayed = cli(s, "dlq", "replay", "broken", "--verbose")
    assert replayed.returncode == ExitCode.FAILED
    assert [line.split()[1] for line in replayed.stdout.splitlines()[:4]] == [
        "g1",
        "g2",
        "g3",
        "g4",
    ]
    assert "kept bad-1" in replayed.stderr and "kept id\\xe9" in replayed.stderr
    assert "cannot be decoded" in replayed.stderr
    await broker.wait_count(route.queue, 4)
    assert _shown_ids(s) == ["bad-1", "id\\xe9"]  # kept, in their order

    for event_id in ("id\\xe9", "bad-1"):
        purged = cli(s, "dlq", "purge", "broken", "--id", event_id, "--yes")
        assert purged.returncode == 0, purged.stderr
        assert "purged 1 message(s)" in purged.stdout
    await broker.wait_count(dead, 0)
