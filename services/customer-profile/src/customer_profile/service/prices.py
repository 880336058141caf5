"""The consistency watch: what a channel charged, checked against the offer in force.

Every order, store receipt and whole cart (a cart event that carries the whole cart, `items`)
with unit prices is priced again with the offers this service holds for that customer, channel
and time (`hilo.offers.pricing`, the function every quote uses). Per SKU, the unit price charged
(each line's unit price times its quantity, the SKU's lines added up, divided by the SKU's whole
quantity, rounded to the minor unit) is compared with the quote's unit price (the quote's line
total divided by the quantity, rounded). A difference is a mismatch: recorded on the journey
entry (`price_mismatches`: charged and expected, per unit and in total), counted per channel
and source trust, and listed by `GET /v1/mismatches`. A browser's event (`unverified`) is
checked too, since many shops report orders from the page, but anyone with the public key can
send one with any price: it is labelled so, for an alert or a list to leave it out.

Units, not totals, are compared because a till can only charge whole cents a unit: buy 2 get 1
on three 10.00 shoes is 20.00, 6.67 a unit, and a till charging 3 x 6.67 (20.01) charged the
quote's unit price. So a mismatch always shows two different unit prices.

A channel that applies a buy-X-get-Y or bundle promotion in its lines' prices matches; one that
reports list prices and takes the discount off the order total is flagged. SKUs and currencies
the offers do not price are not checked, nor lines of goods sold by weight, volume or length (a
line of 1.25 kg is one unit of its weight, which no quote prices), and a check that cannot be
made never stops an event from being recorded.

What "in force" means here: the price schedule point in force at the event's time, and the
promotions as the offers define them when the event is checked (their current definition, with
their validity windows), with the customer's profile as it was before the event's batch. In
an event older than the customer's loyalty tier or marketing consent as the profile holds them
(a sale uploaded at the end of the day, after the customer became gold at noon), or older than
the profile at all (segments: a cart left, then bought, keeps no time), the SKUs a promotion
prices on that fact, and their bundle partners, are not compared: the profile keeps no earlier
value to price them with. So are they when another event of the customer in the same batch
tells such a fact (`facts_told`): the profile before the batch lacks it. The rest of the event
is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import structlog
from prometheus_client import Counter

from customer_profile.domain.profile import ProfileView
from hilo.contract import (
    CartAction,
    CartChanged,
    ConsentChanged,
    Identified,
    Interaction,
    LineItem,
    OrderPlaced,
    OrderStatus,
)
from hilo.offers.facts import LOYALTY_TIER_TRAIT, MARKETING, facts_from_profile
from hilo.offers.model import (
    MAX_QUOTE_QUANTITY,
    CustomerFacts,
    OffersSnapshot,
    PricedLine,
    PricedLines,
    PromotionKind,
    QuoteLine,
)
from hilo.offers.money import CurrencyError, round_money
from hilo.offers.pricing import price_lines

log = structlog.get_logger(__name__)

MISMATCHES = Counter(
    "hilo_price_mismatches_total",
    "SKUs of a cart, order or receipt charged differently from the offer in force, by channel "
    "and by how far its source is trusted (unverified: anyone with the public web key could "
    "have sent it)",
    ["channel", "identity_trust"],
)

Offers = Callable[[], OffersSnapshot | None]
"""The offers in force now (None until the offers topic has been read)."""


@dataclass(frozen=True)
class Charged:
    """What a basket charged for one SKU, all its lines together."""

    sku: str
    quantity: int
    total: Decimal


class PriceCheck:
    """Finds the mismatches of one interaction (see the module docstring)."""

    def __init__(self, offers: Offers) -> None:
        self._offers = offers

    def mismatches(
        self,
        interaction: Interaction,
        customer_id: str,
        view: ProfileView | None,
        told_alongside: frozenset[str] = frozenset(),
    ) -> list[dict[str, Any]]:
        """The SKUs of `interaction` charged differently from the offer in force ([] when
        nothing can be checked). `told_alongside`: the facts other events of the customer in
        the same batch tell (`facts_told`), which `view`, as it was before the batch, lacks."""
        baskets = _baskets(interaction)
        snapshot = self._offers() if baskets else None
        if snapshot is None or not snapshot.prices:
            return []
        facts = facts_from_profile(_profile_json(customer_id, view), interaction.occurred_at)
        told_since = _facts_told_since(view, interaction) if view is not None else frozenset()
        told_since |= told_alongside
        found: list[dict[str, Any]] = []
        for currency, basket in baskets.items():
            skus = {c.sku for c in basket}
            unsure = _following(snapshot, currency, told_since) & skus
            if unsure:
                log.info(
                    "price_check_skipped",
                    reason="customer_facts_changed_since",
                    event_id=interaction.id,
                    facts=sorted(told_since),
                    skus=sorted(unsure),
                )
            if changed := _changed_since(snapshot, currency, interaction.occurred_at) & skus:
                log.info(
                    "price_check_skipped",
                    reason="promotions_changed_since",
                    event_id=interaction.id,
                    skus=sorted(changed),
                )
                unsure |= changed
            try:
                found += _check(snapshot, interaction, facts, currency, basket, unsure)
            except (CurrencyError, ValueError) as exc:  # a currency the offers cannot price
                log.info("price_check_skipped", currency=currency, error=type(exc).__name__)
        return found


TIER: Final = "tier"
CONSENT: Final = "consent"
SEGMENTS: Final = "segments"


def facts_told(interaction: Interaction) -> frozenset[str]:
    """Which facts promotions follow an event tells: a loyalty tier, a marketing consent, or a
    cart or an order (the segments). A sale in the same batch as one is checked against the
    profile as it was before the batch, which does not hold it (an end-of-day file telling the
    tier at 10:00 and the sale at 10:05): the SKUs priced on it are left unchecked, as for a
    fact told since (`_following`), not flagged for a price the till rightly charged."""
    payload = interaction.payload
    if isinstance(payload, Identified) and LOYALTY_TIER_TRAIT in payload.traits:
        return frozenset({TIER})
    if isinstance(payload, ConsentChanged) and payload.purpose == MARKETING:
        return frozenset({CONSENT})
    if isinstance(payload, CartChanged | OrderPlaced):
        return frozenset({SEGMENTS})
    return frozenset()


def _facts_told_since(view: ProfileView, interaction: Interaction) -> frozenset[str]:
    """Which facts promotions follow may have changed after the event: the loyalty tier, the
    marketing consent (for every channel, or the event's), and, for any event older than the
    profile, the segments (a cart left, then bought or cleared, keeps no time of its own). A
    late event (an end-of-day upload) would be priced with values it did not have then, and
    the view keeps no earlier one."""
    at = interaction.occurred_at
    told: set[str] = set()
    tier = view.traits.get(LOYALTY_TIER_TRAIT)
    if tier is not None and tier.at > at:
        told.add(TIER)
    if any(
        c.purpose == MARKETING and c.channel in (None, interaction.channel) and c.at > at
        for c in view.consent
    ):
        told.add(CONSENT)
    if view.last_seen is not None and view.last_seen > at:
        told.add(SEGMENTS)
    return frozenset(told)


def _following(snapshot: OffersSnapshot, currency: str, told: frozenset[str]) -> set[str]:
    """The SKUs whose price at the event's time is not known: those a promotion prices on a
    condition that reads one of the `told` facts, and with them every SKU of a bundle one of
    them is in (a bundle formed or not changes its partners' prices). They are not compared
    (not flagged for a promotion never due, nor let through for one that was); other SKUs are."""
    if not told:
        return set()
    promotions = [p for p in snapshot.promotions.values() if p.currency == currency]
    unsure = {
        sku
        for promotion in promotions
        if (TIER in told and promotion.conditions.loyalty_tiers)
        or (CONSENT in told and promotion.conditions.marketing_consent)
        or (SEGMENTS in told and promotion.conditions.segments)
        for sku in promotion.skus
    }
    return _with_bundle_partners(snapshot, currency, unsure)


def _changed_since(snapshot: OffersSnapshot, currency: str, at: datetime) -> set[str]:
    """The SKUs of promotions written after `at` (retired, edited, or made with an earlier
    start), and their bundle partners: a sale recorded late was priced with them as they were
    then, which the snapshot no longer holds. Their prices are not compared; prices themselves
    keep their schedule and are."""
    changed = {
        sku
        for changed_at, promotion in snapshot.promotion_changes.values()
        if changed_at > at and promotion.currency == currency
        for sku in promotion.skus
    }
    return _with_bundle_partners(snapshot, currency, changed) if changed else set()


def _with_bundle_partners(snapshot: OffersSnapshot, currency: str, skus: set[str]) -> set[str]:
    """`skus` and every SKU of a bundle one of them is in, transitively: whether a bundle
    formed changes the price of all its SKUs."""
    bundles = [
        set(p.skus)
        for p in snapshot.promotions.values()
        if p.currency == currency and p.kind == PromotionKind.BUNDLE
    ]
    found, grown = set(skus), True
    while grown:
        grown = False
        for bundle in bundles:
            if bundle & found and not bundle <= found:
                found |= bundle
                grown = True
    return found


def count(channel: str, identity_trust: str, mismatches: list[dict[str, Any]]) -> None:
    if mismatches:
        MISMATCHES.labels(channel, identity_trust).inc(len(mismatches))


def _check(
    snapshot: OffersSnapshot,
    interaction: Interaction,
    facts: CustomerFacts,
    currency: str,
    basket: list[Charged],
    unsure: set[str],
) -> list[dict[str, Any]]:
    """The basket priced whole (a bundle needs all its SKUs), compared but for `unsure` SKUs.

    Lines the catalogue does not price (a carrier bag's `BAG 01`, which no quote could name)
    are left out of it, and a line of more units than a quote takes with its bundle partners:
    either used to make the whole basket unchecked."""
    left_out = {
        c.sku
        for c in basket
        if (c.sku, currency) not in snapshot.prices or c.quantity > MAX_QUOTE_QUANTITY
    }
    unsure = unsure | _with_bundle_partners(snapshot, currency, left_out)
    lines = [c for c in basket if c.sku not in left_out]
    if not lines:
        return []
    quote = [QuoteLine(sku=charged.sku, quantity=charged.quantity) for charged in lines]

    def priced_at(at: datetime) -> PricedLines:
        return price_lines(
            snapshot, quote, currency=currency, channel=interaction.channel, facts=facts, at=at
        )

    quote_id = _quote_id(interaction)
    found = _mismatched(basket, priced_at(interaction.occurred_at), unsure)
    if found and quote_id is not None:
        earlier = _mismatched(basket, priced_at(interaction.occurred_at - QUOTED_WITHIN), unsure)
        found = {sku: mismatch for sku, mismatch in found.items() if sku in earlier}
    return [{**mismatch, "quote_id": quote_id} for mismatch in found.values()]


QUOTED_WITHIN = timedelta(minutes=15)
"""How long before a sale its quote may have been made (a checkout takes minutes): a channel
that charged from a quote (`quote_id`) made just before a promotion ended or a price changed
charged what the customer was shown: only what the offers of then do not explain either is a
mismatch."""


def _mismatched(
    basket: list[Charged], priced: PricedLines, unsure: set[str]
) -> dict[str, dict[str, Any]]:
    """Per SKU but the `unsure`, the mismatch between what was charged and `priced`."""
    expected = {line.sku: line for line in priced.lines}
    found = {}
    for charged in basket:
        if charged.sku in unsure:
            continue
        mismatch = _compare(
            charged, expected.get(charged.sku), priced.currency, priced.offers_version
        )
        if mismatch is not None:
            found[charged.sku] = mismatch
    return found


PRICED_AT_THE_SALE = frozenset({OrderStatus.PLACED, OrderStatus.COMPLETED})
"""Order entries that are a sale (an order placed, a till receipt). A later state of an order
(picked up in store, cancelled, refunded) repeats lines charged earlier, on another channel and
day: priced again there, a web-only promotion rightly charged online showed as a store
mismatch at pick-up."""


def _baskets(interaction: Interaction) -> dict[str, list[Charged]]:
    """Per currency, what each SKU was charged in total; a cart only when it is whole."""
    payload = interaction.payload
    if isinstance(payload, OrderPlaced) and payload.status in PRICED_AT_THE_SALE:
        items: list[LineItem] = list(payload.items)
    elif (
        isinstance(payload, CartChanged)
        and payload.items is not None
        and payload.action != CartAction.ITEM_REMOVED
    ):
        items = list(payload.items)
    else:
        return {}
    # A measured line (1.25 kg of cheese) is one unit of its weight: a quote prices whole units.
    items = [item for item in items if item.measure is None]
    if not items or any(item.unit_price is None for item in items):
        return {}  # a basket with an unpriced line cannot be priced as a whole
    totals: dict[str, dict[str, tuple[int, Decimal]]] = {}
    for item in items:
        assert item.unit_price is not None  # noqa: S101 - checked above
        per_sku = totals.setdefault(str(item.unit_price.currency), {})
        quantity, total = per_sku.get(item.sku, (0, Decimal(0)))
        per_sku[item.sku] = (
            quantity + item.quantity,
            total + item.unit_price.amount * item.quantity,
        )
    return {
        currency: [Charged(sku, quantity, total) for sku, (quantity, total) in per_sku.items()]
        for currency, per_sku in totals.items()
    }


def _compare(
    charged: Charged, expected: PricedLine | None, currency: str, version: int
) -> dict[str, Any] | None:
    """The mismatch record when the unit prices differ (see the module docstring)."""
    if expected is None:
        return None
    charged_total = round_money(charged.total, currency)
    charged_unit = _unit_price(charged_total, charged.quantity, currency)
    expected_unit = _unit_price(expected.total, charged.quantity, currency)
    if charged_unit == expected_unit:
        return None
    return {
        "sku": charged.sku,
        "quantity": charged.quantity,
        "currency": currency,
        "charged": str(charged_unit),
        "expected": str(expected_unit),
        "charged_total": str(charged_total),
        "expected_total": str(expected.total),
        "list_price": str(expected.unit_price),
        "promotions": [promotion.id for promotion in expected.promotions],
        "offers_version": version,
    }


def _unit_price(total: Decimal, quantity: int, currency: str) -> Decimal:
    """What one unit costs when `quantity` of them cost `total`, as a till would charge it."""
    return round_money(total / quantity, currency)


def _quote_id(interaction: Interaction) -> str | None:
    """The quote the channel says it charged from, if it passed one."""
    payload = interaction.payload
    return payload.quote_id if isinstance(payload, OrderPlaced | CartChanged) else None


def _profile_json(customer_id: str, view: ProfileView | None) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "view": view.model_dump(mode="json") if view is not None else {},
    }
