"""Putting offers on the `offers` topic as the offers service does, for tests of their readers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic_extra_types.currency_code import ISO4217

from hilo.kafka import KafkaPublisher, Record, create_broker
from hilo.offers.model import OfferRecord, PricePoint, PriceSchedule, Promotion, PromotionKind
from hilo.settings import HiloSettings
from hilo.topics import Topic


def offer_record(
    key: str,
    version: int,
    *,
    price: PriceSchedule | None = None,
    promotion: Promotion | None = None,
) -> OfferRecord:
    """A one-part version setting `key` to a price schedule or a promotion."""
    return OfferRecord(
        key=key,
        version=version,
        part=1,
        parts=1,
        changed_at=datetime.now(UTC),
        changed_by="test",
        price=price,
        promotion=promotion,
    )


def price_schedule(
    sku: str, *points: tuple[str, datetime, int], currency: str = "EUR"
) -> PriceSchedule:
    """A SKU's tax-included list prices: (amount, from when, the version that set it)."""
    return PriceSchedule(
        sku=sku,
        currency=ISO4217(currency),
        points=[
            PricePoint(amount=Decimal(amount), tax_included=True, valid_from=at, version=version)
            for amount, at, version in points
        ],
    )


def percent_off(
    promotion_id: str,
    name: str,
    sku: str,
    percent: int,
    *,
    valid_from: datetime,
    valid_until: datetime,
    currency: str = "EUR",
    **fields: Any,
) -> Promotion:
    """A percent-off promotion on one SKU (`fields`: channels, conditions, priority...)."""
    return Promotion(
        id=promotion_id,
        name=name,
        kind=PromotionKind.PERCENT_OFF,
        skus=[sku],
        currency=ISO4217(currency),
        percent=Decimal(percent),
        valid_from=valid_from,
        valid_until=valid_until,
        **fields,
    )


async def publish_offer_records(settings: HiloSettings, records: Sequence[OfferRecord]) -> None:
    """Publish `records` on `offers`, in order, keyed as the offers service keys them."""
    broker = create_broker(settings)
    await broker.start()
    try:
        await KafkaPublisher(broker, settings).publish_records(
            [
                Record(Topic.OFFERS, r.key.encode(), r.model_dump_json().encode(), {})
                for r in records
            ]
        )
    finally:
        await broker.stop()
