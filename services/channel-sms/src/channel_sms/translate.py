"""Twilio Messaging webhooks → Hilo interactions. Pure: no I/O.

Messages from short codes and alphanumeric sender ids (a bank's one-time code, a carrier's
notice) come from a service, not a person: there is nobody to attribute them to, so they are
acknowledged and counted as ignored rather than refused (Twilio would only retry them).

**Opt-out keywords.** An SMS that is an opt-out or opt-in keyword also changes the customer's
consent to be contacted by SMS (`consent`, purpose `contact`, channel `sms`, source
`sms_keyword`), published beside the message for the same phone. Twilio itself stops delivering
to a number that sent STOP (sends are then refused with 21610) until it sends START, so the
journey must know. The keyword is read from Twilio's Advanced Opt-Out (`OptOutType` STOP or
START, which covers a Messaging Service's own keywords in any language), else from the whole
body, trimmed and case-insensitive, against Twilio's default keywords (`OPT_OUT_KEYWORDS`,
`OPT_IN_KEYWORDS`). HELP changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.contract import (
    Attachment,
    AttachmentKind,
    ConsentChanged,
    Conversation,
    DeliveryStatus,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
    Truncations,
    conversation_id,
    max_length,
    new_interaction,
    normalise_phone,
    whatsapp_identifiers,
)
from hilo.contract.outbound import failure_provider_id

CHANNEL = "sms"
_STATUS = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
    "undelivered": DeliveryStatus.FAILED,
}
_MEDIA_KINDS = {
    "image": AttachmentKind.IMAGE,
    "audio": AttachmentKind.AUDIO,
    "video": AttachmentKind.VIDEO,
}
_SERVICE_SENDER = re.compile(r"[0-9]{3,8}|(?=[^:]*[A-Za-z])[A-Za-z0-9 +\-_&.']{1,11}")
"""A short code (3 to 8 digits) or an alphanumeric sender id (at most 11 characters, a letter
among them; carriers allow `Amazon.de`, `DHL-Express`, `AT&T`)."""
CAPTION_LIMIT = max_length(Attachment, "caption")
CAPTION = "payload.attachments.caption"
WHATSAPP = "whatsapp"
"""Twilio's WhatsApp senders post to the same webhook, their parties as `whatsapp:+E.164`."""


OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
_OPT_OUT_TYPES = {"STOP": False, "START": True}


def customer_phone(raw: str) -> str | None:
    """The customer's number in E.164; `None` for a short code or alphanumeric sender id.

    Twilio writes every phone number in E.164, with its "+": a sender without one is a service
    (`898287`), never a national number to read in `HILO_DEFAULT_PHONE_REGION` (in Germany that
    short code would be `+49898287`). Raises `ValueError` (without the number) for anything else
    that is not a phone number.
    """
    text = raw.strip()
    if not text.startswith("+") and _SERVICE_SENDER.fullmatch(text):
        return None
    return normalise_phone(text)


def party(raw: str) -> tuple[str, Identifiers, str] | None:
    """(channel, identifiers, number) of a message's customer side: `sms`, or `whatsapp` for
    Twilio's `whatsapp:+34…` parties, whose identifiers are those channel-whatsapp records of
    Meta's (the WhatsApp id as sent, the phone as dialled today: `+521…` is Mexico's `+52…`).
    None for a service sender, or another channel's address (`messenger:…`: Twilio's Messenger
    senders, which Hilo takes from Meta itself).

    Raises `ValueError` (without the number) for anything else that is not a phone number (a
    WhatsApp id is one, as Meta sends it, whether or not it is dialled so today).
    """
    scheme, address = _scheme(raw)
    if not scheme:
        phone = customer_phone(address)
        return None if phone is None else (CHANNEL, Identifiers(phone=phone), phone)
    if scheme != WHATSAPP:
        return None
    wa_id = "".join(c for c in address if c.isdigit())
    found = whatsapp_identifiers(wa_id) if wa_id else None
    if found is None:
        raise ValueError("not a phone number")
    # A WhatsApp id that no number dialled today is (Benin's eight digits before 2024) is the
    # customer still: kept as channel-whatsapp keeps Meta's, by its id alone (it was refused,
    # and Twilio never posts a message again).
    return WHATSAPP, found, found.phone or f"+{wa_id}"


def _scheme(raw: str) -> tuple[str, str]:
    """(the address's scheme in lower case, "" for a bare number; the address after it)."""
    scheme, separator, address = raw.strip().partition(":")
    if not separator or scheme.startswith("+"):
        return "", raw.strip()
    return scheme.lower(), address.strip()


def reference(business: str, customer: str) -> str:
    """SMS has no thread ids: a business number and a customer number make one conversation."""
    return f"{business}:{customer}"


def thread(business: str, customer: str, key: bytes, channel: str = CHANNEL) -> Conversation:
    """The conversation; its id keyed by the deployment's pepper (the reference is a phone)."""
    sms_thread = reference(_scheme(business)[1], customer)
    return Conversation(id=conversation_id(channel, sms_thread, key), thread=sms_thread)


