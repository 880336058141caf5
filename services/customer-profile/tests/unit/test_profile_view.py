"""Deriving the profile from the journey (no infrastructure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic_extra_types.currency_code import ISO4217

from customer_profile.domain.journey import JourneyEntry, new_entry, summarise
from customer_profile.domain.profile import (
    CONVERSATION_IDS_KEPT,
    MAX_CONSENTS,
    MAX_TRAIT_TEXT,
    MAX_TRAITS,
    RECENT_ORDERS,
    REFUND_SKEW,
    UNVERIFIED_TRAITS,
    ProfileView,
    derive_view,
)
from hilo.contract import (
    CallHappened,
    CallStatus,
    Campaign,
    CartAction,
    CartChanged,
    ConsentChanged,
    Conversation,
    ConversationDone,
    Direction,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    MessageExchanged,
    Money,
    OrderPlaced,
    OrderRefunded,
    OrderStatus,
    PageViewed,
    SalesChannel,
    new_interaction,
)
from hilo.contract.payloads import DONE_AFTER, JsonScalar
from hilo.testkit.samples import SHOES, sample_payloads

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)
ZERO = timedelta(0)
EUR = ISO4217("EUR")


def entry(
    n: int,
    kind: str,
    channel: str = "web",
    *,
    minutes: int | None = None,
    payload: object = None,
    conversation: Conversation | None = None,
) -> JourneyEntry:
    interaction: Interaction = new_interaction(
        channel=channel,
        instance="t",
        provider_event_id=f"e{n}",
        identifiers=Identifiers(email="a@example.com"),
        payload=payload or sample_payloads()[kind],
        occurred_at=T0 + timedelta(minutes=n if minutes is None else minutes),
        conversation=conversation,
    )
    return new_entry(interaction, "C", T0, late=False)


def done(n: int, *, minutes: int, waiting: int = 0, after: timedelta = DONE_AFTER) -> JourneyEntry:
    """An agent's done mark through the customer's contact at `minutes`, of a customer the
    agent saw waiting since `waiting`, dated `after` that contact as the desk dates one."""
    seen = ConversationDone(agent_id="agent-ana", waiting_since=T0 + timedelta(minutes=waiting))
    mark = entry(n, "conversation_done", "desk", minutes=minutes, payload=seen)
    return mark.model_copy(update={"occurred_at": mark.occurred_at + after})


def fold_recalling(entries: list[JourneyEntry]) -> tuple[ProfileView, int]:
    """Fold event by event as the pipeline does: an order the view let go is recalled from the
    entries before it first. The view, and how many recalls it took."""
    view = ProfileView()
    recalls = 0
    for n, e in enumerate(entries):
        if forgotten := view.unknown_orders([e]) & {x.payload["order_id"] for x in entries[:n]}:
            view.recall_orders(x for x in entries[:n] if x.payload["order_id"] in forgotten)
            recalls += 1
        view.apply(e, WINDOW)
        view.finish()
    return view, recalls


def test_incremental_and_full_derivation_agree() -> None:
    kinds = list(sample_payloads())
    entries = [
        entry(n, kinds[n % len(kinds)], ["web", "whatsapp", "store"][n % 3]) for n in range(40)
    ]

    incremental = ProfileView()
    for e in entries:
        incremental.apply(e, WINDOW)
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)

    assert incremental.finish() == derive_view(shuffled, WINDOW)


def test_channel_counters_first_and_last_seen() -> None:
    view = derive_view(
        [entry(1, "page_view"), entry(2, "message", "whatsapp"), entry(3, "page_view")], WINDOW
    )

    assert view.channels["web"].count == 2
    assert view.channels["whatsapp"].count == 1
    assert view.first_seen == T0 + timedelta(minutes=1)
    assert view.last_seen == T0 + timedelta(minutes=3)
    assert view.last_channel == "web"


def test_latest_consent_per_purpose_and_channel_wins() -> None:
    grant = ConsentChanged(purpose="marketing", granted=True, channel="email")
    withdraw = ConsentChanged(purpose="marketing", granted=False, channel="email")
    sms = ConsentChanged(purpose="marketing", granted=True, channel="sms")

    view = derive_view(
        [
            entry(1, "consent", payload=grant),
            entry(2, "consent", payload=withdraw),
            entry(3, "consent", payload=sms),
        ],
        WINDOW,
    )

    assert {(c.channel, c.granted) for c in view.consent} == {("email", False), ("sms", True)}


def test_a_views_consents_are_bounded_keeping_the_latest() -> None:
    """A source that sends a new purpose with every event must not grow the view (one Kafka
    record) without end."""
    told = [
        entry(n, "consent", payload=ConsentChanged(purpose=f"purpose-{n}", granted=True))
        for n in range(MAX_CONSENTS + 5)
    ]

    view = derive_view(told, WINDOW)

    assert len(view.consent) == MAX_CONSENTS
    assert view.consent[-1].purpose == f"purpose-{MAX_CONSENTS + 4}"
    assert "purpose-4" not in {c.purpose for c in view.consent}


def test_an_order_in_store_finishes_the_online_cart_with_the_same_products() -> None:
    view = derive_view([entry(1, "cart"), entry(2, "order", "store")], WINDOW)

    assert view.cart is None
    assert view.orders[0].order_id == "ORD-1001"


def _line(sku: str, quantity: int) -> LineItem:
    return LineItem(
        sku=sku, quantity=quantity, unit_price=Money(amount=Decimal("10"), currency=EUR)
    )


def test_an_order_in_store_of_part_of_the_cart_leaves_the_rest_in_it() -> None:
    """Two of A and one of B online, one A bought in the store: one A and B are still in the
    online cart, and its total is no longer known."""
    cart = CartChanged(
        action=CartAction.VIEWED,
        cart_id="cart-1",
        items=[_line("A", 2), _line("B", 1)],
        total=Money(amount=Decimal("30"), currency=EUR),
    )
    some = sample_payloads()["order"].model_copy(
        update={"items": [_line("A", 1)], "total": Money(amount=Decimal("10"), currency=EUR)}
    )
    rest = some.model_copy(update={"order_id": "ORD-1002", "items": [_line("A", 1), _line("B", 1)]})

    partly = derive_view(
        [entry(1, "cart", payload=cart), entry(2, "order", "store", payload=some)], WINDOW
    )
    wholly = derive_view(
        [
            entry(1, "cart", payload=cart),
            entry(2, "order", "store", payload=some),
            entry(3, "order", "store", payload=rest),
        ],
        WINDOW,
    )

    assert partly.cart is not None
    assert [(item["sku"], item["quantity"]) for item in partly.cart.items] == [("A", 1), ("B", 1)]
    assert partly.cart.total is None
    assert wholly.cart is None


def test_an_order_of_another_cart_leaves_this_one_whole() -> None:
    cart = CartChanged(action=CartAction.VIEWED, cart_id="cart-1", items=[_line("A", 2)])
    other = sample_payloads()["order"].model_copy(
        update={"items": [_line("A", 1)], "cart_id": "cart-2"}
    )

    view = derive_view(
        [entry(1, "cart", payload=cart), entry(2, "order", "web", payload=other)], WINDOW
    )

    assert view.cart is not None
    assert [(i["sku"], i["quantity"]) for i in view.cart.items] == [("A", 2)]


def test_a_changed_cart_without_a_total_no_longer_shows_the_old_one() -> None:
    started = CartChanged(
        action=CartAction.CHECKOUT_STARTED,
        cart_id="cart-1",
        items=[_line("A", 1)],
        total=Money(amount=Decimal("10"), currency=EUR),
    )
    added = CartChanged(
        action=CartAction.ITEM_ADDED, cart_id="cart-1", changed_items=[_line("B", 1)]
    )
    looked = CartChanged(action=CartAction.VIEWED, cart_id="cart-1", items=[_line("A", 1)])

    changed = derive_view(
        [entry(1, "cart", payload=started), entry(2, "cart", payload=added)], WINDOW
    )
    same = derive_view(
        [entry(1, "cart", payload=started), entry(2, "cart", payload=looked)], WINDOW
    )

    assert changed.cart is not None
    assert len(changed.cart.items) == 2
    assert changed.cart.total is None
    assert same.cart is not None
    assert same.cart.total == {"amount": "10", "currency": "EUR"}


def test_an_unrelated_order_leaves_the_cart() -> None:
    other = sample_payloads()["order"].model_copy(
        update={
            "items": [
                LineItem(
                    sku="SOCKS", quantity=2, unit_price=Money(amount=Decimal("5"), currency=EUR)
                )
            ],
            "total": Money(amount=Decimal("10"), currency=EUR),
        }
    )

    view = derive_view([entry(1, "cart"), entry(2, "order", "store", payload=other)], WINDOW)

    assert view.cart is not None
    assert view.cart.cart_id == "cart-1"


@pytest.mark.parametrize("status", [OrderStatus.REFUNDED, OrderStatus.PICKED_UP])
def test_a_later_state_of_an_earlier_order_leaves_the_cart_of_today(status: OrderStatus) -> None:
    """The cart since holds the same product again: the order's refund or pick-up bought it
    no more than the order did then."""
    order = sample_payloads()["order"]
    later = order.model_copy(update={"status": status})

    view = derive_view(
        [entry(1, "order", payload=order), entry(2, "cart"), entry(3, "order", payload=later)],
        WINDOW,
    )

    assert view.cart is not None
    assert view.cart.cart_id == "cart-1"


def test_an_order_first_seen_cancelled_bought_nothing_and_leaves_the_cart() -> None:
    cancelled = sample_payloads()["order"].model_copy(update={"status": OrderStatus.CANCELLED})

    view = derive_view([entry(1, "cart"), entry(2, "order", payload=cancelled)], WINDOW)

    assert view.cart is not None


def test_cart_changes_accumulate() -> None:
    sku = LineItem(sku="A", quantity=1)
    added = CartChanged(action=CartAction.ITEM_ADDED, changed_items=[sku])
    removed = CartChanged(action=CartAction.ITEM_REMOVED, changed_items=[sku])

    view = derive_view(
        [
            entry(1, "cart", payload=added),
            entry(2, "cart", payload=added),
            entry(3, "cart", payload=removed),
        ],
        WINDOW,
    )

    assert view.cart is not None
    assert view.cart.items == [
        {"sku": "A", "name": None, "quantity": 1, "unit_price": None, "category": None}
    ]


def test_lifetime_value_counts_each_order_once_and_drops_cancellations() -> None:
    order = sample_payloads()["order"]
    picked_up = order.model_copy(update={"status": OrderStatus.PICKED_UP})
    cancelled = order.model_copy(update={"order_id": "ORD-2", "status": OrderStatus.CANCELLED})

    view = derive_view(
        [
            entry(1, "order", payload=order),
            entry(2, "order", payload=picked_up),
            entry(3, "order", payload=cancelled),
        ],
        WINDOW,
    )

    assert view.order_count == 2
    assert view.lifetime_value == {"EUR": "59.90"}


@pytest.mark.parametrize(
    "reached",
    [OrderStatus.PICKED_UP, OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.REFUNDED],
)
def test_an_order_placed_again_later_keeps_the_state_it_reached(reached: OrderStatus) -> None:
    """A shop that sends `Order Completed` when the till takes the payment, seconds after the
    handover (or a till whose clock is behind): the order does not go back to waiting."""
    order = sample_payloads()["order"]
    assert isinstance(order, OrderPlaced)
    assert order.status is OrderStatus.PLACED

    view = derive_view(
        [
            entry(1, "order", payload=order),
            entry(2, "order", "store", payload=order.model_copy(update={"status": reached})),
            entry(3, "order", payload=order),
        ],
        WINDOW,
    )

    assert [o.status for o in view.orders] == [reached]
    closed = reached in (OrderStatus.CANCELLED, OrderStatus.REFUNDED)
    assert view.lifetime_value == ({} if closed else {"EUR": "59.90"})


def test_an_unverified_event_adds_an_order_but_never_changes_one_the_view_holds() -> None:
    """Anyone may send `Order Completed` with the public web key, naming a customer's email:
    one for an order the customer has would set it to 0 and out of their lifetime value."""
    order = sample_payloads()["order"]
    zeroed = order.model_copy(update={"total": Money(amount=Decimal("0"), currency=EUR)})
    another = order.model_copy(update={"order_id": "ORD-2"})

    def unverified(n: int, payload: object) -> JourneyEntry:
        return entry(n, "order", payload=payload).model_copy(
            update={"identity_trust": "unverified"}
        )

    view = derive_view(
        [entry(1, "order", payload=order), unverified(2, zeroed), unverified(3, another)],
        WINDOW,
    )
    first_unverified = derive_view(
        [unverified(1, order), entry(2, "order", "store", payload=zeroed)], WINDOW
    )

    assert [(o.order_id, o.total["amount"]) for o in view.orders] == [
        ("ORD-1001", "59.90"),
        ("ORD-2", "59.90"),
    ]
    assert view.lifetime_value == {"EUR": "119.80"}
    assert [o.total["amount"] for o in first_unverified.orders] == ["0"]


def refund(
    n: int, order_id: str = "ORD-1001", paid: str | None = "20.00", goods: int = 0
) -> JourneyEntry:
    """A return at a till: `paid` back (None: the whole order), `goods` pairs of shoes back."""
    payload = OrderRefunded(
        order_id=order_id,
        refunded_via=SalesChannel.STORE,
        store_id="BCN-01",
        items=[SHOES.model_copy(update={"quantity": goods})] if goods else [],
        amount=None if paid is None else Money(amount=Decimal(paid), currency=EUR),
    )
    return entry(n, "refund", "store", payload=payload)


def test_returns_never_bring_back_more_items_than_the_order_had() -> None:
    """One pair sold; two returns of part of it (a weighed line comes back as 0.3 kg twice)."""
    order = sample_payloads()["order"]

    view = derive_view(
        [entry(1, "order", payload=order), refund(2, goods=1), refund(3, paid="5.00", goods=1)],
        WINDOW,
    )

    assert (view.orders[0].item_count, view.orders[0].returned_items) == (1, 1)


def test_an_order_updated_to_fewer_items_than_came_back_has_them_all_back() -> None:
    order = sample_payloads()["order"]
    three = order.model_copy(update={"items": [SHOES.model_copy(update={"quantity": 3})]})

    view = derive_view(
        [entry(1, "order", payload=three), refund(2, goods=2), entry(3, "order", payload=order)],
        WINDOW,
    )

    assert (view.orders[0].item_count, view.orders[0].returned_items) == (1, 1)


def test_a_return_takes_what_was_paid_back_off_its_order_and_the_lifetime_value() -> None:
    order = sample_payloads()["order"]
    other = order.model_copy(update={"order_id": "ORD-2"})

    view = derive_view(
        [
            entry(1, "order", payload=order),
            entry(2, "order", payload=other),
            refund(3, paid="20.00", goods=1),
            refund(4, "ORD-2", paid=None),
        ],
        WINDOW,
    )

    by_id = {o.order_id: o for o in view.orders}
    assert by_id["ORD-1001"].refunded == {"amount": "20.00", "currency": "EUR"}
    assert by_id["ORD-1001"].returned_items == 1
    assert by_id["ORD-2"].refunded == {"amount": "59.90", "currency": "EUR"}, "the whole order"
    assert view.order_count == 2, "a refund is no order"
    assert view.lifetime_value == {"EUR": "39.90"}
    assert [o.order_id for o in view.orders] == ["ORD-1001", "ORD-2"], "latest updated last"


def test_refunds_never_pay_back_more_than_their_order() -> None:
    order = sample_payloads()["order"]

    view = derive_view(
        [entry(1, "order", payload=order), refund(2, paid="50.00"), refund(3, paid="50.00")],
        WINDOW,
    )
    rest = derive_view(
        [entry(1, "order", payload=order), refund(2, paid="50.00"), refund(3, paid=None)],
        WINDOW,
    )

    assert view.orders[0].refunded == {"amount": "59.90", "currency": "EUR"}
    assert view.lifetime_value == {}
    assert rest.orders[0].refunded == {"amount": "59.90", "currency": "EUR"}, "what was left"
    assert rest.lifetime_value == {}


def test_a_refund_changes_nothing_unverified_in_another_currency_or_of_an_order_not_held() -> None:
    """The public web key must not take an order out of someone's lifetime value; an order
    placed before Hilo (or by someone else) was never counted here, so nothing comes off."""
    order = sample_payloads()["order"]
    unverified = refund(2).model_copy(update={"identity_trust": "unverified"})
    dollars = refund(3)
    dollars = dollars.model_copy(
        update={"payload": {**dollars.payload, "amount": {"amount": "20.00", "currency": "USD"}}}
    )

    view = derive_view(
        [entry(1, "order", payload=order), unverified, dollars, refund(4, "ORD-ELSEWHERE")],
        WINDOW,
    )

    assert view.orders[0].refunded is None
    assert view.lifetime_value == {"EUR": "59.90"}
    assert view.event_count == 4, "every refund is still in the journey"


def test_a_refund_in_another_currency_is_kept_beside_its_order_not_taken_off() -> None:
    """A till abroad pays back a euro order in dollars: no rate to convert at, so the value
    stays, but the refund is on the order for a person to see, and its goods count as back;
    an update of the order keeps it."""
    order = sample_payloads()["order"]
    dollars = [refund(n, goods=1) for n in (2, 3)]
    dollars = [
        d.model_copy(
            update={"payload": {**d.payload, "amount": {"amount": "20.00", "currency": "USD"}}}
        )
        for d in dollars
    ]
    updated = order.model_copy(update={"status": OrderStatus.COMPLETED})

    view = derive_view(
        [entry(1, "order", payload=order), *dollars, entry(4, "order", payload=updated)],
        WINDOW,
    )

    [summary] = view.orders
    assert summary.refunded_in_other_currencies == {"USD": "40.00"}
    assert summary.refunded is None
    assert summary.returned_items == 1, "one item sold: never more back than that"
    assert view.lifetime_value == {"EUR": "59.90"}
    assert "refunded_in_other_currencies" not in view.orders[0].model_copy(
        update={"refunded_in_other_currencies": None}
    ).model_dump(mode="json"), "absent when there is none, as before"


def test_a_refund_dated_before_its_order_waits_for_it_a_day() -> None:
    """A till whose clock is behind the web shop's: the return is dated minutes before the
    order it returns. Folded event by event or derived whole, it comes off once the order
    comes; one dated more than a day before its order (or of one never seen) is let go."""
    order = sample_payloads()["order"]
    other = order.model_copy(update={"order_id": "ORD-2"})
    minutes_in_a_day = int(REFUND_SKEW.total_seconds() // 60)
    entries = [
        refund(0, "ORD-2", paid="5.00"),
        refund(10, paid="20.00", goods=1),
        refund(11, "PRE-HILO"),
        refund(12, paid=None),
        entry(40, "order", payload=order),
        entry(minutes_in_a_day + 20, "order", payload=other),
    ]

    view = ProfileView()
    for e in entries:
        view.apply(e, WINDOW)
        view.finish()

    assert view.model_dump() == derive_view(entries, WINDOW).model_dump()
    by_id = {o.order_id: o for o in view.orders}
    assert by_id["ORD-1001"].refunded == {"amount": "59.90", "currency": "EUR"}
    assert by_id["ORD-1001"].returned_items == 1
    assert by_id["ORD-2"].refunded is None, "dated more than a day before its order"
    assert view.lifetime_value == {"EUR": "59.90"}
    assert view.refunds_waiting == [], "PRE-HILO's let go a day after it"


def test_a_refund_waits_no_longer_than_a_day_whatever_comes_after_it() -> None:
    minutes_in_a_day = int(REFUND_SKEW.total_seconds() // 60)
    waiting = derive_view([refund(0, "PRE-HILO"), entry(minutes_in_a_day, "message")], WINDOW)
    gone = derive_view([refund(0, "PRE-HILO"), entry(minutes_in_a_day + 1, "message")], WINDOW)

    assert [r.order_id for r in waiting.refunds_waiting] == ["PRE-HILO"]
    assert gone.refunds_waiting == []


def test_a_recalled_order_takes_back_the_refunds_its_view_took_off_it_and_no_others() -> None:
    """A house account: refunds dated before their orders, one within a day and one long
    before; many orders later the first order is cancelled, and recalled from the journey it
    counts as the view counted it."""
    order = sample_payloads()["order"]
    entries = [
        refund(0, "O-FIRST", paid="20.00"),
        refund(1, "O-FIRST", paid="7.00").model_copy(
            update={"occurred_at": T0 - timedelta(days=3)}
        ),
        entry(30, "order", payload=order.model_copy(update={"order_id": "O-FIRST"})),
        *(
            entry(n, "order", payload=order.model_copy(update={"order_id": f"O-{n}"}))
            for n in range(100, 100 + RECENT_ORDERS + 5)
        ),
        entry(
            500,
            "order",
            payload=order.model_copy(
                update={"order_id": "O-FIRST", "status": OrderStatus.COMPLETED}
            ),
        ),
        refund(501, "O-FIRST", paid=None),
    ]
    entries.sort(key=JourneyEntry.sort_key)
    view, recalls = fold_recalling(entries)

    assert recalls == 1
    assert view.model_dump() == derive_view(entries, WINDOW).model_dump()
    first = next(o for o in view.orders if o.order_id == "O-FIRST")
    assert first.refunded == {"amount": "59.90", "currency": "EUR"}, "20.00, then the rest"
    assert view.lifetime_value == {"EUR": str((RECENT_ORDERS + 5) * Decimal("59.90"))}


def test_a_later_state_of_a_refunded_order_keeps_what_was_paid_back() -> None:
    order = sample_payloads()["order"]
    picked_up = order.model_copy(update={"status": OrderStatus.PICKED_UP})

    view = derive_view(
        [
            entry(1, "order", payload=order),
            refund(2, goods=1),
            entry(3, "order", payload=picked_up),
        ],
        WINDOW,
    )

    assert view.orders[0].status == "picked_up"
    assert (view.orders[0].refunded, view.orders[0].returned_items) == (
        {"amount": "20.00", "currency": "EUR"},
        1,
    )
    assert view.lifetime_value == {"EUR": "39.90"}


def test_an_order_lowered_under_what_was_refunded_counts_nothing_and_comes_off_once() -> None:
    """A shop that sends the order again after a return, with the total the return left."""
    order = sample_payloads()["order"]
    lowered = order.model_copy(update={"total": Money(amount=Decimal("10.00"), currency=EUR)})
    entries = [
        entry(1, "order", payload=order),
        refund(2, paid="50.00"),
        entry(3, "order", payload=lowered),
    ]

    view = derive_view(entries, WINDOW)
    again = derive_view([*entries, entry(4, "order", payload=order)], WINDOW)

    assert view.orders[0].kept_value() == 0
    assert view.lifetime_value == {}
    assert again.lifetime_value == {"EUR": "9.90"}, "59.90 less the 50.00 paid back"


def test_a_refund_of_a_forgotten_order_is_recalled_with_the_refunds_before_it() -> None:
    """Folding event by event as the pipeline does: an order the view let go comes back from
    the journey with what was paid back on it, and the view ends as a full derivation's."""
    order = sample_payloads()["order"]
    entries = [
        entry(n, "order", payload=order.model_copy(update={"order_id": f"O-{n}"}))
        for n in range(RECENT_ORDERS + 5)
    ]
    entries.append(refund(200, "O-0", paid="10.00"))
    entries += [
        entry(n, "order", payload=order.model_copy(update={"order_id": f"O-{n}"}))
        for n in range(300, 300 + RECENT_ORDERS)
    ]
    entries += [refund(400, "O-0", paid=None, goods=1), refund(401, "O-1", paid="5.00")]
    view, _ = fold_recalling(entries)

    assert view.model_dump() == derive_view(entries, WINDOW).model_dump()
    orders = 2 * RECENT_ORDERS + 5
    assert view.order_count == orders
    assert view.lifetime_value == {"EUR": str((orders - 1) * Decimal("59.90") - Decimal("5.00"))}
    assert view.orders[-2].refunded == {"amount": "59.90", "currency": "EUR"}


