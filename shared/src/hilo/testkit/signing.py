"""Signing test requests the way providers sign them, so tests exercise the real verification."""

from __future__ import annotations

from hilo.webhook import hmac_sha256


def meta_signed(body: bytes, app_secret: str) -> dict[str, str]:
    """Headers of a Meta webhook (WhatsApp, Messenger, Instagram): `X-Hub-Signature-256`."""
    return {
        "X-Hub-Signature-256": "sha256=" + hmac_sha256(app_secret, body).hex(),
        "Content-Type": "application/json",
    }
