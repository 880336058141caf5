"""Calls → Hilo interactions. Pure: no I/O.

Twilio reports a call several times as it progresses; only the final status is recorded (one
journey entry per call), together with the contact centre's outcome when it sends one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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


def from_twilio(
    callback: StatusCallback, received_at: datetime, instance: str
) -> Interaction | None:
    """The call's final status; `None` for progress reports (queued, ringing, in-progress)."""
    status = FINAL_STATUSES.get(callback.CallStatus)
    if status is None:
        return None
    customer = callback.To if callback.outbound else callback.From
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{callback.CallSid}:{callback.CallStatus}",
        identifiers=Identifiers(phone=normalise_phone(customer)),
        conversation=call_conversation(callback.CallSid),
        occurred_at=callback.Timestamp or received_at,
        received_at=received_at,
        payload=CallHappened(
            direction=Direction.OUTBOUND if callback.outbound else Direction.INBOUND,
            status=status,
            provider_call_id=callback.CallSid,
            duration_seconds=callback.CallDuration,
        ),
    )


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