def test_an_orders_codes_stay_on_it_through_updates_that_do_not_repeat_them() -> None:
    """The web shop sends the coupon with `Order Completed`, not with the pickup at the store."""
    order = sample_payloads()["order"].model_copy(update={"coupons": ["FLYER-7"]})
    picked_up = order.model_copy(update={"status": OrderStatus.PICKED_UP, "coupons": []})

    placed = derive_view([entry(1, "order", payload=order)], WINDOW)
    collected = derive_view(
        [entry(1, "order", payload=order), entry(2, "order", payload=picked_up)], WINDOW
    )

    assert [o.coupons for o in placed.orders] == [["FLYER-7"]]
    assert [(o.status, o.coupons) for o in collected.orders] == [("picked_up", ["FLYER-7"])]


def test_a_conversation_continues_across_channels_within_the_window() -> None:
    view = derive_view(
        [
            entry(1, "message", "whatsapp"),
            entry(30, "call", "voice"),
            entry(60, "message", "email"),
        ],
        WINDOW,
    )

    assert view.conversation is not None
    assert view.conversation.started_channel == "whatsapp"
    assert view.conversation.channels == ["whatsapp", "voice", "email"]
    assert [p.channel for p in view.conversation.recent] == ["whatsapp", "voice", "email"]


def test_after_a_long_silence_a_new_conversation_starts() -> None:
    view = derive_view(
        [entry(1, "message", "whatsapp"), entry(2, "call", "voice", minutes=3 * 24 * 60)], WINDOW
    )

    assert view.conversation is not None
    assert view.conversation.started_channel == "voice"


