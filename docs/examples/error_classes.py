"""Choosing per exception type what is permanent (give_up_on) or the only thing retried
(retry_on)."""

from eventworker import Context, Event, handler

customers: dict[str, str] = {}


class UnknownCustomer(Exception):
    """The customer will not appear by waiting."""


async def bill(customer: str, order: dict[str, str]) -> None: ...


class PaymentService:
    async def charge(self, order_id: str) -> None: ...


payment_service = PaymentService()


@handler("orders.created", give_up_on=(UnknownCustomer, KeyError))
async def bill_order(event: Event[dict[str, str]], ctx: Context) -> None:
    # UnknownCustomer or KeyError: dead-lettered at once; anything else: retried
    await bill(customers[event.data["customer_id"]], event.data)


@handler("payments.requested", retry_on=(ConnectionError, TimeoutError))
async def charge(event: Event[dict[str, str]], ctx: Context) -> None:
    # only network trouble (and the handler timeout) is retried; any other error dead-letters
    await payment_service.charge(event.data["order_id"])
