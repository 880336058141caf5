"""Twilio Voice callbacks and contact-centre outcomes against the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from channel_voice.app import create_app
from channel_voice.settings import VoiceSettings
from hilo.contract import conversation_id, interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.signing import twilio_signed
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_spooled_while_kafka_is_down,
    channel_client,
)

TOKEN = "voice-auth-token"
PUBLIC = "https://hooks.example.com"
KEY = "cc-key-1"
STATUS_PATH = "/webhooks/twilio/voice/status"
COMPLETED = [
    ("Called", "+14155552671"),
    ("ToState", "CA"),
    ("CallerCountry", "ES"),
    ("Direction", "inbound"),
    ("Timestamp", "Mon, 23 Nov 2026 18:04:12 +0000"),
    ("CallbackSource", "call-progress-events"),
    ("SequenceNumber", "3"),
    ("CallStatus", "completed"),
    ("From", "+34612345678"),
    ("CallSid", "CA5ef8732a3c49700934481addd5ce1659"),
    ("To", "+14155552671"),
    ("CallDuration", "42"),
    ("AccountSid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("ApiVersion", "2010-04-01"),
]
OUTCOME = {
    "call_id": "CA5ef8732a3c49700934481addd5ce1659",
    "customer": {"phone": "+34 612 34 56 78", "email": "Ana@Example.com"},
    "direction": "inbound",
    "status": "dropped",
    "started_at": "2026-11-23T18:03:30+00:00",
    "duration_seconds": 42,
    "agent_id": "agent-7",
    "outcome": "callback_promised",
    "disposition": "order_status",
    "summary": "Asked where order ORD-1001 is; line dropped; continue on WhatsApp.",
    "continues_conversation": conversation_id("whatsapp", "106540352242922:34612345678"),
}


def twilio(params: list[tuple[str, str]], events: int = 1) -> ProviderRequest:
    return ProviderRequest(
        STATUS_PATH,
        urlencode(params).encode(),
        twilio_signed(PUBLIC + STATUS_PATH, params, TOKEN),
        events,
    )


def outcome(document: dict[str, object]) -> ProviderRequest:
    return ProviderRequest(
        "/v1/calls",
        httpx.Request("POST", "/", json=document).content,
        {"X-API-Key": KEY, "Content-Type": "application/json"},
    )


@pytest.fixture
def voice_settings(settings: HiloSettings) -> VoiceSettings:
    return VoiceSettings.model_validate(
        {
            **settings.model_dump(),
            "twilio_auth_token": SecretStr(TOKEN),
            "public_base_url": PUBLIC,
            "voice_api_keys": [SecretStr(KEY)],
        }
    )


@pytest.fixture
async def voice(
    voice_settings: VoiceSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(voice_settings)) as client:
        yield client


async def test_final_call_statuses_and_outcomes_honour_the_channel_contract(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    outbound_busy = [
        ("CallSid", "CA_out_1"),
        ("CallStatus", "busy"),
        ("Direction", "outbound-api"),
        ("From", "+14155552671"),
        ("To", "+34699111222"),
        ("AccountSid", "AC1"),
    ]
    events = await assert_channel_contract(
        voice, settings, [twilio(COMPLETED), twilio(outbound_busy), outcome(OUTCOME)]
    )

    by_id = {event["id"]: event for event in events}
    completed = by_id[interaction_id("voice", "CA5ef8732a3c49700934481addd5ce1659:completed")]
    assert completed["identifiers"]["phone"] == "+34612345678"
    assert completed["occurred_at"] == "2026-11-23T18:03:30Z", "its start: 42 s before it ended"
    assert completed["payload"] == {
        **completed["payload"],
        "kind": "call",
        "direction": "inbound",
        "status": "completed",
        "duration_seconds": 42,
    }
    busy = by_id[interaction_id("voice", "CA_out_1:busy")]
    assert (busy["identifiers"]["phone"], busy["payload"]["direction"]) == (
        "+34699111222",
        "outbound",
    )
    dropped = by_id[interaction_id("voice", "CA5ef8732a3c49700934481addd5ce1659:outcome")]
    assert dropped["identifiers"] == {
        **dropped["identifiers"],
        "phone": "+34612345678",
        "email": "ana@example.com",
    }
    assert dropped["payload"]["status"] == "dropped"
    assert dropped["payload"]["summary"].startswith("Asked where order")
    assert dropped["conversation"] == {
        "id": completed["conversation"]["id"],
        "thread": "CA5ef8732a3c49700934481addd5ce1659",
        "continues": OUTCOME["continues_conversation"],
    }


async def test_progress_reports_are_acknowledged_but_not_recorded(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    for status in ("queued", "ringing", "in-progress"):
        ringing = [(k, status if k == "CallStatus" else v) for k, v in COMPLETED]
        request = twilio(ringing)
        response = await voice.post(
            STATUS_PATH, content=request.body, headers=dict(request.headers)
        )
        assert response.status_code == 200

    assert await published_interactions(settings, 0) == []


async def test_a_forwarded_calls_dialled_leg_is_not_taken_for_a_customer(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """`<Dial><Number statusCallback=...>+agent</Number>` reports the agent's leg as
    outbound-dial to the agent's phone: only the parent leg (the customer's) is recorded. A call
    an agent places from the Voice SDK is inbound from `client:...`: its customer is `To`; so is
    the number a SIP desk phone dials (`sip:+34...@domain`)."""
    forwarded_leg = [
        ("CallSid", "CA_child_1"),
        ("ParentCallSid", "CA5ef8732a3c49700934481addd5ce1659"),
        ("CallStatus", "completed"),
        ("Direction", "outbound-dial"),
        ("From", "+34612345678"),
        ("To", "+34699000111"),
        ("CallDuration", "40"),
        ("AccountSid", "AC1"),
    ]
    from_softphone = [
        ("CallSid", "CA_sdk_1"),
        ("CallStatus", "completed"),
        ("Direction", "inbound"),
        ("From", "client:agent_ana"),
        ("To", "+34699111222"),
        ("AccountSid", "AC1"),
    ]
    between_agents = [
        ("CallSid", "CA_sdk_2"),
        ("CallStatus", "completed"),
        ("Direction", "inbound"),
        ("From", "client:agent_ana"),
        ("To", "sip:desk@example.sip.twilio.com"),
        ("AccountSid", "AC1"),
    ]
    from_desk_phone = [  # a SIP desk phone on a Twilio SIP Domain dialling a customer
        ("CallSid", "CA_sip_1"),
        ("CallStatus", "completed"),
        ("Direction", "inbound"),
        ("From", "sip:+14155552671@acme.sip.twilio.com"),  # registered with the company's DID
        ("To", "sip:+34699333444@acme.sip.twilio.com;transport=udp"),
        ("AccountSid", "AC1"),
    ]
    labels = {"channel": "voice"}
    before = REGISTRY.get_sample_value("hilo_channel_events_ignored_total", labels) or 0.0
    for params in (COMPLETED, forwarded_leg, from_softphone, between_agents, from_desk_phone):
        request = twilio(params)
        response = await voice.post(
            STATUS_PATH, content=request.body, headers=dict(request.headers)
        )
        assert response.status_code == 200, response.text

    events = {e["id"]: e for e in await published_interactions(settings, 3)}
    assert set(events) == {
        interaction_id("voice", "CA5ef8732a3c49700934481addd5ce1659:completed"),
        interaction_id("voice", "CA_sdk_1:completed"),
        interaction_id("voice", "CA_sip_1:completed"),
    }
    placed = events[interaction_id("voice", "CA_sdk_1:completed")]
    assert placed["identifiers"]["phone"] == "+34699111222"
    assert placed["payload"]["direction"] == "outbound"
    dialled = events[interaction_id("voice", "CA_sip_1:completed")]
    assert dialled["identifiers"]["phone"] == "+34699333444"
    assert dialled["payload"]["direction"] == "outbound"
    after = REGISTRY.get_sample_value("hilo_channel_events_ignored_total", labels)
    assert after == before + 2


async def test_the_outcome_answer_names_the_calls_conversation(voice: httpx.AsyncClient) -> None:
    response = await voice.post("/v1/calls", json=OUTCOME, headers={"X-API-Key": KEY})

    assert response.status_code == 200
    assert response.json()["conversation_id"] == conversation_id(
        "voice", "CA5ef8732a3c49700934481addd5ce1659"
    )


async def test_bad_signatures_keys_and_bodies_are_refused(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    forged = await voice.post(
        STATUS_PATH,
        content=urlencode(COMPLETED),
        headers=twilio_signed(PUBLIC + STATUS_PATH, COMPLETED, "not-the-token"),
    )
    withheld = [(k, "anonymous" if k == "From" else v) for k, v in COMPLETED]
    request = twilio(withheld)
    anonymous_caller = await voice.post(
        STATUS_PATH, content=request.body, headers=dict(request.headers)
    )
    no_key = await voice.post("/v1/calls", json=OUTCOME)
    naive = await voice.post(
        "/v1/calls",
        json={**OUTCOME, "started_at": "2026-11-23T18:03:30"},
        headers={"X-API-Key": KEY},
    )
    nobody = await voice.post(
        "/v1/calls", json={**OUTCOME, "customer": {}}, headers={"X-API-Key": KEY}
    )
    # MongoDB holds 8-byte integers: a duration past them was answered 200 and then
    # dead-lettered by the profile, so the call never reached the journey.
    endless = await voice.post(
        "/v1/calls", json={**OUTCOME, "duration_seconds": 10**30}, headers={"X-API-Key": KEY}
    )

    assert forged.status_code == 403
    assert anonymous_caller.status_code == 422
    assert anonymous_caller.json()["detail"] == "customer number: not a phone number"
    assert no_key.status_code == 401
    assert naive.status_code == 422
    assert naive.json()["detail"] == "started_at: Input should have timezone info"
    assert nobody.status_code == 422
    assert "at least one identifier is required" in nobody.json()["detail"]
    assert endless.status_code == 422
    assert endless.json()["detail"] == (
        "duration_seconds: Input should be less than or equal to 604800"
    )
    assert await published_interactions(settings, 0) == []


async def test_kept_while_kafka_is_down_and_published_once_it_is_back(
    voice_settings: VoiceSettings, tmp_path: Path
) -> None:
    """Twilio never retries a 503: the one delivery of the call's status must be enough."""
    events = await assert_spooled_while_kafka_is_down(
        create_app, voice_settings, twilio(COMPLETED), tmp_path
    )

    assert {event["id"] for event in events} == {
        interaction_id("voice", "CA5ef8732a3c49700934481addd5ce1659:completed")
    }


