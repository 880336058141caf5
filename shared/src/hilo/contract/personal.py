"""Which fields of an event identify or describe a person: what sealing takes out of the clear.

One list for every producer and reader: channels seal these fields of an interaction before it
goes on `interactions`, the customer-profile service seals the same fields of a journey entry
before it goes on `journey`, and `hilo.sealing` puts them back for whoever holds the keys. What
stays in the clear is what journey-wide measurement needs without knowing who: ids, channel,
type, times, amounts, products, statuses, store ids, consent purposes, survey scores.

A channel that adds a payload field holding personal data adds it here; a test fails for a
payload kind that is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

Path = tuple[str, ...]

PAYLOAD_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "message": (
        "text",
        "subject",
        "attachments",
        "interactive_reply",
        "provider_message_id",
        "reply_to_provider_message_id",
        "references",
    ),
    "message_status": ("error", "provider_message_id"),
    "page_view": ("url", "referrer", "path", "title", "name"),
    "product_view": (),
    "cart": (),
    "order": ("coupons",),
    "refund": ("reason",),
    "call": ("transcript", "summary"),
    "store_visit": (),
    "survey_answer": ("comment",),
    "consent": (),
    "identify": ("traits", "previous_anonymous_id"),
    "conversation_done": (),
    "custom": ("properties",),
}
"""Per payload kind: its fields that can hold personal data (free text, traits, links, codes a
customer presented (a single-use voucher, a referral code, a gift card are one person's), and the
provider's message ids: a WhatsApp `wamid` is base64 of a message key holding the customer's
number, Messenger's ids of postbacks and reactions are built from the person's page-scoped id,
and an email's Message-ID often names the sender's host)."""

INTERACTION_FIELDS: Final[tuple[Path, ...]] = (("identifiers",), ("conversation", "thread"))
"""Envelope fields of an interaction: the identifiers, and the provider's thread reference (often
a phone number or an email address)."""

OUTBOUND_FIELDS: Final[tuple[Path, ...]] = (*INTERACTION_FIELDS, ("payload", "template"))
"""Fields of an outbound command: the recipient, the thread, a template's parameters; with the
`message` kind's payload fields (the text and subject)."""

JOURNEY_FIELDS: Final[tuple[Path, ...]] = (*INTERACTION_FIELDS, ("summary",))
"""Fields of a journey entry: the same, plus the one-line summary (it quotes the message)."""


def personal_paths(document: Mapping[str, Any], envelope: tuple[Path, ...]) -> list[Path]:
    """The paths to seal in this document: the envelope's, then its payload kind's."""
    payload = document.get("payload")
    kind = payload.get("kind") if isinstance(payload, Mapping) else None
    fields = PAYLOAD_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    return [*envelope, *(("payload", name) for name in fields)]
