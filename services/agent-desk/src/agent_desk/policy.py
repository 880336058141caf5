"""Where and what an agent may send: the provider rules agents hit every day, checked before a
command is published so the agent reads the reason at once.

- A channel is offered only when the customer has an address on it (a phone for SMS and
  WhatsApp, an email, a page-scoped id for Messenger and Instagram).
- WhatsApp: free-form text only within the customer-service window after the customer's last
  WhatsApp message; an approved template after that (the provider would refuse it: 131047).
  Messenger and Instagram: nothing after their window (24 hours; 7 days with the HUMAN_AGENT
  tag), which Meta refuses ("outside of allowed window").
- A text no longer than the provider takes: 1,600 characters for SMS (Twilio), 2,000 for
  Messenger, 1,000 bytes for Instagram, 4,096 characters for WhatsApp.
- A customer who opted out of a channel (SMS `STOP`: consent `contact` withdrawn) gets nothing
  more on it (Twilio would refuse it: 21610).
- Marketing needs the customer's consent to `marketing` on that channel (or on every channel).

The providers enforce their own rules too: what slips through (a stale profile) comes back as a
failed send with the provider's reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ADDRESS_KINDS: Mapping[str, tuple[str, ...]] = {
    "whatsapp": ("whatsapp_id", "whatsapp_user_id", "phone"),
    "sms": ("phone",),
    "email": ("email",),
    "messenger": ("messenger_psid",),
    "instagram": ("instagram_sid",),
}
"""Per channel, the identifiers it can reach a customer at, the most specific first."""

CHANNEL_NAMES: Mapping[str, str] = {
    "whatsapp": "WhatsApp",
    "sms": "SMS",
    "email": "Email",
    "messenger": "Messenger",
    "instagram": "Instagram",
    "voice": "Phone",
    "web": "Web",
    "app": "App",
    "store": "Store",
}


def channel_name(channel: str) -> str:
    return CHANNEL_NAMES.get(channel, channel.capitalize())


@dataclass(frozen=True)
class ReplyOption:
    """One channel the agent can pick, with the address it would go to."""

    channel: str
    address_kind: str
    address: str
    last_inbound: datetime | None


def reply_options(
    profile: Mapping[str, Any],
    channels: Sequence[str],
    written_from: Mapping[str, Mapping[str, str]] | None = None,
    last_contact: Mapping[str, str] | None = None,
    address_kinds: Mapping[str, tuple[str, ...]] = ADDRESS_KINDS,
) -> list[ReplyOption]:
    """The channels among `channels` that the customer can be reached on, each at the address
    they last wrote from there (`written_from`: per channel, the identifiers of their latest
    inbound message on it), else at the one of their latest message or call on any channel
    (`last_contact`), while their profile holds it, else at the first it holds: a customer with
    two numbers (after a merge) is answered at the one they use now."""
    held: dict[str, list[str]] = {}
    for identity in profile.get("identifiers", []):
        held.setdefault(identity["kind"], []).append(identity["value"])
    last_inbound = _last_inbound(profile)
    options = []
    for channel in channels:
        kinds = [k for k in address_kinds.get(channel, ()) if k in held]
        if not kinds:
            continue
        # The kind they last wrote from first: a WhatsApp user known by a username writes by
        # their business-scoped id alone, and an older number would get the reply.
        written = (written_from or {}).get(channel, {})
        kind = next((k for k in kinds if written.get(k) in held[k]), kinds[0])
        candidates = [
            written.get(kind),
            *_addresses_in(last_contact or {}, kind),
        ]
        address = next((a for a in candidates if a in held[kind]), held[kind][0])
        options.append(ReplyOption(channel, kind, address, last_inbound.get(channel)))
    return options


def _addresses_in(identifiers: Mapping[str, str], kind: str) -> list[str]:
    """The addresses of `kind` a contact's identifiers name: a WhatsApp id is the phone number
    without its `+`, so a call's number names the WhatsApp id too."""
    found = [identifiers[kind]] if kind in identifiers else []
    if kind == "whatsapp_id" and (phone := identifiers.get("phone")):
        found.append(phone.lstrip("+"))
    return found


