"""Finding a customer from what a person types: a phone in any format, an email in any case, a
loyalty card, an order or receipt number, a customer id.

Every reading that the text allows is tried against the profile service (which normalises as
the channels do), and each customer found is listed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent_desk.profiles import ProfileApi
from hilo.contract import normalise_phone

_PHONE_CHARACTERS = re.compile(r"^\+?[\d\s().\-/]{6,30}$")
_WHATSAPP_USER_ID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{6,128}")
"""A WhatsApp business-scoped user id: `US.13491208655302741918` (a user with a username)."""


@dataclass(frozen=True)
class Match:
    customer_id: str
    found_by: str
    """What the text was read as: `phone`, `email`, `loyalty_id`, `order`, `customer_id`..."""


_ADDRESS_SCHEMES = re.compile(r"^(whatsapp|tel|sms):\s*", re.IGNORECASE)
"""How a number is written when copied from Twilio's logs or a link: `whatsapp:+34…`."""
_DASHES_AND_SPACES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", "-"))
_DASHES_AND_SPACES.update(dict.fromkeys(map(ord, "\u00a0\u2007\u202f"), " "))


def as_address(text: str) -> str:
    """The text as a phone or WhatsApp reading takes it: with typographic dashes and
    non-breaking spaces as plain ones, and without an address scheme (`tel:+34…`,
    `whatsapp:US.1349…`). Other readings (an order, a card) take the text as typed: `TEL:004217`
    may be a receipt of a store called TEL."""
    text = text.strip().translate(_DASHES_AND_SPACES)
    return _ADDRESS_SCHEMES.sub("", text).strip()


ADDRESS_KINDS = frozenset({"phone", "whatsapp_id", "whatsapp_user_id"})
"""Readings of the text as an address (`as_address`)."""


def readings(text: str) -> list[str]:
    """The identifier kinds `text` may be, most likely first."""
    if "@" in text:
        return ["email"]
    address = as_address(text)
    kinds = ["whatsapp_user_id"] if _WHATSAPP_USER_ID.fullmatch(address) else []
    if _PHONE_CHARACTERS.match(address) and sum(c.isdigit() for c in address) >= 6:
        kinds += ["phone", "whatsapp_id"]
    return [*kinds, "loyalty_id", "order", "customer_id"]


async def find_customers(profiles: ProfileApi, text: str, region: str | None = None) -> list[Match]:
    """Every customer `text` identifies, under each reading, each customer once. `region` is
    the deployment's `HILO_DEFAULT_PHONE_REGION`, which the profile API reads numbers in."""
    text = text.strip()
    if not text:
        return []
    found: dict[str, Match] = {}
    for kind in readings(text):
        value = as_address(text) if kind in ADDRESS_KINDS else text
        customer = await _find(profiles, kind, value, region)
        if customer is not None and customer not in found:
            found[customer] = Match(customer, kind)
    return list(found.values())


async def _find(profiles: ProfileApi, kind: str, text: str, region: str | None) -> str | None:
    if kind == "order":
        return await profiles.by_order(text)
    if kind == "customer_id":
        profile = await profiles.profile(text)
        return None if profile is None else str(profile["customer_id"])
    found = await profiles.lookup(kind, text)
    if found is None and kind == "phone" and (international := _international(text, region)):
        found = await profiles.lookup(kind, international)
    return found


def _international(text: str, region: str | None) -> str | None:
    """The number read as international (`+` and its digits), when the deployment's region
    reads the text as no valid number: typed with its country code but no "+"
    (34 612 34 56 78), or after `00` in a region that dials abroad otherwise (the US: 011).
    None when the text has its "+", or is a valid number in the region: a valid national
    number that finds nobody is not read again as another country's, as one in ten would be one
    (a US `(203) 417-6848` is Egypt's `+20 34176848`) and the desk opens a single match at once.
    """
    digits = "".join(c for c in text if c.isdigit())
    if text.startswith("+"):
        return None
    if region is None:  # the profile API reads `00` as "+" itself then
        return None if text.startswith("00") else "+" + digits
    try:
        normalise_phone(text, region)
    except ValueError:
        return "+" + (digits[2:] if text.startswith("00") else digits)
    return None
