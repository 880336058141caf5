"""Finding a customer from what a person types: a phone in any format, an email in any case, a
loyalty card, an order or receipt number, a customer id.

Every reading that the text allows is tried against the profile service (which normalises as
the channels do), and each customer found is listed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent_desk.profiles import ProfileApi

_PHONE_CHARACTERS = re.compile(r"^\+?[\d\s().\-/]{6,30}$")
_WHATSAPP_USER_ID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{6,128}")
"""A WhatsApp business-scoped user id: `US.13491208655302741918` (a user with a username)."""


@dataclass(frozen=True)
class Match:
    customer_id: str
    found_by: str
    """What the text was read as: `phone`, `email`, `loyalty_id`, `order`, `customer_id`..."""


def readings(text: str) -> list[str]:
    """The identifier kinds `text` may be, most likely first."""
    if "@" in text:
        return ["email"]
    kinds = ["whatsapp_user_id"] if _WHATSAPP_USER_ID.fullmatch(text) else []
    if _PHONE_CHARACTERS.match(text) and sum(c.isdigit() for c in text) >= 6:
        kinds += ["phone", "whatsapp_id"]
    return [*kinds, "loyalty_id", "order", "customer_id"]


async def find_customers(profiles: ProfileApi, text: str) -> list[Match]:
    """Every customer `text` identifies, under each reading, each customer once."""
    text = text.strip()
    if not text:
        return []
    found: dict[str, Match] = {}
    for kind in readings(text):
        customer = await _find(profiles, kind, text)
        if customer is not None and customer not in found:
            found[customer] = Match(customer, kind)
    return list(found.values())


async def _find(profiles: ProfileApi, kind: str, text: str) -> str | None:
    if kind == "order":
        return await profiles.by_order(text)
    if kind == "customer_id":
        profile = await profiles.profile(text)
        return None if profile is None else str(profile["customer_id"])
    found = await profiles.lookup(kind, text)
    if found is None and kind == "phone" and not text.startswith(("+", "00")):
        # Typed with its country code but no "+" (34 612 34 56 78): read in the deployment's
        # region it is another number, or none without one.
        found = await profiles.lookup(kind, "+" + "".join(c for c in text if c.isdigit()))
    return found
