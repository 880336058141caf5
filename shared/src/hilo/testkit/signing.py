"""Signing test requests the way providers sign them, so tests exercise the real verification."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hilo.providers.twilio import signed_string
from hilo.webhook import hmac_sha256


def meta_signed(body: bytes, app_secret: str) -> dict[str, str]:
    """Headers of a Meta webhook (WhatsApp, Messenger, Instagram): `X-Hub-Signature-256`."""
    return {
        "X-Hub-Signature-256": "sha256=" + hmac_sha256(app_secret, body).hex(),
        "Content-Type": "application/json",
    }


def twilio_signed(url: str, params: list[tuple[str, str]], auth_token: str) -> dict[str, str]:
    """Headers of a Twilio webhook: base64 HMAC-SHA1 of the URL and the sorted parameters."""
    digest = hmac.new(auth_token.encode(), signed_string(url, params), hashlib.sha1).digest()
    return {
        "X-Twilio-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
