"""The offers contract: list prices and promotions as the `offers` topic carries them, and what a
quote asks and answers.

One owner (`services/offers`) publishes; every service that prices something (a channel, the
customer-profile service checking what was charged, the agent desk) holds the same offers in
memory (`hilo.offers.book`) and prices with the same function (`hilo.offers.pricing`), so the
same customer, lines, channel and time get the same answer everywhere.

Money is `Decimal`, never a float; amounts round to the currency's minor unit (ISO 4217) half up,
per line (`hilo.offers.money`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache
from types import MappingProxyType
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_extra_types.currency_code import ISO4217

Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
Sku = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:/-]+$")]
PromotionId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
Channel = Annotated[str, Field(min_length=1, max_length=50, pattern=CHANNEL_PATTERN)]
"""A channel as a quote names it (`POST /v1/quotes`)."""

CART_ABANDONED_7D = "cart_abandoned_7d"
"""A cart with items, left unchanged for an hour, changed in the 7 days before the quote, and
no order since."""
SEGMENTS = (CART_ABANDONED_7D,)
"""The segments `hilo.offers.facts` derives: a condition on any other could never hold."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Times pricing works with are in [EARLIEST, LATEST): one near the calendar's ends (year 1 or
9999 with an offset) cannot be turned to UTC or have days taken off it, and would fail every
quote or page that shows it."""


def _within_calendar(at: datetime) -> datetime:
    """Refuse a time pricing could not work with (see `LATEST`), as a 422 naming the field."""
    if not EARLIEST <= at < LATEST:
        raise PydanticCustomError(
            "calendar_time",
            "must be from {earliest} to before {latest} (UTC)",
            {"earliest": EARLIEST.date().isoformat(), "latest": LATEST.date().isoformat()},
        )
    return at


CalendarTime = Annotated[AwareDatetime, AfterValidator(_within_calendar)]
"""A quote's time: refused outside [EARLIEST, LATEST) (days are taken off it). Records already
on the topic are read as they are."""


def _in_utc(at: datetime) -> datetime:
    """Refuse a time no UTC clock can show (`9999-12-31T23:59-01:00`) or before `EARLIEST`."""
    try:
        utc = at.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc < EARLIEST:
        raise PydanticCustomError(
            "calendar_time",
            "must be from {earliest} to 9999-12-31 in UTC",
            {"earliest": EARLIEST.date().isoformat()},
        )
    return at


UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A date an admin sets (a promotion's window, a price's start): any a UTC clock can show from
1900 on, so "for ever" as `9999-12-31T00:00:00Z` is taken, and one past it with an offset,
which every page showing it would fail on, is refused."""


class PricePoint(_Model):
    """The list price of a SKU in one currency from `valid_from` on (until a later point)."""

    amount: Amount = Field(description="Per unit, as a decimal string.", examples=["59.90"])
    tax_included: bool = Field(description="Whether `amount` includes sales tax / VAT.")
    valid_from: AwareDatetime
    version: int = Field(ge=1, description="The offers version that set it.")


class PriceSchedule(_Model):
    """A SKU's list prices in one currency over time, oldest first (the record of a price key
    carries its history, so a compacted topic still answers "the price at time t")."""

    sku: Sku
    currency: ISO4217
    points: list[PricePoint] = Field(min_length=1, max_length=500)

    def at(self, moment: datetime) -> PricePoint | None:
        """The point in force at `moment`: the latest `valid_from` not after it (the latest
        version among equals); None before the first."""
        due = [p for p in self.points if p.valid_from <= moment]
        return max(due, key=lambda p: (p.valid_from, p.version), default=None)


@cache
def _zones() -> frozenset[str]:
    """The IANA zone names (read from disk once: about 10 ms per call)."""
    return frozenset(available_timezones())


class PromotionKind(StrEnum):
    PERCENT_OFF = "percent_off"
    """`percent` off the unit price of each listed SKU."""
    AMOUNT_OFF = "amount_off"
    """`amount` off the unit price of each listed SKU (never below zero)."""
    FIXED_PRICE = "fixed_price"
    """Each listed SKU sells at `amount` per unit."""
    BUY_X_GET_Y = "buy_x_get_y"
    """Of every `buy + get` units of a listed SKU, `get` are free (the cheapest first)."""
    BUNDLE = "bundle"
    """One of each listed SKU together for `amount`; as many bundles as complete sets."""


class Stacking(StrEnum):
    EXCLUSIVE = "exclusive"
    """Once applied to a line, no other promotion applies to that line."""
    STACKABLE = "stackable"
    """Applies after the promotions before it, on the price they left."""


