"""Who sent or receives a Twilio message (no infrastructure)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from channel_sms.translate import incoming, party, status
from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.contract import MessageExchanged
from hilo.contract.identifiers import DEFAULT_PHONE_REGION

NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)


@pytest.fixture
def in_germany() -> Iterator[None]:
    token = DEFAULT_PHONE_REGION.set("DE")
    yield
    DEFAULT_PHONE_REGION.reset(token)


@pytest.mark.parametrize(
    "sender", ["898287", "40404", "Amazon.de", "DHL-Express", "AT&T", "BANK 1"]
)
def test_a_service_sender_is_nobody_even_where_numbers_are_read_nationally(
    in_germany: None, sender: str
) -> None:
    """Twilio writes people's numbers with their "+": in Germany, `898287` is not `+49898287`."""
    assert party(sender) is None


def on_whatsapp(sid: str, **fields: str) -> InboundMessage:
    """A message from +34 612 34 56 78 to the business's Twilio WhatsApp sender."""
    form = {"MessageSid": sid, "From": "whatsapp:+34612345678", "To": "whatsapp:+14155552671"}
    return InboundMessage.model_validate({**form, **fields})


def test_a_whatsapp_message_through_twilio_is_recorded_on_whatsapp() -> None:
    message = on_whatsapp("SM1", Body="STOP")
    read = StatusCallback.model_validate(
        {
            "MessageSid": "SM2",
            "MessageStatus": "read",
            "From": "whatsapp:+14155552671",
            "To": "whatsapp:+34612345678",
        }
    )

    [written] = incoming(message, NOW, "t", b"pepper")
    seen = status(read, NOW, "t", b"pepper")

    assert isinstance(written.payload, MessageExchanged)
    assert (written.channel, written.identifiers.phone) == ("whatsapp", "+34612345678")
    assert written.identifiers.whatsapp_id == "34612345678"
    assert written.conversation is not None
    assert written.conversation.thread == "+14155552671:+34612345678"
    assert seen is not None
    assert (seen.channel, seen.identifiers.whatsapp_id) == ("whatsapp", "34612345678")


def test_a_whatsapp_id_in_a_form_its_country_dropped_is_the_number_dialled_today() -> None:
    """As channel-whatsapp records Meta's: the id as sent, the phone as dialled now."""
    found = party("whatsapp:+5215512345678")

    assert found is not None
    channel, customer, _ = found
    assert (channel, customer.whatsapp_id, customer.phone) == (
        "whatsapp",
        "5215512345678",
        "+525512345678",
    )


def test_a_whatsapp_id_no_number_is_dialled_as_today_is_the_customer_still() -> None:
    """Benin's eight-digit numbers became ten in 2024; a WhatsApp id may still carry one. It was
    refused with 422 (Twilio never posts a message again); Meta's is kept by its id alone."""
    message = on_whatsapp("SM9", Body="Bonjour", From="whatsapp:+22997123456")

    [written] = incoming(message, NOW, "t", b"pepper")

    assert (written.channel, written.identifiers.whatsapp_id) == ("whatsapp", "22997123456")
    assert written.identifiers.phone is None
    assert written.conversation is not None
    assert written.conversation.thread == "+14155552671:+22997123456"


def test_another_channels_address_is_ignored_not_refused() -> None:
    assert party("messenger:2456") is None


@pytest.mark.parametrize(
    ("point", "kept"),
    [
        (
            {"Latitude": "41.3874", "Longitude": "2.1686", "Label": "Shop", "Address": "Rambla"},
            True,
        ),
        ({"Latitude": "41.3874", "Longitude": "2.1686"}, True),
        ({"Latitude": "91", "Longitude": "2.1686"}, False),
        ({"Latitude": "nan", "Longitude": "2.1686"}, False),
        ({"Latitude": "north"}, False),
    ],
)
def test_a_location_shared_on_whatsapp_through_twilio_is_kept(
    point: dict[str, str], kept: bool
) -> None:
    """Twilio passes a shared location as `Latitude`/`Longitude` with an empty `Body` and no
    media: it was taken for an empty message and dropped, and Twilio never posts it again."""
    message = on_whatsapp("SM3", Body="", NumMedia="0", **point)

    written = incoming(message, NOW, "t", b"pepper")

    if not kept:
        assert written == []
        return
    [shared] = written
    assert isinstance(shared.payload, MessageExchanged)
    [location] = shared.payload.attachments
    assert (location.kind, location.latitude, location.longitude) == ("location", 41.3874, 2.1686)
    assert location.caption == point.get("Label")


def test_a_location_name_longer_than_the_contract_holds_is_cut_saying_so() -> None:
    message = on_whatsapp("SM4", Latitude="41.3874", Longitude="2.1686", Label="x" * 5000)

    [shared] = incoming(message, NOW, "t", b"pepper")

    assert isinstance(shared.payload, MessageExchanged)
    assert shared.payload.attachments[0].caption == "x" * 4000
    assert [(a.field, a.reason) for a in shared.adjustments] == [
        ("payload.attachments.caption", "truncated")
    ]
