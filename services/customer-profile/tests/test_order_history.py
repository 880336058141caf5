"""A frequent buyer: the view keeps the latest orders, the totals count every one, through the
real broker and database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from customer_profile.domain.profile import RECENT_ORDERS
from customer_profile.testing import T0, RunningProfileService
from hilo.contract import (
    Identifiers,
    Interaction,
    Money,
    OrderPlaced,
    OrderRefunded,
    OrderStatus,
    SalesChannel,
    new_interaction,
)
from hilo.testkit.samples import sample_payloads

ORDERS = RECENT_ORDERS + 10
SAMPLE = sample_payloads()["order"]
assert isinstance(SAMPLE, OrderPlaced)
AMOUNT = Decimal(SAMPLE.total.amount)


def order(n: int, order_id: str, status: OrderStatus = OrderStatus.PLACED) -> Interaction:
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id=f"receipt-{n}",
        identifiers=Identifiers(loyalty_id="L-HOUSE"),
        payload=SAMPLE.model_copy(update={"order_id": order_id, "status": status}),
        occurred_at=T0 + timedelta(minutes=n),
    )


async def test_an_old_order_refunded_after_many_more_is_taken_off_once(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish([order(n, f"ORD-{n}") for n in range(ORDERS)])
    await svc.wait_for_entries(ORDERS)
    customer = await svc.customer_of("loyalty_id", "L-HOUSE")
    before = (await svc.get(f"/v1/customers/{customer}"))["view"]

    # ORD-0 left the view long ago: its refund must not count as a new order.
    await svc.publish([order(ORDERS, "ORD-0", OrderStatus.REFUNDED), order(ORDERS + 1, "ORD-N")])
    await svc.wait_for_entries(ORDERS + 2)
    after = (await svc.get(f"/v1/customers/{customer}"))["view"]

    assert before["order_count"] == ORDERS
    assert len(before["orders"]) == RECENT_ORDERS
    assert before["lifetime_value"] == {"EUR": str(ORDERS * AMOUNT)}
    assert after["order_count"] == ORDERS + 1, "ORD-N is new, ORD-0 is not"
    assert after["lifetime_value"] == {"EUR": str(ORDERS * AMOUNT)}, "one refunded, one new"
    assert len(after["orders"]) == RECENT_ORDERS
    assert [o["order_id"] for o in after["orders"][-2:]] == ["ORD-0", "ORD-N"]
    assert [o["status"] for o in after["orders"][-2:]] == ["refunded", "placed"]


def refund(n: int, order_id: str, paid: str | None) -> Interaction:
    """A return at a till of the house account's order: `paid` back, None for the whole order."""
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id=f"return-{n}",
        identifiers=Identifiers(loyalty_id="L-HOUSE"),
        payload=OrderRefunded(
            order_id=order_id,
            refunded_via=SalesChannel.STORE,
            store_id="BCN-01",
            amount=None
            if paid is None
            else Money.model_validate({"amount": paid, "currency": "EUR"}),
        ),
        occurred_at=T0 + timedelta(minutes=n),
    )


async def test_returns_of_old_orders_come_off_the_lifetime_value_once_each(
    profile_service: RunningProfileService,
) -> None:
    """Refunds of orders the view let go long ago, one delivered twice, then a late event that
    makes the service derive the view again from the whole journey: the same figures."""
    svc = profile_service
    await svc.publish([order(n, f"ORD-{n}") for n in range(ORDERS)])
    await svc.wait_for_entries(ORDERS)
    customer = await svc.customer_of("loyalty_id", "L-HOUSE")

    part = refund(ORDERS, "ORD-0", "20.00")
    await svc.publish([part, part, refund(ORDERS + 1, "ORD-1", None)])
    await svc.publish([part, refund(ORDERS + 2, "ORD-0", "10.00")])
    await svc.wait_for_entries(ORDERS + 3)
    after = (await svc.get(f"/v1/customers/{customer}"))["view"]
    await svc.publish([order(-1, "ORD-LATE")])
    await svc.wait_for_entries(ORDERS + 4)
    derived = (await svc.get(f"/v1/customers/{customer}"))["view"]

    kept = ORDERS * AMOUNT - Decimal("30.00") - AMOUNT
    assert after["order_count"] == ORDERS, "a refund is no order"
    assert after["lifetime_value"] == {"EUR": str(kept)}
    refunded = {o["order_id"]: o.get("refunded") for o in after["orders"]}
    assert refunded["ORD-0"] == {"amount": "30.00", "currency": "EUR"}
    assert refunded["ORD-1"] == {"amount": str(AMOUNT), "currency": "EUR"}
    assert derived["order_count"] == ORDERS + 1
    assert derived["lifetime_value"] == {"EUR": str(kept + AMOUNT)}
    assert {o["order_id"]: o.get("refunded") for o in derived["orders"]}["ORD-0"] == {
        "amount": "30.00",
        "currency": "EUR",
    }
