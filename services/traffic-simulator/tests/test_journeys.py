"""The simulator's journeys: reproducible people, every channel, requests the services accept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from hilo.webhook import verify_hex_signature
from traffic_simulator.journeys import chats, journey, journey_start
from traffic_simulator.people import people
from traffic_simulator.readback import Readback, check_chats
from traffic_simulator.settings import SimulatorSettings

SETTINGS = SimulatorSettings.model_validate(
    {
        name: SecretStr("secret")
        for name in (
            "api_key",
            "web_write_key",
            "whatsapp_app_secret",
            "twilio_auth_token",
            "email_api_key",
            "store_api_key",
            "voice_api_key",
            "meta_app_secret",
            "offers_api_key",
        )
    }
)


def test_the_same_seed_makes_the_same_people_and_requests() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    first, again = people(5, seed=3), people(5, seed=3)

    assert first == again
    assert len({person.email for person in first}) == 5
    assert [step.body for step in journey(first[0], SETTINGS, journey_start(first[0], now))] == [
        step.body for step in journey(again[0], SETTINGS, journey_start(again[0], now))
    ]
    assert people(5, seed=4)[0].email != first[0].email


def test_a_journey_crosses_every_channel_and_is_signed() -> None:
    crowd = people(6, seed=1)
    messenger_and_dropped_call = next(p for p in crowd if p.uses_messenger and p.drops_a_call)

    steps = journey(messenger_and_dropped_call, SETTINGS, journey_start(messenger_and_dropped_call))

    assert {step.channel for step in steps} == {
        "web",
        "whatsapp",
        "voice",
        "email",
        "social",
        "store",
        "sms",
    }
    whatsapp = next(step for step in steps if step.channel == "whatsapp")
    verify_hex_signature(
        "secret", whatsapp.body, whatsapp.headers["X-Hub-Signature-256"], prefix="sha256="
    )


def test_a_returner_brings_back_what_the_barcelona_receipt_sold() -> None:
    crowd = people(8, seed=1)
    returner = next(p for p in crowd if p.returns_the_product)
    keeper = next(p for p in crowd if not p.returns_the_product)

    steps = journey(returner, SETTINGS, journey_start(returner))
    receipt = json.loads(next(s.body for s in steps if s.url.endswith("/v1/receipts")))
    [back] = [json.loads(s.body) for s in steps if s.url.endswith("/v1/returns")]

    assert back["order_id"] == f"BCN-01:{receipt['receipt_id']}"
    assert back["refund_total"] == receipt["total"]
    assert back["occurred_at"] > receipt["occurred_at"]
    assert not any(
        s.url.endswith("/v1/returns") for s in journey(keeper, SETTINGS, journey_start(keeper))
    )


def test_chats_keyed_with_another_pepper_are_counted_as_unnamed() -> None:
    """The readback's check that a call's "continues" id names a chat the channels wrote."""
    person = next(p for p in people(6, seed=1) if p.uses_messenger)
    ours = chats(person, SETTINGS)
    other = chats(person, SETTINGS.model_copy(update={"subject_pepper": SecretStr("x" * 20)}))
    entries: list[dict[str, Any]] = [
        {"channel": "whatsapp", "conversation": {"id": ours["whatsapp"]}},
        {"channel": "messenger", "conversation": {"id": other["messenger"]}},
        {"channel": "web", "conversation": None},
    ]

    result = Readback()
    check_chats(result, entries, ours)

    assert set(ours) == {"whatsapp", "messenger"}
    assert ours["whatsapp"] != other["whatsapp"]
    assert (result.chats, result.unnamed_chats) == (2, 1)


def test_two_in_three_people_land_from_a_campaign() -> None:
    """So the demo's measures have campaigns to credit (journey-analytics' `campaigns`)."""
    landings = []
    for person in people(3, seed=1):
        home = journey(person, SETTINGS, journey_start(person))[0]
        landings.append(json.loads(home.body)["properties"]["url"])

    tagged = [parse_qs(urlsplit(url).query).get("utm_campaign") for url in landings]
    assert sorted(map(str, tagged)) == ["None", "['spring']", "['spring']"]


def test_who_came_to_the_shop_straight_found_the_chat_through_an_ad() -> None:
    for person in people(3, seed=1):
        steps = journey(person, SETTINGS, journey_start(person))
        home = json.loads(steps[0].body)["properties"]["url"]
        chat = next(step for step in steps if step.channel == "whatsapp")
        [message] = json.loads(chat.body)["entry"][0]["changes"][0]["value"]["messages"]
        assert ("referral" in message) == ("utm_campaign" not in home)
