"""Customer facts from a profile as the customer-profile API answers it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_extra_types.currency_code import ISO4217

from hilo.offers.facts import facts_from_profile
from hilo.offers.model import (
    CART_ABANDONED_7D,
    Conditions,
    OffersSnapshot,
    Promotion,
    PromotionKind,
)
from hilo.offers.pricing import qualifying

AT = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def profile(**view: Any) -> dict[str, Any]:
    return {"customer_id": "cus-1", "requested_id": "cus-1", "version": 3, "view": view}


def consent(
    channel: str | None, granted: bool, days_ago: float, purpose: str = "marketing"
) -> dict[str, Any]:
    return {
        "purpose": purpose,
        "channel": channel,
        "granted": granted,
        "at": iso(AT - timedelta(days=days_ago)),
        "via_channel": "web",
    }


def cart(days_ago: float, items: int = 1) -> dict[str, Any]:
    return {
        "cart_id": "c1",
        "channel": "web",
        "updated_at": iso(AT - timedelta(days=days_ago)),
        "items": [{"sku": "SKU-1", "quantity": 1}] * items,
    }


def order(days_ago: float) -> dict[str, Any]:
    return {"order_id": "o1", "first_seen": iso(AT - timedelta(days=days_ago))}


def placed(days_ago: float) -> str:
    return iso(AT - timedelta(days=days_ago))


def test_an_empty_profile_has_no_facts_but_its_id() -> None:
    facts = facts_from_profile(profile(), AT)

    assert facts.customer_id == "cus-1"
    assert facts.loyalty_tier is None
    assert facts.marketing_consent_channels == frozenset()
    assert facts.segments == frozenset()


@pytest.mark.parametrize(
    ("value", "tier"), [("gold", "gold"), (2, "2"), (True, None), (None, None), (1.5, None)]
)
def test_the_loyalty_tier_is_the_trait_as_text(value: object, tier: str | None) -> None:
    traits = {"loyalty_tier": {"value": value, "channel": "web", "at": iso(AT)}}

    assert facts_from_profile(profile(traits=traits), AT).loyalty_tier == tier


def test_marketing_consent_is_the_latest_granted_state_per_channel() -> None:
    view = profile(
        consent=[
            consent("sms", True, 5),
            consent("sms", False, 1),
            consent("email", False, 3),
            consent("email", True, 2),
            consent(None, True, 4),
            consent("whatsapp", True, 1, purpose="service"),
        ]
    )

    facts = facts_from_profile(view, AT)
    assert facts.marketing_consent_channels == {"email", None}
    assert facts.marketing_withdrawn_channels == {"sms"}  # refused after the grant for all


def test_a_refusal_for_one_channel_after_a_grant_for_all_keeps_that_channel_closed() -> None:
    promotion = Promotion(
        id="news",
        name="Newsletter price",
        kind=PromotionKind.PERCENT_OFF,
        skus=["A"],
        currency=ISO4217("EUR"),
        percent=Decimal(10),
        valid_from=AT - timedelta(days=1),
        valid_until=AT + timedelta(days=1),
        conditions=Conditions(marketing_consent=True),
    )
    snapshot = OffersSnapshot(version=1, prices={}, promotions={"news": promotion})
    facts = facts_from_profile(
        profile(consent=[consent(None, True, 5), consent("sms", False, 1)]), AT
    )

    assert qualifying(snapshot, facts=facts, channel="sms", at=AT) == []
    assert qualifying(snapshot, facts=facts, channel="web", at=AT) == [promotion]


@pytest.mark.parametrize(
    ("view", "abandoned"),
    [
        ({"cart": cart(2)}, True),
        ({"cart": cart(2, items=0)}, False),
        ({"cart": cart(8)}, False),
        ({"cart": cart(-1)}, False),
        ({"cart": cart(0.5 / 24)}, False),
        ({"cart": cart(1.5 / 24)}, True),
        ({"cart": cart(2), "orders": [order(1)]}, False),
        ({"cart": cart(2), "orders": [order(3)]}, True),
        ({"cart": cart(2), "orders": [order(0)]}, True),
        ({"cart": cart(2), "orders": [order(3)], "last_order_placed": placed(1)}, False),
        ({"cart": cart(2), "orders": [], "last_order_placed": placed(3)}, True),
    ],
    ids=[
        "recent",
        "empty",
        "too-old",
        "after-the-quote",
        "still-being-filled",
        "left-over-an-hour",
        "ordered-since",
        "ordered-before",
        "ordered-at-the-quote-time",
        "ordered-since-but-no-longer-among-the-kept-orders",
        "last-ordered-before",
    ],
)
def test_a_cart_left_without_an_order_in_the_last_7_days(
    view: dict[str, Any], abandoned: bool
) -> None:
    segments = facts_from_profile(profile(**view), AT).segments

    assert (CART_ABANDONED_7D in segments) is abandoned


def test_an_answer_that_is_not_a_profile_is_refused() -> None:
    with pytest.raises(ValidationError):
        facts_from_profile({"view": {}}, AT)
    with pytest.raises(ValidationError):
        facts_from_profile(profile(cart={"updated_at": "2026-11-01T00:00:00", "items": [1]}), AT)
