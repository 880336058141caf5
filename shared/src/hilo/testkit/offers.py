"""Putting offers on the `offers` topic as the offers service does, for tests of their readers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from hilo.kafka import KafkaPublisher, Record, create_broker
from hilo.offers.model import OfferRecord, PriceSchedule, Promotion
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