def test_a_thread_that_keeps_its_id_starts_a_new_conversation_after_a_long_silence() -> None:
    """WhatsApp and SMS threads keep one id for ever: the same id weeks later is no link."""
    call = Conversation(id="call-1")
    chat = Conversation(id="whatsapp:34611222333", continues="call-1")
    later = Conversation(id="whatsapp:34611222333")

    view = derive_view(
        [
            entry(1, "call", "voice", conversation=call),
            entry(2, "message", "whatsapp", minutes=5, conversation=chat),
            entry(3, "message", "whatsapp", minutes=60 * 24 * 60, conversation=later),
        ],
        WINDOW,
    )

    assert view.conversation is not None
    assert view.conversation.started_channel == "whatsapp"
    assert view.conversation.channels == ["whatsapp"]
    assert view.conversation.started_at == T0 + timedelta(minutes=60 * 24 * 60)
    assert len(view.conversation.recent) == 1


def test_an_outbound_message_with_no_conversation_open_starts_none() -> None:
    """A campaign message opens no conversation; the customer's answer does, and the agent's
    reply then continues it."""
    outbound = sample_payloads()["message"].model_copy(update={"direction": Direction.OUTBOUND})

    campaign = derive_view([entry(1, "message", "sms", payload=outbound)], WINDOW)
    answered = derive_view(
        [
            entry(1, "message", "sms", payload=outbound),
            entry(2, "message", "sms"),
            entry(3, "message", "sms", payload=outbound),
        ],
        WINDOW,
    )

    assert campaign.conversation is None
    assert answered.conversation is not None
    assert answered.conversation.started_at == T0 + timedelta(minutes=2)
    assert len(answered.conversation.recent) == 2


