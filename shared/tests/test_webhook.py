"""Webhook signatures are checked in constant time and fail with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from hilo.providers.twilio import signed_string, verify_twilio
from hilo.webhook import (
    SignatureError,
    secrets_match,
    verify_base64_signature,
    verify_hex_signature,
)

BODY = b'{"object":"whatsapp_business_account"}'


def meta_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_correct_hex_signature_passes() -> None:
    verify_hex_signature("s3cret", BODY, meta_signature("s3cret", BODY), prefix="sha256=")


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "signature header is missing"),
        ("", "signature header is missing"),
        ("md5=abc", "signature must start with 'sha256='"),
        (meta_signature("other", BODY), "signature does not match the body"),
        (meta_signature("s3cret", BODY + b" "), "signature does not match the body"),
    ],
)
def test_wrong_hex_signatures_fail_with_a_reason(signature: str | None, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_hex_signature("s3cret", BODY, signature, prefix="sha256=")


def test_base64_sha1_signature_as_twilio_sends_it() -> None:
    message = b"https://example.com/smsBody=hi"
    signature = base64.b64encode(hmac.new(b"token", message, hashlib.sha1).digest()).decode()

    verify_base64_signature("token", message, signature, digest="sha1")
    with pytest.raises(SignatureError):
        verify_base64_signature("token", message + b"x", signature, digest="sha1")


def test_secrets_match() -> None:
    assert secrets_match("verify-me", "verify-me")
    assert not secrets_match("verify-me", "verify-you")
    assert not secrets_match("verify-me", None)


@pytest.mark.parametrize(
    "signature",
    [
        "sha256=é" + "0" * 63,
        "sha256=" + "\u00ff" * 64,
        "sha256=\u2603",
        "sha256=\ud800",
    ],
)
def test_a_non_ascii_hex_signature_is_a_mismatch_not_a_crash(signature: str) -> None:
    with pytest.raises(SignatureError, match="signature does not match the body"):
        verify_hex_signature("s3cret", BODY, signature, prefix="sha256=")


@pytest.mark.parametrize("signature", ["é" * 28, "\u00e9\u00e8==", "\ud83d"])
def test_a_non_ascii_base64_signature_is_a_mismatch_not_a_crash(signature: str) -> None:
    with pytest.raises(SignatureError, match="signature does not match the request"):
        verify_base64_signature("token", b"https://example.com/sms", signature, digest="sha1")


def test_secrets_never_match_text_no_utf8_can_hold() -> None:
    assert not secrets_match("verify-me", "\ud800")
    assert not secrets_match("verify-me", "vérify-me")
    assert secrets_match("clé", "clé")


def test_twilio_signs_names_sorted_and_a_repeated_name_s_distinct_values_sorted() -> None:
    """As twilio-python's `RequestValidator.compute_signature`: a form repeating a name (in any
    order, a value twice) is signed over `name + value` once per distinct value, sorted."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [("To", "+1"), ("Media", "b"), ("Body", "hi"), ("Media", "a"), ("Media", "b")]

    assert signed_string(url, params) == (url + "Bodyhi" + "Mediaa" + "Mediab" + "To+1").encode()


@pytest.mark.parametrize(
    ("configured", "checked"),
    [
        (
            "https://hilo.example.com:443/webhooks/twilio/sms",
            "https://hilo.example.com/webhooks/twilio/sms",
        ),
        (
            "https://hilo.example.com/webhooks/twilio/sms",
            "https://hilo.example.com:443/webhooks/twilio/sms",
        ),
        ("http://hilo.example.com:80/sms?x=1", "http://hilo.example.com/sms?x=1"),
    ],
)
def test_a_twilio_signature_holds_with_the_default_port_written_out_or_left_out(
    configured: str, checked: str
) -> None:
    """As twilio-python's `RequestValidator.validate`: the URL configured at Twilio may say
    `:443` where the service's public base URL does not, and the other way round."""
    params = [("From", "+34612345678"), ("Body", "hola")]
    digest = hmac.new(b"token", signed_string(configured, params), hashlib.sha1).digest()

    verify_twilio("token", checked, params, base64.b64encode(digest).decode())


def test_a_twilio_signature_for_another_port_or_host_still_fails() -> None:
    params = [("Body", "hola")]
    url = "https://hilo.example.com:8443/sms"
    digest = hmac.new(b"token", signed_string(url, params), hashlib.sha1).digest()

    for checked in ("https://hilo.example.com/sms", "https://other.example.com:8443/sms"):
        with pytest.raises(SignatureError):
            verify_twilio("token", checked, params, base64.b64encode(digest).decode())
