"""The campaign a page view or a clicked link came from, read the way analytics.js reads it.

One reading for every channel that sees links: the web collector (Segment's `context.campaign`,
else the page URL's `utm_` parameters) and the email channel (the link a recipient clicked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from hilo.contract.adjustments import LOOKS_PERSONAL, Truncations
from hilo.contract.payloads import MAX_CAMPAIGN_TEXT, Campaign, looks_personal

CAMPAIGN_KEYS: Final = {"name": "utm_campaign", "source": "utm_source", "medium": "utm_medium"}
"""A campaign's fields (Segment's `context.campaign`) and the URL parameters they come from."""


def utm_of(url: object) -> dict[str, str]:
    """The campaign a URL names, the last value of each parameter as analytics.js reads it. An
    unreadable URL (a stray bracket, a character no URL holds) names none."""
    if not isinstance(url, str):
        return {}
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {field: query[key][-1] for field, key in CAMPAIGN_KEYS.items() if key in query}


def campaign_from(told: object, url: object, cut: Truncations) -> Campaign | None:
    """The campaign: `told`'s fields (a `context.campaign`; ignored unless an object), each one
    missing from the URL. None when it has neither a name nor a source (nothing to count), and
    left out, noted, when a field holds an email address or a phone number (it would be
    published in the clear); a field longer than the contract holds is cut, noted."""
    fields = _usable(utm_of(url)) | _usable(told if isinstance(told, Mapping) else {})
    if any(looks_personal(text) for text in fields.values()):
        cut.note("payload.campaign", LOOKS_PERSONAL)
        return None
    if "name" not in fields and "source" not in fields:
        return None
    return Campaign.model_validate(
        {
            field: cut.clip(text, MAX_CAMPAIGN_TEXT, f"payload.campaign.{field}")
            for field, text in fields.items()
        }
    )


def first_impersonal(*candidates: object) -> str | None:
    """The first candidate name that is text and holds no address or number: an ad's headline
    that mentions `@shop` gives way to its id rather than lose the campaign."""
    for candidate in candidates:
        text = _text(candidate)
        if text and text.strip() and not looks_personal(text):
            return text.strip()
    return None


def _usable(given: Mapping[str, Any]) -> dict[str, str]:
    """The campaign fields given as text, trimmed; nulls, blanks and nested values are none (a
    `"source": null` leaves the URL's source standing)."""
    texts = {field: _text(given.get(field)) for field in CAMPAIGN_KEYS}
    return {field: text.strip() for field, text in texts.items() if text and text.strip()}


def _text(value: Any) -> str | None:
    """A scalar as text (`7` → `"7"`); nested values say nothing here."""
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)
