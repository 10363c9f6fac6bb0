"""A dead letter as an operator sees it, without a broker: diagnosis, preview, replay copy,
export records."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventworker import envelope
from eventworker.amqp.properties import UndecodableProperties
from eventworker.amqp.properties import decode as decode_properties
from eventworker.deadletters.letter import (
    diagnose,
    export_record,
    preview,
    read_record,
    replay_properties,
)
from eventworker.errors import InvalidInputError
from tests.support.raw_amqp import entry, longstr, shortstr, table
from tests.support.raw_amqp import properties as raw_properties

H = "x-eventworker-"
PARKED_AT = "2026-01-02T03:04:05.678+00:00"


@dataclass
class Message:
    """What a delivered message looks like to the envelope (attributes of AmqpMessage)."""

    body: bytes = b'{"order_id": "o-1"}'
    routing_key: str | None = "t.bill.dead"
    exchange: str | None = ""
    message_id: str | None = "evt-1"
    type: str | None = "orders.created"
    timestamp: datetime | None = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    app_id: str | None = "shop"
    correlation_id: str | None = "corr-1"
    content_type: str | None = "application/json"
    content_encoding: str | None = None
    redelivered: bool | None = False
    priority: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


OURS = {
    "tenant": "acme",
    H + "routing-key": "orders.created",
    H + "reason": "exception",
    H + "exception": "ValueError",
    H + "error": "bad total",
    H + "traceback": "Traceback ...",
    H + "attempt": 4,
    H + "handler": "bill",
    H + "host": "worker-1",
    H + "first-failure": "2026-01-02T03:00:00.000+00:00",
    H + "last-failure": PARKED_AT,
    H + "causation-id": "cause-1",
}
BROKER_PARKED = {
    "tenant": "acme",
    "x-death": [
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "t.bill",
            "time": datetime(2026, 1, 2, 4, 0, tzinfo=UTC),
            "exchange": "t.x",
            "routing-keys": ["orders.eu.created"],
        }
    ],
    "x-first-death-reason": "delivery_limit",
}


def test_a_copy_we_dead_lettered_is_described_from_our_headers() -> None:
    p = diagnose(Message(headers=OURS), preview_chars=80)
    assert (p.id, p.routing_key, p.reason, p.exception, p.error) == (
        "evt-1",
        "orders.created",
        "exception",
        "ValueError",
        "bad total",
    )
    assert (p.attempts, p.handler, p.host, p.replays) == (4, "bill", "worker-1", 0)
    assert p.dead_lettered_at == datetime.fromisoformat(PARKED_AT)
    assert p.size == len(b'{"order_id": "o-1"}')
    assert p.preview == '{"order_id": "o-1"}'
    assert p.age(datetime(2026, 1, 2, 3, 4, 15, 678000, tzinfo=UTC)) == 10.0


def test_a_message_the_broker_moved_is_described_from_x_death() -> None:
    p = diagnose(Message(headers=BROKER_PARKED), preview_chars=10)
    assert (p.reason, p.routing_key, p.attempts, p.exception) == (
        "delivery_limit",
        "orders.eu.created",
        None,
        "",
    )
    assert p.dead_lettered_at == datetime(2026, 1, 2, 4, 0, tzinfo=UTC)


def test_a_plain_event_gets_the_default_reason_and_its_own_routing_key() -> None:
    message = Message(routing_key="nobody.listens", headers={})
    p = diagnose(message, preview_chars=0, default_reason="unrouted")
    assert (p.reason, p.routing_key, p.preview) == ("unrouted", "nobody.listens", "")
    assert p.dead_lettered_at == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)  # the timestamp property


@pytest.mark.parametrize(
    ("body", "limit", "shown"),
    [
        (b'{"a": 1}', 80, '{"a": 1}'),
        (b"x" * 100, 10, "x" * 10 + "..."),
        (b"line1\nline2\x1b[31m", 80, "line1\\x0aline2\\x1b[31m"),
        (b"\xff\xfe", 80, "\ufffd\ufffd"),  # printable replacement characters
        (b"anything", 0, ""),
    ],
    ids=["whole", "truncated", "control-chars", "not-utf8", "off"],
)
def test_the_preview_is_one_escaped_truncated_line(body: bytes, limit: int, shown: str) -> None:
    assert preview(body, limit) == shown


def test_a_replay_copy_resets_the_attempt_and_drops_the_diagnosis() -> None:
    props = replay_properties(Message(headers=OURS), return_to="t.bill")
    headers = props["headers"]
    assert headers == {
        "tenant": "acme",
        H + "causation-id": "cause-1",
        H + "replays": 1,
        H + "routing-key": "orders.created",
        H + "attempt": 1,
        envelope.RETURN_TO: "t.bill",
    }
    assert (props["message_id"], props["correlation_id"], props["message_type"]) == (
        "evt-1",
        "corr-1",
        "orders.created",
    )
    assert props["timestamp"] == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def test_a_second_replay_counts_two_and_a_broker_dead_lettered_message_keeps_its_routing_key() -> (
    None
):
    headers = {**BROKER_PARKED, H + "replays": 1}
    props = replay_properties(Message(headers=headers), return_to="t.bill")
    assert props["headers"][H + "replays"] == 2
    assert props["headers"][H + "routing-key"] == "orders.eu.created"
    assert "x-death" not in props["headers"]
    assert "x-first-death-reason" not in props["headers"]


def test_a_replay_to_the_exchange_sets_no_return_header() -> None:
    props = replay_properties(Message(headers={"tenant": "acme"}), return_to=None)
    assert props["headers"] == {"tenant": "acme", H + "replays": 1}


def test_retry_and_dead_lettered_copies_keep_the_replay_count() -> None:
    assert envelope.carried_headers({H + "replays": 2, H + "reason": "x"}) == {H + "replays": 2}


def test_an_export_record_round_trips_what_a_publish_needs() -> None:
    line = export_record(Message(headers=OURS))
    record = orjson.loads(line)
    assert record["routing_key"] == "orders.created"
    assert record["body"] == '{"order_id": "o-1"}'
    assert record["properties"]["message_id"] == "evt-1"
    assert record["headers"][H + "reason"] == "exception"  # the diagnosis is in the file
    back = read_record(line, "dump line 1")
    assert back.routing_key == "orders.created"
    assert back.body == b'{"order_id": "o-1"}'
    assert (back.id, back.correlation_id, back.causation_id) == ("evt-1", "corr-1", "cause-1")
    assert back.timestamp == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert back.headers == {"tenant": "acme"}  # ... but not published again


def test_a_body_that_is_not_utf8_is_exported_as_base64_and_times_as_text() -> None:
    line = export_record(Message(body=b"\xff\x00", headers=BROKER_PARKED))
    record = orjson.loads(line)
    assert base64.b64decode(record["body_base64"]) == b"\xff\x00"
    assert record["headers"]["x-death"][0]["time"] == "2026-01-02T04:00:00+00:00"
    assert read_record(line, "x").body == b"\xff\x00"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{nope", "invalid JSON"),
        (b'{"body": "{}"}', "no routing_key"),
        (b'{"routing_key": "a.b"}', "no readable body"),
        (b'{"routing_key": "a.b", "body_base64": "!!"}', "no readable body"),
        (b'{"routing_key": "a.b", "body": "{}", "headers": []}', "JSON objects"),
    ],
)
def test_a_line_that_is_no_export_record_is_refused_naming_where(line: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        read_record(line, "dump.ndjson line 3")
    assert "dump.ndjson line 3" in str(caught.value)


@dataclass
class Undecodable(Message):
    """A message read from a dead-letter queue whose header could not be decoded."""

    undecodable: str = ""
    properties: Any = None


def _undecodable() -> Undecodable:
    block = raw_properties(
        message_id=shortstr(b"id\xe9"),
        headers=table(entry(b"x-death", b"A", longstr(b""))),
        app_id=shortstr(b"amqplib"),
    )
    props = decode_properties(block, 0, len(block))
    assert isinstance(props, UndecodableProperties)
    return Undecodable(
        message_id=None, headers=props.headers or {}, undecodable=props.error, properties=props
    )


def test_an_undecodable_message_is_described_from_its_bytes() -> None:
    message = _undecodable()
    dead_lettered = diagnose(message, preview_chars=10)
    assert (dead_lettered.id, dead_lettered.reason) == ("id\\xe9", envelope.UNDECODABLE)
    assert "message_id 'id\\\\xe9' is not UTF-8" in dead_lettered.error
    assert dead_lettered.header_base64 is not None
    assert base64.b64decode(dead_lettered.header_base64) == message.properties.raw


def test_an_undecodable_message_is_exported_with_its_header_and_not_read_back() -> None:
    record = orjson.loads(export_record(_undecodable()))
    assert record["reason"] == envelope.UNDECODABLE and "not UTF-8" in record["error"]
    assert base64.b64decode(record["header_base64"]) == _undecodable().properties.raw
    with pytest.raises(InvalidInputError, match=r"line 4: .* could not be decoded"):
        read_record(orjson.dumps(record), "line 4")
