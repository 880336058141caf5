"""Messenger and Instagram messaging events → Hilo interactions. Pure: no I/O.

Recorded: messages both ways (echoes of what the page sent are outbound), postbacks (button
taps), reactions, and delivery/read receipts that name a message id, whether they come on
`messaging` or, while another app owns the conversation, on `standby`. Not recorded: Messenger's
`read` watermarks (they name no message), deleted messages, and event kinds Hilo does not model
(opt-ins, a referral that comes without a message: a click that reopened an existing
conversation, handovers); they are counted as ignored and still acknowledged, so Meta does not
retry them forever. A referral on a message or a postback (the first one of a new conversation
opened by a click-to-Messenger ad or an `m.me`/`ig.me` link) is that message's `campaign`.

The echo of a reply Hilo sent is recorded under the id of the sender's own record of it
(`OutboundCommand.sent_interaction_id`, from its `metadata: hilo:<command id>`, or
`hilo-marketing:` for a marketing message), with the command's purpose, so consumers, which keep
one event per id, store it once, alike: whoever records it first, the sender or the echo.
The echo alone tells of a reply Graph took but answered with an error. The channel app drops
the echoes of provider ids the sender recorded (`hilo.channel`), Instagram's, which carry no
metadata, too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import HttpUrl, TypeAdapter, ValidationError

from channel_social.sending import sent_by_hilo
from channel_social.webhook import Attachment as MetaAttachment
from channel_social.webhook import Message, Messaging, Notification
from hilo.contract import (
    Attachment,
    AttachmentKind,
    Campaign,
    Conversation,
    DeliveryStatus,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
    Payload,
    Purpose,
    Truncations,
    conversation_id,
    max_length,
    new_interaction,
    unix_time,
)
from hilo.contract.adjustments import UNREADABLE
from hilo.contract.campaign import ad_campaign, campaign_from

CHANNELS = {"page": "messenger", "instagram": "instagram"}
REPLY_FIELD = "payload.interactive_reply"
REPLY_LIMIT = max_length(MessageExchanged, "interactive_reply")
STORY_REPLY = "reply to a story"
"""The caption of the attachment that stands for the Instagram story a message answers."""
_ATTACHMENTS = {
    "image": AttachmentKind.IMAGE,
    "video": AttachmentKind.VIDEO,
    "audio": AttachmentKind.AUDIO,
    "file": AttachmentKind.DOCUMENT,
    "sticker": AttachmentKind.STICKER,
    "location": AttachmentKind.LOCATION,
}


def translate(
    notification: Notification, instance: str, key: bytes, refs: Collection[str] = ()
) -> tuple[list[Interaction], int]:
    """The interactions in a notification, and how many events were ignored; `refs`: the
    `m.me`/`ig.me` link refs that name a campaign (`campaign_ref`)."""
    channel = CHANNELS[notification.object]
    interactions: list[Interaction] = []
    ignored = 0
    for entry in notification.entry:
        for event in [*entry.messaging, *entry.standby]:
            translated = _event(channel, entry.id, event, instance, key, entry.time, refs)
            interactions.extend(translated)
            ignored += not translated
    return interactions, ignored


def _content_digest(event: Messaging) -> str:
    """A name for an event that carries no time: the SHA-256 of its JSON, the same on Meta's
    retry of it."""
    return "sha256:" + hashlib.sha256(event.model_dump_json().encode()).hexdigest()[:32]


def _event(
    channel: str,
    account: str,
    event: Messaging,
    instance: str,
    key: bytes,
    entry_time: int | None,
    refs: Collection[str],
) -> list[Interaction]:
    millis = _event_millis(event, entry_time)
    # No time at all (neither the event's nor its entry's): the event's own content names it,
    # or every postback of the customer had one id and all but the first were dropped.
    when = millis if millis is not None else _content_digest(event)
    outbound = event.message is not None and event.message.is_echo
    person = event.recipient if outbound else event.sender
    # A checkbox plugin's opt-in names no sender, a chat plugin's guest only a `user_ref`:
    # nobody to record it for.
    if person is None or person.id is None:
        return []
    customer = person.id
    cuts: dict[str, Truncations] = {}  # per payload: what was cut of it
    found: list[tuple[str, Payload]] = []
    if event.message is not None and not event.message.is_deleted:
        sent = sent_by_hilo(event.message.metadata) if event.message.is_echo else None
        recorded_as = f"outbound:{sent[0]}" if sent else event.message.mid
        cut = cuts[recorded_as] = Truncations()
        campaign = _referred(channel, event.message.referral, refs, cut)
        purpose = sent[1] if sent else None
        found.append((recorded_as, _message(event.message, cut, campaign, purpose)))
    if event.postback is not None:
        postback_id = event.postback.mid or f"postback:{customer}:{when}"
        cut = cuts[postback_id] = Truncations()
        # A payload may be as long as the contract allows: with the title after it, cut.
        reply = ": ".join(filter(None, [event.postback.payload, event.postback.title]))
        found.append(
            (
                postback_id,
                MessageExchanged(
                    direction=Direction.INBOUND,
                    interactive_reply=cut.clip(reply, REPLY_LIMIT, REPLY_FIELD) or "postback",
                    provider_message_id=postback_id,
                    campaign=_referred(channel, event.postback.referral, refs, cut),
                ),
            )
        )
    if event.reaction is not None and event.reaction.action == "react":
        reaction_id = f"reaction:{event.reaction.mid}:{customer}:{when}"
        emoji = event.reaction.emoji or event.reaction.reaction
        found.append(
            (
                reaction_id,
                MessageExchanged(
                    direction=Direction.INBOUND,
                    interactive_reply=f"reaction: {emoji}",
                    reply_to_provider_message_id=event.reaction.mid,
                    provider_message_id=reaction_id,
                ),
            )
        )
    found.extend(_receipts(event))
    return [
        new_interaction(
            channel=channel,
            instance=instance,
            provider_event_id=provider_id,
            identifiers=identifiers_of(channel, customer),
            conversation=thread(channel, account, customer, key),
            occurred_at=None if millis is None else unix_time(millis, per_second=1000),
            payload=payload,
            adjustments=cuts[provider_id].adjustments if provider_id in cuts else (),
        )
        for provider_id, payload in found
    ]


def _event_millis(event: Messaging, entry_time: int | None) -> int | None:
    """When it happened: the event's own time; for a delivery receipt, which has none, its
    watermark (all messages before it were delivered), else the notification entry's time.
    None: the receipt time stands in (`new_interaction` notes it)."""
    if event.timestamp is not None:
        return event.timestamp
    if event.delivery is not None and event.delivery.watermark:
        return event.delivery.watermark
    return entry_time


def identifiers_of(channel: str, scoped_id: str) -> Identifiers:
    """Page-scoped (Messenger) or Instagram-scoped ids: one per person *per page or account*."""
    if channel == "instagram":
        return Identifiers(instagram_sid=scoped_id)
    return Identifiers(messenger_psid=scoped_id)


def thread(channel: str, account: str, customer: str, key: bytes) -> Conversation:
    """A page (or Instagram account) and a customer make one conversation (its id keyed by the
    deployment's pepper: the reference holds the customer's scoped id)."""
    reference = f"{account}:{customer}"
    return Conversation(id=conversation_id(channel, reference, key), thread=reference)


def _message(
    message: Message, cut: Truncations, campaign: Campaign | None, purpose: Purpose | None
) -> MessageExchanged:
    """`purpose` as the echo of a message Hilo sent names it; None for any other message."""
    reply = message.quick_reply.payload if message.quick_reply else None
    return MessageExchanged(
        purpose=purpose,
        campaign=None if message.is_echo else campaign,
        direction=Direction.OUTBOUND if message.is_echo else Direction.INBOUND,
        text=message.text or None,
        attachments=_attachments(message, cut),
        interactive_reply=cut.clip(reply, REPLY_LIMIT, REPLY_FIELD),
        reply_to_provider_message_id=message.reply_to.mid if message.reply_to else None,
        provider_message_id=message.mid,
    )


def _referred(
    channel: str, referral: Any, refs: Collection[str], cut: Truncations
) -> Campaign | None:
    """The ad or link a conversation came from, as a campaign. An ad (Meta's `ADS`, or an
    `ad_id`) is named by its title, else its id (never by `ref`, which anyone can set); a link
    by its `ref` only when the deployment lists it (`campaign_ref`). Source the network
    (`facebook` for Messenger), medium `ad` or `link`. Anything else (a chat plugin, a ref
    nobody listed) names no campaign: it would take an order's credit from a real one."""
    if not isinstance(referral, Mapping):
        return None
    source = "instagram" if channel == "instagram" else "facebook"
    if str(referral.get("source") or "").upper() == "ADS" or referral.get("ad_id"):
        context = referral.get("ads_context_data")
        title = context.get("ad_title") if isinstance(context, Mapping) else None
        return ad_campaign([title, referral.get("ad_id")], source, "ad", cut)
    ref = referral.get("ref")
    if not isinstance(ref, str) or not campaign_ref(ref, refs):
        return None
    return campaign_from({"name": ref, "source": source, "medium": "link"}, None, cut)