def default_channel(profile: Mapping[str, Any], options: Sequence[ReplyOption]) -> str | None:
    """Where the customer last wrote in the open conversation (else anywhere, else the first
    channel offered): a reply goes where the customer is now."""
    if not options:
        return None
    conversation = (profile.get("view") or {}).get("conversation") or {}
    in_conversation = set(conversation.get("channels") or [])
    written = [o for o in options if o.last_inbound is not None]
    for pool in ([o for o in written if o.channel in in_conversation], written):
        if pool:
            return max(pool, key=lambda o: o.last_inbound or EPOCH).channel
    return options[0].channel


def refusal(
    profile: Mapping[str, Any],
    option: ReplyOption,
    *,
    template: bool,
    purpose: str,
    now: datetime,
    windows: Mapping[str, timedelta],
) -> str | None:
    """Why this message may not go out on this channel, or None when it may (`windows`: per
    channel, how long after the customer's last message a free-form reply may go)."""
    consent = (profile.get("view") or {}).get("consent") or []
    label = channel_name(option.channel)
    withdrawn = _latest(consent, "contact", option.channel)
    if withdrawn is not None and not withdrawn["granted"]:
        day = _day(withdrawn["at"])
        return f"The customer opted out of {label} on {day}: nothing more can be sent there."
    if purpose == "marketing":
        granted = _latest(consent, "marketing", option.channel)
        if granted is None or not granted["granted"]:
            return f"The customer has not consented to marketing on {label}."
    window = windows.get(option.channel)
    if window is None or (template and option.channel == "whatsapp"):
        return None
    if option.channel in META_CHANNELS and purpose == "marketing":
        window = min(window, META_STANDARD_WINDOW)  # the HUMAN_AGENT tag is for service only
    last = option.last_inbound
    if last is None or now - last > window:
        since = f"never wrote on {label}" if last is None else f"last wrote {_ago(now - last)} ago"
        hours = int(window.total_seconds() // 3600)
        then = (
            "Only an approved template can be sent."
            if option.channel == "whatsapp"
            else "Meta refuses replies after it: reach them on another channel."
        )
        return f"Outside {label}'s {hours}-hour window: the customer {since}. {then}"
    return None


META_CHANNELS = frozenset({"messenger", "instagram"})
META_STANDARD_WINDOW = timedelta(hours=24)
"""Meta's window for a message without the HUMAN_AGENT tag, which channel-social puts on
service replies only."""

TEXT_LIMITS: Mapping[str, tuple[int, str]] = {
    "sms": (1_600, "characters"),
    "messenger": (2_000, "characters"),
    "instagram": (1_000, "bytes"),
    "whatsapp": (4_096, "characters"),
}
"""What each provider takes in one message: Twilio, Meta's Send API, WhatsApp Cloud API."""


def too_long(channel: str, text: str) -> str | None:
    """Why this text is too long for the channel's provider, or None (the agent shortens it
    before it goes, rather than reading the provider's refusal after)."""
    if channel not in TEXT_LIMITS:
        return None
    limit, unit = TEXT_LIMITS[channel]
    size = len(text.encode()) if unit == "bytes" else len(text)
    if size <= limit:
        return None
    return (
        f"Too long for {channel_name(channel)}: {size:,} {unit}, and it takes {limit:,}. "
        "Shorten it, or send it in parts."
    )


def _last_inbound(profile: Mapping[str, Any]) -> dict[str, datetime]:
    raw = (profile.get("view") or {}).get("last_inbound") or {}
    return {channel: datetime.fromisoformat(at) for channel, at in raw.items()}


def _latest(
    consent: Sequence[Mapping[str, Any]], purpose: str, channel: str
) -> Mapping[str, Any] | None:
    """The latest consent state for `purpose` on this channel or on every channel."""
    relevant = [
        c for c in consent if c["purpose"] == purpose and c.get("channel") in (channel, None)
    ]
    return max(relevant, key=lambda c: c["at"], default=None)


def _day(at: str) -> str:
    return datetime.fromisoformat(at).strftime("%d %b %Y")


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{int(hours)} hours"
    return f"{int(hours // 24)} days"