@pytest.mark.parametrize(
    ("call", "opens"),
    [
        pytest.param(CallStatus.COMPLETED, True, id="an agent spoke with the customer"),
        pytest.param(CallStatus.NO_ANSWER, False, id="nobody took the call back"),
    ],
)
def test_an_agents_call_back_opens_the_conversation_the_customer_carries_on(
    call: CallStatus, opens: bool
) -> None:
    """The contact centre calls a customer back (no conversation open) and names the agent:
    the WhatsApp message they send after it carries on the call, as one conversation, and
    waits for an answer. Twilio's own record of the call names nobody and opens none."""
    twilio = CallHappened(
        direction=Direction.OUTBOUND, status=CallStatus.COMPLETED, provider_call_id="CA9"
    )
    contact_centre = twilio.model_copy(update={"status": call, "agent_id": "agent-7"})
    message = entry(3, "message", "whatsapp", minutes=12)

    view = derive_view(
        [
            entry(1, "call", "voice", minutes=2, payload=twilio),
            entry(2, "call", "voice", minutes=2, payload=contact_centre),
            message,
        ],
        WINDOW,
    )
    provider_only = derive_view(
        [entry(1, "call", "voice", minutes=2, payload=twilio), message], WINDOW
    )

    assert view.conversation is not None
    assert view.conversation.started_channel == ("voice" if opens else "whatsapp")
    assert view.conversation.channels == (["voice", "whatsapp"] if opens else ["whatsapp"])
    assert view.conversation.awaiting_reply_since == T0 + timedelta(minutes=12)
    assert provider_only.conversation is not None
    assert provider_only.conversation.started_channel == "whatsapp"


