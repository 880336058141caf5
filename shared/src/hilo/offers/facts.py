"""What promotion conditions read about a customer, derived from their profile.

The offers service (quotes), the customer-profile service (checking what was charged) and the
agent desk all derive the facts here, from the profile as the customer-profile API answers it
(`GET /v1/customers/{id}`), so one customer qualifies for the same promotions everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from hilo.offers.model import CART_ABANDONED_7D, CustomerFacts

LOYALTY_TIER_TRAIT = "loyalty_tier"
MARKETING = "marketing"
ABANDONED_WITHIN = timedelta(days=7)
ABANDONED_AFTER = timedelta(hours=1)
"""How long a cart sits unchanged before it counts as left: a shopper still filling one, or
paying for it, has not abandoned it (a win-back promotion quoted to every live cart)."""


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)


class _Trait(_Read):
    value: str | int | float | bool | None = None


class _Consent(_Read):
    purpose: str
    channel: str | None = None
    granted: bool
    at: AwareDatetime


class _Cart(_Read):
    updated_at: AwareDatetime
    items: list[Any] = []


class _Order(_Read):
    first_seen: AwareDatetime


class _View(_Read):
    traits: dict[str, _Trait] = {}
    consent: list[_Consent] = []
    cart: _Cart | None = None
    orders: list[_Order] = []
    last_order_placed: AwareDatetime | None = None


class _Profile(_Read):
    customer_id: str
    view: _View = _View()


def facts_from_profile(profile: Mapping[str, Any], at: datetime) -> CustomerFacts:
    """The facts of the customer a profile API answer describes, as of `at`.

    Raises `pydantic.ValidationError` when the answer is not a profile (no customer id, dates
    without a zone): pricing must not guess who the customer is.
    """
    read = _Profile.model_validate(profile)
    return CustomerFacts(
        customer_id=read.customer_id,
        loyalty_tier=_loyalty_tier(read.view),
        marketing_consent_channels=_marketing_channels(read.view),
        marketing_withdrawn_channels=_marketing_withdrawn(read.view),
        segments=_segments(read.view, at),
    )


def _loyalty_tier(view: _View) -> str | None:
    """The `loyalty_tier` trait as text (a tier given as a number counts; a yes/no does not)."""
    trait = view.traits.get(LOYALTY_TIER_TRAIT)
    if trait is None or isinstance(trait.value, bool) or trait.value is None:
        return None
    if isinstance(trait.value, float):
        return None
    return str(trait.value)


def _latest_marketing(view: _View) -> dict[str | None, _Consent]:
    """The latest marketing consent per channel (None: every channel)."""
    latest: dict[str | None, _Consent] = {}
    for consent in view.consent:
        if consent.purpose != MARKETING:
            continue
        seen = latest.get(consent.channel)
        if seen is None or consent.at >= seen.at:
            latest[consent.channel] = consent
    return latest


def _marketing_channels(view: _View) -> frozenset[str | None]:
    """Channels whose marketing consent is granted (None: every channel). A channel's own
    answer counts when it is the latest: a grant for one channel before a refusal for every
    channel does not survive it."""
    latest = _latest_marketing(view)
    everywhere = latest.get(None)
    return frozenset(
        channel
        for channel, consent in latest.items()
        if consent.granted
        and (channel is None or everywhere is None or consent.at >= everywhere.at)
    )


def _marketing_withdrawn(view: _View) -> frozenset[str]:
    """Channels refused after (or without) a grant for every channel: that grant does not
    reopen them."""
    latest = _latest_marketing(view)
    everywhere = latest.get(None)
    return frozenset(
        channel
        for channel, consent in latest.items()
        if channel is not None
        and not consent.granted
        and (everywhere is None or consent.at >= everywhere.at)
    )


def _segments(view: _View, at: datetime) -> frozenset[str]:
    segments: set[str] = set()
    if _cart_abandoned(view, at):
        segments.add(CART_ABANDONED_7D)
    return frozenset(segments)


def _cart_abandoned(view: _View, at: datetime) -> bool:
    """A cart with items last changed between 7 days and an hour (`ABANDONED_AFTER`) before
    `at`, and no order seen from the cart's change until `at` (exclusive: the order being
    priced at `at` does not count)."""
    cart = view.cart
    if cart is None or not cart.items:
        return False
    if not at - ABANDONED_WITHIN <= cart.updated_at <= at - ABANDONED_AFTER:
        return False
    # The view keeps only its latest orders, so `last_order_placed` answers for the others;
    # views stored before that field existed have none and every order in the list.
    placed = view.last_order_placed
    return not (
        any(cart.updated_at <= order.first_seen < at for order in view.orders)
        or (placed is not None and cart.updated_at <= placed < at)
    )
