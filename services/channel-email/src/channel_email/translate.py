"""An inbound email → one Hilo interaction. Pure: no I/O.

A mail longer than the contract holds (text, subject, attachment list, file names) is kept
truncated, and the event says which field was (`adjustments`, reason `truncated`): a long quoted
history must not lose the reply on top of it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from channel_email.mime import AttachmentInfo, InboundEmail
from hilo.contract import (
    TRUNCATED,
    Adjustment,
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


def _max_length(model: type[BaseModel], field: str) -> int:
    """The contract's own limit of a field, so this module cannot drift from it."""
    rules = model.model_fields[field].metadata
    return next(int(rule.max_length) for rule in rules if hasattr(rule, "max_length"))


TEXT_LIMIT = _max_length(MessageExchanged, "text")
SUBJECT_LIMIT = _max_length(MessageExchanged, "subject")
ATTACHMENTS_LIMIT = _max_length(MessageExchanged, "attachments")
FILENAME_LIMIT = _max_length(Attachment, "filename")


def translate(mail: InboundEmail, received_at: datetime, instance: str) -> Interaction:
    """Keyed by the Message-ID, so the same mail via Mailgun, SendGrid or a pipe is one event."""
    truncated: list[Adjustment] = []

    def clipped(value: str | None, limit: int, field: str) -> str | None:
        if value is None or len(value) <= limit:
            return value
        if not any(adjustment.field == field for adjustment in truncated):
            truncated.append(Adjustment(field=field, reason=TRUNCATED))
        return value[:limit]

    attachments = [
        _attachment(info, clipped(info.filename, FILENAME_LIMIT, "payload.attachments.filename"))
        for info in mail.attachments[:ATTACHMENTS_LIMIT]
    ]
    if len(mail.attachments) > ATTACHMENTS_LIMIT:
        truncated.append(Adjustment(field="payload.attachments", reason=TRUNCATED))
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
            subject=clipped(mail.subject, SUBJECT_LIMIT, "payload.subject"),
            text=clipped(mail.text, TEXT_LIMIT, "payload.text"),
            attachments=attachments,
            provider_message_id=mail.message_id,
            reply_to_provider_message_id=mail.in_reply_to,
        ),
        adjustments=truncated,
    )


def _attachment(info: AttachmentInfo, filename: str | None) -> Attachment:
    return Attachment(
        kind=_KINDS.get(info.mime_type.split("/")[0], AttachmentKind.DOCUMENT),
        mime_type=info.mime_type,
        filename=filename,
        size_bytes=info.size_bytes,
    )
