"""What a customer qualifies for now, with the numbers a channel would quote: for the agent
context, the agent desk and the offers service alike.

Each qualifying promotion is shown with an example basket priced by `price_lines` with that
promotion alone (one unit of each of its SKUs; a buy-X-get-Y's X + Y units of its first SKU; a
bundle's one set: with every promotion, "10% off" showed the 20% of another that wins), on the
channel asked, or, when none is, on a channel where the promotion is open to this customer
(`hilo.offers.pricing.open_channel`): a promotion that needs marketing consent is priced where
the customer consented, never on a channel where the example would show no discount.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from hilo.contract import BUILT_IN_CHANNELS
from hilo.offers.model import (
    CustomerFacts,
    OffersSnapshot,
    PricedLines,
    Promotion,
    PromotionKind,
    QuoteLine,
)
from hilo.offers.pricing import open_channels, price_lines, qualifying

EXAMPLE_SKUS = 5
"""At most this many of a promotion's SKUs are priced as its example."""


class ExampleLine(BaseModel):
    sku: str
    quantity: int
    list_total: Decimal
    total: Decimal


class OfferShown(BaseModel):
    """A promotion the customer gets now, and what it does to an example basket."""

    promotion_id: str
    name: str
    kind: str
    channels: list[str] | None = Field(description="The channels it names (None: it names none).")
    open_on: list[str] = Field(
        description="Where this customer gets it: a marketing-consent condition closes it on "
        "the channels they did not consent on, even for a promotion naming none."
    )
    every_channel: bool = Field(description="Open to this customer on every built-in channel.")
    valid_until: datetime
    currency: str
    quoted_on: str
    offers_version: int
    example: list[ExampleLine]
    example_list_total: Decimal
    example_total: Decimal


def offers_for(
    snapshot: OffersSnapshot, facts: CustomerFacts, *, channel: str | None, at: datetime
) -> list[OfferShown]:
    """The promotions `facts` qualify for at `at` (on `channel`, or on any), each priced."""
    shown = []
    for promotion in qualifying(snapshot, facts=facts, channel=channel, at=at):
        open_on = open_channels(promotion, facts)
        on = channel or next(iter(open_on), BUILT_IN_CHANNELS[0])
        priced = example_of(promotion, snapshot, channel=on, facts=facts, at=at)
        shown.append(
            OfferShown(
                promotion_id=promotion.id,
                name=promotion.name,
                kind=promotion.kind.value,
                channels=promotion.channels,
                open_on=open_on,
                every_channel=promotion.channels is None and set(BUILT_IN_CHANNELS) <= set(open_on),
                valid_until=promotion.valid_until,
                currency=promotion.currency,
                quoted_on=on,
                offers_version=priced.offers_version,
                example=[
                    ExampleLine(
                        sku=line.sku,
                        quantity=line.quantity,
                        list_total=line.list_total,
                        total=line.total,
                    )
                    for line in priced.lines
                ],
                example_list_total=priced.subtotal,
                example_total=priced.total,
            )
        )
    return shown


def example_of(
    promotion: Promotion,
    snapshot: OffersSnapshot,
    *,
    channel: str,
    facts: CustomerFacts,
    at: datetime,
) -> PricedLines:
    """The promotion's example basket (`example_lines`) priced with that promotion alone, as
    every channel and the desk show it: with every promotion, another that wins the basket
    would show its discount under this one's name."""
    return price_lines(
        replace(snapshot, promotions={promotion.id: promotion}),
        example_lines(promotion),
        currency=promotion.currency,
        channel=channel,
        facts=facts,
        at=at,
    )


def example_lines(promotion: Promotion) -> list[QuoteLine]:
    """The smallest basket the promotion shows on: one of each SKU (at most `EXAMPLE_SKUS`; a
    bundle's whole set), or a whole buy-X-get-Y of its first SKU."""
    if promotion.kind == PromotionKind.BUY_X_GET_Y and promotion.buy and promotion.get:
        return [QuoteLine(sku=promotion.skus[0], quantity=promotion.buy + promotion.get)]
    skus = (
        promotion.skus if promotion.kind == PromotionKind.BUNDLE else promotion.skus[:EXAMPLE_SKUS]
    )
    return [QuoteLine(sku=sku, quantity=1) for sku in dict.fromkeys(skus)]
