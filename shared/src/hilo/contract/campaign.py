"""The campaign a page view or a clicked link came from, read the way analytics.js reads it.

One reading for every channel that sees links: the web collector (Segment's `context.campaign`,
else the page URL's `utm_` parameters) and the email channel (the link a recipient clicked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import SplitResult, parse_qs, urlsplit

from hilo.contract.adjustments import LOOKS_PERSONAL, Truncations
from hilo.contract.payloads import MAX_CAMPAIGN_TEXT, Campaign, looks_personal

CAMPAIGN_KEYS: Final = {"name": "utm_campaign", "source": "utm_source", "medium": "utm_medium"}
"""A campaign's fields (Segment's `context.campaign`) and the URL parameters they come from."""


def utm_of(url: object, *, plus_as_space: bool = True) -> dict[str, str]:
    """The campaign a URL names, the last value of each parameter as analytics.js reads it (a
    `+` is a space). An unreadable URL (a stray bracket, a character no URL holds) names none.
    `plus_as_space=False` keeps a `+` as written: `utm_source=+34612345678` is a number."""
    parts = split_url(url)
    if parts is None:
        return {}
    query = parts.query if plus_as_space else parts.query.replace("+", "%2B")
    values = parse_qs(query)
    return {field: values[key][-1] for field, key in CAMPAIGN_KEYS.items() if key in values}


def split_url(url: object) -> SplitResult | None:
    """A link's parts, or None for what no parser reads (a stray bracket, a character no URL
    holds): kept as the text it is, read for nothing."""
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url)
    except ValueError:
        return None


def campaign_from(told: object, url: object, cut: Truncations) -> Campaign | None:
    """The campaign: `told`'s fields (a `context.campaign`; ignored unless an object), each one
    missing from the URL. None when it has neither a name nor a source (nothing to count), and
    left out, noted, when a field holds an email address or a phone number (it would be
    published in the clear); a field longer than the contract holds is cut, noted."""
    fields = _usable(utm_of(url)) | _usable(told if isinstance(told, Mapping) else {})
    if any(looks_personal(text) for text in [*fields.values(), *_as_written(url)]):
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


def ad_campaign(
    names: Sequence[object], source: str, medium: str, cut: Truncations
) -> Campaign | None:
    """The campaign of an ad that opened a chat, named by the first of `names` (its title, then
    its id) that is text and holds no address or number: a headline that mentions `@shop` gives
    way to the id, noted. None when no name is left: a source alone would take an order's
    credit from a campaign that has one."""
    usable = [text.strip() for name in names if (text := _text(name)) and text.strip()]
    named = [text for text in usable if not looks_personal(text)]
    if len(named) < len(usable):
        cut.note("payload.campaign.name", LOOKS_PERSONAL)
    if not named:
        return None
    return campaign_from({"name": named[0], "source": source, "medium": medium}, None, cut)


def _as_written(url: object) -> list[str]:
    """The URL's campaign values with a leading `+` kept, a number's (the ones after it are
    spaces); none to read again when the URL has no `+`."""
    if not isinstance(url, str) or "+" not in url:
        return []
    return [v[:1] + v[1:].replace("+", " ") for v in utm_of(url, plus_as_space=False).values()]


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
