"""Reading Twilio's message log (`channel_sms.message_log`) against a local stand-in speaking
Twilio's Messages API: pages, the time asked for, what is a customer's message, and what a
read-back must leave out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from channel_sms.message_log import LATEST_STATUS, Translators, TwilioMessageLog
from channel_sms.translate import incoming, status
from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.contract import Interaction, MessageStatusChanged, interaction_id
from hilo.providers.twilio_api import TwilioLists
from hilo.testkit.standins.twilio import ACCOUNT_SID, AUTH_TOKEN, AcceptedSms, TwilioStandIn

FROM = "+14155552671"
ANA = "+34600111222"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, status_callbacks=False) as standin:
        yield standin


@pytest.fixture
async def message_log(twilio: TwilioStandIn) -> AsyncIterator[TwilioMessageLog]:
    lists = TwilioLists(
        api_url=twilio.url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, page_size=2
    )
    reader = TwilioMessageLog(lists, [FROM], Translators(translate, translate_status))
    yield reader
    await reader.close()


def translate(message: InboundMessage, sent_at: datetime) -> list[Interaction]:
    return incoming(message, datetime.now(UTC), "test", b"k" * 32, sent_at)


def translate_status(callback: StatusCallback, changed_at: datetime) -> Interaction | None:
    return status(callback, datetime.now(UTC), "test", b"k" * 32, occurred_at=changed_at)


def sent(twilio: TwilioStandIn, to: str, text: str, *, at: datetime = NOW) -> str:
    """A message sent from the number (by anyone: the log cannot tell), its SID."""
    sid = "SM" + uuid.uuid4().hex
    twilio.accepted.append(AcceptedSms(sid, to, text, FROM, None, None, created=at))
    return sid


async def read_back(reader: TwilioMessageLog, since: datetime) -> list[Interaction]:
    return [event async for page in reader.read_back(since) for event in page]


def left_out(reason: str) -> float:
    labels = {"channel": "sms", "reason": reason}
    return REGISTRY.get_sample_value("hilo_channel_read_back_left_out_total", labels) or 0.0


async def test_every_page_since_the_time_asked_is_read_and_no_page_past_it(
    twilio: TwilioStandIn, message_log: TwilioMessageLog
) -> None:
    sids = [
        dict(twilio.receive(ANA, FROM, f"message {n}", date_sent=NOW - timedelta(minutes=n)))[
            "MessageSid"
        ]
        for n in range(12)
    ]

    events = await read_back(message_log, NOW - timedelta(minutes=4, seconds=30))

    assert [event.id for event in events] == [interaction_id("sms", sid) for sid in sids[:5]]
    assert twilio.pages_read == 3 + 1, (
        "pages of 2, newest first: the third reaches older messages; then the (empty) sends"
    )


async def test_only_customers_messages_to_the_number_are_read(
    twilio: TwilioStandIn, message_log: TwilioMessageLog
) -> None:
    twilio.accepted.append(AcceptedSms("SM" + "0" * 32, ANA, "a reply we sent", FROM, None, None))
    twilio.receive(ANA, "+14155550000", "to another number")
    stop = twilio.receive(ANA, FROM, "STOP")

    events = await read_back(message_log, NOW - timedelta(minutes=5))

    assert [(event.payload.kind, event.id) for event in events] == [
        ("message", interaction_id("sms", dict(stop)["MessageSid"])),
        ("consent", interaction_id("sms", f"{dict(stop)['MessageSid']}:consent")),
    ], "an opt-out read back changes the consent, as its webhook does"


async def test_redacted_and_unreadable_senders_are_left_out_and_counted(
    twilio: TwilioStandIn, message_log: TwilioMessageLog
) -> None:
    before = (left_out("redacted"), left_out("unreadable"))
    twilio.receive("+3460011XXXX", FROM, "redacted by Twilio")
    twilio.receive("+34 000", FROM, "no phone number")
    kept = twilio.receive(ANA, FROM, "hola")

    events = await read_back(message_log, NOW - timedelta(minutes=5))

    assert [event.id for event in events] == [interaction_id("sms", dict(kept)["MessageSid"])]
    assert (left_out("redacted"), left_out("unreadable")) == (before[0] + 1, before[1] + 1)


async def test_statuses_of_messages_sent_from_the_number_are_read_back_as_their_callbacks(
    twilio: TwilioStandIn, message_log: TwilioMessageLog
) -> None:
    since = NOW - timedelta(minutes=5)
    delivered = sent(twilio, ANA, "Your order is ready")
    twilio.progress(delivered, "sent", at=NOW - timedelta(minutes=1))
    twilio.progress(delivered, "delivered", at=NOW)
    bounced = sent(twilio, ANA, "Your parcel is on its way")
    twilio.progress(bounced, "undelivered")
    sent(twilio, ANA, "still queued")
    earlier = sent(twilio, ANA, "delivered before the time asked", at=since - timedelta(hours=1))
    twilio.progress(earlier, "delivered", at=since - timedelta(minutes=1))
    late = sent(twilio, ANA, "sent yesterday, delivered now", at=since - timedelta(hours=20))
    twilio.progress(late, "delivered")

    events = await read_back(message_log, since)

    statuses = {
        event.payload.provider_message_id: (event, event.payload)
        for event in events
        if isinstance(event.payload, MessageStatusChanged)
    }
    assert set(statuses) == {delivered, bounced, late}, (
        "a status that changed since the time asked, of a message sent up to a day before it; "
        "nothing for a message still queued"
    )
    assert statuses[delivered][0].id == interaction_id("sms", f"{delivered}:delivered"), (
        "the id its callback would have had: a repeat is dropped by every consumer"
    )
    assert statuses[delivered][0].occurred_at == NOW, "when the status changed, not when read back"
    assert (statuses[bounced][1].status, statuses[bounced][1].error) == (
        "failed",
        "Twilio error 30003",
    )
    assert statuses[bounced][0].identifiers.phone == ANA


async def test_sends_are_paged_no_further_than_a_day_before_the_time_asked(
    twilio: TwilioStandIn, message_log: TwilioMessageLog
) -> None:
    # Noon yesterday: the sends, hours before its day-earlier bound, fall on that bound's day
    # (Twilio filters `DateSent>` by day), whatever the time the test runs (it failed after
    # midnight UTC, its sends falling on the day before).
    since = (NOW - timedelta(days=1)).replace(hour=12, minute=0, second=0)
    for n in range(6):
        sid = sent(twilio, ANA, f"old {n}", at=since - LATEST_STATUS - timedelta(hours=n + 1))
        twilio.progress(sid, "delivered")

    events = await read_back(message_log, since)

    assert twilio.pages_read == 2, "the incoming page, then one page of sends: it is past them"
    assert len(events) == 2, "what that page held is published (a status is never too late)"


async def test_without_replies_configured_no_status_is_read(twilio: TwilioStandIn) -> None:
    """A channel that sends nothing has no status of its own to read back: it does not list
    what other tools sent from the number."""
    lists = TwilioLists(api_url=twilio.url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    reader = TwilioMessageLog(lists, [FROM], Translators(translate, None))
    twilio.progress(sent(twilio, ANA, "another tool's"), "delivered")
    try:
        events = await read_back(reader, NOW - timedelta(minutes=5))
    finally:
        await reader.close()

    assert events == []
    assert twilio.pages_read == 1, "the incoming messages only"
