"""Twilio Messaging webhook parameters, as Twilio documents them (signing: `hilo.providers`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InboundMessage(BaseModel):
    """An incoming SMS/MMS webhook (form fields keep Twilio's names)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    MessageSid: str = Field(min_length=2)
    From: str = Field(min_length=1)
    To: str = Field(min_length=1)
    Body: str = ""
    NumMedia: int = Field(default=0, ge=0, le=10)
    OptOutType: str | None = Field(
        default=None,
        description="Advanced Opt-Out: STOP, START or HELP when the body is one of its keywords.",
    )


class StatusCallback(BaseModel):
    """A delivery status callback for an outbound message."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    MessageSid: str = Field(min_length=2)
    MessageStatus: str
    From: str = Field(min_length=1)
    To: str = Field(min_length=1)
    ErrorCode: str | None = None
