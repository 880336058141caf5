"""Verifying webhook signatures, the same way for every channel.

Providers sign the raw request body (or a canonical string) with a shared secret. Comparison is
constant-time (`hmac.compare_digest`) so the answer time reveals nothing about the secret, and on
bytes: a header or body may carry any character, which `compare_digest` refuses in a `str`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class SignatureError(ValueError):
    """The request is not signed by the provider: missing, malformed or wrong signature."""


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).digest()


def verify_hex_signature(
    secret: str | bytes, message: bytes, signature: str | None, *, prefix: str = ""
) -> None:
    """Check a hex HMAC-SHA256 signature such as Meta's `X-Hub-Signature-256: sha256=<hex>`."""
    if not signature:
        raise SignatureError("signature header is missing")
    if not signature.startswith(prefix):
        raise SignatureError(f"signature must start with {prefix!r}")
    expected = hmac_sha256(secret, message).hex()
    if not _same_text(expected, signature[len(prefix) :].strip().lower()):
        raise SignatureError("signature does not match the body")


def verify_base64_signature(
    secret: str | bytes, message: bytes, signature: str | None, *, digest: str = "sha256"
) -> None:
    """Check a base64 HMAC signature (Twilio signs with SHA-1, others with SHA-256)."""
    if not signature:
        raise SignatureError("signature header is missing")
    key = secret.encode() if isinstance(secret, str) else secret
    expected = base64.b64encode(hmac.new(key, message, digest).digest()).decode()
    if not _same_text(expected, signature.strip()):
        raise SignatureError("signature does not match the request")


def secrets_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a configured secret (verify token, API key)."""
    return given is not None and _same_text(expected, given)


def _same_text(expected: str, given: str) -> bool:
    """Constant-time equality of two texts as UTF-8; text no UTF-8 can hold (a lone surrogate
    from JSON) matches nothing."""
    try:
        given_bytes = given.encode()
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode(errors="surrogateescape"), given_bytes)
