"""What the voice channel receives: Twilio Voice status callbacks and contact-centre outcomes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from hilo.contract import CallStatus, Direction, Identifiers, rfc2822_time

MAX_CALL_SECONDS = 604_800
"""A week: Twilio ends every call within 24 hours (`timeLimit`), so a longer duration is not a
call's; the room above it keeps a call of the full 24 hours whatever Twilio rounds."""


OUTBOUND_TRUNKING = {"trunking-terminating"}
"""Twilio's direction of a call the business's own phone system places through a SIP trunk:
`From` is the business's number, as on `outbound-api`."""


class StatusCallback(BaseModel):
    """A Twilio Voice `StatusCallback` request (form fields keep Twilio's names)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    CallSid: str = Field(min_length=2)
    CallStatus: str
    Direction: str = Field(
        description="inbound, outbound-api, outbound-dial, trunking-terminating (a call out "
        "from the business's phone system over Elastic SIP Trunking) or trunking-originating"
    )
    From: str = Field(min_length=1)
    To: str = Field(min_length=1)
    CallDuration: int | None = Field(
        default=None, ge=0, le=MAX_CALL_SECONDS, description="Seconds; Twilio ends a call by 24 h."
    )
    ParentCallSid: str | None = Field(
        default=None, description="Set on a leg a <Dial> made: its parent is the customer's leg."
    )
    Timestamp: AwareDatetime | None = Field(
        default=None, description="RFC 2822, when Twilio sent it."
    )

    @field_validator("Timestamp", mode="before")
    @classmethod
    def _rfc2822(cls, value: object) -> object:
        """RFC 2822 dates (`hilo.contract.rfc2822_time`); Twilio writes UTC, with or without
        saying so."""
        if isinstance(value, str) and value:
            parsed = rfc2822_time(value, zone_less_as_utc=True)
            if parsed is None:
                raise ValueError("not an RFC 2822 date")
            return parsed
        return value or None

    @field_validator("CallDuration", "ParentCallSid", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return value or None

    @property
    def outbound(self) -> bool:
        return self.Direction.startswith("outbound") or self.Direction in OUTBOUND_TRUNKING


class CallOutcome(BaseModel):
    """`POST /v1/calls`: what the contact centre knows once a call ends.

    One outcome per call: the call id makes the event id, so posting it again is a retry (the
    journey keeps the first); it is posted once the wrap-up is complete.

    Sent by the contact-centre platform (or an agent's wrap-up form) for any call, Twilio's or
    not. `continues_conversation` names the conversation this call carries on (a chat that
    moved to the phone, or a call back after a dropped call), so the agent's view shows one
    conversation across channels.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    call_id: str = Field(min_length=1, max_length=200, examples=["CA5ef8732a3c49700934481addd5"])
    customer: Identifiers
    direction: Direction
    status: CallStatus
    started_at: AwareDatetime
    duration_seconds: int | None = Field(
        default=None, ge=0, le=MAX_CALL_SECONDS, description="Seconds; at most a week."
    )
    agent_id: str | None = Field(default=None, max_length=200)
    outcome: str | None = Field(default=None, max_length=200, examples=["callback_promised"])
    disposition: str | None = Field(default=None, max_length=200, examples=["order_status"])
    transcript: str | None = Field(default=None, max_length=500_000)
    summary: str | None = Field(default=None, max_length=10_000)
    continues_conversation: str | None = Field(
        default=None, max_length=200, description="Hilo conversation id this call carries on."
    )
    customer_entry: Literal["verified", "typed"] = Field(
        default="verified",
        description="How the contact centre knows who called: `verified` (the default), the "
        "caller was identified (a caller id matched to the account, security questions, the "
        "CRM record the agent opened); `typed`, what the caller said, typed by the agent. A "
        "typed customer's call joins their journey, but never adds a new contact to a known "
        "customer nor joins two: a person confirms that (`GET /v1/merge-requests`), since a "
        "caller can give someone else's email.",
    )
