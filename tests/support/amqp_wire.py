"""Hypothesis strategies for AMQP 0-9-1 wire bytes: field values of every type RabbitMQ uses,
tables, arrays, property blocks and whole frames, valid in structure but not in content (short
strings that are not UTF-8, timestamps out of any calendar), so pamqp can be the oracle."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from tests.support.raw_amqp import FLAGS, longstr, shortstr

_NUMBERS = {
    b"b": (">b", st.integers(-(2**7), 2**7 - 1)),
    b"B": (">B", st.integers(0, 2**8 - 1)),
    b"s": (">h", st.integers(-(2**15), 2**15 - 1)),
    b"u": (">H", st.integers(0, 2**16 - 1)),
    b"I": (">i", st.integers(-(2**31), 2**31 - 1)),
    b"i": (">I", st.integers(0, 2**32 - 1)),
    b"l": (">q", st.integers(-(2**63), 2**63 - 1)),
    b"L": (">q", st.integers(-(2**63), 2**63 - 1)),
    b"f": (">f", st.floats(width=32, allow_nan=False)),
    b"d": (">d", st.floats(allow_nan=False)),
}
_text = st.text(max_size=40).map(str.encode)
#: A short string's bytes: mostly text, one in 20 anything (often not UTF-8).
short_bytes = st.integers(0, 19).flatmap(lambda n: st.binary(max_size=10) if n == 0 else _text)
_seconds = st.integers(0, 2**32 - 1)
#: Seconds, milliseconds (above 2^32, as pamqp reads them), and anything (out of range).
timestamps = st.one_of(_seconds, _seconds, st.integers(2**32, 2**45), st.integers(0, 2**64 - 1))


def _scalar() -> st.SearchStrategy[bytes]:
    numbers = [
        st.builds(lambda v, k=kind, f=fmt: k + struct.pack(f, v), values)
        for kind, (fmt, values) in _NUMBERS.items()
    ]
    return st.one_of(
        *numbers,
        st.integers(0, 255).map(lambda v: b"t" + bytes([v])),
        st.tuples(st.integers(0, 30), st.integers(-(2**31), 2**31 - 1)).map(
            lambda sm: b"D" + struct.pack(">Bi", *sm)
        ),
        st.one_of(st.text(max_size=30).map(str.encode), st.binary(max_size=30)).map(
            lambda b: b"S" + longstr(b)
        ),
        st.binary(max_size=30).map(lambda b: b"x" + longstr(b)),
        timestamps.map(lambda t: b"T" + struct.pack(">Q", t)),
        st.just(b"V"),
    )


def _table_of(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(short_bytes, values), max_size=5).map(
        lambda entries: longstr(b"".join(shortstr(name) + value for name, value in entries))
    )


#: One field value: its type byte and its bytes (tables and arrays a few levels deep).
field_values = st.recursive(
    _scalar(),
    lambda inner: st.one_of(
        _table_of(inner).map(lambda t: b"F" + t),
        st.lists(inner, max_size=5).map(lambda items: b"A" + longstr(b"".join(items))),
    ),
    max_leaves=12,
)
#: A field table's bytes (its length first).
tables = _table_of(field_values)


@st.composite
def property_blocks(draw: st.DrawFn) -> bytes:
    """Flags and the properties they announce, each drawn by its type."""
    chosen = draw(st.sets(st.sampled_from(sorted(FLAGS))))
    flags = 0
    parts = []
    for name, flag in FLAGS.items():
        if name not in chosen:
            continue
        flags |= flag
        if name == "headers":
            parts.append(draw(tables))
        elif name in ("delivery_mode", "priority"):
            parts.append(bytes([draw(st.integers(0, 255))]))
        elif name == "timestamp":
            parts.append(struct.pack(">Q", draw(timestamps)))
        else:
            parts.append(shortstr(draw(short_bytes)))
    return struct.pack(">H", flags) + b"".join(parts)


def header_frame(block: bytes, body_size: int = 7, channel: int = 1) -> bytes:
    """A whole content-header frame around a property block."""
    payload = struct.pack(">HHQ", 60, 0, body_size) + block
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


def method_frame(class_method: tuple[int, int], arguments: bytes, channel: int = 1) -> bytes:
    payload = struct.pack(">HH", *class_method) + arguments
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


#: Header values as a Python program sets them, each of which AMQP can carry.
header_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=30),
        st.binary(max_size=30),
        st.none(),
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.replace(microsecond=0)),
        st.decimals(
            min_value=-(10**5), max_value=10**5, places=3, allow_nan=False, allow_infinity=False
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
#: Header names of 1 to 255 bytes in UTF-8.
header_names = st.text(min_size=1, max_size=255).filter(lambda n: len(n.encode()) <= 255)


def typed(value: Any) -> Any:
    """``value`` with the type of every part spelled out (``True == 1`` and ``b"" ==
    bytearray()`` in Python; not on the wire)."""
    if isinstance(value, dict):
        return ("dict", {k: typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)
