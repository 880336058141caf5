"""An inbound email → one Hilo interaction. Pure: no I/O.

A mail longer than the contract holds (text, subject, attachment list, file names, message ids
and the thread's root: no header limits them) is kept truncated, and the event says which field
was (`adjustments`, reason `truncated`): a long quoted history must not lose the reply on top
of it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from channel_email.mime import AttachmentInfo, InboundEmail
from hilo.contract import (
    Attachment,
    AttachmentKind,
    Conversation,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    Truncations,
    conversation_id,
    max_length,
    new_interaction,
)
from hilo.contract.outbound import one_line

CHANNEL = "email"
_KINDS = {
    "image": AttachmentKind.IMAGE,
    "audio": AttachmentKind.AUDIO,
    "video": AttachmentKind.VIDEO,
}


TEXT_LIMIT = max_length(MessageExchanged, "text")
SUBJECT_LIMIT = max_length(MessageExchanged, "subject")
ATTACHMENTS_LIMIT = max_length(MessageExchanged, "attachments")
FILENAME_LIMIT = max_length(Attachment, "filename")
ID_LIMIT = max_length(MessageExchanged, "provider_message_id")
THREAD_LIMIT = max_length(Conversation, "thread")


def mail_reference(key: bytes, sender: str, message_id: str) -> str:
    """What names a mail for its event id: its Message-ID with its sender, so the same mail via
    Mailgun, SendGrid or a pipe is one event, and another sender's mail that reuses the
    Message-ID (the sender's software chooses it) is an event of its own instead of being
    dropped as a duplicate. An HMAC under `key`, the deployment's pepper: the event id is on
    every record in the clear, and an unkeyed hash would confirm a guessed address."""
    return hmac.new(key, f"{sender}\n{message_id}".encode(), hashlib.sha256).hexdigest()


def translate(mail: InboundEmail, received_at: datetime, instance: str, key: bytes) -> Interaction:
    """One event per mail and sender (`mail_reference`)."""
    identifiers = Identifiers(email=mail.sender)
    cut = Truncations()
    attachments = [
        _attachment(info, cut.clip(info.filename, FILENAME_LIMIT, "payload.attachments.filename"))
        for info in mail.attachments[:ATTACHMENTS_LIMIT]
    ]
    if len(mail.attachments) > ATTACHMENTS_LIMIT:
        cut.note("payload.attachments")
    thread = cut.clip(mail.thread_root, THREAD_LIMIT, "conversation.thread") or mail.thread_root
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=mail_reference(key, identifiers.email or mail.sender, mail.message_id),
        identifiers=identifiers,
        conversation=Conversation(id=conversation_id(CHANNEL, mail.thread_root), thread=thread),
        occurred_at=mail.date or received_at,
        received_at=received_at,
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            subject=cut.clip(_subject(mail.subject), SUBJECT_LIMIT, "payload.subject"),
            text=cut.clip(mail.text, TEXT_LIMIT, "payload.text"),
            attachments=attachments,
            provider_message_id=cut.clip(mail.message_id, ID_LIMIT, "payload.provider_message_id")
            or mail.message_id,
            reply_to_provider_message_id=cut.clip(
                mail.in_reply_to, ID_LIMIT, "payload.reply_to_provider_message_id"
            ),
        ),
        adjustments=cut.adjustments,
    )


def _subject(subject: str | None) -> str | None:
    """The subject on one line (`one_line`): the journey shows it as a heading, and the desk's
    reply `Re:` it, where a line break would start another mail header."""
    return one_line(subject or "") or None


def _attachment(info: AttachmentInfo, filename: str | None) -> Attachment:
    return Attachment(
        kind=_KINDS.get(info.mime_type.split("/")[0], AttachmentKind.DOCUMENT),
        mime_type=info.mime_type,
        filename=filename,
        size_bytes=info.size_bytes,
    )
