"""Twilio webhooks (Messaging and Voice): form-encoded, signed over the public URL.

The signature is base64(HMAC-SHA1(auth token, public URL + each POST parameter's name and value,
sorted by name)); parameters repeated in a form are all included, in order. Twilio signs the URL
it called, which a reverse proxy hides from the service: the public base URL is configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import structlog
from fastapi import Request, Response
from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, ValidationError

from hilo.catch_up import ProviderLog, ReadBack
from hilo.channel import (
    Channel,
    ChannelSettings,
    Rejected,
    request_body,
    signature_rejection,
    validation_rejection,
)
from hilo.contract import Interaction
from hilo.providers.twilio_api import TwilioLists
from hilo.settings import CommaSeparated
from hilo.webhook import SignatureError, verify_base64_signature

log = structlog.get_logger(__name__)

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
    twilio_previous_auth_token: SecretStr | None = Field(
        default=None,
        description="During a rotation, the token being replaced: webhooks signed with it are "
        "accepted too. Twilio signs with its primary token until the new one is promoted; set "
        "HILO_TWILIO_AUTH_TOKEN to the new (secondary) token and this to the old, promote it, "
        "then clear this. A webhook refused for its signature is never sent again.",
    )
    public_base_url: AnyHttpUrl = Field(
        description="The base URL Twilio calls (as typed in the Twilio console), e.g. "
        "https://hooks.example.com: Twilio signs the full public URL, which a proxy hides."
    )
    twilio_account_sid: str | None = Field(
        default=None,
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Twilio account SID (AC...), for Twilio's REST API (authenticated with "
        "HILO_TWILIO_AUTH_TOKEN): what webhooks missed is read back from Twilio's logs.",
    )
    twilio_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.twilio.com"),
        description="Base URL of Twilio's REST API (a stand-in's address in tests).",
    )
    twilio_catch_up_numbers: CommaSeparated[str] = Field(
        default_factory=list,
        description="Twilio numbers (E.164; whatsapp:+E.164 for SMS) whose messages or calls "
        "are read back from Twilio's logs after webhooks were refused (MongoDB away) or found "
        "no instance running: Twilio never posts them again. Needs HILO_TWILIO_ACCOUNT_SID.",
    )
    catch_up_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3_600,
        description="How often an instance moves the channel's watermark and reads back from "
        "Twilio's logs what refused or unanswered webhooks missed (hilo.catch_up).",
    )
    catch_up_max_hours: float = Field(
        default=72.0,
        gt=0,
        le=24 * 30,
        description="How far back a read-back goes at most (a channel stopped for a week reads "
        "back its last 72 hours).",
    )

    def signing_tokens(self) -> list[str]:
        """The tokens a webhook may be signed with: the current one, then the one a rotation
        replaces (never an empty one: it would let anyone sign)."""
        previous = self.twilio_previous_auth_token
        rotated = [previous.get_secret_value()] if previous else []
        return [self.twilio_auth_token.get_secret_value(), *(t for t in rotated if t)]

    def catch_up_numbers(self) -> list[str]:
        """The numbers whose messages or calls are read back."""
        return [number.strip() for number in self.twilio_catch_up_numbers if number.strip()]


def twilio_read_back(
    channel: str,
    settings: TwilioChannelSettings,
    provider_log: Callable[[TwilioLists, list[str]], ProviderLog],
) -> ReadBack | None:
    """How the channel reads back from Twilio's logs; `None` (said once in the log) without an
    account SID or a number to read."""
    numbers = settings.catch_up_numbers()
    if settings.twilio_account_sid is None or not numbers:
        log.warning(
            "read_back_off",
            channel=channel,
            reason="set HILO_TWILIO_ACCOUNT_SID and HILO_TWILIO_CATCH_UP_NUMBERS (in compose "
            "HILO_TWILIO_SMS_NUMBERS or HILO_TWILIO_VOICE_NUMBERS): what a refused or "
            "unanswered webhook brought is otherwise lost",
        )
        return None
    lists = TwilioLists(
        api_url=settings.twilio_api_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
    )
    return ReadBack(
        provider_log(lists, numbers),
        settings.catch_up_seconds,
        timedelta(hours=settings.catch_up_max_hours),
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
    body = await request_body(request, settings)
    try:
        params = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise Rejected(
            400, "invalid_body", "body is not application/x-www-form-urlencoded"
        ) from None
    url = str(settings.public_base_url).rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature")
    refusals: list[SignatureError] = []
    for token in settings.signing_tokens():
        try:
            verify_twilio(token, url, params, signature)
            break
        except SignatureError as exc:
            refusals.append(exc)
    else:
        raise signature_rejection(refusals[0]) from None
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise validation_rejection(exc) from None
