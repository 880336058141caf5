"""Who the customer is on a Twilio Voice leg (no infrastructure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from channel_voice.calls import MAX_CALL_SECONDS, StatusCallback
from channel_voice.translate import call_start, customer_party
from hilo.contract import Direction

BUSINESS = "+14155552671"


def leg(direction: str, from_: str, to: str) -> StatusCallback:
    return StatusCallback.model_validate(
        {
            "CallSid": "CA1",
            "CallStatus": "completed",
            "Direction": direction,
            "From": from_,
            "To": to,
        }
    )


@pytest.mark.parametrize(
    ("direction", "from_", "to", "expected"),
    [
        ("inbound", "+34612345678", BUSINESS, ("+34612345678", Direction.INBOUND)),
        ("outbound-api", BUSINESS, "+34612345678", ("+34612345678", Direction.OUTBOUND)),
        # An agent calling from the Voice SDK or a SIP desk phone: the customer is `To`.
        ("inbound", "client:agent_ana", "+34612345678", ("+34612345678", Direction.OUTBOUND)),
        (
            "inbound",
            "sip:+14155552671@acme.sip.twilio.com",
            "sip:+34699333444@acme.sip.twilio.com",
            ("+34699333444", Direction.OUTBOUND),
        ),
        # Click-to-call: the API rings the agent first; that leg has no customer on it (the
        # business's number was recorded as an inbound caller).
        ("outbound-api", BUSINESS, "client:agent_ana", None),
        ("outbound-api", BUSINESS, "sip:desk-7@acme.sip.twilio.com", None),
        ("inbound", "client:agent_ana", "sip:desk@acme.sip.twilio.com", None),
        # Elastic SIP Trunking: the business's phone system calling out through Twilio
        # (terminating), and a customer calling into it (originating).
        ("trunking-terminating", BUSINESS, "+34612345678", ("+34612345678", Direction.OUTBOUND)),
        ("trunking-originating", "+34612345678", BUSINESS, ("+34612345678", Direction.INBOUND)),
    ],
)
def test_the_customer_of_a_leg(
    direction: str, from_: str, to: str, expected: tuple[str, Direction] | None
) -> None:
    assert customer_party(leg(direction, from_, to)) == expected


def test_a_duration_longer_than_twilio_allows_is_refused_and_the_longest_call_placed() -> None:
    """Found by the fuzz test: a duration of 10^20 s crashed the callback with a 500. The
    earliest `Timestamp` RFC 2822 reads is in year 100 (two-digit years are this era's), so
    the longest duration allowed before it always exists."""
    fields = {"CallSid": "CA1", "CallStatus": "completed", "Direction": "inbound"}
    parties = {"From": "+34612345678", "To": BUSINESS}
    with pytest.raises(ValidationError, match="CallDuration"):
        StatusCallback.model_validate({**fields, **parties, "CallDuration": "99999999999999999999"})
    longest = StatusCallback.model_validate(
        {
            **fields,
            **parties,
            "CallDuration": str(MAX_CALL_SECONDS),
            "Timestamp": "1 Jan 100 00:00 -0000",
        }
    )
    received = datetime(2026, 12, 5, tzinfo=UTC)

    earliest = datetime(100, 1, 1, tzinfo=UTC)
    assert call_start(longest, received) == earliest - timedelta(seconds=MAX_CALL_SECONDS)
