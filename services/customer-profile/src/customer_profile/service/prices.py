"""The consistency watch: what a channel charged, checked against the offer in force.

Every cart, order and store receipt that carries unit prices is priced again with the offers in
force for that customer, channel and time (`hilo.offers.pricing`, the function every quote
uses). A line whose charged unit price differs from the quote's effective unit price (the line's
total after promotions, divided by its quantity, rounded to the currency's minor unit) is a
mismatch: recorded on the journey entry (`price_mismatches`, expected vs charged), counted per
channel, and listed by `GET /v1/mismatches`.

A channel that applies a buy-X-get-Y or bundle promotion as the lines' effective unit prices
matches; one that reports list prices and takes the discount off the order total is flagged.
SKUs the offers do not price are not checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

from customer_profile.domain.profile import ProfileView
from hilo.contract import CartChanged, Interaction, LineItem, OrderPlaced
from hilo.offers.facts import facts_from_profile
from hilo.offers.model import OffersSnapshot, PricedLine, QuoteLine
from hilo.offers.money import round_money
from hilo.offers.pricing import price_lines

MISMATCHES = Counter(
    "hilo_price_mismatches_total",
    "Lines charged differently from the offer in force, by channel",
    ["channel"],
)

Offers = Callable[[], OffersSnapshot | None]
"""The offers in force now (None until the offers topic has been read)."""


class PriceCheck:
    """Finds the mismatches of one interaction (see the module docstring)."""

    def __init__(self, offers: Offers) -> None:
        self._offers = offers

    def mismatches(
        self, interaction: Interaction, customer_id: str, view: ProfileView | None
    ) -> list[dict[str, Any]]:
        """The lines of `interaction` charged differently from the offer in force."""
        lines = _charged_lines(interaction)
        snapshot = self._offers() if lines else None
        if snapshot is None or not snapshot.prices:
            return []
        at = interaction.occurred_at
        facts = facts_from_profile(_profile_json(customer_id, view), at)
        found: list[dict[str, Any]] = []
        for currency, items in _by_currency(lines).items():
            priced = price_lines(
                snapshot,
                [QuoteLine(sku=item.sku, quantity=item.quantity) for item in items],
                currency=currency,
                channel=interaction.channel,
                facts=facts,
                at=at,
            )
            expected = {line.sku: line for line in priced.lines}
            for item in items:
                mismatch = _compare(item, expected.get(item.sku), currency, priced.offers_version)
                if mismatch is not None:
                    found.append({**mismatch, "quote_id": _quote_id(interaction)})
        return found


def count(channel: str, mismatches: list[dict[str, Any]]) -> None:
    if mismatches:
        MISMATCHES.labels(channel).inc(len(mismatches))


def _charged_lines(interaction: Interaction) -> list[LineItem]:
    payload = interaction.payload
    if isinstance(payload, OrderPlaced):
        items = payload.items
    elif isinstance(payload, CartChanged):
        items = payload.items if payload.items is not None else payload.changed_items
    else:
        return []
    return [item for item in items if item.unit_price is not None]


def _quote_id(interaction: Interaction) -> str | None:
    """The quote the channel says it charged from, if it passed one."""
    payload = interaction.payload
    return payload.quote_id if isinstance(payload, OrderPlaced | CartChanged) else None


def _by_currency(lines: list[LineItem]) -> dict[str, list[LineItem]]:
    grouped: dict[str, list[LineItem]] = defaultdict(list)
    merged: dict[tuple[str, str], LineItem] = {}
    for item in lines:
        assert item.unit_price is not None  # noqa: S101 - filtered by _charged_lines
        key = (str(item.unit_price.currency), item.sku)
        if key in merged:  # the same SKU twice: one line, as the quote merges them
            continue
        merged[key] = item
        grouped[key[0]].append(item)
    return grouped


def _compare(
    item: LineItem, expected: PricedLine | None, currency: str, version: int
) -> dict[str, Any] | None:
    if expected is None or item.unit_price is None:
        return None
    charged = round_money(item.unit_price.amount, currency)
    effective = round_money(expected.total / Decimal(expected.quantity), currency)
    if charged == effective:
        return None
    return {
        "sku": item.sku,
        "quantity": item.quantity,
        "currency": currency,
        "charged": str(charged),
        "expected": str(effective),
        "list_price": str(expected.unit_price),
        "promotions": [promotion.id for promotion in expected.promotions],
        "offers_version": version,
    }


def _profile_json(customer_id: str, view: ProfileView | None) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "view": view.model_dump(mode="json") if view is not None else {},
    }
