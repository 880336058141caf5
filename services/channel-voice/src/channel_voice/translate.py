"""Calls → Hilo interactions. Pure: no I/O.

Twilio reports a call several times as it progresses; only the final status is recorded (one
journey entry per call), together with the contact centre's outcome when it sends one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from channel_voice.calls import CallOutcome, StatusCallback
from hilo.contract import (
    Adjustment,
    CallHappened,
    CallStatus,
    Conversation,
    Direction,
    Identifiers,
    Interaction,
    conversation_id,
    new_interaction,
    normalise_phone,
)

CHANNEL = "voice"
FINAL_STATUSES = {
    "completed": CallStatus.COMPLETED,
    "busy": CallStatus.BUSY,
    "no-answer": CallStatus.NO_ANSWER,
    "failed": CallStatus.FAILED,
    "canceled": CallStatus.CANCELED,
}


def call_conversation(call_id: str, continues: str | None = None) -> Conversation:
    """A call is a conversation of its own; the contact centre may say what it continues."""
    return Conversation(id=conversation_id(CHANNEL, call_id), thread=call_id, continues=continues)


SOFTPHONES = ("client:", "sip:")
"""Parties that are the business's side of a call: an agent's Voice SDK client or SIP phone
(unless a SIP address is a phone number: `sip:+34612345678@acme.sip.twilio.com`, the number an
agent dialled from a SIP desk phone)."""


def from_twilio(
    callback: StatusCallback, received_at: datetime, instance: str
) -> Interaction | None:
    """The call's final status; `None` for progress reports (queued, ringing, in-progress), for
    a leg a `<Dial>` made (its parent leg records the call, with the customer on it: a child
    leg's far end is whoever was dialled, an agent's phone when the call was forwarded), and
    for a call between the business's own softphones."""
    status = FINAL_STATUSES.get(callback.CallStatus)
    if status is None or callback.ParentCallSid is not None:
        return None
    party = customer_party(callback)
    if party is None:
        return None
    customer, direction = party
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{callback.CallSid}:{callback.CallStatus}",
        identifiers=Identifiers(phone=normalise_phone(customer)),
        conversation=call_conversation(callback.CallSid),
        occurred_at=call_start(callback, received_at),
        received_at=received_at,
        payload=CallHappened(
            direction=direction,
            status=status,
            provider_call_id=callback.CallSid,
            duration_seconds=callback.CallDuration,
        ),
    )


def call_start(callback: StatusCallback, received_at: datetime) -> datetime:
    """When the call began: Twilio reports a final status when the call ends (`Timestamp`, else
    when it arrived), its `CallDuration` before. A call sits in the journey at its start, as
    the contact centre's outcome of it does (`started_at`)."""
    ended = callback.Timestamp or received_at
    return ended - timedelta(seconds=callback.CallDuration or 0)


def customer_party(callback: StatusCallback) -> tuple[str, Direction] | None:
    """The customer's number and the call's direction as the business sees it: `From` of an
    inbound call, `To` of an outbound one. An inbound call from an agent's softphone (a call an
    agent placed from the Voice SDK reaches Twilio as inbound from `client:...`) is the agent
    calling `To`. None when no customer is on this leg: an outbound call to a softphone is the
    agent's leg of a click-to-call (its `From` is the business's own number; the customer's
    leg is a child leg, which the contact centre's outcome, `POST /v1/calls`, records)."""
    if not callback.outbound and not _softphone(callback.From):
        return callback.From, Direction.INBOUND
    if not _softphone(callback.To):
        return callback.To, Direction.OUTBOUND
    dialled = _sip_number(callback.To)  # a SIP phone dialling a number (`sip:+34…@domain`)
    return None if dialled is None else (dialled, Direction.OUTBOUND)


def _softphone(party: str) -> bool:
    return party.lower().startswith(SOFTPHONES)


def _sip_number(party: str) -> str | None:
    """The number a SIP address dials when its user part is one in international form
    (`sip:+34612345678@acme.sip.twilio.com;transport=udp`); None for any other party. Only
    `To` is read so: a `From` on SIP is the business's phone, whatever its user part."""
    if not party.lower().startswith("sip:"):
        return None
    user = party[4:].split("@", 1)[0].split(";", 1)[0]
    return user if user.startswith("+") and user[1:].isdigit() else None


def from_contact_centre(
    outcome: CallOutcome,
    received_at: datetime,
    instance: str,
    adjustments: Sequence[Adjustment] = (),
) -> Interaction:
    """The contact centre's word on a call; `adjustments` names contacts dropped as invalid."""
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{outcome.call_id}:outcome",
        identifiers=outcome.customer,
        conversation=call_conversation(outcome.call_id, outcome.continues_conversation),
        occurred_at=outcome.started_at,
        received_at=received_at,
        identity_trust="claimed" if outcome.customer_entry == "typed" else "verified",
        payload=CallHappened(
            direction=outcome.direction,
            status=outcome.status,
            provider_call_id=outcome.call_id,
            duration_seconds=outcome.duration_seconds,
            outcome=outcome.outcome,
            disposition=outcome.disposition,
            agent_id=outcome.agent_id,
            transcript=outcome.transcript,
            summary=outcome.summary,
        ),
        adjustments=adjustments,
    )