def inbound(
    message: InboundMessage,
    received_at: datetime,
    instance: str,
    key: bytes,
    occurred_at: datetime | None = None,
) -> Interaction | None:
    """An SMS/MMS from the customer; Twilio's webhook sends no timestamp, so it happened on
    arrival, unless `occurred_at` says when (a message read back from Twilio's log).

    `None` when a service sent it (short code, sender id): nobody's journey to join; and when
    it holds nothing (no text, no media): no message to record, and refusing it would only
    raise an alert in Twilio's console, which never sends it again.
    """
    sender = party(message.From)
    extra = message.model_extra or {}
    cut = Truncations()
    location = _location(extra, cut)
    if sender is None or not (message.Body or message.NumMedia or location):
        return None
    channel, customer, phone = sender
    attachments = [
        Attachment(
            kind=_MEDIA_KINDS.get(
                str(extra.get(f"MediaContentType{n}", "")).split("/")[0], AttachmentKind.DOCUMENT
            ),
            url=extra.get(f"MediaUrl{n}"),
            mime_type=extra.get(f"MediaContentType{n}"),
        )
        for n in range(message.NumMedia)
        if extra.get(f"MediaUrl{n}")
    ] + ([location] if location else [])
    return new_interaction(
        channel=channel,
        instance=instance,
        provider_event_id=message.MessageSid,
        identifiers=customer,
        conversation=thread(message.To, phone, key, channel),
        occurred_at=occurred_at or received_at,
        received_at=received_at,
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            text=message.Body or None,
            attachments=attachments,
            provider_message_id=message.MessageSid,
        ),
        adjustments=cut.adjustments,
    )


def _location(extra: Mapping[str, Any], cut: Truncations) -> Attachment | None:
    """A location shared on WhatsApp, which Twilio passes on as `Latitude` and `Longitude`
    (with `Address` and `Label` when the customer picked a place) and an empty `Body`: it was
    taken for an empty message and dropped. None without a point on the globe."""
    try:
        latitude, longitude = float(extra["Latitude"]), float(extra["Longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    name = cut.clip(str(extra.get("Label") or extra.get("Address") or ""), CAPTION_LIMIT, CAPTION)
    return Attachment(
        kind=AttachmentKind.LOCATION, latitude=latitude, longitude=longitude, caption=name or None
    )


def consent_keyword(message: InboundMessage) -> bool | None:
    """What the SMS says about being contacted: `False` opts out, `True` opts in, `None` neither
    (the module docstring has the rule)."""
    if message.OptOutType:
        return _OPT_OUT_TYPES.get(message.OptOutType.strip().upper())
    keyword = message.Body.strip().upper()
    if keyword in OPT_OUT_KEYWORDS:
        return False
    if keyword in OPT_IN_KEYWORDS:
        return True
    return None


def incoming(
    message: InboundMessage,
    received_at: datetime,
    instance: str,
    key: bytes,
    occurred_at: datetime | None = None,
) -> list[Interaction]:
    """An incoming SMS: the message and, for an opt-out or opt-in keyword, the consent change."""
    published = inbound(message, received_at, instance, key, occurred_at)
    if published is None:
        return []
    # Twilio's keyword opt-out is SMS's (carriers require it); a WhatsApp STOP is just a text.
    granted = consent_keyword(message) if published.channel == CHANNEL else None
    if granted is None:
        return [published]
    consent = new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{message.MessageSid}:consent",
        identifiers=published.identifiers,
        conversation=published.conversation,
        occurred_at=published.occurred_at,
        received_at=received_at,
        payload=ConsentChanged(
            purpose="contact", granted=granted, channel=CHANNEL, source="sms_keyword"
        ),
    )
    return [published, consent]


def recorded(callback: StatusCallback) -> bool:
    """Whether the status is one `status` records (queued, accepted and sending are not)."""
    return callback.MessageStatus in _STATUS


def status(
    callback: StatusCallback,
    received_at: datetime,
    instance: str,
    key: bytes,
    perhaps_sent: str | None = None,
    occurred_at: datetime | None = None,
) -> Interaction | None:
    """A delivery status worth recording (queued/accepted/sending are not, nor messages to a
    short code). `perhaps_sent`: the command of a send reported perhaps not sent (its SID never
    recorded), whose report the status is then about. Twilio's callback sends no timestamp: the
    status changed on arrival, unless `occurred_at` says when (a status read back)."""
    delivery = _STATUS.get(callback.MessageStatus)
    if delivery is None:
        return None
    recipient = party(callback.To)
    if recipient is None:
        return None
    channel, customer, phone = recipient
    return new_interaction(
        channel=channel,
        instance=instance,
        provider_event_id=f"{callback.MessageSid}:{callback.MessageStatus}",
        identifiers=customer,
        conversation=thread(callback.From, phone, key, channel),
        occurred_at=occurred_at or received_at,
        received_at=received_at,
        payload=MessageStatusChanged(
            provider_message_id=(
                failure_provider_id(perhaps_sent) if perhaps_sent else callback.MessageSid
            ),
            status=delivery,
            error=f"Twilio error {callback.ErrorCode}" if callback.ErrorCode else None,
        ),
    )
