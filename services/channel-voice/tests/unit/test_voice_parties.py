"""Who the customer is on a Twilio Voice leg (no infrastructure)."""

from __future__ import annotations

import pytest

from channel_voice.calls import StatusCallback
from channel_voice.translate import customer_party
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
    ],
)
def test_the_customer_of_a_leg(
    direction: str, from_: str, to: str, expected: tuple[str, Direction] | None
) -> None:
    assert customer_party(leg(direction, from_, to)) == expected
