"""The offers a customer is shown (agent context, agent desk): each example basket is priced on
a channel where the promotion is open to that customer, so it shows what the customer gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hilo.offers.model import Conditions, CustomerFacts, OffersSnapshot
from hilo.offers.showcase import OfferShown, offers_for
from hilo.testkit.offers import percent_off, price_schedule

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
CONSENT = Conditions(marketing_consent=True)


def offers(**fields: Any) -> OffersSnapshot:
    """10.00 shoes and one 10% off them (`fields`: its channels, conditions)."""
    promotion = percent_off(
        "ten",
        "10% off",
        "SKU-1",
        10,
        valid_from=AT - timedelta(days=1),
        valid_until=AT + timedelta(days=1),
        **fields,
    )
    return OffersSnapshot(
        version=3,
        prices={("SKU-1", "EUR"): price_schedule("SKU-1", ("10.00", AT - timedelta(days=9), 1))},
        promotions={promotion.id: promotion},
    )


def shown_on_any_channel(snapshot: OffersSnapshot, facts: CustomerFacts) -> OfferShown:
    (shown,) = offers_for(snapshot, facts, channel=None, at=AT)
    return shown


def consented(*channels: str | None, withdrawn: frozenset[str] = frozenset()) -> CustomerFacts:
    return CustomerFacts(
        customer_id="cus-1",
        marketing_consent_channels=frozenset(channels),
        marketing_withdrawn_channels=withdrawn,
    )


@pytest.mark.parametrize(
    ("fields", "facts", "channel"),
    [
        pytest.param(
            {"channels": ["store", "web"], "conditions": CONSENT},
            consented("web"),
            "web",
            id="named-channels-consent-on-the-second",
        ),
        pytest.param(
            {"conditions": CONSENT}, consented("email"), "email", id="every-channel-consent-on-one"
        ),
        pytest.param(
            {"conditions": CONSENT},
            consented(None, withdrawn=frozenset({"web"})),
            "app",
            id="consent-everywhere-but-web",
        ),
        pytest.param({"channels": ["store", "web"]}, consented(), "store", id="first-named"),
        pytest.param({}, consented(), "web", id="every-channel-web-first"),
    ],
)
def test_an_offer_for_any_channel_is_priced_where_the_customer_gets_it(
    fields: dict[str, Any], facts: CustomerFacts, channel: str
) -> None:
    shown = shown_on_any_channel(offers(**fields), facts)

    assert shown.quoted_on == channel
    assert (shown.example_list_total, shown.example_total) == (Decimal("10.00"), Decimal("9.00"))


def test_an_offer_for_one_channel_is_priced_on_it() -> None:
    (shown,) = offers_for(offers(channels=["store", "web"]), consented(), channel="web", at=AT)

    assert (shown.quoted_on, shown.example_total) == ("web", Decimal("9.00"))


@pytest.mark.parametrize(
    ("fields", "facts", "open_on", "everywhere"),
    [
        pytest.param({"conditions": CONSENT}, consented("email"), ["email"], False, id="consent"),
        pytest.param(
            {"channels": ["store", "web"]}, consented(), ["store", "web"], False, id="named"
        ),
        pytest.param({}, consented(), None, True, id="open"),
    ],
)
def test_an_offer_says_where_this_customer_gets_it_not_only_where_it_is_named(
    fields: dict[str, Any], facts: CustomerFacts, open_on: list[str] | None, everywhere: bool
) -> None:
    """A consent-only promotion naming no channel is no promotion "on every channel" for a
    customer who consented on email alone: the desk would say so, and the store would not give
    it."""
    shown = shown_on_any_channel(offers(**fields), facts)

    assert shown.every_channel is everywhere
    if open_on is not None:
        assert shown.open_on == open_on


def test_each_offer_shows_what_it_does_itself_not_what_another_winning_does() -> None:
    """10% and 20% off the same shoes: both examples showed 8.00, the 20% winning on the
    basket, so the agent read "10% off: 8.00"."""
    ten = offers().promotions["ten"]
    twenty = percent_off(
        "twenty",
        "20% off",
        "SKU-1",
        20,
        valid_from=ten.valid_from,
        valid_until=ten.valid_until,
        priority=5,
    )
    both = OffersSnapshot(
        version=4, prices=offers().prices, promotions={ten.id: ten, twenty.id: twenty}
    )

    shown = {
        offer.promotion_id: offer.example_total
        for offer in offers_for(both, CustomerFacts(), channel="web", at=AT)
    }

    assert shown == {"ten": Decimal("9.00"), "twenty": Decimal("8.00")}
