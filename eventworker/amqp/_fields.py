"""AMQP field values and tables off the wire: every type RabbitMQ uses, depth-bounded.

The values are those pamqp gives (so aio-pika and handlers see what they always saw): ``S`` a
``str`` (``bytes`` when not UTF-8), ``x`` a ``bytearray``, ``T`` a UTC ``datetime`` (a value
above 2^32 taken as milliseconds), ``D`` a ``Decimal``, ``V`` None, ``L`` signed as ``l``
(RabbitMQ itself re-encodes ``L`` as ``l``).

:func:`table` is strict and fast: it raises :class:`FieldError` (or ``ValueError``,
``IndexError``, ``struct.error`` on truncated data) for anything it cannot decode, and never
recurses deeper than ``MAX_DEPTH``. :func:`read_table` is the patient one for a table that
failed: it keeps every entry that decodes and names each one that does not.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

#: Nesting of tables and arrays beyond this is refused, so decoding never exhausts the stack.
MAX_DEPTH = 200

_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U64 = struct.Struct(">Q").unpack_from
#: Fixed-size numbers: type byte -> (unpack, size).
_FIXED: dict[int, tuple[Callable[[bytes, int], tuple[Any, ...]], int]] = {
    ord("b"): (struct.Struct(">b").unpack_from, 1),
    ord("B"): (struct.Struct(">B").unpack_from, 1),
    ord("s"): (struct.Struct(">h").unpack_from, 2),
    ord("u"): (struct.Struct(">H").unpack_from, 2),
    ord("I"): (struct.Struct(">i").unpack_from, 4),
    ord("i"): (struct.Struct(">I").unpack_from, 4),
    ord("l"): (struct.Struct(">q").unpack_from, 8),
    ord("L"): (struct.Struct(">q").unpack_from, 8),
    ord("f"): (struct.Struct(">f").unpack_from, 4),
    ord("d"): (struct.Struct(">d").unpack_from, 8),
}
#: Size of every value type that has no length prefix (the skip of an unreadable entry).
_SIZES = {kind: size for kind, (_, size) in _FIXED.items()} | {
    ord("t"): 1,
    ord("D"): 5,
    ord("T"): 8,
    ord("V"): 0,
    0: 0,
}
_S, _F, _A, _T, _x, _t, _D, _V = (ord(c) for c in "SFATxtDV")
_PREFIXED = frozenset((_S, _F, _A, _x))
_TEN = Decimal(10)


class FieldError(ValueError):
    """A field value that cannot be decoded; the message says why."""


def timestamp(seconds: int) -> datetime:
    """An AMQP timestamp as pamqp reads it: above 2^32 it is taken as milliseconds.

    Raises:
        FieldError: out of ``datetime``'s range (microseconds, say).
    """
    try:
        return datetime.fromtimestamp(seconds / 1000.0 if seconds > 0xFFFFFFFF else seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise FieldError(f"timestamp {seconds} is out of range") from None


def table(data: bytes, offset: int, end: int, depth: int = 0) -> dict[str, Any]:
    """The table whose entries fill ``data[offset:end]``.

    Raises:
        FieldError, ValueError, IndexError, struct.error: anything it cannot decode.
    """
    result: dict[str, Any] = {}
    while offset < end:
        start = offset + 1
        offset = start + data[offset]
        name = data[start:offset].decode()
        kind = data[offset]
        offset += 1
        if kind == _S:  # the common case, inline
            (size,) = _U32(data, offset)
            start = offset + 4
            offset = start + size
            raw = data[start:offset]
            try:
                result[name] = raw.decode()
            except UnicodeDecodeError:
                result[name] = raw
        else:
            result[name], offset = value(data, offset, kind, depth)
    if offset != end:
        raise FieldError("a table entry runs past the table's end")
    return result


def array(data: bytes, offset: int, end: int, depth: int) -> list[Any]:
    """The array whose values fill ``data[offset:end]``. Raises as :func:`table`."""
    result = []
    while offset < end:
        kind = data[offset]
        item, offset = value(data, offset + 1, kind, depth)
        result.append(item)
    if offset != end:
        raise FieldError("an array value runs past the array's end")
    return result


def value(data: bytes, offset: int, kind: int, depth: int) -> tuple[Any, int]:
    """The value of type ``kind`` at ``offset`` and the offset after it. Raises as
    :func:`table`; :class:`FieldError` for an unknown type or nesting past ``MAX_DEPTH``."""
    fixed = _FIXED.get(kind)
    if fixed is not None:
        unpack, size = fixed
        return unpack(data, offset)[0], offset + size
    if kind in _PREFIXED:
        (size,) = _U32(data, offset)
        start = offset + 4
        end = start + size
        if end > len(data):
            raise FieldError("a value runs past the end of the data")
        if kind == _S:
            raw = data[start:end]
            try:
                return raw.decode(), end
            except UnicodeDecodeError:
                return raw, end
        if kind == _x:
            return bytearray(data[start:end]), end
        if depth >= MAX_DEPTH:
            raise FieldError(f"tables and arrays nested deeper than {MAX_DEPTH} levels")
        if kind == _F:
            return table(data, start, end, depth + 1), end
        return array(data, start, end, depth + 1), end
    if kind == _T:
        return timestamp(_U64(data, offset)[0]), offset + 8
    if kind == _t:
        return data[offset] != 0, offset + 1
    if kind == _D:
        decimals = data[offset]
        (mantissa,) = _I32(data, offset + 1)
        return Decimal(mantissa) * (_TEN**-decimals), offset + 5
    if kind == _V or kind == 0:
        return None, offset
    raise FieldError(f"unknown field type {bytes([kind])!r}")


def skip(data: bytes, offset: int, kind: int, end: int) -> int | None:
    """The offset after the value of type ``kind`` at ``offset`` without decoding it; None for
    an unknown type or a value that runs past ``end``."""
    size = _SIZES.get(kind)
    if size is None:
        if kind not in _PREFIXED or offset + 4 > end:
            return None
        size = 4 + _U32(data, offset)[0]
    return offset + size if offset + size <= end else None


def shown(raw: bytes) -> str:
    """Bytes that may not be UTF-8, as text: undecodable bytes as ``\\xNN`` escapes."""
    return raw.decode("utf-8", "backslashreplace")


def read_short(data: bytes, offset: int, what: str, errors: list[str]) -> tuple[str, bool, int]:
    """The short string at ``offset``: its text, whether it was UTF-8 (if not, the text has
    ``\\xNN`` escapes and ``errors`` a line naming ``what``), and the offset after it.

    Raises:
        IndexError: the data ends before the string's length.
    """
    stop = offset + 1 + data[offset]
    raw = data[offset + 1 : stop]
    try:
        return raw.decode(), True, stop
    except UnicodeDecodeError:
        text = shown(raw)
        errors.append(f"{what} {text[:100]!r} is not UTF-8")
        return text, False, stop


def read_table(data: bytes, offset: int, end: int, errors: list[str]) -> dict[str, Any]:
    """Every entry of the table in ``data[offset:end]`` that decodes; one line in ``errors``
    for each that does not. An entry whose value cannot even be skipped (an unknown type)
    ends the reading: the rest of the table is lost, and said so. Never raises."""
    result: dict[str, Any] = {}
    while offset < end:
        name_end = offset + 1 + data[offset]
        if name_end >= end:
            errors.append("headers: the last entry is truncated")
            break
        raw_name = data[offset + 1 : name_end]
        kind = data[name_end]
        after = skip(data, name_end + 1, kind, end)
        if after is None:
            errors.append(
                f"headers[{shown(raw_name)!r}]: unknown field type {bytes([kind])!r} or a "
                f"truncated value; the entries after it are not read"
            )
            break
        try:
            name = raw_name.decode()
        except UnicodeDecodeError:
            errors.append(f"header name {shown(raw_name)!r} is not UTF-8")
            offset = after
            continue
        try:
            decoded, stop = value(data, name_end + 1, kind, 0)
            if stop != after:
                raise FieldError("the value's length does not match its content")
            result[name] = decoded
        except UnicodeDecodeError:
            errors.append(f"headers[{name!r}]: a name inside it is not UTF-8")
        except Exception as exc:  # a hostile value: whatever decoding it raised is its error
            errors.append(f"headers[{name!r}]: {exc or type(exc).__name__}")
        offset = after
    return result


def entries(data: bytes, offset: int, end: int) -> dict[str, bytes]:
    """Each entry's bytes (name, type, value) in the table ``data[offset:end]``, by name (the
    last one of a name, as the decoded table keeps it). Used on tables that decoded."""
    spans: dict[str, bytes] = {}
    while offset < end:
        name_end = offset + 1 + data[offset]
        after = skip(data, name_end + 1, data[name_end], end)
        if after is None:
            break
        spans[data[offset + 1 : name_end].decode()] = data[offset:after]
        offset = after
    return spans
