"""An inbound email → one Hilo interaction. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

from channel_email.mime import InboundEmail
from hilo.contract import (
    Attachment,
    AttachmentKind,
    Conversation,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    conversation_id,
    new_interaction,
)

CHANNEL = "email"
_KINDS = {
    "image": AttachmentKind.IMAGE,
    "audio": AttachmentKind.AUDIO,
    "video": AttachmentKind.VIDEO,
}


def translate(mail: InboundEmail, received_at: datetime, instance: str) -> Interaction:
    """Keyed by the Message-ID, so the same mail via Mailgun, SendGrid or a pipe is one event."""
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=mail.message_id,
        identifiers=Identifiers(email=mail.sender),
        conversation=Conversation(
            id=conversation_id(CHANNEL, mail.thread_root), thread=mail.thread_root
        ),
        occurred_at=mail.date or received_at,
        received_at=received_at,
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            subject=mail.subject,
            text=mail.text,
            attachments=[
                Attachment(
                    kind=_KINDS.get(info.mime_type.split("/")[0], AttachmentKind.DOCUMENT),
                    mime_type=info.mime_type,
                    filename=info.filename,
                    size_bytes=info.size_bytes,
                )
                for info in mail.attachments
            ],
            provider_message_id=mail.message_id,
            reply_to_provider_message_id=mail.in_reply_to,
        ),
    )
