"""Calls whose final status callbacks were refused (MongoDB away) or unanswered (the service
stopped), read back from Twilio's call log: against the real broker and a MongoDB-wire server of
the test's own, with Twilio stood in for by a local server speaking its Calls API.

Twilio posts a status callback once: without the read-back, every call of these outages would be
missing from its caller's journey.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from channel_voice.app import create_app
from channel_voice.calls import StatusCallback
from channel_voice.settings import VoiceSettings
from channel_voice.translate import from_twilio
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.signing import twilio_signed
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioStandIn
from hilo_devkit.channel_contract import ProviderRequest, assert_read_back_after_outages

PUBLIC = "https://hooks.example.com"
STATUS_PATH = "/webhooks/twilio/voice/status"
CONTACT_CENTRE = "+14155552671"
AGENT_PHONE = "+14155559999"


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, status_callbacks=False) as standin:
        yield standin


@pytest.fixture
def voice_settings(
    settings: HiloSettings, topics: list[str], twilio: TwilioStandIn
) -> VoiceSettings:
    return VoiceSettings.model_validate(
        {
            **settings.model_dump(),
            "twilio_auth_token": SecretStr(AUTH_TOKEN),
            "public_base_url": PUBLIC,
            "voice_api_keys": [SecretStr("cc-key")],
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_api_url": twilio.url,
            "twilio_catch_up_numbers": [CONTACT_CENTRE],
            "catch_up_seconds": 0.5,
        }
    )


def signed(params: list[tuple[str, str]]) -> ProviderRequest:
    return ProviderRequest(
        STATUS_PATH,
        urlencode(params).encode(),
        twilio_signed(PUBLIC + STATUS_PATH, params, AUTH_TOKEN),
    )


async def test_calls_refused_or_unanswered_are_read_back_from_twilios_call_log(
    voice_settings: VoiceSettings, twilio: TwilioStandIn, tmp_path: Path
) -> None:
    callers = (f"+3460011{n:04d}" for n in itertools.count())
    forwarded = twilio.call(
        CONTACT_CENTRE, AGENT_PHONE, direction="outbound-dial", parent_call_sid="CA" + "1" * 32
    )
    long_ago = twilio.call(next(callers), CONTACT_CENTRE, ended_at=_hours_ago(30))

    outcomes = iter([("completed", 42), ("no-answer", 0), ("busy", 0)])
    callbacks: list[list[tuple[str, str]]] = []

    def arrive() -> tuple[ProviderRequest, str]:
        status, duration = next(outcomes)
        params = twilio.call(next(callers), CONTACT_CENTRE, status=status, duration=duration)
        callbacks.append(params)
        return signed(params), interaction_id("voice", f"{dict(params)['CallSid']}:{status}")

    events = await assert_read_back_after_outages(create_app, voice_settings, tmp_path, arrive)

    calls = [event for event in events if event["payload"]["kind"] == "call"]
    assert len(calls) == 3, "the call delivered, the one refused and the one unanswered"
    published_sids = {call["payload"]["provider_call_id"] for call in calls}
    assert dict(forwarded)["CallSid"] not in published_sids, (
        "a leg the contact centre dialled out to an agent is no customer's call"
    )
    assert dict(long_ago)["CallSid"] not in published_sids, "nothing from before the deployment"
    for event, params in zip(calls, callbacks, strict=True):
        webhook = from_twilio(
            StatusCallback.model_validate(dict(params)), datetime.now(UTC), "test"
        )
        assert webhook is not None
        assert (event["payload"], event["occurred_at"]) == (
            webhook.payload.model_dump(mode="json"),
            webhook.occurred_at.isoformat().replace("+00:00", "Z"),
        ), "read back as its status callback would have been published"


def _hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)
