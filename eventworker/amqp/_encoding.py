"""AMQP field values, tables and content properties onto the wire, never cut short.

pamqp's encoder cuts header names longer than 128 bytes to 128 (with only a log warning), so
two names sharing their first 128 bytes merge and one value is lost; it also writes every
float as a 4-byte ``f`` and refuses ``bytes``. Here a name is sent whole up to the 255 bytes
a short string holds and refused beyond; floats are ``d`` (8 bytes, exact); ``bytes`` and
``bytearray`` are ``x``; integers take the smallest of ``b``, ``s``, ``I``, ``l``. Entries
keep their order (pamqp sorts them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

#: Nesting of tables and arrays written at most: as deep as ``_fields`` reads them back.
MAX_DEPTH = 200
_U8 = struct.Struct(">B").pack
_U16 = struct.Struct(">H").pack
_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack
_SCALED = struct.Struct(">Bi").pack
_INTS = (
    (-(2**7), 2**7 - 1, b"b", struct.Struct(">b").pack),
    (-(2**15), 2**15 - 1, b"s", struct.Struct(">h").pack),
    (-(2**31), 2**31 - 1, b"I", struct.Struct(">i").pack),
    (-(2**63), 2**63 - 1, b"l", struct.Struct(">q").pack),
)
_DOUBLE = struct.Struct(">d").pack


def short(text: str, what: str) -> bytes:
    """A short string: its UTF-8 bytes after their length.

    Raises:
        ValueError: longer than 255 bytes in UTF-8, or not encodable (a lone surrogate).
    """
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it holds a lone surrogate)") from None
    if len(raw) > 255:
        raise ValueError(f"{what} is {len(raw)} bytes in UTF-8; AMQP allows at most 255")
    return _U8(len(raw)) + raw


def entry(name: str, item: Any) -> bytes:
    """One table entry: the name (whole, up to 255 bytes), the type byte, the value.

    Raises:
        ValueError: the name is longer than 255 bytes, or the value out of range.
        TypeError: the value has no AMQP type.
    """
    return short(name, f"header name {name[:40]!r}...") + value(item, 0)


def table(entries: Iterable[bytes]) -> bytes:
    """A field table of encoded entries (from :func:`entry`, or kept as received)."""
    content = b"".join(entries)
    return _U32(len(content)) + content


def value(item: Any, depth: int) -> bytes:
    """The type byte and bytes of one field value. Raises as :func:`entry`."""
    if isinstance(item, str):
        try:
            raw = item.encode()
        except UnicodeEncodeError:
            raise ValueError(f"text {item[:40]!r} holds a lone surrogate (not Unicode)") from None
        return b"S" + _U32(len(raw)) + raw
    if isinstance(item, bool):
        return b"t\x01" if item else b"t\x00"
    if isinstance(item, int):
        for low, high, kind, pack in _INTS:
            if low <= item <= high:
                return kind + pack(item)
        raise ValueError(f"integer {item} does not fit in 64 bits")
    if isinstance(item, float):
        return b"d" + _DOUBLE(item)
    if item is None:
        return b"V"
    if isinstance(item, bytes | bytearray):
        return b"x" + _U32(len(item)) + item
    if isinstance(item, datetime):
        return b"T" + _U64(_seconds(item))
    if isinstance(item, Decimal):
        return b"D" + _decimal(item)
    if isinstance(item, Mapping | list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"tables and arrays nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            return b"F" + table(
                short(str(k), "header name") + value(v, depth + 1) for k, v in item.items()
            )
        return b"A" + table(value(v, depth + 1) for v in item)
    raise TypeError(f"a header value of type {type(item).__name__} has no AMQP type")


def _seconds(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp())


def _decimal(number: Decimal) -> bytes:
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"decimal {number} has no AMQP form")
    scale = max(-exponent, 0)
    mantissa = int(number.scaleb(scale))
    if scale > 255 or not -(2**31) <= mantissa < 2**31:
        raise ValueError(f"decimal {number} does not fit AMQP's 8-bit scale and 32-bit value")
    return _SCALED(scale, mantissa)


def _octet(item: Any, what: str) -> bytes:
    if not isinstance(item, int) or not 0 <= item <= 255:
        raise ValueError(f"{what} must be an integer from 0 to 255, not {item!r}")
    return _U8(item)


#: The properties in wire order: attribute, flag, encoder (``headers`` is the caller's).
FIELDS: tuple[tuple[str, int, Callable[[Any, str], bytes] | None], ...] = (
    ("content_type", 0x8000, short),
    ("content_encoding", 0x4000, short),
    ("headers", 0x2000, None),
    ("delivery_mode", 0x1000, _octet),
    ("priority", 0x0800, _octet),
    ("correlation_id", 0x0400, short),
    ("reply_to", 0x0200, short),
    ("expiration", 0x0100, short),
    ("message_id", 0x0080, short),
    ("timestamp", 0x0040, lambda moment, _: _U64(_seconds(moment))),
    ("message_type", 0x0020, short),
    ("user_id", 0x0010, short),
    ("app_id", 0x0008, short),
    ("cluster_id", 0x0004, short),
)


def properties(fields: Any, headers: Callable[[], bytes]) -> bytes:
    """The property block of a content header: flags, then each property set on ``fields``
    (an object with pamqp's ``Basic.Properties`` attributes; None and "" are unset, as in
    pamqp). ``headers`` encodes the header table when there is one.

    Raises:
        ValueError, TypeError: a property or header that AMQP cannot carry, named.
    """
    flags = 0
    parts = []
    for name, flag, encode in FIELDS:
        item = getattr(fields, name)
        if item is None or item == "":
            continue
        flags |= flag
        parts.append(headers() if encode is None else encode(item, name))
    return _U16(flags) + b"".join(parts)
