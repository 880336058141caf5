"""WhatsApp notifications → Hilo interactions. Pure: no I/O, so it is tested without a broker."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from channel_whatsapp.webhook import (
    Message,
    MessagesChange,
    Metadata,
    Notification,
    PreferencesChange,
    Status,
)
from hilo.contract import (
    Attachment,
    AttachmentKind,
    Campaign,
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
    new_interaction,
    unix_time,
    whatsapp_identifiers,
)
from hilo.contract.campaign import ad_campaign, split_url
from hilo.contract.outbound import failure_provider_id
from hilo.outbound import tagged_command
from hilo.webhook import hmac_sha256

CHANNEL = "whatsapp"
_MEDIA = {
    "image": AttachmentKind.IMAGE,
    "audio": AttachmentKind.AUDIO,
    "video": AttachmentKind.VIDEO,
    "document": AttachmentKind.DOCUMENT,
    "sticker": AttachmentKind.STICKER,
}
_STATUS = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}


def translate(
    notification: Notification,
    instance: str,
    key: bytes,
    perhaps_sent: Collection[str] = frozenset(),
) -> tuple[list[Interaction], int]:
    """Every message and delivery status in the notification, in the order Meta sent them, and
    how many events were ignored: `deleted` statuses (nothing happened between customer and
    company), statuses Meta may add that Hilo does not model, changes of other fields than
    `messages` (template status and the like), and the rare event naming nobody (a `failed`
    status of a message sent to a number withheld since carries neither id).

    `perhaps_sent`: commands whose send was reported perhaps not sent (the service stopped
    during Meta's call, so no wamid was recorded). A status of their message is about that
    report (`OutboundCommand.failure_provider_id`), so the agent reads where the reply is that
    it did go out."""
    interactions: list[Interaction] = []
    ignored = 0
    for entry in notification.entry:
        for change in entry.changes:
            if isinstance(change, PreferencesChange):
                consents = _preferences(change, instance, key)
                interactions += consents
                ignored += len(change.value.user_preferences) - len(consents)
                continue
            if not isinstance(change, MessagesChange):
                ignored += 1
                continue
            value = change.value
            for message in value.messages:
                sender = whatsapp_identifiers(message.from_, message.from_user_id)
                if sender is not None and (granted := _marketing(message)) is not None:
                    when = unix_time(message.timestamp)
                    interactions.append(
                        _consent(message.id, granted, sender, value.metadata, when, instance, key)
                    )
                    continue
                if sender is None or not _from_the_customer(message):
                    ignored += 1
                    continue
                interactions.append(_message(message, sender, value.metadata, instance, key))
            for status in value.statuses:
                recipient = whatsapp_identifiers(status.recipient_id, status.recipient_user_id)
                if status.status in _STATUS and recipient and status.recipient_type != "group":
                    reported = _reported_as(status, perhaps_sent)
                    interactions.append(
                        _status(status, reported, recipient, value.metadata, instance, key)
                    )
                else:
                    ignored += 1
    return interactions, ignored


MARKETING = {"stop": False, "resume": True}
"""A user's marketing preference as Meta words it: stopped, or resumed."""


def _marketing(message: Message) -> bool | None:
    """A `system` message saying the user stopped (False) or resumed (True) the business's
    marketing messages; None for any other message."""
    system = message.system
    if message.type != "system" or system is None or system.type != "user_preference_changed":
        return None
    return MARKETING.get((system.marketing or "").strip().lower())


def _preferences(change: PreferencesChange, instance: str, key: bytes) -> list[Interaction]:
    """The marketing preferences a `user_preferences` change tells, each a consent change. It
    has no message id: each is named by a digest of who, when and what, keyed by the pepper
    (the plain id would be a hash of a phone number)."""
    consents = []
    for preference in change.value.user_preferences:
        granted = MARKETING.get(preference.value.strip().lower())
        customer = whatsapp_identifiers(preference.wa_id, preference.user_id)
        if preference.category != "marketing_messages" or granted is None or customer is None:
            continue
        told = f"{preference.wa_id}:{preference.user_id}:{preference.timestamp}:{granted}"
        digest = hmac_sha256(key, told.encode()).hex()[:32]
        when = unix_time(preference.timestamp) if preference.timestamp is not None else None
        metadata = change.value.metadata
        consents.append(
            _consent(f"preference:{digest}", granted, customer, metadata, when, instance, key)
        )
    return consents


def _consent(
    event_id: str,
    granted: bool,
    customer: Identifiers,
    metadata: Metadata,
    occurred_at: datetime | None,
    instance: str,
    key: bytes,
) -> Interaction:
    """The customer stopped or resumed the business's marketing on WhatsApp, in WhatsApp's own
    setting: the desk then offers no marketing on WhatsApp (Meta refuses it anyway)."""
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=event_id,
        identifiers=customer,
        conversation=thread(metadata, customer, key),
        occurred_at=occurred_at,
        payload=ConsentChanged(
            purpose="marketing",
            granted=granted,
            channel=CHANNEL,
            source="whatsapp_user_preferences",
        ),
    )


