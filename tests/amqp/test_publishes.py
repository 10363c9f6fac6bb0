"""The frames of a batched publish, byte for byte as pamqp writes them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from eventworker.amqp.properties import Properties
from eventworker.amqp.publishes import Message, encode

_SHORT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _pamqp(message: Message, channel: int, max_content: int) -> bytes:
    body = message.body
    frames: list[object] = [
        commands.Basic.Publish(
            exchange=message.exchange, routing_key=message.routing_key, mandatory=True
        ),
        ContentHeader(body_size=len(body), properties=message.properties),
        *(ContentBody(body[i : i + max_content]) for i in range(0, len(body), max_content)),
    ]
    return b"".join(frame.marshal(f, channel) for f in frames)  # type: ignore[arg-type]


@given(
    exchange=st.from_regex(r"[a-zA-Z0-9_.:-]{0,40}", fullmatch=True),  # what pamqp accepts
    routing_key=_SHORT,
    body=st.binary(max_size=300),
    channel=st.integers(1, 65535),
    max_content=st.integers(1, 128),
    message_id=st.text(st.characters(codec="ascii"), min_size=1, max_size=40),
)
def test_the_frames_are_pamqps(
    exchange: str, routing_key: str, body: bytes, channel: int, max_content: int, message_id: str
) -> None:
    properties = Properties.build(
        delivery_mode=2, message_id=message_id, headers={"x-a": 1, "b": "c"}
    )
    message = Message(exchange, routing_key, body, properties)
    assert encode(message, channel, max_content) == _pamqp(message, channel, max_content)


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    message = Message("x", "k" * 256, b"{}", Properties.build(message_id="m"))
    with pytest.raises(ValueError, match="over 255 bytes"):
        encode(message, 1, 1000)
