"""One valid example of every payload type, for tests of anything that handles interactions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter
from pydantic_extra_types.currency_code import ISO4217

from hilo.contract import (
    Attachment,
    AttachmentKind,
    CallHappened,
    CallStatus,
    CartAction,
    CartChanged,
    ConsentChanged,
    Conversation,
    ConversationDone,
    CustomEvent,
    DeliveryStatus,
    Direction,
    Fulfilment,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    MessageExchanged,
    MessageStatusChanged,
    Money,
    OrderPlaced,
    OrderRefunded,
    PageViewed,
    Payload,
    ProductViewed,
    Purpose,
    SalesChannel,
    StoreVisited,
    SurveyAnswered,
    SurveyMetric,
    VisitMethod,
    new_interaction,
)
from hilo.contract.outbound import OutboundCommand, OutboundMessage
from hilo.kafka import KafkaPublisher, RecordTooLarge
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name


def eur(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency=ISO4217("EUR"))


SHOES = LineItem(sku="SKU-RED-42", name="Red running shoes", quantity=1, unit_price=eur("59.90"))


def sample_payloads() -> dict[str, Payload]:
    """Keyed by payload kind; every kind of the contract appears once."""
    return {
        "message": MessageExchanged(
            direction=Direction.INBOUND,
            text="Do you have these in 42?",
            attachments=[Attachment(kind=AttachmentKind.IMAGE, mime_type="image/jpeg")],
            provider_message_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        ),
        "message_status": MessageStatusChanged(
            provider_message_id="wamid.out-1", status=DeliveryStatus.READ
        ),
        "page_view": PageViewed(
            url="https://shop.example.com/shoes",
            path="/shoes",
            title="Shoes",
            name="Orders of Ana García",
        ),
        "product_view": ProductViewed(
            sku="SKU-RED-42", name="Red running shoes", price=eur("59.90")
        ),
        "cart": CartChanged(
            action=CartAction.ITEM_ADDED,
            cart_id="cart-1",
            changed_items=[SHOES],
            items=[SHOES],
            total=eur("59.90"),
        ),
        "order": OrderPlaced(
            order_id="ORD-1001",
            sold_via=SalesChannel.STORE,
            fulfilment=Fulfilment.IN_STORE,
            store_id="BCN-01",
            items=[SHOES],
            total=eur("59.90"),
        ),
        "refund": OrderRefunded(
            order_id="BCN-01:R-000123",
            refunded_via=SalesChannel.STORE,
            store_id="BCN-01",
            items=[SHOES],
            amount=eur("59.90"),
            reason="Too small",
            receipt_id="BCN-01:RET-000045",
        ),
        "call": CallHappened(
            direction=Direction.INBOUND,
            status=CallStatus.DROPPED,
            provider_call_id="CA5ef8732a3c49700934481addd5ce1659",
            duration_seconds=42,
        ),
        "store_visit": StoreVisited(store_id="BCN-01", method=VisitMethod.LOYALTY_CARD),
        "survey_answer": SurveyAnswered(
            survey_id="post-purchase", metric=SurveyMetric.NPS, score=9
        ),
        "consent": ConsentChanged(purpose="marketing", granted=True, channel="email"),
        "identify": Identified(traits={"first_name": "Ana", "plan": "gold"}),
        "conversation_done": ConversationDone(
            agent_id="agent-ana", waiting_since=datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        ),
        "custom": CustomEvent(name="Newsletter Opened", properties={"issue": 42}),
    }


def sample_interaction(
    kind: str = "message",
    *,
    channel: str = "web",
    provider_event_id: str = "evt-1",
    identifiers: Identifiers | None = None,
    occurred_at: datetime | None = None,
) -> Interaction:
    """A valid interaction of the given payload kind."""
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=provider_event_id,
        identifiers=identifiers or Identifiers(email="ana@example.com"),
        payload=sample_payloads()[kind],
        occurred_at=occurred_at or datetime(2026, 11, 2, 10, 30, tzinfo=UTC),
    )


def sample_command(
    channel: str = "sms",
    *,
    command_id: str | None = None,
    identifiers: Identifiers | None = None,
    text: str = "Your order is ready for pickup.",
    customer_id: str = "cus-1",
    conversation: Conversation | None = None,
    reply_to: str | None = None,
    purpose: Purpose = "service",
) -> OutboundCommand:
    """A valid command to send `text` to a customer on `channel` (a fresh id unless given)."""
    return OutboundCommand(
        id=command_id or str(uuid.uuid4()),
        customer_id=customer_id,
        channel=channel,
        identifiers=identifiers or Identifiers(phone="+34600111222"),
        conversation=conversation,
        payload=OutboundMessage(text=text, reply_to_provider_message_id=reply_to, purpose=purpose),
        requested_by="agent-ana",
        requested_at=datetime.now(UTC),
    )


if TYPE_CHECKING:
    from hilo.channel import Channel


def publishing_one_sample(channel: Channel) -> list[APIRouter]:
    """The routes of a channel under test of what every channel does: `POST /event` publishes
    one sample message through `channel` and answers what it answers."""
    router = APIRouter()

    @router.post("/event")
    async def event() -> dict[str, str]:
        await channel.publish([sample_interaction("message")])
        return {"status": "ok"}

    return [router]


async def longest_that_fits(
    publisher: KafkaPublisher, make: Callable[[int], Interaction], upper: int
) -> int:
    """The largest `length` (at most `upper`) for which the interaction `make(length)` still
    fits the publisher's record limit: a bisection on `RecordTooLarge`."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        try:
            await publisher.interaction_records([make(middle)])
        except RecordTooLarge:
            high = middle - 1
        else:
            low = middle
    return low


MOVED_AT_MS, FIRST_AT_MS = 2_000_000, 1_000_000
"""The Kafka timestamps of `publish_entry_copies`'s two records."""


async def publish_entry_copies(
    settings: HiloSettings, entry: dict[str, Any], restored: str
) -> None:
    """A journey entry as a split leaves it on `journey`: its first copy (under
    `entry["customer_id"]`) and the one the split published later under `restored`, each keyed
    by its customer (two partitions), the later one written first: the order a reader may meet
    them in after a reset. The records' timestamps say which came later."""
    journey = topic_name(Topic.JOURNEY, settings)
    moved = {**entry, "customer_id": restored}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for copy, at in ((moved, MOVED_AT_MS), (entry, FIRST_AT_MS)):
            key = str(copy["customer_id"]).encode()
            await producer.send_and_wait(
                journey, json.dumps(copy).encode(), key=key, timestamp_ms=at
            )
    finally:
        await producer.stop()
