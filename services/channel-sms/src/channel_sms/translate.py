"""Twilio Messaging webhooks → Hilo interactions. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.contract import (
    Attachment,
    AttachmentKind,
    Conversation,
    DeliveryStatus,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
    conversation_id,
    new_interaction,
    normalise_phone,
)

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


def thread(business: str, customer: str) -> Conversation:
    """SMS has no thread ids: a business number and a customer number make one conversation."""
    reference = f"{business}:{customer}"
    return Conversation(id=conversation_id(CHANNEL, reference), thread=reference)


def inbound(message: InboundMessage, received_at: datetime, instance: str) -> Interaction:
    """An SMS/MMS from the customer; Twilio sends no timestamp, so it happened on arrival."""
    phone = normalise_phone(message.From)
    extra = message.model_extra or {}
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
    ]
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=message.MessageSid,
        identifiers=Identifiers(phone=phone),
        conversation=thread(message.To, phone),
        occurred_at=received_at,
        received_at=received_at,
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            text=message.Body or None,
            attachments=attachments,
            provider_message_id=message.MessageSid,
        ),
    )


def status(callback: StatusCallback, received_at: datetime, instance: str) -> Interaction | None:
    """A delivery status worth recording (queued/accepted/sending are not)."""
    delivery = _STATUS.get(callback.MessageStatus)
    if delivery is None:
        return None
    phone = normalise_phone(callback.To)
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{callback.MessageSid}:{callback.MessageStatus}",
        identifiers=Identifiers(phone=phone),
        conversation=thread(callback.From, phone),
        occurred_at=received_at,
        received_at=received_at,
        payload=MessageStatusChanged(
            provider_message_id=callback.MessageSid,
            status=delivery,
            error=f"Twilio error {callback.ErrorCode}" if callback.ErrorCode else None,
        ),
    )