def test_a_promotion_is_no_part_of_the_open_conversation() -> None:
    """A promotion sent while a chat is open neither moves the conversation to its channel
    (where the desk would answer) nor keeps it open: daily promotions would otherwise hold one
    conversation open for ever, and the customer's question a week later would continue it."""
    promotion = sample_payloads()["message"].model_copy(
        update={"direction": Direction.OUTBOUND, "purpose": "marketing"}
    )
    day = 24 * 60
    chat = [entry(1, "message", "whatsapp"), entry(2, "message", "whatsapp", payload=SERVICE)]
    promotions = [
        entry(10 + n, "message", "email", minutes=n * day - 60, payload=promotion)
        for n in range(1, 8)
    ]

    during = derive_view([*chat, promotions[0]], WINDOW)
    later = derive_view([*chat, *promotions, entry(20, "message", "sms", minutes=7 * day)], WINDOW)

    assert during.conversation is not None
    assert during.conversation.last_channel == "whatsapp"
    assert during.conversation.last_at == T0 + timedelta(minutes=2)
    assert during.conversation.channels == ["whatsapp"]
    assert [p.channel for p in during.conversation.recent] == ["whatsapp", "whatsapp"]
    assert during.last_channel == "email", "the customer's latest entry is still the promotion"
    assert later.conversation is not None
    assert later.conversation.started_at == T0 + timedelta(minutes=7 * day)
    assert later.conversation.channels == ["sms"]
    assert later.conversation.awaiting_reply_since == T0 + timedelta(minutes=7 * day)


def _call(direction: Direction, status: CallStatus, agent: str | None = "agent-7") -> CallHappened:
    """A call as the contact centre reports it, naming the agent on it (None: as the telephony
    provider reports it, naming nobody)."""
    return CallHappened(direction=direction, status=status, provider_call_id="CA1", agent_id=agent)


OUT = sample_payloads()["message"].model_copy(update={"direction": Direction.OUTBOUND})
SERVICE = OUT.model_copy(update={"purpose": "service"})
MARKETING = OUT.model_copy(update={"purpose": "marketing"})


