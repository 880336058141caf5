"""Signing test requests the way providers sign them, so tests exercise the real verification."""

from __future__ import annotations

from hilo.providers.meta import signed_headers as meta_signed
from hilo.providers.twilio import signed_headers as twilio_signed

__all__ = ["meta_signed", "twilio_signed"]
