"""Twilio webhooks (Messaging and Voice): form-encoded, signed over the public URL.

The signature is base64(HMAC-SHA1(auth token, public URL + each POST parameter's name and value,
sorted by name)); parameters repeated in a form are all included, in order. Twilio signs the URL
it called, which a reverse proxy hides from the service: the public base URL is configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import Request, Response
from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, ValidationError

from hilo.channel import (
    Channel,
    ChannelSettings,
    Rejected,
    raw_body,
    signature_rejection,
    validation_rejection,
)
from hilo.contract import Interaction
from hilo.webhook import SignatureError, verify_base64_signature

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


async def answered_with_twiml(channel: Channel, interactions: Sequence[Interaction]) -> Response:
    """Publish what a webhook holds (one with nothing to record is counted as ignored), then
    answer it with empty TwiML: Twilio asks nothing more of the call or message."""
    await channel.publish(interactions, ignored=0 if interactions else 1)
    return Response(EMPTY_TWIML, media_type="text/xml")


Form = TypeVar("Form", bound=BaseModel)


class TwilioChannelSettings(ChannelSettings):
    """Settings of a channel Twilio calls (environment variables, prefix `HILO_`)."""

    twilio_auth_token: SecretStr = Field(
        description="Twilio auth token: verifies X-Twilio-Signature."
    )
    public_base_url: AnyHttpUrl = Field(
        description="The base URL Twilio calls (as typed in the Twilio console), e.g. "
        "https://hooks.example.com: Twilio signs the full public URL, which a proxy hides."
    )


def signed_string(url: str, params: Sequence[tuple[str, str]]) -> bytes:
    """What Twilio signs: the URL, then each parameter name with its value, names sorted; a
    name given more than once has each distinct value once, sorted (as twilio-python's
    `RequestValidator.compute_signature` builds it)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    return (
        url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    ).encode()


def signed_headers(url: str, params: Sequence[tuple[str, str]], auth_token: str) -> dict[str, str]:
    """Headers Twilio sends with this form posted to `url` (for simulators and tests)."""
    digest = hmac.new(auth_token.encode(), signed_string(url, params), hashlib.sha1).digest()
    return {
        "X-Twilio-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def verify_twilio(
    auth_token: str, url: str, params: Sequence[tuple[str, str]], signature: str | None
) -> None:
    """Raise `SignatureError` unless `signature` is Twilio's for this URL and form: the URL with
    its default port written out or left out, as Twilio's own validators accept it (the URL
    configured at Twilio may say `:443`, and `HILO_PUBLIC_BASE_URL` is read without it)."""
    with_port, without_port = _port_forms(url)
    try:
        verify_base64_signature(
            auth_token, signed_string(without_port, params), signature, digest="sha1"
        )
    except SignatureError:
        verify_base64_signature(
            auth_token, signed_string(with_port, params), signature, digest="sha1"
        )


def _port_forms(url: str) -> tuple[str, str]:
    """`url` with its scheme's default port written out, and without it (another port stays)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None or parts.port not in (None, default):
        return url, url
    host = parts.hostname or ""
    auth = parts.netloc.rpartition("@")[0]
    prefix = f"{auth}@" if auth else ""
    host = f"[{host}]" if ":" in host else host
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    without_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    return with_port, without_port


async def verified_form(
    request: Request, model: type[Form], settings: TwilioChannelSettings
) -> Form:
    """Parse a Twilio webhook form into `model` once its signature is proven (4xx otherwise)."""
    body = await raw_body(request, settings.max_body_bytes)
    try:
        params = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise Rejected(
            400, "invalid_body", "body is not application/x-www-form-urlencoded"
        ) from None
    url = str(settings.public_base_url).rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    try:
        verify_twilio(
            settings.twilio_auth_token.get_secret_value(),
            url,
            params,
            request.headers.get("x-twilio-signature"),
        )
    except SignatureError as exc:
        raise signature_rejection(exc) from None
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise validation_rejection(exc) from None