async def test_a_transcript_larger_than_kafka_takes_is_refused_with_413_not_503(
    voice_settings: VoiceSettings, topics: list[str], settings: HiloSettings
) -> None:
    roomy = voice_settings.model_copy(update={"max_body_bytes": 3_000_000})
    long_call = {**OUTCOME, "transcript": "€" * 400_000}  # 1.2 MB as UTF-8

    async with channel_client(create_app(roomy)) as client:
        response = await client.post("/v1/calls", json=long_call, headers={"X-API-Key": KEY})

    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "event larger than 1048576 bytes after translation",
    }
    assert await published_interactions(settings, 0) == []


async def test_an_invalid_email_beside_a_valid_phone_is_dropped_and_the_call_kept(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    outcome = {**OUTCOME, "customer": {"phone": "+34 612 34 56 78", "email": "ana@@example"}}

    response = await voice.post("/v1/calls", json=outcome, headers={"X-API-Key": KEY})

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert (event["identifiers"]["phone"], event["identifiers"]["email"]) == ("+34612345678", None)
    assert event["adjustments"] == [{"field": "identifiers.email", "reason": "invalid_email"}]


async def test_a_customer_the_agent_typed_from_what_the_caller_said_is_only_claimed(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A caller can give someone else's email: typed, it joins no profile it would change
    (the profile service asks a person), where an identified caller is verified."""
    typed = {**OUTCOME, "call_id": "CA-typed", "customer_entry": "typed"}
    identified = {**OUTCOME, "call_id": "CA-identified"}

    for document in (typed, identified):
        answer = await voice.post("/v1/calls", json=document, headers={"X-API-Key": KEY})
        assert answer.status_code == 200, answer.text
    refused = await voice.post(
        "/v1/calls", json={**OUTCOME, "customer_entry": "guessed"}, headers={"X-API-Key": KEY}
    )

    events = await published_interactions(settings, 2)
    trust = {e["payload"]["provider_call_id"]: e["identity_trust"] for e in events}
    assert trust == {"CA-typed": "claimed", "CA-identified": "verified"}
    assert refused.status_code == 422
    assert "customer_entry" in refused.text


async def test_a_twilio_timestamp_without_zone_is_utc_as_rfc_2822_says(
    voice: httpx.AsyncClient, settings: HiloSettings
) -> None:
    no_zone = [
        (k, "Mon, 23 Nov 2026 18:04:12 -0000") if k == "Timestamp" else (k, v) for k, v in COMPLETED
    ]
    request = twilio(no_zone)

    response = await voice.post(STATUS_PATH, content=request.body, headers=dict(request.headers))

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["occurred_at"] == "2026-11-23T18:03:30Z"  # ended 18:04:12 UTC, 42 s long
