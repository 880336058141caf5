"""Deriving the profile from the journey (no infrastructure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic_extra_types.currency_code import ISO4217

from customer_profile.domain.journey import JourneyEntry, new_entry
from customer_profile.domain.profile import ProfileView, derive_view
from hilo.contract import (
    CartAction,
    CartChanged,
    ConsentChanged,
    Conversation,
    Identifiers,
    Interaction,
    LineItem,
    Money,
    OrderStatus,
    new_interaction,
)
from hilo.testkit.samples import sample_payloads

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)
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


def test_an_order_in_store_finishes_the_online_cart_with_the_same_products() -> None:
    view = derive_view([entry(1, "cart"), entry(2, "order", "store")], WINDOW)

    assert view.cart is None
    assert view.orders[0].order_id == "ORD-1001"


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