def campaign_ref(ref: str, refs: Collection[str]) -> bool:
    """Whether a link's `ref` is one the deployment named a campaign (`HILO_SOCIAL_CAMPAIGN_REFS`:
    exact, or a prefix ending in `*`)."""
    return any(ref.startswith(r[:-1]) if r.endswith("*") else ref == r for r in refs)


def _receipts(event: Messaging) -> list[tuple[str, Payload]]:
    receipts: list[tuple[str, DeliveryStatus]] = []
    if event.delivery is not None:
        receipts.extend((mid, DeliveryStatus.DELIVERED) for mid in event.delivery.mids)
    if event.read is not None and event.read.mid:
        receipts.append((event.read.mid, DeliveryStatus.READ))
    return [
        (f"{mid}:{status.value}", MessageStatusChanged(provider_message_id=mid, status=status))
        for mid, status in receipts
    ]


def _attachments(message: Message, cut: Truncations) -> list[Attachment]:
    attachments = [_attachment(attachment, cut) for attachment in message.attachments]
    if message.reply_to is not None and (story := message.reply_to.story) is not None:
        # What the customer answered: the desk shows it, as Instagram's inbox does.
        attachments.append(
            Attachment(
                kind=AttachmentKind.OTHER,
                url=_url(story.url, cut),
                provider_media_id=story.id,
                caption=STORY_REPLY,
            )
        )
    if not attachments and not message.text and message.quick_reply is None:
        # What Meta marks `is_unsupported` (or sends with nothing Hilo reads): the customer
        # wrote something, so it is recorded, and the rest of the notification is not refused.
        return [Attachment(kind=AttachmentKind.OTHER, caption="unsupported")]
    return attachments


def _url(url: str | None, cut: Truncations) -> HttpUrl | None:
    """A URL the contract takes, else none (noted `unreadable`): an empty or overlong one is
    dropped, not the attachment, nor the notification's other events."""
    if not url:
        return None
    try:
        return _HTTP_URL.validate_python(url)
    except ValidationError:
        cut.note("payload.attachments.url", UNREADABLE)
        return None


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _attachment(attachment: MetaAttachment, cut: Truncations) -> Attachment:
    """One attachment as Meta sent it; a shared location keeps its coordinates and name."""
    payload = attachment.payload
    coordinates = payload.coordinates if payload else None
    if coordinates and not (-90 <= coordinates.lat <= 90 and -180 <= coordinates.long <= 180):
        coordinates = None
    return Attachment(
        kind=_ATTACHMENTS.get(attachment.type, AttachmentKind.OTHER),
        url=_url(payload.url if payload else None, cut),
        caption=(payload.title if payload else None) or attachment.title,
        latitude=coordinates.lat if coordinates else None,
        longitude=coordinates.long if coordinates else None,
    )