@pytest.mark.parametrize(
    ("entries", "waiting_since"),
    [
        pytest.param([entry(1, "message", "whatsapp")], 1, id="a question waits"),
        pytest.param(
            [entry(1, "message", "whatsapp"), entry(5, "message", "sms", payload=OUT)],
            None,
            id="a reply on another channel answers it",
        ),
        pytest.param(
            [
                entry(1, "message", "whatsapp"),
                entry(5, "message", "whatsapp", payload=OUT),
                entry(9, "message", "email"),
                entry(12, "message", "whatsapp"),
            ],
            9,
            id="waits from the first message after the reply",
        ),
        pytest.param(
            [entry(1, "call", "voice", payload=_call(Direction.INBOUND, CallStatus.NO_ANSWER))],
            1,
            id="a call nobody picked up waits",
        ),
        pytest.param(
            [
                entry(1, "message", "web"),
                entry(3, "call", "voice", payload=_call(Direction.INBOUND, CallStatus.COMPLETED)),
            ],
            None,
            id="a call an agent took answers the chat",
        ),
        pytest.param(
            [
                entry(1, "message", "web"),
                entry(
                    3,
                    "call",
                    "voice",
                    payload=_call(Direction.INBOUND, CallStatus.COMPLETED, agent=None),
                ),
            ],
            1,
            id="a call the provider completed naming no agent changes nothing",
        ),
        pytest.param(
            [entry(1, "message", "web"), entry(60 * 30, "message", "email", payload=OUT)],
            1,
            id="a campaign after the window answers nobody",
        ),
        pytest.param(
            [entry(1, "message", "web"), entry(5, "message", "email", payload=MARKETING)],
            1,
            id="a marketing message within the window answers nobody",
        ),
        pytest.param(
            [
                entry(1, "message", "web"),
                entry(5, "message", "email", payload=MARKETING),
                entry(7, "message", "web", payload=SERVICE),
            ],
            None,
            id="a service message after it answers",
        ),
        pytest.param(
            [
                entry(1, "message", "web", conversation=Conversation(id="chat-1")),
                entry(
                    60 * 30,
                    "message",
                    "email",
                    payload=OUT,
                    conversation=Conversation(id="chat-1", continues="chat-1"),
                ),
            ],
            None,
            id="the desk's reply after the window, linked to the conversation, answers",
        ),
        pytest.param(
            [entry(1, "message", "web"), entry(60 * 30, "message", "web")],
            60 * 30,
            id="writing after the window, a customer starts a conversation and waits from it",
        ),
        pytest.param(
            [
                entry(1, "call", "voice", payload=_call(Direction.INBOUND, CallStatus.COMPLETED)),
                entry(
                    2,
                    "call",
                    "voice",
                    minutes=1,
                    payload=_call(Direction.INBOUND, CallStatus.COMPLETED, agent=None),
                ),
            ],
            None,
            id="the provider's completed beside the contact centre's report, in either order",
        ),
        pytest.param(
            [
                entry(1, "message", "web"),
                entry(3, "call", "voice", payload=_call(Direction.OUTBOUND, CallStatus.BUSY)),
            ],
            1,
            id="a call back nobody took leaves the customer waiting",
        ),
        pytest.param(
            [
                entry(1, "message", "web"),
                entry(3, "call", "voice", payload=_call(Direction.OUTBOUND, CallStatus.COMPLETED)),
            ],
            None,
            id="a call back that got through answers",
        ),
        pytest.param(
            [entry(1, "message"), entry(2, "message"), done(3, minutes=2)],
            None,
            id="an agent's done mark through the latest message: nobody waits",
        ),
        pytest.param(
            [entry(1, "message"), done(2, minutes=1), entry(5, "message"), entry(7, "message")],
            5,
            id="after a done mark, the customer waits from their next message",
        ),
        pytest.param(
            [entry(1, "message"), entry(5, "message"), done(6, minutes=1)],
            5,
            id="a done mark of an earlier message leaves the later one waiting",
        ),
        pytest.param(
            [entry(1, "message"), entry(2, "message", minutes=3), done(3, minutes=3, after=ZERO)],
            None,
            id="a message at the mark's very instant was seen to",
        ),
        pytest.param(
            [entry(1, "message"), done(2, minutes=1), entry(3, "message", minutes=60 * 30)],
            60 * 30,
            id="a done mark of the last conversation does not see to the next",
        ),
        pytest.param(
            [
                entry(1, "message", "email"),
                entry(2, "message", minutes=10),
                done(3, minutes=10, waiting=10),
            ],
            1,
            id="a mark of the chat the agent saw leaves an older question merged in waiting",
        ),
        pytest.param(
            [entry(1, "message", minutes=10), done(3, minutes=10, waiting=10)],
            None,
            id="a mark of what the agent saw waiting",
        ),
    ],
)
def test_a_conversation_knows_since_when_the_customer_waits_for_an_answer(
    entries: list[JourneyEntry], waiting_since: int | None
) -> None:
    view = derive_view(entries, WINDOW)

    assert view.conversation is not None
    expected = None if waiting_since is None else T0 + timedelta(minutes=waiting_since)
    assert view.conversation.awaiting_reply_since == expected
    inbound = [e.occurred_at for e in entries if e.payload.get("direction") == "inbound"]
    assert view.conversation.last_inbound_at == max(inbound)
    assert derive_view(entries[::-1], WINDOW) == view, "a late entry is folded in its place"
    if len({e.occurred_at for e in entries}) == 1:  # one instant: its entries fold by id
        swapped = [
            e.model_copy(update={"id": other.id})
            for e, other in zip(entries, entries[::-1], strict=True)
        ]
        other_order = derive_view(swapped, WINDOW).conversation
        assert other_order is not None
        assert other_order.awaiting_reply_since == expected


def test_a_conversation_waiting_for_an_answer_is_published_saying_since_when() -> None:
    """The view is a published record: `awaiting_reply_since` is there only while someone
    waits, as the conversation's other optional fields."""
    waiting = derive_view([entry(1, "message", "whatsapp")], WINDOW)
    answered = derive_view(
        [entry(1, "message", "whatsapp"), entry(2, "message", "whatsapp", payload=OUT)], WINDOW
    )

    assert waiting.model_dump(mode="json")["conversation"]["awaiting_reply_since"] == (
        "2026-03-01T09:01:00Z"
    )
    assert "awaiting_reply_since" not in answered.model_dump(mode="json")["conversation"]


def test_an_explicit_link_continues_a_conversation_even_after_the_window() -> None:
    call = Conversation(id="call-1")
    chat = Conversation(id="chat-9", continues="call-1")

    view = derive_view(
        [
            entry(1, "call", "voice", conversation=call),
            entry(2, "message", "web", minutes=2 * 24 * 60, conversation=chat),
        ],
        WINDOW,
    )

    assert view.conversation is not None
    assert view.conversation.started_channel == "voice"
    assert view.conversation.conversation_ids == ["call-1", "chat-9"]


def _order_events(orders: int, updates: int, seed: int) -> list[JourneyEntry]:
    """`orders` orders, then `updates` status changes of random earlier ones (old ones too)."""
    rng = random.Random(seed)
    base = sample_payloads()["order"]
    statuses = [OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.REFUNDED]
    events = [
        entry(n, "order", payload=base.model_copy(update={"order_id": f"ORD-{n}"}))
        for n in range(orders)
    ]
    for n in range(orders, orders + updates):
        changed = base.model_copy(
            update={"order_id": f"ORD-{rng.randrange(orders)}", "status": rng.choice(statuses)}
        )
        events.append(entry(n, "order", payload=changed))
    return events


def _totals_of_every_order(entries: list[JourneyEntry]) -> tuple[int, dict[str, str]]:
    """Order count and lifetime value from each order's last state, as if nothing were let go."""
    last = {e.payload["order_id"]: e.payload for e in entries}
    totals: dict[str, Decimal] = {}
    for order in last.values():
        if order["status"] not in ("cancelled", "refunded"):
            currency = order["total"]["currency"]
            totals[currency] = totals.get(currency, Decimal(0)) + Decimal(order["total"]["amount"])
    return len(last), {currency: str(total) for currency, total in totals.items()}


def test_a_view_keeps_the_latest_orders_and_counts_every_one() -> None:
    entries = _order_events(orders=130, updates=60, seed=3)

    view = derive_view(entries, WINDOW)

    count, value = _totals_of_every_order(entries)
    assert len(view.orders) == RECENT_ORDERS < count
    assert view.order_count == count == 130
    assert view.last_order_placed == max(e.occurred_at for e in entries[:130])
    assert view.lifetime_value == value
    latest = list(dict.fromkeys(e.payload["order_id"] for e in reversed(entries)))
    assert [o.order_id for o in view.orders] == latest[:RECENT_ORDERS][::-1]


