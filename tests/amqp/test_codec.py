"""eventworker's AMQP decoder against pamqp as the oracle, on hostile input, and its encoder.

For every content header pamqp can decode, ours gives the same values (types included); for
every one pamqp cannot, ours gives an ``UndecodableProperties`` with the bytes as received;
for any bytes at all, ours never raises anything but aiormq's ``InvalidFrameError`` (and for
a property block, nothing). What we encode, both decode to what was encoded.
"""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime
from typing import Any

import pamqp.frame
import pytest
from aiormq.exceptions import InvalidFrameError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pamqp import commands

from eventworker import envelope
from eventworker.amqp import _encoding, _fields, frames, properties
from eventworker.amqp.properties import Properties, UndecodableProperties
from tests.support import amqp_wire
from tests.support.amqp_wire import header_frame, header_names, header_values, typed
from tests.support.raw_amqp import entry, longstr, nested, shortstr, table
from tests.support.raw_amqp import properties as block_of

_SLOW = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def ours(frame: bytes) -> Any:
    kind, channel, _ = struct.unpack(">BHI", frame[:7])
    return frames.decode(kind, channel, frame[:7], frame[7:])


def theirs(frame: bytes) -> Any:
    """pamqp's reading, or None when it raises (anything: that is what ended connections)."""
    try:
        return pamqp.frame.unmarshal(frame)
    except Exception:
        return None


def as_seen(props: commands.Basic.Properties) -> dict[str, Any]:
    return {name: typed(getattr(props, name)) for name in commands.Basic.Properties.__slots__}


@_SLOW
@given(amqp_wire.property_blocks())
@example(struct.pack(">H", 0x0040) + struct.pack(">Q", 1733000000000000))  # microseconds
@example(struct.pack(">H", 0x8000) + shortstr(b"application/json\xe9"))
@example(struct.pack(">H", 0x2000) + table(entry(b"caf\xe9", b"S", longstr(b"x"))))
def test_a_header_reads_as_pamqp_reads_it_or_is_undecodable_with_its_bytes(block: bytes) -> None:
    frame = header_frame(block)
    expected = theirs(frame)
    consumed, channel, header = ours(frame)
    if expected is None:
        assert isinstance(header.properties, UndecodableProperties)
        assert header.properties.raw == block
        assert header.properties.error
    else:
        assert (consumed, channel, header.body_size) == (*expected[:2], expected[2].body_size)
        assert type(header.properties) is Properties
        assert as_seen(header.properties) == as_seen(expected[2].properties)


@_SLOW
@given(st.binary(max_size=300))
def test_any_property_bytes_decode_without_raising(block: bytes) -> None:
    decoded = properties.decode(block, 0, len(block))
    if isinstance(decoded, UndecodableProperties):
        assert decoded.raw == block
        assert decoded.error


@_SLOW
@given(amqp_wire.property_blocks(), st.data())
def test_a_damaged_header_never_raises(block: bytes, data: st.DataObject) -> None:
    damaged = bytearray(block)
    for _ in range(data.draw(st.integers(1, 4))):
        if damaged:
            at = data.draw(st.integers(0, len(damaged) - 1))
            damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    decoded = properties.decode(bytes(damaged[:cut]), 0, cut)
    assert isinstance(decoded, Properties)


@_SLOW
@given(st.integers(0, 3), st.binary(max_size=120))
def test_any_frame_payload_raises_at_most_invalid_frame(kind: int, payload: bytes) -> None:
    frame = struct.pack(">BHI", kind, 1, len(payload)) + payload + b"\xce"
    with contextlib.suppress(InvalidFrameError):  # a broken frame; anything else fails
        ours(frame)


@_SLOW
@given(
    st.sampled_from([(60, 60), (60, 71), (60, 50)]),
    st.binary(max_size=80),
)
def test_delivery_methods_of_any_bytes_raise_at_most_invalid_frame(
    method: tuple[int, int], arguments: bytes
) -> None:
    with contextlib.suppress(InvalidFrameError):
        ours(amqp_wire.method_frame(method, arguments))


@pytest.mark.parametrize(
    "frame",
    [
        commands.Basic.Deliver("ctag", 2**63 - 1, True, "ex", "orders.created"),
        commands.Basic.Deliver("", 1, False, "", ""),
        commands.Basic.GetOk(7, True, "ex", "k", 2**32 - 1),
        commands.Basic.Return(312, "NO_ROUTE", "ex", "k"),
        commands.Basic.Ack(5, multiple=True),
        commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 40),
    ],
)
def test_method_frames_read_as_pamqp_reads_them(frame: Any) -> None:
    wire = pamqp.frame.marshal(frame, 3)
    expected, got = pamqp.frame.unmarshal(wire), ours(wire)
    assert got[:2] == expected[:2]
    assert type(got[2]) is type(expected[2])
    assert list(got[2]) == list(expected[2])


def test_a_routing_key_that_is_not_utf8_marks_the_deliver_frame() -> None:
    arguments = shortstr(b"ctag") + struct.pack(">QB", 9, 0) + shortstr(b"") + shortstr(b"k\xe9")
    _, _, frame = ours(amqp_wire.method_frame((60, 60), arguments))
    assert isinstance(frame, frames.UndecodableDeliver)
    assert isinstance(frame, commands.Basic.Deliver)
    assert (frame.delivery_tag, frame.routing_key) == (9, "k\\xe9")
    assert "routing key" in frame.error and "not UTF-8" in frame.error


def test_a_truncated_deliver_frame_is_an_invalid_frame() -> None:
    with pytest.raises(InvalidFrameError):
        ours(amqp_wire.method_frame((60, 60), shortstr(b"ctag") + b"\x00\x00"))


