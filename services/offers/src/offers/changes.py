"""What one change (one version) publishes: the records of the keys it touches, whole.

Pure functions: the store hands in the version number and the keys' current records, these
answer the new records. A price record carries its key's whole schedule (earlier points and the
new ones), so the compacted topic, which keeps only the last record per key, still answers
"what did this cost last Tuesday".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_extra_types.currency_code import ISO4217

from hilo.kafka import Record
from hilo.offers.model import (
    Amount,
    OfferRecord,
    PricePoint,
    PriceSchedule,
    Promotion,
    Sku,
    UtcTime,
    no_float,
    price_key,
    promotion_key,
)
from hilo.topics import Topic

MAX_POINTS = 500
"""Points a schedule keeps (the contract's limit); the oldest go first."""


class ScheduleFull(ValueError):
    """A new price older than every point its full schedule keeps: stored, it would be cut at
    once, and the change would be a version that changes nothing."""

    def __init__(self, index: int, price: NewPrice) -> None:
        super().__init__(
            f"{price.sku} in {price.currency} keeps its latest {MAX_POINTS} prices, all from "
            "after this valid_from: a price this old would not be kept"
        )
        self.index = index


class NewPrice(BaseModel):
    """One list price to set: from `valid_from` (default: the change's time) on."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    sku: Sku
    currency: ISO4217
    amount: Annotated[Amount, BeforeValidator(no_float)] = Field(
        description="Per unit, as a decimal string.", examples=["59.90"]
    )
    tax_included: bool
    valid_from: UtcTime | None = None


@dataclass(frozen=True)
class Change:
    """One version as stored: when, who, and its records in part order."""

    version: int
    at: datetime
    by: str
    records: tuple[OfferRecord, ...]
    published: bool = False

    @property
    def keys(self) -> list[str]:
        return [record.key for record in self.records]

    def kafka_records(self) -> list[Record]:
        return [kafka_record(record) for record in self.records]


def kafka_record(record: OfferRecord) -> Record:
    """A record as it goes on `offers`: keyed by its key, its version in a header too."""
    return Record(
        Topic.OFFERS,
        key=record.key.encode(),
        value=record.model_dump_json().encode(),
        headers={"content-type": "application/json", "hilo_offers_version": str(record.version)},
    )


def price_keys(prices: Sequence[NewPrice]) -> list[str]:
    """The keys a price list touches, in order of first appearance."""
    return list(dict.fromkeys(price_key(price.sku, price.currency) for price in prices))


def price_records(
    prices: Sequence[NewPrice],
    current: Mapping[str, OfferRecord],
    *,
    version: int,
    at: datetime,
    by: str,
    built_at: datetime | None = None,
) -> list[OfferRecord]:
    """One record per SKU and currency: its earlier points and the new ones, oldest first.

    An earlier point starting at the same moment as a new one could never be in force again
    (the later version wins a tie), so it is dropped rather than kept to fill the schedule.

    A price without `valid_from` applies from `at`, or from the start of the point in force
    when the version is built (`built_at`), if that one started later: a change that lost the
    race for its version number to another, stamped after it, would otherwise never be in
    force though it is the later version.
    """
    schedules: list[PriceSchedule] = []
    for key in price_keys(prices):
        mine = [price for price in prices if price_key(price.sku, price.currency) == key]
        earlier = current.get(key)
        in_force = earlier.price.at(built_at or at) if earlier and earlier.price else None
        from_now = max(at, in_force.valid_from) if in_force else at
        new_points = [
            PricePoint(
                amount=price.amount,
                tax_included=price.tax_included,
                valid_from=price.valid_from or from_now,
                version=version,
            )
            for price in mine
        ]
        starts = {point.valid_from for point in new_points}
        kept = [
            point
            for point in (earlier.price.points if earlier and earlier.price else [])
            if point.valid_from not in starts
        ]
        points = sorted([*kept, *new_points], key=lambda p: (p.valid_from, p.version))[-MAX_POINTS:]
        for price, point in zip(mine, new_points, strict=True):
            if point not in points:
                raise ScheduleFull(next(i for i, p in enumerate(prices) if p is price), price)
        schedules.append(PriceSchedule(sku=mine[0].sku, currency=mine[0].currency, points=points))
    return _numbered(version, at, by, schedules)


def promotion_records(
    promotion: Promotion, *, version: int, at: datetime, by: str
) -> list[OfferRecord]:
    return _numbered(version, at, by, [promotion])


def retirement_records(
    current: OfferRecord, *, version: int, at: datetime, by: str
) -> list[OfferRecord]:
    """The promotion as it was, inactive: a version of its own, never a delete (a tombstone
    would let compaction forget that it ever existed)."""
    if current.promotion is None:
        raise ValueError(f"{current.key} is not a promotion")
    return _numbered(version, at, by, [current.promotion.model_copy(update={"active": False})])


def _numbered(
    version: int, at: datetime, by: str, subjects: Sequence[PriceSchedule | Promotion]
) -> list[OfferRecord]:
    parts = len(subjects)
    return [
        OfferRecord(
            key=_key(subject),
            version=version,
            part=part,
            parts=parts,
            changed_at=at,
            changed_by=by,
            price=subject if isinstance(subject, PriceSchedule) else None,
            promotion=subject if isinstance(subject, Promotion) else None,
        )
        for part, subject in enumerate(subjects, 1)
    ]


def _key(subject: PriceSchedule | Promotion) -> str:
    if isinstance(subject, PriceSchedule):
        return price_key(subject.sku, subject.currency)
    return promotion_key(subject.id)
