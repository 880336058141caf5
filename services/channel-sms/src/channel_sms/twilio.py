"""Twilio's request signature and webhook parameters, as Twilio documents them.

The signature is base64(HMAC-SHA1(auth token, public URL + each POST parameter's name and value,
sorted by name)); parameters repeated in a form are all included, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from hilo.webhook import verify_base64_signature

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def signed_string(url: str, params: Sequence[tuple[str, str]]) -> bytes:
    return (
        url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    ).encode()


def verify_twilio(
    auth_token: str, url: str, params: Sequence[tuple[str, str]], signature: str | None
) -> None:
    """Raise `SignatureError` unless `signature` is Twilio's for this URL and form."""
    verify_base64_signature(auth_token, signed_string(url, params), signature, digest="sha1")


class InboundMessage(BaseModel):
    """An incoming SMS/MMS webhook (form fields keep Twilio's names)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    MessageSid: str = Field(min_length=2)
    From: str = Field(min_length=1)
    To: str = Field(min_length=1)
    Body: str = ""
    NumMedia: int = Field(default=0, ge=0, le=10)


class StatusCallback(BaseModel):
    """A delivery status callback for an outbound message."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    MessageSid: str = Field(min_length=2)
    MessageStatus: str
    From: str = Field(min_length=1)
    To: str = Field(min_length=1)
    ErrorCode: str | None = None