def _from_the_customer(message: Message) -> bool:
    """Whether the message is the customer's, in their conversation with the business. Not: a
    message in a group (a reply would go to the member privately, and the group is no
    conversation of theirs), a reaction taken back (Meta leaves `emoji` out: it was recorded
    as a new message waiting for an answer), or a `system` notice such as a changed number
    (no words of the customer's; the new number is not linked)."""
    if message.group_id is not None or message.type == "system":
        return False
    return message.reaction is None or bool(message.reaction.emoji)


def thread(metadata: Metadata, customer: Identifiers, key: bytes) -> Conversation:
    """WhatsApp has no thread ids: a business number and a customer (their wa_id, else their
    business-scoped user id) make one conversation (its id keyed by the deployment's pepper:
    the reference holds the customer's number)."""
    reference = f"{metadata.phone_number_id}:{customer.whatsapp_id or customer.whatsapp_user_id}"
    return Conversation(id=conversation_id(CHANNEL, reference, key), thread=reference)


def _message(
    message: Message, sender: Identifiers, metadata: Metadata, instance: str, key: bytes
) -> Interaction:
    cut = Truncations()
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=message.id,
        identifiers=sender,
        conversation=thread(metadata, sender, key),
        occurred_at=unix_time(message.timestamp),
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            text=_text(message),
            attachments=_attachments(message),
            provider_message_id=message.id,
            reply_to_provider_message_id=_reply_to(message),
            interactive_reply=_reply(message),
            campaign=_ad(message.referral, cut),
        ),
        adjustments=cut.adjustments,
    )


def _ad(referral: Any, cut: Truncations) -> Campaign | None:
    """The click-to-WhatsApp ad or post the conversation came from, as a campaign: named by the
    ad's headline (else its id, when the headline holds an address or a number), its source the
    site its link is on, its medium `ad` or `post`. What else Meta sends (the ad's text, media,
    click id) stays out."""
    if not isinstance(referral, Mapping):
        return None
    source_type = str(referral.get("source_type") or "").lower()
    return ad_campaign(
        [referral.get("headline"), referral.get("source_id")],
        _network(referral.get("source_url")),
        source_type if source_type in ("ad", "post") else "referral",
        cut,
    )


def _network(url: object) -> str:
    """`instagram` or `facebook` when the ad's link is on that site; `meta` for the short
    `fb.me` links Meta gives ads placed on either, and anything else."""
    parts = split_url(url)
    host = (parts.hostname or "") if parts else ""
    if host == "instagram.com" or host.endswith(".instagram.com"):
        return "instagram"
    sites = ("facebook.com", "fb.com")
    return "facebook" if any(host == s or host.endswith(f".{s}") for s in sites) else "meta"


def _text(message: Message) -> str | None:
    if message.text is not None:
        return message.text.body
    if message.button is not None:
        return message.button.text
    if message.reaction is not None:
        return message.reaction.emoji
    return None


def _reply_to(message: Message) -> str | None:
    if message.reaction is not None:
        return message.reaction.message_id
    return message.context.id if message.context else None


def _reply(message: Message) -> str | None:
    interactive = message.interactive
    if interactive is not None:
        reply = interactive.button_reply or interactive.list_reply
        return f"{reply.id}: {reply.title}" if reply else interactive.type
    if message.button is not None:
        return message.button.payload or message.button.text
    return None


def _attachments(message: Message) -> list[Attachment]:
    media = getattr(message, message.type, None) if message.type in _MEDIA else None
    if media is not None:
        return [
            Attachment(
                kind=_MEDIA[message.type],
                provider_media_id=media.id,
                mime_type=media.mime_type,
                filename=media.filename,
                caption=media.caption,
            )
        ]
    if message.location is not None:
        location = message.location
        return [
            Attachment(
                kind=AttachmentKind.LOCATION,
                latitude=location.latitude,
                longitude=location.longitude,
                caption=location.name or location.address,
            )
        ]
    if message.type == "contacts":
        return [Attachment(kind=AttachmentKind.CONTACT)]
    if _text(message) is None and _reply(message) is None:
        # Types Meta marks "unsupported" (or new ones): recorded, never dropped.
        return [Attachment(kind=AttachmentKind.OTHER, caption=message.type)]
    return []


def _status(
    status: Status,
    message_id: str,
    recipient: Identifiers,
    metadata: Metadata,
    instance: str,
    key: bytes,
) -> Interaction:
    error = "; ".join(f"{e.code} {e.title or ''}".strip() for e in status.errors) or None
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{status.id}:{status.status}",
        identifiers=recipient,
        conversation=thread(metadata, recipient, key),
        occurred_at=unix_time(status.timestamp),
        payload=MessageStatusChanged(
            provider_message_id=message_id, status=_STATUS[status.status], error=error
        ),
    )


def commands_of(notification: Notification) -> set[str]:
    """The commands whose messages the notification's statuses are about (Hilo's replies)."""
    return {
        command
        for entry in notification.entry
        for change in entry.changes
        if isinstance(change, MessagesChange)
        for status in change.value.statuses
        if (command := tagged_command(status.biz_opaque_callback_data)) is not None
    }


def _reported_as(status: Status, perhaps_sent: Collection[str]) -> str:
    """The provider id the status is about: the send's report when it was perhaps not sent."""
    command = tagged_command(status.biz_opaque_callback_data)
    if command is not None and command in perhaps_sent:
        return failure_provider_id(command)
    return status.id
