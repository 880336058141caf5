"""Messenger Platform and Instagram messaging webhooks, as Meta documents them (what Hilo reads).

Both arrive as `{"object": "page" | "instagram", "entry": [{"id", "time", "messaging": [...]}]}`;
each messaging event names its `sender` and `recipient` by page- or Instagram-scoped ids and
carries one of `message`, `postback`, `reaction`, `delivery` or `read`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)


class Party(_Meta):
    id: str | None = Field(default=None, min_length=1)
    """Left out for a chat plugin's guest, named by `user_ref` instead (Meta's referral and
    postback references): an event of one is nobody's to record, and must not refuse the
    notification's other events."""


class Coordinates(_Meta):
    """Where a location a customer shared on Messenger points (Meta names them `lat`, `long`).
    Not range-checked here: a notification batches many events, and one odd point must not
    refuse the others (`translate` keeps only a point on the globe)."""

    lat: float
    long: float


class AttachmentPayload(_Meta):
    url: str | None = None
    """Read as text: an empty or overlong URL (a link a customer shares) must not refuse the
    notification's other events (`translate` keeps only a URL the contract takes)."""
    title: str | None = None
    coordinates: Coordinates | None = None


class Attachment(_Meta):
    type: str
    payload: AttachmentPayload | None = None
    title: str | None = Field(default=None, description="A shared location's name.")


class Story(_Meta):
    """The business's Instagram story a message replies to (it expires after 24 hours)."""

    id: str | None = None
    url: str | None = None


class QuickReply(_Meta):
    payload: str


class ReplyTo(_Meta):
    mid: str | None = None
    story: Story | None = None


class Message(_Meta):
    mid: str = Field(min_length=1)
    text: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    quick_reply: QuickReply | None = None
    reply_to: ReplyTo | None = None
    is_echo: bool = False
    is_deleted: bool = False
    metadata: str | None = Field(
        default=None, description="An echo's: what the sender passed with the message."
    )
    referral: Any = None
    """The ad or `m.me`/`ig.me` link the conversation came from, on the first message after
    the click: `ref`, `source` (`ADS`, `SHORTLINK`, ...), `ad_id`, `ads_context_data`. Any
    shape: one that is not an object is ignored."""


class Postback(_Meta):
    mid: str | None = None
    title: str | None = None
    payload: str | None = None
    referral: Any = None
    """As a message's: a Get Started tap from an ad or a link."""


class Reaction(_Meta):
    mid: str
    action: Literal["react", "unreact"] = "react"
    reaction: str | None = None
    emoji: str | None = None


class Delivery(_Meta):
    mids: list[str] = Field(default_factory=list)
    watermark: int | None = None


class Read(_Meta):
    mid: str | None = None
    watermark: int | None = None


class Messaging(_Meta):
    sender: Party | None = None
    """Left out of a checkbox plugin's opt-in (Meta's `messaging_optins` reference)."""
    recipient: Party
    timestamp: int | None = Field(
        default=None,
        gt=0,
        description="Milliseconds since the epoch. Meta's `message_deliveries` events come "
        "without one (their `delivery.watermark` says when).",
    )
    message: Message | None = None
    postback: Postback | None = None
    reaction: Reaction | None = None
    delivery: Delivery | None = None
    read: Read | None = None


class Entry(_Meta):
    id: str
    time: int | None = None
    messaging: list[Messaging] = Field(default_factory=list)
    standby: list[Messaging] = Field(default_factory=list)
    """The same events while another app owns the conversation (handover protocol, conversation
    routing): the customer still wrote to the company, so they are recorded too. Postbacks
    come without their payload here."""


class Notification(_Meta):
    """`POST` body of a Messenger (`page`) or Instagram (`instagram`) webhook."""

    object: Literal["page", "instagram"]
    entry: list[Entry] = Field(min_length=1)
