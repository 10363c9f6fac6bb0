"""A stand-in for Context.publish that records what a handler published."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RecordingPublish:
    """A fake of the publish function the worker injects into a Context; records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> None:
        self.calls.append(
            {
                "routing_key": routing_key,
                "data": data,
                "id": id,
                "headers": headers,
                "correlation_id": correlation_id,
                "causation_id": causation_id,
            }
        )