def test_an_update_of_a_forgotten_order_is_told_apart_from_a_new_one() -> None:
    """Folding event by event, an order the view let go is recalled from the journey first (as
    the pipeline does); a new order never is. The view ends as a full derivation's."""
    entries = _order_events(orders=80, updates=80, seed=11)
    view, recalls = fold_recalling(entries)
    assert recalls > 0, "the sequence updates orders the view had let go"
    assert view.model_dump() == derive_view(entries, WINDOW).model_dump()
    assert (view.order_count, view.lifetime_value) == _totals_of_every_order(entries)


def test_a_new_order_after_many_is_not_unknown_while_nothing_was_let_go() -> None:
    view = derive_view(_order_events(orders=RECENT_ORDERS, updates=0, seed=1), WINDOW)
    new = entry(
        999, "order", payload=sample_payloads()["order"].model_copy(update={"order_id": "N"})
    )

    assert view.unknown_orders([new]) == set()
    view.apply(new, WINDOW)
    view.finish()
    assert view.unknown_orders([new]) == set()
    assert view.unknown_orders([entry(1000, "message")]) == set()
    other = new.model_copy(update={"payload": {**new.payload, "order_id": "M"}})
    assert view.unknown_orders([other]) == {"M"}, "one was let go: a new id may be an old one"


def test_an_entry_keeps_the_instant_in_utc_whatever_offset_the_channel_kept() -> None:
    """An email's Date header keeps its sender's offset: the journey record must say the same
    instant as the API (MongoDB answers in UTC), or readers ordering by text put it elsewhere."""
    madrid = timezone(timedelta(hours=2))
    interaction = new_interaction(
        channel="email",
        instance="t",
        provider_event_id="mail-1",
        identifiers=Identifiers(email="a@example.com"),
        payload=sample_payloads()["message"],
        occurred_at=datetime(2026, 3, 1, 10, 0, tzinfo=madrid),
    )

    stored = new_entry(interaction, "C", T0, late=False)

    assert stored.occurred_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert stored.model_dump(mode="json")["occurred_at"].startswith("2026-03-01T08:00:00")
    assert stored.occurred_at.utcoffset() == timedelta(0)


def _identify(n: int, traits: dict[str, JsonScalar], trust: str = "verified") -> Interaction:
    return new_interaction(
        channel="web",
        instance="t",
        provider_event_id=f"id{n}",
        identifiers=Identifiers(email="a@example.com"),
        payload=Identified(traits=traits),
        occurred_at=T0 + timedelta(minutes=n),
        identity_trust=trust,  # type: ignore[arg-type]
    )


def test_an_unverified_event_does_not_overwrite_what_a_verified_source_told() -> None:
    """The shop's server told Ana's name; anyone with the public web key could otherwise rename
    her on the desk an agent greets her from. New traits, and those a browser told before, it
    still sets; the server's word overwrites either."""

    def told(n: int, traits: dict[str, JsonScalar], trust: str = "verified") -> JourneyEntry:
        return new_entry(_identify(n, traits, trust), "C", T0, late=False)

    view = derive_view(
        [
            told(1, {"name": "Ana García"}),
            told(2, {"plan": "free"}, "unverified"),
            told(3, {"name": "Mallory", "plan": "pro", "city": "Bilbao"}, "unverified"),
        ],
        WINDOW,
    )
    corrected = derive_view(
        [
            told(1, {"name": "Ana García"}),
            told(4, {"name": "Ana G."}),
            told(5, {"name": "X"}, "unverified"),
        ],
        WINDOW,
    )

    assert {k: t.value for k, t in view.traits.items()} == {
        "name": "Ana García", "plan": "pro", "city": "Bilbao",
    }  # fmt: skip
    assert (view.traits["name"].verified, view.traits["plan"].verified) == (True, False)
    assert corrected.traits["name"].value == "Ana G."


def test_a_browser_cannot_add_a_name_beside_the_verified_first_and_last_names() -> None:
    """The desk shows `name` before `first_name`: a browser adding one would rename Ana; nor
    may a till's typed customer (claimed) overwrite a verified trait."""
    view = derive_view(
        [
            new_entry(_identify(1, {"first_name": "Ana", "plan": "pro"}), "C", T0, late=False),
            new_entry(_identify(2, {"name": "Mallory"}, "unverified"), "C", T0, late=False),
            new_entry(_identify(3, {"plan": "free"}, "claimed"), "C", T0, late=False),
        ],
        WINDOW,
    )

    assert "name" not in view.traits
    assert view.traits["plan"].value == "pro"


def test_an_unverified_event_does_not_set_a_trait_only_verified_sources_may_set() -> None:
    """Anyone can send an identify call with the public web key: it may not give a customer the
    gold tier that prices follow. The rest of its traits are kept, and the entry says what was
    left out."""
    only_verified = frozenset({"loyalty_tier"})
    forged = new_entry(
        _identify(1, {"loyalty_tier": "gold", "plan": "pro"}, "unverified"),
        "C",
        T0,
        late=False,
        verified_only_traits=only_verified,
    )
    told = new_entry(
        _identify(2, {"loyalty_tier": "silver"}), "C", T0, late=False,
        verified_only_traits=only_verified,
    )  # fmt: skip

    claimed = new_entry(
        _identify(3, {"loyalty_tier": "gold"}, "claimed"), "C", T0, late=False,
        verified_only_traits=only_verified,
    )  # fmt: skip

    assert forged.payload["traits"] == {"plan": "pro"}
    assert claimed.payload["traits"] == {}, "a typed card number proves no tier either"
    assert {"field": "payload.traits", "reason": "unverified_source"} in forged.adjustments
    view = derive_view([forged], WINDOW)
    assert "loyalty_tier" not in view.traits
    assert derive_view([forged, told], WINDOW).traits["loyalty_tier"].value == "silver"


def test_the_views_traits_are_bounded_however_many_and_long_the_calls() -> None:
    """A view is one Kafka record: calls with hundreds of new trait names, or long texts, must
    not grow it past what Kafka takes (the customer's later events would all fail)."""
    calls = [
        new_entry(_identify(n, {f"t{n}_{i}": "x" * 5_000 for i in range(150)}), "C", T0, late=False)
        for n in range(3)
    ]

    view = derive_view(calls, WINDOW)

    assert len(view.traits) == MAX_TRAITS
    assert {len(str(trait.value)) for trait in view.traits.values()} == {MAX_TRAIT_TEXT}
    assert "t0_0" in view.traits, "the first names are kept"


