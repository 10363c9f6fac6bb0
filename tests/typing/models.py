"""Payload models the typing checks of ``@handler`` share."""

from __future__ import annotations

from pydantic import BaseModel


class Order(BaseModel):
    order_id: str
    total: float


class BigOrder(Order):
    lines: int


class Invoice(BaseModel):
    number: int
