"""Receipts and visits → Hilo interactions. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from pydantic_extra_types.currency_code import ISO4217

from channel_store.receipts import Receipt, ReceiptLine, Return, Visit
from hilo.contract import (
    SECONDARY_CONTACTS,
    Adjustment,
    DropInvalid,
    Fulfilment,
    IdentityTrust,
    Interaction,
    LineItem,
    Measure,
    Money,
    OrderPlaced,
    OrderRefunded,
    OrderStatus,
    SalesChannel,
    StoreVisited,
    new_interaction,
)
from hilo.offers.money import round_money

CHANNEL = "store"
TRUST: dict[str, IdentityTrust] = {"scanned": "verified", "typed": "claimed"}
"""A customer the till scanned is proven; one the clerk typed from what was said is claimed:
the till vouches for the sale, not for whose card number it was told."""


def customer_policy() -> DropInvalid:
    """A clerk's typo in an email or phone drops that contact, not the sale: the loyalty card or
    customer number still names the customer (alone, an invalid contact still refuses)."""
    return DropInvalid(SECONDARY_CONTACTS)


def from_receipt(
    receipt: Receipt,
    received_at: datetime,
    instance: str,
    adjustments: Sequence[Adjustment] = (),
) -> Interaction | None:
    """The receipt as an order; `None` for an anonymous sale (no one's journey to join).

    A receipt that hands over an online order reuses that order's id with status `picked_up`,
    so the customer's order moves on instead of being counted twice.
    """
    if receipt.customer is None:
        return None
    currency = receipt.currency

    def money(amount: Decimal | None) -> Money | None:
        return None if amount is None else Money(amount=amount, currency=currency)

    pickup = receipt.pickup_order_id is not None
    order = OrderPlaced(
        order_id=receipt.pickup_order_id or f"{receipt.store_id}:{receipt.receipt_id}",
        status=OrderStatus.PICKED_UP if pickup else OrderStatus.COMPLETED,
        sold_via=SalesChannel.ONLINE if pickup else SalesChannel.STORE,
        fulfilment=Fulfilment.STORE_PICKUP if pickup else Fulfilment.IN_STORE,
        store_id=receipt.store_id,
        items=_items(receipt.lines, currency),
        total=Money(amount=receipt.total, currency=currency),
        tax=money(receipt.tax),
        discount=money(receipt.discount),
        payment_method=receipt.payment_method,
        cart_id=receipt.cart_id,
        quote_id=receipt.quote_id,
        coupons=receipt.coupons,
        receipt_id=f"{receipt.store_id}:{receipt.receipt_id}",
        till_id=receipt.till_id,
    )
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"receipt:{receipt.store_id}:{receipt.receipt_id}",
        identifiers=receipt.customer,
        occurred_at=receipt.occurred_at,
        received_at=received_at,
        payload=order,
        adjustments=adjustments,
        identity_trust=TRUST[receipt.customer_entry],
    )


def from_return(
    ret: Return,
    received_at: datetime,
    instance: str,
    adjustments: Sequence[Adjustment] = (),
) -> Interaction | None:
    """The return as a refund of the order it names; `None` when it names no customer (the
    return of an anonymous sale joins no one's journey)."""
    if ret.customer is None:
        return None
    refund = OrderRefunded(
        order_id=ret.order_id,
        refunded_via=SalesChannel.STORE,
        store_id=ret.store_id,
        items=_items(ret.lines, ret.currency),
        amount=Money(amount=ret.refund_total, currency=ret.currency),
        reason=ret.reason,
        receipt_id=f"{ret.store_id}:{ret.return_id}",
        till_id=ret.till_id,
    )
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"return:{ret.store_id}:{ret.return_id}",
        identifiers=ret.customer,
        occurred_at=ret.occurred_at,
        received_at=received_at,
        payload=refund,
        adjustments=adjustments,
        identity_trust=TRUST[ret.customer_entry],
    )


def _items(lines: Sequence[ReceiptLine], currency: ISO4217) -> list[LineItem]:
    return [_item(line, currency) for line in lines]


def _item(line: ReceiptLine, currency: ISO4217) -> LineItem:
    """A till's line as the contract has it: units, or one unit of a measured line (1.25 kg
    of cheese) priced at what the line cost, its measure beside (`LineItem.measure`)."""
    if line.unit is None:
        quantity, price, measure = int(line.quantity), line.unit_price, None
    else:
        charged = line.line_total
        exact = line.quantity * line.unit_price
        quantity, price = 1, round_money(exact, currency) if charged is None else charged
        measure = Measure(
            amount=Decimal(f"{line.quantity:f}"),  # as written out: 1E+1 is 10
            unit=line.unit,
            unit_price=Money(amount=line.unit_price, currency=currency),
        )
    return LineItem(
        sku=line.sku,
        name=line.name,
        quantity=quantity,
        unit_price=Money(amount=price, currency=currency),
        category=line.category,
        measure=measure,
    )


def from_visit(
    visit: Visit, received_at: datetime, instance: str, adjustments: Sequence[Adjustment] = ()
) -> Interaction:
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"visit:{visit.store_id}:{visit.visit_id}",
        identifiers=visit.customer,
        occurred_at=visit.occurred_at,
        received_at=received_at,
        payload=StoreVisited(store_id=visit.store_id, method=visit.method, purpose=visit.purpose),
        adjustments=adjustments,
        identity_trust=TRUST[visit.customer_entry],
    )
