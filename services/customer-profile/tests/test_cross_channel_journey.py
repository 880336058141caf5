"""The scripted omnichannel journey: one person across seven channels becomes one profile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic_extra_types.currency_code import ISO4217

from customer_profile.testing import RunningProfileService
from hilo.contract import (
    CallHappened,
    CallStatus,
    CartAction,
    CartChanged,
    Conversation,
    Direction,
    Fulfilment,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    MessageExchanged,
    Money,
    OrderPlaced,
    PageViewed,
    ProductViewed,
    SalesChannel,
    conversation_id,
    new_interaction,
)

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
EUR = ISO4217("EUR")
SHOES = LineItem(
    sku="SKU-RED-42",
    name="Red running shoes",
    quantity=1,
    unit_price=Money(amount=Decimal("59.90"), currency=EUR),
)
PHONE = "+34612345678"
EMAIL = "ana.garcia@example.com"


def event(
    n: int,
    channel: str,
    identifiers: Identifiers,
    payload: object,
    conversation: Conversation | None = None,
) -> Interaction:
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=f"script-{n}",
        identifiers=identifiers,
        payload=payload,
        occurred_at=START + timedelta(minutes=n),
        conversation=conversation,
    )


WHATSAPP_THREAD = Conversation(id=conversation_id("whatsapp", PHONE), thread=PHONE)
SCRIPT = [
    event(
        1,
        "web",
        Identifiers(anonymous_id="anon-7f3a"),
        PageViewed(url="https://shop.example.com/", path="/"),
    ),
    event(
        2,
        "web",
        Identifiers(anonymous_id="anon-7f3a"),
        ProductViewed(sku="SKU-RED-42", name="Red running shoes"),
    ),
    event(
        3,
        "web",
        Identifiers(anonymous_id="anon-7f3a", email=EMAIL),
        Identified(traits={"first_name": "Ana", "last_name": "García"}),
    ),
    event(
        4,
        "web",
        Identifiers(anonymous_id="anon-7f3a", email=EMAIL),
        CartChanged(
            action=CartAction.ITEM_ADDED,
            cart_id="cart-9",
            changed_items=[SHOES],
            items=[SHOES],
            total=Money(amount=Decimal("59.90"), currency=EUR),
        ),
    ),
    event(
        5,
        "whatsapp",
        Identifiers(phone=PHONE, whatsapp_id="34612345678"),
        MessageExchanged(
            direction=Direction.INBOUND,
            text="Do you have the red ones in 42 in Barcelona?",
            provider_message_id="wamid.1",
        ),
        WHATSAPP_THREAD,
    ),
    event(
        6,
        "email",
        Identifiers(email=EMAIL),
        MessageExchanged(
            direction=Direction.INBOUND,
            subject="Size 42",
            text="Also, can I pick them up today?",
            provider_message_id="<m1@example.com>",
        ),
        Conversation(id=conversation_id("email", "<m1@example.com>"), thread="<m1@example.com>"),
    ),
    event(
        7,
        "voice",
        Identifiers(phone=PHONE),
        CallHappened(
            direction=Direction.INBOUND,
            status=CallStatus.DROPPED,
            provider_call_id="CA1",
            duration_seconds=42,
        ),
        Conversation(id=conversation_id("voice", "CA1")),
    ),
    event(
        8,
        "store",
        Identifiers(loyalty_id="LOY-981", phone=PHONE, email=EMAIL),
        OrderPlaced(
            order_id="ORD-1001",
            sold_via=SalesChannel.STORE,
            fulfilment=Fulfilment.IN_STORE,
            store_id="BCN-01",
            items=[SHOES],
            total=Money(amount=Decimal("59.90"), currency=EUR),
        ),
    ),
]


async def test_one_person_across_every_channel_becomes_one_profile(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    contexts = []
    for n, interaction in enumerate(SCRIPT, start=1):
        await svc.publish([interaction])
        await svc.wait_for_entries(n)
        customer = await svc.customer_of(
            *next(iter((k.value, v) for k, v in interaction.identifiers.pairs()))
        )
        contexts.append(await svc.get(f"/v1/customers/{customer}/context"))

    # After the anonymous browsing: one anonymous profile with the page and product views.
    assert [i["type"] for i in contexts[1]["last_interactions"]] == ["product_view", "page_view"]
    # Identify: the anonymous history joined the known customer.
    assert contexts[2]["display_name"] == "Ana García"
    assert len(contexts[2]["last_interactions"]) == 3
    # Cart built online.
    assert contexts[3]["cart"]["cart_id"] == "cart-9"
    # WhatsApp from a phone nobody knew yet: a separate profile until something links them.
    assert contexts[4]["customer_id"] != contexts[3]["customer_id"]
    assert contexts[4]["open_conversation"]["started_channel"] == "whatsapp"
    # Email from the same address continues the known customer, whose cart is still there.
    assert contexts[5]["customer_id"] == contexts[3]["customer_id"]
    assert contexts[5]["cart"]["cart_id"] == "cart-9"
    # The call from the WhatsApp phone continues that conversation on another channel.
    assert contexts[6]["customer_id"] == contexts[4]["customer_id"]
    assert contexts[6]["open_conversation"]["channels"] == ["whatsapp", "voice"]
    # The store receipt carries loyalty card, phone and email: the two profiles merge.
    final = contexts[7]
    assert final["customer_id"] in {contexts[3]["customer_id"], contexts[4]["customer_id"]}
    assert final["cart"] is None, "the in-store purchase finished the online cart"
    assert final["recent_orders"][0]["order_id"] == "ORD-1001"
    assert final["lifetime_value"] == {"EUR": "59.90"}
    assert final["open_conversation"]["started_channel"] == "whatsapp"
    assert set(final["open_conversation"]["channels"]) == {"whatsapp", "email", "voice"}
    assert {(i["kind"], i["value"]) for i in final["identifiers"]} == {
        ("anonymous_id", "anon-7f3a"),
        ("email", EMAIL),
        ("phone", PHONE),
        ("whatsapp_id", "34612345678"),
        ("loyalty_id", "LOY-981"),
    }

    customer = final["customer_id"]
    journey = await svc.get(f"/v1/customers/{customer}/journey?limit=100")
    assert [e["id"] for e in journey["entries"]] == [i.id for i in SCRIPT]
    assert [e["channel"] for e in journey["entries"]] == [
        "web",
        "web",
        "web",
        "web",
        "whatsapp",
        "email",
        "voice",
        "store",
    ]
    profile = await svc.get(f"/v1/customers/{customer}")
    assert profile["view"]["event_count"] == len(SCRIPT)
    assert profile["view"]["last_channel"] == "store"
    assert set(profile["view"]["channels"]) == {"web", "whatsapp", "email", "voice", "store"}
    # Every other identifier answers with the same customer.
    for kind, value in [
        ("phone", "+34 612 34 56 78"),
        ("email", "ANA.GARCIA@example.com"),
        ("anonymous_id", "anon-7f3a"),
        ("loyalty_id", "LOY-981"),
    ]:
        assert await svc.customer_of(kind, value) == customer
    # The absorbed profile's id still answers, with the survivor.
    absorbed = ({contexts[3]["customer_id"], contexts[4]["customer_id"]} - {customer}).pop()
    assert (await svc.get(f"/v1/customers/{absorbed}"))["customer_id"] == customer
    assert profile["merged_from"] == [absorbed]