def test_an_unverified_flood_of_trait_names_leaves_room_for_what_verified_sources_tell() -> None:
    """One public call with 200 new names must not fill the view for good: unverified events add
    names only up to `UNVERIFIED_TRAITS`, and the loyalty system's tier still lands."""
    flood = new_entry(
        _identify(1, {f"junk_{i}": "x" for i in range(200)}, "unverified"), "C", T0, late=False
    )
    tier = new_entry(_identify(2, {"loyalty_tier": "gold"}), "C", T0, late=False)

    view = derive_view([flood, tier], WINDOW)

    assert len(view.traits) == UNVERIFIED_TRAITS + 1
    assert view.traits["loyalty_tier"].value == "gold"


def test_a_timeline_says_which_campaign_brought_a_visit() -> None:
    spring = Campaign(name="spring", source="newsletter", medium="email")
    landing = PageViewed(path="/shoes", campaign=spring)
    source_alone = PageViewed(path="/", campaign=Campaign(source="instagram"))

    assert summarise(landing, "web") == (
        "Viewed page /shoes, from campaign spring (newsletter / email)"
    )
    assert summarise(source_alone, "web") == "Viewed page /, from a campaign (instagram)"
    assert summarise(PageViewed(path="/"), "web") == "Viewed page /"
    assert summarise(landing, "email") == (
        "Followed a link in an email to /shoes, from campaign spring (newsletter / email)"
    )
    from_an_ad = MessageExchanged(
        direction=Direction.INBOUND,
        text="Is the sale on?",
        provider_message_id="wamid.1",
        campaign=Campaign(name="Spring sale", source="facebook", medium="ad"),
    )
    assert summarise(from_an_ad, "whatsapp") == (
        "Inbound whatsapp message: Is the sale on?, from campaign Spring sale (facebook / ad)"
    )


def test_the_view_keeps_the_campaign_the_customer_last_came_from() -> None:
    spring = Campaign(name="spring", source="newsletter", medium="email")
    ad = Campaign(name="Spring sale", source="facebook", medium="ad")
    from_an_ad = MessageExchanged(
        direction=Direction.INBOUND, text="Hi", provider_message_id="wamid.9", campaign=ad
    )

    landed = derive_view(
        [entry(1, "page_view", payload=PageViewed(path="/", campaign=spring)), entry(2, "cart")],
        WINDOW,
    )
    then_the_ad = derive_view(
        [
            entry(1, "page_view", payload=PageViewed(path="/", campaign=spring)),
            entry(3, "message", "whatsapp", payload=from_an_ad),
            entry(4, "page_view", payload=PageViewed(path="/shoes")),
        ],
        WINDOW,
    )

    assert landed.last_campaign is not None
    assert (landed.last_campaign.name, landed.last_campaign.channel) == ("spring", "web")
    assert then_the_ad.last_campaign is not None
    assert then_the_ad.last_campaign.model_dump() == {
        "name": "Spring sale",
        "source": "facebook",
        "medium": "ad",
        "channel": "whatsapp",
        "at": T0 + timedelta(minutes=3),
    }
    assert "last_campaign" not in derive_view([entry(1, "cart")], WINDOW).model_dump()
    browser = entry(5, "page_view", payload=PageViewed(path="/", campaign=spring))
    told_by_a_browser = browser.model_copy(update={"identity_trust": "unverified"})
    marked = derive_view([told_by_a_browser], WINDOW).last_campaign
    assert marked is not None
    assert marked.unverified, "the desk says a browser told it"
    assert "unverified" not in landed.model_dump(mode="json")["last_campaign"]


def test_a_done_mark_is_no_activity_of_the_customers() -> None:
    """The mark changes whether the customer waits, and nothing else the view shows: no count,
    no channel, no time seen, no recent interaction. The view notes when it was dated."""
    contacts = [entry(1, "message", "whatsapp"), entry(2, "message", "whatsapp")]
    marked = derive_view([*contacts, done(3, minutes=2)], WINDOW)
    unmarked = derive_view(contacts, WINDOW)

    assert marked.conversation is not None
    assert unmarked.conversation is not None
    assert marked.conversation.done_through == T0 + timedelta(minutes=2) + DONE_AFTER
    assert marked.conversation.done_by == "agent-ana"
    assert marked.conversation.awaiting_reply_since is None
    assert unmarked.conversation.awaiting_reply_since == T0 + timedelta(minutes=1)
    assert marked.last_done_mark_at == marked.conversation.done_through
    assert unmarked.last_done_mark_at is None
    blank = {"conversation", "last_done_mark_at"}
    assert marked.model_dump(exclude=blank) == unmarked.model_dump(exclude=blank)


@pytest.mark.parametrize(
    ("after", "done_by"),
    [
        ([], "agent-ana"),
        ([entry(9, "message", minutes=5)], None),
        ([entry(9, "message", minutes=5, payload=OUT)], None),
        ([entry(9, "message", minutes=5, payload=MARKETING)], "agent-ana"),
    ],
    ids=["the mark", "the customer writes again", "a reply", "a promotion"],
)
def test_the_view_says_who_saw_to_the_customer_until_they_write_or_are_answered(
    after: list[JourneyEntry], done_by: str | None
) -> None:
    view = derive_view([entry(1, "message"), done(2, minutes=1), *after], WINDOW)

    assert view.conversation is not None
    assert view.conversation.done_by == done_by


def test_a_conversation_keeps_its_latest_thread_ids_the_one_last_written_on_last() -> None:
    """A line that calls every hour opened a conversation whose ids grew with every call: at
    30,000 calls its snapshot passed 1 MiB, which Kafka refuses. The latest
    `CONVERSATION_IDS_KEPT` are kept, and a thread written on again moves to the end, where the
    desk reads the one its reply continues."""
    calls = [
        entry(n, "call", "voice", minutes=60 * n, conversation=Conversation(id=f"call-{n}"))
        for n in range(CONVERSATION_IDS_KEPT + 30)
    ]
    again = entry(
        len(calls),
        "message",
        "sms",
        minutes=60 * len(calls),
        conversation=Conversation(id=f"call-{len(calls) - 3}"),
    )

    incremental = ProfileView()
    for e in [*calls, again]:
        incremental.apply(e, WINDOW)
    view = derive_view([*calls, again], WINDOW)

    assert view == incremental.finish()
    assert view.conversation is not None
    ids = view.conversation.conversation_ids
    assert len(ids) == CONVERSATION_IDS_KEPT
    assert ids[-1] == f"call-{len(calls) - 3}"
    assert ids[0] == f"call-{len(calls) - CONVERSATION_IDS_KEPT}"