@pytest.mark.parametrize("depth", [_fields.MAX_DEPTH + 1, 500, 20_000])
def test_a_table_nested_too_deep_is_an_error_of_its_entry_never_a_recursion_error(
    depth: int,
) -> None:
    block = block_of(
        headers=table(entry(b"deep", b"F", nested(depth)), entry(b"ok", b"S", longstr(b"yes"))),
        message_id=shortstr(b"m-1"),
    )
    decoded = properties.decode(block, 0, len(block))
    assert isinstance(decoded, UndecodableProperties)
    assert decoded.headers == {"ok": "yes"}
    assert decoded.message_id == "m-1"
    assert "headers['deep']" in decoded.error and "nested deeper" in decoded.error


def test_an_undecodable_header_keeps_everything_else_it_can_read() -> None:
    block = block_of(
        content_type=shortstr(b"application/json\xe9"),
        headers=table(
            entry(b"caf\xe9", b"S", longstr(b"x")),
            entry(b"when", b"T", struct.pack(">Q", 2**63)),
            entry(b"good", b"I", struct.pack(">i", -5)),
        ),
        message_id=shortstr(b"id\xe9"),
        timestamp=struct.pack(">Q", 1733000000000000),
        app_id=shortstr(b"amqplib"),
    )
    decoded = properties.decode(block, 0, len(block))
    assert isinstance(decoded, UndecodableProperties)
    assert decoded.headers == {"good": -5}
    assert (decoded.content_type, decoded.message_id, decoded.timestamp) == (None, None, None)
    assert decoded.app_id == "amqplib"
    assert decoded.unreadable == {"content_type": "application/json\\xe9", "message_id": "id\\xe9"}
    for part in ("content_type", "caf\\\\xe9", "headers['when']", "1733000000000000"):
        assert part in decoded.error
    assert decoded.raw == block
    assert decoded.marshal() == block  # as received, should it ever be sent again


def test_an_unknown_field_type_loses_the_rest_of_its_table_only() -> None:
    block = block_of(
        headers=table(entry(b"a", b"S", longstr(b"1")), entry(b"z", b"Z", b"??")),
        app_id=shortstr(b"still read"),
    )
    decoded = properties.decode(block, 0, len(block))
    assert isinstance(decoded, UndecodableProperties)
    assert decoded.headers == {"a": "1"}
    assert decoded.app_id == "still read"
    assert "unknown field type b'Z'" in decoded.error


@_SLOW
@given(st.dictionaries(header_names, header_values, max_size=6))
def test_what_we_encode_both_decoders_read_back(headers: dict[str, Any]) -> None:
    sent = Properties.build(
        headers=headers,
        message_id="m",
        timestamp=datetime(2024, 5, 1, tzinfo=UTC),
        delivery_mode=2,
        content_type="application/json",
    )
    frame = header_frame(sent.marshal())
    _, _, header = ours(frame)
    assert type(header.properties) is Properties
    assert typed(header.properties.headers) == typed(_as_decoded(headers))
    assert as_seen(header.properties) == as_seen(pamqp.frame.unmarshal(frame)[2].properties)


def _as_decoded(value: Any) -> Any:
    """What a decoder gives back for ``value``: ``x`` byte arrays as ``bytearray``."""
    if isinstance(value, dict):
        return {k: _as_decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_decoded(v) for v in value]
    return bytearray(value) if isinstance(value, bytes) else value


@_SLOW
@given(amqp_wire.tables, st.dictionaries(header_names, st.text(max_size=10), max_size=3))
def test_a_copy_keeps_the_producers_entries_byte_for_byte(
    producer: bytes, extra: dict[str, str]
) -> None:
    block = block_of(headers=producer)
    received = properties.decode(block, 0, len(block))
    if isinstance(received, UndecodableProperties):
        return  # never copied: the worker rejects it
    carried = envelope.carried_headers(received.headers or {})
    copy = Properties.build(origin=received, headers={**carried, **extra})
    wire = copy.marshal()
    for name, span in received.spans().items():
        if name in carried and name not in extra:
            assert span in wire
    back = properties.decode(wire, 0, len(wire))
    assert typed(back.headers) == typed({**carried, **extra})


def test_long_header_names_are_sent_whole_and_too_long_ones_refused() -> None:
    long_a, long_b = "a" * 128 + "-one", "a" * 128 + "-two"
    name_200 = "é" * 100  # 200 bytes
    copy = Properties.build(headers={long_a: 1, long_b: 2, name_200: "v"})
    wire = copy.marshal()
    assert properties.decode(wire, 0, len(wire)).headers == {long_a: 1, long_b: 2, name_200: "v"}
    with pytest.raises(ValueError, match="256 bytes"):
        Properties.build(headers={"n" * 256: 1}).marshal()


def test_the_encoder_and_decoder_share_their_depth_bound() -> None:
    assert _encoding.MAX_DEPTH == _fields.MAX_DEPTH
    deep: dict[str, Any] = {}
    for _ in range(_fields.MAX_DEPTH + 1):
        deep = {"n": deep}
    with pytest.raises(ValueError, match="nested deeper"):
        Properties.build(headers=deep).marshal()


def test_a_table_nested_as_deep_as_allowed_goes_both_ways() -> None:
    deep: dict[str, Any] = {}
    for _ in range(_fields.MAX_DEPTH - 1):
        deep = {"n": deep}
    wire = Properties.build(headers={"deep": deep}).marshal()
    assert wire == block_of(headers=table(entry(b"deep", b"F", nested(_fields.MAX_DEPTH - 1))))
    decoded = properties.decode(wire, 0, len(wire))
    assert type(decoded) is Properties and decoded.headers == {"deep": deep}
