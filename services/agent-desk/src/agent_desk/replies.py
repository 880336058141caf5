"""Replies: what the agent writes becomes an `OutboundCommand` on `outbound`, in the customer's
open conversation, to the address of the channel picked; the channel service sends it once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent_desk.policy import ReplyOption
from hilo.contract import Conversation, Identifiers, Purpose, conversation_id
from hilo.contract.outbound import OutboundCommand, OutboundMessage, Template, one_line
from hilo.kafka import KafkaPublisher
from hilo.outbound import command_record
from hilo.sealing import Sealer


@dataclass(frozen=True)
class Thread:
    """What the reply answers on its channel: the provider's message id and subject (email)."""

    reply_to: str | None = None
    references: tuple[str, ...] = ()
    subject: str | None = None


def thread_of(entries: Sequence[Mapping[str, Any]]) -> Thread:
    """The latest inbound message of a channel's journey page (newest first) and its thread:
    the earlier inbound messages of that thread only, oldest first, after its first message
    (`conversation.thread`, which may be off the page). Another thread's messages in the
    `References` of a reply would file it, and the customer's answer, under that thread."""
    inbound = [
        e for e in entries if e["type"] == "message" and e["payload"].get("direction") == "inbound"
    ]
    if not inbound:
        return Thread()
    latest = inbound[0]["payload"]
    root = _thread(inbound[0])
    same = [e for e in inbound[1:] if root is None or _thread(e) == root]
    earlier = [e["payload"]["provider_message_id"] for e in reversed(same) if not _cut(e, ID)]
    whole_root = root is not None and not _cut(inbound[0], THREAD)
    if whole_root and root != latest["provider_message_id"]:
        earlier = list(dict.fromkeys([root, *earlier]))
    subject = one_line(latest.get("subject") or "")
    if subject and not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    reply_to = None if _cut(inbound[0], ID) else latest["provider_message_id"]
    return Thread(reply_to, tuple(earlier), subject[:MAX_SUBJECT] or None)


ID, THREAD = "payload.provider_message_id", "conversation.thread"


def _cut(entry: Mapping[str, Any], field: str) -> bool:
    """Whether the channel cut the entry's `field` to what the contract holds (a Message-ID of
    more than 500 characters): a cut id names no message, so a reply naming it in `In-Reply-To`
    or `References` would not thread in the customer's mail client."""
    return any(adjustment.get("field") == field for adjustment in entry.get("adjustments") or [])


def _thread(entry: Mapping[str, Any]) -> str | None:
    return (entry.get("conversation") or {}).get("thread")


def written_from(entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Per channel, the identifiers of the customer's latest inbound message on it (entries
    newest first): where a reply on that channel should go."""
    found: dict[str, dict[str, str]] = {}
    for entry in entries:
        inbound = entry["type"] == "message" and entry["payload"].get("direction") == "inbound"
        if inbound and entry["channel"] not in found:
            found[entry["channel"]] = dict(entry.get("identifiers") or {})
    return found


def last_contact(
    entries: Sequence[Mapping[str, Any]], until: datetime | None = None
) -> dict[str, str]:
    """The identifiers of the customer's latest inbound message or call on any channel
    (entries newest first), or the latest `until` a time: where a reply goes on a channel they
    have not written on (a call dropped, answered by SMS, goes to the number that called), and
    what a done mark goes with."""
    for entry in entries:
        inbound = entry["type"] in CONTACTS and entry["payload"].get("direction") == "inbound"
        if inbound and (until is None or datetime.fromisoformat(entry["occurred_at"]) <= until):
            return dict(entry.get("identifiers") or {})
    return {}


CONTACTS = ("message", "call")
"""The entries a customer reaches the business with."""


_PAGE_NAMESPACE = uuid.UUID("5c0f9e2a-7b1d-4e8a-9f3c-2d6b8a1e4f70")

MAX_SUBJECT = 998
"""The longest subject a mail line holds (RFC 5322), as `OutboundMessage.subject` allows."""


def reply_command(
    profile: Mapping[str, Any],
    option: ReplyOption,
    *,
    text: str | None,
    template: Template | None,
    purpose: Purpose,
    agent: str,
    thread: Thread,
    subject: str | None = None,
    page_id: str | None = None,
    unanswered: bool = False,
    page_customer: str | None = None,
) -> OutboundCommand:
    """The command for this reply, continuing the open conversation whatever its channel. A
    closed one, however recent its id on the view, is not continued (the reply starts its
    own), unless it is `unanswered`: the customer still waits for its answer, in the queue, and
    the reply is it. A marketing message continues none: it is no part of a conversation, nor
    of the customer's thread (an email of its own, not `Re:` their question; no WhatsApp quote).
    An email goes with the agent's `subject`, else `Re:` the customer's (the channel's default
    subject when there is none); other channels have no subject.

    `page_id` is the page's id for the reply: a retry carries the same one and makes the same
    command id, so the channel, which sends each command once, sends it once even when the first
    attempt's answer was lost. The command id is derived from it with the agent, the customer
    and the channel, so no page can make the id of another agent's, customer's or channel's
    command (which the channel would take for a repeat and not send). The customer is the one
    the page asked for (`page_customer`), not the profile it resolved to: merged meanwhile, the
    retry resolved to the survivor, got another id, and the channel sent the reply twice.
    """
    scope = f"{agent}|{page_customer or profile['customer_id']}|{option.channel}|{page_id}"
    command_id = str(uuid.uuid5(_PAGE_NAMESPACE, scope) if page_id else uuid.uuid4())
    conversation = ((profile.get("view") or {}).get("conversation")) or {}
    answering = purpose == "service" and (profile.get("conversation_open") or unanswered)
    thread = thread if purpose == "service" else Thread()
    ids = (conversation.get("conversation_ids") or []) if answering else []
    own = conversation_id(option.channel, f"desk:{command_id}")
    return OutboundCommand(
        id=command_id,
        customer_id=str(profile["customer_id"]),
        channel=option.channel,
        identifiers=Identifiers.model_validate({option.address_kind: option.address}),
        conversation=Conversation(id=ids[-1], continues=ids[-1]) if ids else Conversation(id=own),
        payload=OutboundMessage(
            text=text,
            subject=(subject or thread.subject) if option.channel == "email" else None,
            template=template,
            purpose=purpose,
            reply_to_provider_message_id=thread.reply_to,
            references=list(thread.references) if option.channel == "email" else [],
        ),
        requested_by=agent,
        requested_at=datetime.now(UTC),
    )


async def publish_reply(
    publisher: KafkaPublisher, sealer: Sealer, command: OutboundCommand
) -> None:
    """Publish the command; `PublishFailed` when Kafka did not confirm it in time (it may still
    arrive: a retry with the same command id is not sent twice)."""
    await publisher.publish_records([await command_record(command, sealer)])