class Conditions(_Model):
    """Who qualifies, from the customer's profile; every condition given must hold."""

    loyalty_tiers: list[str] | None = Field(
        default=None,
        max_length=20,
        description="The profile's `loyalty_tier` trait must be one of these.",
    )
    marketing_consent: bool = Field(
        default=False, description="The customer consented to marketing on the channel asked."
    )
    segments: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Segments the customer must be in, e.g. `cart_abandoned_7d` (a cart left "
        "unchanged for an hour or more, without an order, in the last 7 days).",
    )


class Promotion(_Model):
    """A promotion as one version defines it; a later version replaces it whole."""

    id: PromotionId
    name: str = Field(min_length=1, max_length=200)
    kind: PromotionKind
    skus: list[Sku] = Field(min_length=1, max_length=1_000)
    currency: ISO4217 = Field(description="The currency it prices in; other quotes ignore it.")
    percent: Decimal | None = Field(default=None, gt=0, le=100, max_digits=7, decimal_places=4)
    amount: Amount | None = Field(
        default=None, description="Off (amount_off), each (fixed_price) or per bundle (bundle)."
    )
    buy: int | None = Field(default=None, ge=1, le=1_000)
    get: int | None = Field(default=None, ge=1, le=1_000)
    valid_from: AwareDatetime
    valid_until: AwareDatetime = Field(description="Exclusive.")
    timezone: str = Field(
        default="UTC",
        description="IANA zone the merchandiser planned in; the window itself is absolute.",
        examples=["Europe/Madrid"],
    )
    channels: list[str] | None = Field(
        default=None, max_length=50, description="Where it applies; absent: every channel."
    )
    conditions: Conditions = Field(default_factory=Conditions)
    priority: int = Field(default=0, ge=-1_000, le=1_000, description="Higher applies first.")
    stacking: Stacking = Stacking.EXCLUSIVE
    active: bool = Field(default=True, description="False retires it (a version, not a delete).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        if zone not in _zones():
            raise PydanticCustomError("timezone", "not an IANA time zone name")
        return zone

    @model_validator(mode="after")
    def _complete(self) -> Promotion:
        needs = {
            PromotionKind.PERCENT_OFF: ("percent",),
            PromotionKind.AMOUNT_OFF: ("amount",),
            PromotionKind.FIXED_PRICE: ("amount",),
            PromotionKind.BUY_X_GET_Y: ("buy", "get"),
            PromotionKind.BUNDLE: ("amount",),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise PydanticCustomError(
                "incomplete_promotion",
                "a {kind} promotion needs {missing}",
                {"kind": self.kind.value, "missing": ", ".join(missing)},
            )
        if self.kind == PromotionKind.BUNDLE and len(set(self.skus)) < 2:
            raise PydanticCustomError("bundle", "a bundle needs at least two different SKUs")
        if self.valid_until <= self.valid_from:
            raise PydanticCustomError("window", "valid_until must be after valid_from")
        return self


class NewConditions(Conditions):
    """Conditions as an admin sends them: only segments a customer can be in, and tiers only
    when some are named."""

    @field_validator("loyalty_tiers")
    @classmethod
    def _some_tier(cls, tiers: list[str] | None) -> list[str] | None:
        if tiers == []:
            raise PydanticCustomError(
                "no_tier",
                "an empty list names no loyalty tier, so no customer would qualify: name at "
                "least one, or leave `loyalty_tiers` out for every customer",
            )
        return tiers

    @field_validator("segments")
    @classmethod
    def _known_segments(cls, segments: list[str]) -> list[str]:
        if not set(segments) <= set(SEGMENTS):
            raise PydanticCustomError(
                "segment",
                "a segment Hilo does not derive, so no customer would qualify; known: {known}",
                {"known": ", ".join(SEGMENTS)},
            )
        return segments


def no_float(value: Any) -> Any:
    """Refuse a JSON number with a fraction for money: it went through a binary float, so
    `0.1000000000000000055511151231257827` would arrive as `0.1`. Decimal strings are exact."""
    if isinstance(value, float):
        raise PydanticCustomError("decimal_string", 'give it as a decimal string, e.g. "59.90"')
    return value


class NewPromotion(Promotion):
    """A promotion as an admin sends it (`PUT /v1/promotions/{id}`): refused where, as written,
    it could never apply. Records already stored or on the topic are read as `Promotion`, so
    one written before these checks still reads (and still applies nowhere)."""

    channels: list[Channel] | None = Field(
        default=None,
        max_length=50,
        description="Where it applies, as quotes name channels (`web`, `store`); absent: every "
        "channel. An empty list is refused.",
    )
    conditions: NewConditions = Field(default_factory=NewConditions)
    valid_from: UtcTime
    valid_until: UtcTime = Field(description="Exclusive.")

    _exact = field_validator("percent", "amount", mode="before")(no_float)

    @field_validator("skus")
    @classmethod
    def _each_sku_once(cls, skus: list[str]) -> list[str]:
        """A bundle takes one unit of each SKU: `["A", "A", "B"]`, meant as two A and a B for
        its amount, priced A and B for it and the second A at list price."""
        if repeated := sorted(sku for sku, times in Counter(skus).items() if times > 1):
            raise PydanticCustomError(
                "sku_repeated",
                "{repeated} listed more than once: list each SKU once (a bundle takes one unit "
                "of each)",
                {"repeated": ", ".join(repeated[:5])},
            )
        return skus

    @field_validator("channels")
    @classmethod
    def _some_channel(cls, channels: list[str] | None) -> list[str] | None:
        if channels == []:
            raise PydanticCustomError(
                "no_channel",
                "an empty list names no channel: name at least one, or leave `channels` out "
                "for every channel",
            )
        return channels

    def as_promotion(self) -> Promotion:
        """The same promotion as every reader of the topic validates it."""
        return Promotion.model_validate(self.model_dump())


class OfferRecord(_Model):
    """One record of the `offers` topic: the current state of one key, as of `version`.

    A change (one version) may touch several keys: its records carry `part` and `parts`, travel
    in one partition in order, and a reader applies the version only once it has all of them
    (`hilo.offers.book`), so a price change is never half applied.
    """

    key: str = Field(description="`price:<sku>:<currency>` or `promotion:<id>`.")
    version: int = Field(ge=1)
    part: int = Field(ge=1)
    parts: int = Field(ge=1)
    changed_at: AwareDatetime
    changed_by: str = Field(min_length=1, max_length=200)
    price: PriceSchedule | None = None
    promotion: Promotion | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> OfferRecord:
        if (self.price is None) == (self.promotion is None):
            raise PydanticCustomError("offer_record", "a record holds a price or a promotion")
        if self.part > self.parts:
            raise PydanticCustomError("offer_record", "part beyond parts")
        return self


def price_key(sku: str, currency: str) -> str:
    return f"price:{sku}:{currency}"


def promotion_key(promotion_id: str) -> str:
    return f"promotion:{promotion_id}"


class CustomerFacts(_Model):
    """What promotion conditions read about a customer (from the profile; anonymous: empty)."""

    customer_id: str | None = None
    loyalty_tier: str | None = None
    marketing_consent_channels: frozenset[str | None] = Field(
        default=frozenset(),
        description="Channels with marketing consent granted; None stands for every channel.",
    )
    marketing_withdrawn_channels: frozenset[str] = Field(
        default=frozenset(),
        description="Channels where marketing consent was withdrawn after (or without) a grant "
        "for every channel: a grant for every channel does not reopen them.",
    )
    segments: frozenset[str] = frozenset()


MAX_QUOTE_QUANTITY = 100_000


class QuoteLine(_Model):
    sku: Sku
    quantity: int = Field(gt=0, le=MAX_QUOTE_QUANTITY)


class AppliedPromotion(_Model):
    id: str
    name: str
    discount: Decimal = Field(description="What it took off this line, rounded.")
    why: str = Field(description="In words: which rule, on how many units.")


class PricedLine(_Model):
    sku: str
    quantity: int
    unit_price: Decimal = Field(description="List price per unit at the quote's time.")
    list_total: Decimal
    discount: Decimal
    total: Decimal
    tax_included: bool
    promotions: list[AppliedPromotion]


class Unpriced(_Model):
    sku: str
    reason: Literal["no_price"] = "no_price"


class PricedLines(_Model):
    """What `hilo.offers.pricing.price_lines` answers: the deterministic part of a quote."""

    offers_version: int
    currency: str
    channel: str
    at: AwareDatetime
    lines: list[PricedLine]
    unpriced: list[Unpriced]
    subtotal: Decimal
    discount: Decimal
    total: Decimal


@dataclass(frozen=True)
class OffersSnapshot:
    """Every offer in force as of one version: what a price is computed from, all at once."""

    version: int
    prices: Mapping[tuple[str, str], PriceSchedule]
    """By (sku, currency)."""
    promotions: Mapping[str, Promotion]
    """By id; retired ones (`active` false) are left out."""
    promotion_changes: Mapping[str, tuple[datetime, Promotion]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """By id, retired ones too: when each was last written, and as what. A sale recorded late
    (an end-of-day upload) from before a promotion's change was priced with the promotion as
    it was then, which the snapshot no longer holds."""
