"""The wire format without a broker: body decoding, AMQP message -> Event, header hygiene."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from eventworker import envelope
from eventworker.envelope import (
    ATTEMPT,
    CAUSATION_ID,
    RETURN_TO,
    ROUTING_KEY,
    check_header,
    check_routing_key,
    decode,
    decode_body,
)
from eventworker.errors import EnvelopeError

LIMIT = 1_048_576


@dataclasses.dataclass
class FakeMessage:
    """The attributes of envelope.AmqpMessage, as a delivered message would carry them."""

    body: bytes = b'{"order_id": "o-1"}'
    routing_key: str | None = "orders.created"
    exchange: str | None = "events"
    message_id: str | None = "evt-1"
    type: str | None = None
    timestamp: datetime | None = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    app_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = "application/json"
    content_encoding: str | None = None
    redelivered: bool | None = False
    headers: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _refusal(check: Callable[[str], None], value: str) -> str | None:
    """The ValueError text ``check`` refuses ``value`` with, or None when it accepts it."""
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None


def _reason(
    body: bytes,
    content_type: str | None = "application/json",
    content_encoding: str | None = None,
    *,
    limit: int = LIMIT,
) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode_body(body, content_type, content_encoding, max_body_bytes=limit)
    return info.value.reason


# decode_body


def test_a_json_body_decodes_to_its_value() -> None:
    assert decode_body(
        b'{"a": [1, 2.5, null]}', "application/json", None, max_body_bytes=LIMIT
    ) == {"a": [1, 2.5, None]}


def test_a_body_over_the_limit_is_too_large() -> None:
    assert _reason(b"[1, 2, 3]", limit=8) == "too_large"


def test_the_size_is_checked_before_the_body_is_parsed() -> None:
    # Invalid JSON and an unsupported content type both lose to the size check.
    assert _reason(b"x" * 100, "text/plain", limit=10) == "too_large"


def test_a_body_exactly_at_the_limit_is_accepted() -> None:
    assert decode_body(b"[1]", None, None, max_body_bytes=3) == [1]


def test_a_missing_content_type_is_treated_as_json() -> None:
    assert decode_body(b'{"a": 1}', None, None, max_body_bytes=LIMIT) == {"a": 1}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/JSON",
    ],
)
def test_json_in_utf_8_is_accepted_with_or_without_a_charset(content_type: str) -> None:
    assert decode_body(b"[true]", content_type, None, max_body_bytes=LIMIT) == [True]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json; charset=latin-1",
        "application/x-python-pickle",
        "",
    ],
)
def test_anything_but_json_in_utf_8_is_an_unsupported_content_type(content_type: str) -> None:
    assert _reason(b"[1]", content_type) == "unsupported_content_type"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "utf-16", "x-zip"])
def test_a_compression_or_another_coding_is_an_unsupported_content_type(encoding: str) -> None:
    assert _reason(b"[1]", "application/json", encoding) == "unsupported_content_type"


@pytest.mark.parametrize("encoding", ["utf-8", "UTF-8", "utf8", "identity", " Identity "])
def test_a_charset_label_or_identity_encoding_is_read_as_plain_json(encoding: str) -> None:
    assert decode_body(b'{"a": 1}', "application/json", encoding, max_body_bytes=100) == {"a": 1}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b'{"x": 1e999}', id="overflowing-number"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"id":"\xff"}', id="invalid-utf-8"),
        pytest.param(b'{"id":"\\ud800"}', id="lone-surrogate-escape"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"a": 1} trailing', id="trailing-garbage"),
    ],
)
def test_a_body_that_is_not_strict_json_is_a_decode_error(body: bytes) -> None:
    # pytest.raises(EnvelopeError) would not catch a RecursionError: it would fail the test.
    assert _reason(body) == "decode_error"


def test_a_decode_error_keeps_its_detail_short() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_body(b"[" * 100_000, None, None, max_body_bytes=LIMIT)
    assert len(info.value.detail) <= 200


def test_duplicate_keys_keep_the_last_value() -> None:
    assert decode_body(b'{"a": 1, "a": 2}', None, None, max_body_bytes=LIMIT) == {"a": 2}


# decode


def test_a_plain_message_becomes_an_event_with_its_properties() -> None:
    message = FakeMessage(
        message_id="evt-1",
        app_id="shop",
        correlation_id="corr-1",
        redelivered=True,
        headers={"tenant": "acme"},
    )
    event = decode(message, {"order_id": "o-1"}, trusted=False, max_attempts=5)
    assert (event.id, event.type, event.source, event.correlation_id) == (
        "evt-1",
        "orders.created",
        "shop",
        "corr-1",
    )
    assert event.data == {"order_id": "o-1"}
    assert event.time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.attempt == 1
    assert event.redelivered is True
    assert dict(event.headers) == {"tenant": "acme"}


def test_the_headers_of_an_event_are_read_only() -> None:
    event = decode(FakeMessage(headers={"a": 1}), None, trusted=False, max_attempts=5)
    with pytest.raises(TypeError):
        event.headers["a"] = 2  # type: ignore[index]  # the point: it must refuse


def test_the_attempt_header_is_ignored_on_an_untrusted_message() -> None:
    message = FakeMessage(headers={ATTEMPT: 4})
    assert decode(message, None, trusted=False, max_attempts=5).attempt == 1


def test_the_attempt_header_is_read_on_a_trusted_message() -> None:
    message = FakeMessage(headers={ATTEMPT: 3})
    assert decode(message, None, trusted=True, max_attempts=5).attempt == 3


@pytest.mark.parametrize(("header", "expected"), [(99, 5), (0, 1), (-3, 1), ("3", 1), (True, 1)])
def test_a_trusted_attempt_header_is_clamped_between_one_and_max_attempts(
    header: object, expected: int
) -> None:
    message = FakeMessage(headers={ATTEMPT: header})
    assert decode(message, None, trusted=True, max_attempts=5).attempt == expected


def test_the_original_routing_key_header_is_ignored_on_an_untrusted_message() -> None:
    message = FakeMessage(routing_key="orders.created", headers={ROUTING_KEY: "admin.delete"})
    assert decode(message, None, trusted=False, max_attempts=5).type == "orders.created"


def test_the_original_routing_key_header_is_read_on_a_trusted_message() -> None:
    # A retry copy comes back with the retry queue's routing key; the header has the original.
    message = FakeMessage(
        routing_key="eventworker.retry.1s", headers={ROUTING_KEY: "orders.created"}
    )
    assert decode(message, None, trusted=True, max_attempts=5).type == "orders.created"


def test_a_message_without_an_id_gets_one_derived_from_its_content() -> None:
    event = decode(FakeMessage(message_id=None), None, trusted=False, max_attempts=5)
    assert event.id
    assert event.id != "None"


def test_the_derived_id_is_the_same_for_every_redelivery_of_the_same_content() -> None:
    first = decode(FakeMessage(message_id=None), None, trusted=False, max_attempts=5)
    again = decode(
        FakeMessage(message_id=None, redelivered=True), None, trusted=False, max_attempts=5
    )
    assert first.id == again.id


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"order_id": "o-2"}'},
        {"routing_key": "orders.updated"},
        {"timestamp": datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)},
    ],
)
def test_the_derived_id_differs_for_other_content(change: dict[str, Any]) -> None:
    base = decode(FakeMessage(message_id=None), None, trusted=False, max_attempts=5)
    other = decode(FakeMessage(message_id=None, **change), None, trusted=False, max_attempts=5)
    assert base.id != other.id


def test_an_empty_message_id_counts_as_missing() -> None:
    event = decode(FakeMessage(message_id=""), None, trusted=False, max_attempts=5)
    assert event.id == decode(FakeMessage(message_id=None), None, trusted=False, max_attempts=5).id


def test_cloudevents_headers_fill_in_missing_properties() -> None:
    message = FakeMessage(
        message_id=None,
        timestamp=None,
        app_id=None,
        correlation_id=None,
        headers={
            "ce-id": "ce-1",
            "ce-source": "/shop",
            "ce-time": "2024-05-01T10:00:00+02:00",
            "ce-correlationid": "ce-corr",
            "ce-causationid": "ce-cause",
        },
    )
    event = decode(message, None, trusted=False, max_attempts=5)
    assert (event.id, event.source, event.correlation_id, event.causation_id) == (
        "ce-1",
        "/shop",
        "ce-corr",
        "ce-cause",
    )
    assert event.time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def test_native_properties_win_over_cloudevents_headers() -> None:
    message = FakeMessage(
        message_id="amqp-1",
        app_id="amqp-app",
        correlation_id="amqp-corr",
        headers={"ce-id": "ce-1", "ce-source": "/shop", "ce-correlationid": "ce-corr"},
    )
    event = decode(message, None, trusted=False, max_attempts=5)
    assert (event.id, event.source, event.correlation_id) == ("amqp-1", "amqp-app", "amqp-corr")


def test_cloudevents_headers_sent_as_bytes_are_read_as_text() -> None:
    message = FakeMessage(message_id=None, headers={"ce-id": b"ce-bytes"})
    assert decode(message, None, trusted=False, max_attempts=5).id == "ce-bytes"


def test_our_causation_header_is_read_as_the_causation_id() -> None:
    message = FakeMessage(headers={CAUSATION_ID: "parent-1", "ce-causationid": "ce-cause"})
    assert decode(message, None, trusted=False, max_attempts=5).causation_id == "parent-1"


def test_the_correlation_id_defaults_to_the_event_id() -> None:
    event = decode(
        FakeMessage(message_id="evt-9", correlation_id=None), None, trusted=False, max_attempts=5
    )
    assert event.correlation_id == "evt-9"


def test_a_naive_timestamp_is_taken_as_utc() -> None:
    message = FakeMessage(timestamp=datetime(2024, 5, 1, 12, 0))
    event = decode(message, None, trusted=False, max_attempts=5)
    assert event.time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(0)


def test_an_aware_timestamp_keeps_its_offset() -> None:
    plus_two = timezone(timedelta(hours=2))
    message = FakeMessage(timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=plus_two))
    assert decode(message, None, trusted=False, max_attempts=5).time.utcoffset() == timedelta(
        hours=2
    )


def test_a_message_without_any_time_is_stamped_now_in_utc() -> None:
    before = datetime.now(UTC)
    event = decode(
        FakeMessage(timestamp=None, headers={"ce-time": "not a time"}),
        None,
        trusted=False,
        max_attempts=5,
    )
    assert before <= event.time <= datetime.now(UTC)


def test_a_message_without_headers_or_routing_key_still_decodes() -> None:
    message = FakeMessage(routing_key=None, headers=None)  # type: ignore[arg-type]  # as delivered
    event = decode(message, None, trusted=True, max_attempts=5)
    assert (event.type, event.attempt, dict(event.headers)) == ("", 1, {})


# carried_headers


@pytest.mark.parametrize(
    "name",
    [
        "x-death",
        "X-Death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "CC",
        "cc",
        "Cc",
        "BCC",
        "bcc",
        "Bcc",
        ATTEMPT,
        ROUTING_KEY,
        CAUSATION_ID,
        "x-eventworker-reason",
        "x-eventworker-traceback",
        RETURN_TO,
    ],
)
def test_carried_headers_drop_broker_bookkeeping_routing_and_our_own(name: str) -> None:
    assert envelope.carried_headers({name: "v", "tenant": "acme"}) == {"tenant": "acme"}


def test_carried_headers_keep_every_producer_header() -> None:
    headers = {
        "tenant": "acme",
        "x-custom": 1,
        "traceparent": "00-abc-def-01",
        "ce-id": "ce-1",
        "nested": {"a": [1, 2]},
    }
    assert envelope.carried_headers(headers) == headers


# check_routing_key and check_header


@pytest.mark.parametrize("key", ["orders.created", "a", "x" * 255, "é" * 127])
def test_a_plain_routing_key_is_accepted_for_publishing(key: str) -> None:
    assert _refusal(check_routing_key, key) is None


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty"),
        ("x" * 256, "255 bytes"),
        ("é" * 128, "255 bytes"),
        ("orders.*", "wildcard"),
        ("orders.#", "wildcard"),
        ("bad\udcff", "UTF-8"),
    ],
)
def test_a_bad_routing_key_is_refused_with_the_reason(key: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_routing_key(key)


@pytest.mark.parametrize("name", ["tenant", "x-custom", "traceparent", "ce-id", "h" * 255])
def test_an_ordinary_header_name_is_accepted(name: str) -> None:
    assert _refusal(check_header, name) is None


@pytest.mark.parametrize(
    "name",
    [
        "CC",
        "cc",
        "BCC",
        "Bcc",
        "x-death",
        "X-Death",
        ATTEMPT,
        "X-EventWorker-Attempt",
        "x-eventworker-anything",
        RETURN_TO,
        "Eventworker-Return-To",
    ],
)
def test_a_reserved_header_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        check_header(name)


@pytest.mark.parametrize("name", ["", "h" * 256])
def test_a_header_name_must_be_1_to_255_bytes(name: str) -> None:
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        check_header(name)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-death": "junk"}, None),
        ({"x-death": []}, None),
        ({"x-death": [{"junk": True}]}, None),
        (
            {"x-death": [{"queue": "q.retry.1s", "reason": "expired"}, {"queue": "q"}]},
            ("q.retry.1s", "expired"),
        ),
        ({"x-death": [{"queue": b"q.retry.1s", "reason": b"expired"}]}, ("q.retry.1s", "expired")),
    ],
)
def test_the_last_death_is_the_first_x_death_entry(
    headers: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    assert envelope.last_death(headers) == expected


def test_the_delay_digits_come_off_only_in_front_of_the_events_own_key() -> None:
    digits = "0." * 22 + "1.0.1."
    assert envelope.undelayed(digits + "order.placed", "order.placed") == "order.placed"
    # Not the event's own key, too few digits, or not binary: left as delivered.
    assert envelope.undelayed(digits + "order.placed", "order.other") == digits + "order.placed"
    assert envelope.undelayed("1.0.1.order.placed", "order.placed") == "1.0.1.order.placed"
    two = "2." + digits[2:] + "order.placed"
    assert envelope.undelayed(two, "order.placed") == two
    assert envelope.undelayed("order.placed", None) == "order.placed"
