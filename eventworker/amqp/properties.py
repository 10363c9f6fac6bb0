"""A message's AMQP properties, decoded from a content header that may be hostile and encoded
for the copies eventworker publishes.

:func:`decode` never raises. Its fast path reads each property in wire order with
precompiled structs and builds the object without pamqp's validating ``__init__``; a header
it cannot read whole takes the patient path, which keeps every property and header entry it
can decode and returns an :class:`UndecodableProperties` holding the error and the property
bytes as received.

A decoded :class:`Properties` remembers the bytes it came from. A copy built with ``origin=``
those properties writes each header entry it carries over unchanged (the very value object
decoded) as the producer's own bytes, so a retry or dead-letter copy keeps every header exact
in type as well as value. Everything else goes through ``_encoding`` (names whole up to 255
bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Self

from pamqp import commands

from eventworker.amqp import _encoding, _fields
from eventworker.amqp._fields import FieldError, timestamp

_FLAGS = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_NAMES = tuple(name for name, _, _ in _encoding.FIELDS)
_MISSING = object()
#: ``delivery_mode`` of a message the broker writes to disk.
PERSISTENT = 2


class Properties(commands.Basic.Properties):
    """``Basic.Properties`` as eventworker reads and writes them (see the module docstring).

    No ``__slots__`` of its own: pamqp's attribute list stays the class's ``__slots__``, and
    the instance has room for the bytes it was decoded from.
    """

    #: The bytes these properties were decoded from, and where their header table's entries
    #: lie in them; None for properties built here.
    _wire: bytes | None = None
    _table: tuple[int, int] = (0, 0)
    #: The decoded properties a copy was made from (their header entries are kept as bytes).
    origin: Properties | None = None

    @classmethod
    def build(cls, *, origin: Properties | None = None, **fields: Any) -> Self:
        """Properties with ``fields`` (pamqp's names: ``message_type``, not ``type``), the rest
        unset; no validation (the encoder checks what it writes).

        Raises:
            TypeError: a field that ``Basic.Properties`` does not have.
        """
        made = object.__new__(cls)
        for name in _NAMES:
            setattr(made, name, fields.pop(name, None))
        if made.cluster_id is None:
            made.cluster_id = ""
        if fields:
            raise TypeError(f"no such property: {', '.join(sorted(fields))}")
        made.origin = origin
        return made

    def spans(self) -> dict[str, bytes]:
        """Each header entry's bytes as received, by name (empty when built here)."""
        if self._wire is None:
            return {}
        return _fields.entries(self._wire, *self._table)

    def marshal(self) -> bytes:
        """The property block for a content header (pamqp's ``ContentHeader.marshal`` calls
        this). Header names are sent whole.

        Raises:
            ValueError, TypeError: a property or header AMQP cannot carry (a name over 255
                bytes, a value of no AMQP type), named in the message.
        """
        return _encoding.properties(self, self._encoded_headers)

    def _encoded_headers(self) -> bytes:
        headers: Mapping[str, Any] = self.headers or {}
        source = self.origin if self.origin is not None else self
        spans = source.spans() if headers else {}
        before: Mapping[str, Any] = source.headers or {}
        return _encoding.table(
            spans[name]
            if name in spans and before.get(name, _MISSING) is item
            else _encoding.entry(name, item)
            for name, item in headers.items()
        )


class UndecodableProperties(Properties):
    """Properties that could not all be decoded: the fields that could, ``error`` (why the rest
    could not, one clause per problem) and ``raw``, the property bytes exactly as received.
    ``unreadable`` shows each short string that is not UTF-8 with ``\\xNN`` escapes."""

    error: str = ""
    raw: bytes = b""
    unreadable: Mapping[str, str] = {}

    def marshal(self) -> bytes:
        """The property bytes as received, unchanged."""
        return self.raw


def decode(data: bytes, offset: int, end: int) -> Properties:
    """The properties in ``data[offset:end]`` (the flags first). Never raises: what cannot be
    read whole is an :class:`UndecodableProperties`."""
    try:
        return _fast(data, offset, end)
    except Exception:  # anything at all: the patient path says precisely what
        return _patient(data, offset, end)


def _short(data: bytes, offset: int) -> tuple[str, int]:
    stop = offset + 1 + data[offset]
    return data[offset + 1 : stop].decode(), stop


def _fast(data: bytes, offset: int, end: int) -> Properties:
    """The common case in one pass; raises on anything unusual (even multiple flag words)."""
    (flags,) = _FLAGS(data, offset)
    if flags & 1:
        raise FieldError("more than one word of property flags")
    offset += 2
    made = object.__new__(Properties)
    made._wire = data
    made.content_type, offset = _short(data, offset) if flags & 0x8000 else (None, offset)
    made.content_encoding, offset = _short(data, offset) if flags & 0x4000 else (None, offset)
    if flags & 0x2000:
        (size,) = _U32(data, offset)
        start = offset + 4
        offset = start + size
        if offset > end:
            raise FieldError("the header table runs past the end of the frame")
        made.headers = _fields.table(data, start, offset)
        made._table = (start, offset)
    else:
        made.headers = None
    made.delivery_mode, offset = (data[offset], offset + 1) if flags & 0x1000 else (None, offset)
    made.priority, offset = (data[offset], offset + 1) if flags & 0x0800 else (None, offset)
    made.correlation_id, offset = _short(data, offset) if flags & 0x0400 else (None, offset)
    made.reply_to, offset = _short(data, offset) if flags & 0x0200 else (None, offset)
    made.expiration, offset = _short(data, offset) if flags & 0x0100 else (None, offset)
    made.message_id, offset = _short(data, offset) if flags & 0x0080 else (None, offset)
    if flags & 0x0040:
        made.timestamp = timestamp(_U64(data, offset)[0])
        offset += 8
    else:
        made.timestamp = None
    made.message_type, offset = _short(data, offset) if flags & 0x0020 else (None, offset)
    made.user_id, offset = _short(data, offset) if flags & 0x0010 else (None, offset)
    made.app_id, offset = _short(data, offset) if flags & 0x0008 else (None, offset)
    made.cluster_id, offset = _short(data, offset) if flags & 0x0004 else ("", offset)
    if offset > end:
        raise FieldError("the properties run past the end of the frame")
    return made


def _patient(data: bytes, offset: int, end: int) -> Properties:
    """Every property that decodes, and an error for each that does not. Never raises."""
    block = offset
    errors: list[str] = []
    fields: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    table = (0, 0)
    try:
        flags = 0
        for word in range(4):  # 0-9-1 uses one word; a continuation bit asks for more
            (bits,) = _FLAGS(data, offset)
            offset += 2
            flags |= (bits & 0xFFFE) << (16 * word)
            if not bits & 1:
                break
        for name, flag, _ in _encoding.FIELDS:
            if not flags & flag:
                continue
            if name in ("delivery_mode", "priority"):
                fields[name] = data[offset]
                offset += 1
            elif name == "timestamp":
                seconds = _U64(data, offset)[0]
                offset += 8
                try:
                    fields[name] = timestamp(seconds)
                except FieldError as exc:
                    errors.append(str(exc))
            elif name == "headers":
                start = offset + 4
                offset = start + _U32(data, offset)[0]
                if offset > end:
                    raise FieldError("the header table runs past the end of the frame")
                fields[name] = _fields.read_table(data, start, offset, errors)
                table = (start, offset)
            else:
                text, readable, offset = _fields.read_short(data, offset, name, errors)
                (fields if readable else unreadable)[name] = text
        if offset > end:
            raise FieldError("the properties run past the end of the frame")
    except Exception as exc:  # truncated or malformed: what was read before it stays
        errors.append(f"the header is truncated or malformed ({exc or type(exc).__name__})")
    if not errors:
        made = Properties.build(**fields)
        made._wire, made._table = data, table
        return made
    bad = UndecodableProperties.build(**fields)
    bad.error = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
    bad.raw = data[block:end]
    bad.unreadable = unreadable
    return bad
