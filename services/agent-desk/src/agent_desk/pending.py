"""Replies the desk queued that their channel has not recorded yet, so that a reload, another
tab or a colleague's desk shows them as sending, and says when one has waited a while.

A reply is on `outbound` once queued; it reaches the customer's journey only when its channel
service sends it (the sent message) or gives up on it (a failed `message_status`). Until then
the page that sent it shows a row of its own making, which a reload used to lose. Each queued
reply is noted in MongoDB (`desk_pending_replies`: ids, channel and time, nothing personal; a TTL
index forgets it after a day, and the desk as soon as its journey feed reads the record) and
shown on the customer's page until then. One its channel has not recorded within
`HILO_DESK_REPLY_WAITING_SECONDS` is shown as not confirmed yet: the channel's service may be
down, behind or still trying the provider. One whose channel service Kafka says is not running
(`agent_desk.channel_services`) says so at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from agent_desk.policy import channel_name
from agent_desk.timeline import provider_id
from hilo.contract.outbound import FAILURE_PREFIX, OutboundCommand
from hilo.mongo import MongoDocument

PENDING_REPLIES = "desk_pending_replies"
KEPT = timedelta(days=1)
"""Longer than any send takes: a reply still unrecorded after it is on `outbound.dlq`, or its
channel has not run for a day (the failure the channel records then shows it)."""
SHOWN = 20
WAITING_STATUS = {False: "not confirmed yet", True: "service not running"}


@dataclass(frozen=True)
class PendingReply:
    command_id: str
    channel: str
    entry_id: str
    """The journey entry of the sent message (`OutboundCommand.sent_interaction_id`)."""
    failure_id: str
    """The provider id of its failure status (`OutboundCommand.failure_provider_id`)."""
    queued_at: datetime


class PendingReplies:
    """The queued replies in MongoDB, for every desk instance."""

    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection
        self._indexed = False

    async def create_indexes(self) -> None:
        await self.collection.create_index("customer_id")
        await self.collection.create_index("entry_id")
        await self.collection.create_index("failure_id")
        await self.collection.create_index(
            "queued_at", expireAfterSeconds=int(KEPT.total_seconds())
        )
        self._indexed = True

    async def queued(self, command: OutboundCommand) -> None:
        """Note a reply just put on `outbound` (the same command queued again keeps its time)."""
        if not self._indexed:  # MongoDB did not answer at start
            await self.create_indexes()
        await self.collection.update_one(
            {"_id": command.id},
            {
                "$setOnInsert": {
                    "customer_id": command.customer_id,
                    "channel": command.channel,
                    "entry_id": command.sent_interaction_id(),
                    "failure_id": command.failure_provider_id(),
                    "queued_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )

    async def recorded(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Forget the replies these journey entries record: their sent message, or the failure
        their channel reported (`JourneyFeed` tells every desk instance each entry it reads)."""
        sent = [
            entry["id"]
            for entry in entries
            if entry.get("type") == "message"
            and (entry.get("payload") or {}).get("direction") == "outbound"
        ]
        failed = [
            reported
            for entry in entries
            if entry.get("type") == "message_status"
            and (reported := provider_id(entry)) is not None
            and reported.startswith(FAILURE_PREFIX)
        ]
        if sent:
            await self.collection.delete_many({"entry_id": {"$in": sent}})
        if failed:
            await self.collection.delete_many({"failure_id": {"$in": failed}})

    async def of(self, customer_ids: Iterable[str]) -> list[PendingReply]:
        """The customer's latest replies not yet known to be recorded, newest first."""
        found = self.collection.find({"customer_id": {"$in": list(customer_ids)}})
        documents = await found.sort("queued_at", DESCENDING).limit(SHOWN).to_list()
        return [
            PendingReply(
                command_id=str(d["_id"]),
                channel=str(d["channel"]),
                entry_id=str(d["entry_id"]),
                failure_id=str(d["failure_id"]),
                queued_at=_aware(d["queued_at"]),
            )
            for d in documents
        ]


def pending_rows(
    pending: Sequence[PendingReply],
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    waiting_after: timedelta,
    stopped: Collection[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Timeline rows for the replies not yet recorded among `rows` (the page's entries): their
    sent message is not there, nor a status about them (one recorded a moment ago, before the
    desk forgot its note). A reply on a channel in `stopped` (its service is not running) is
    shown waiting at once, saying why."""
    shown_ids = {row["id"] for row in rows}
    shown_statuses = {row.get("provider_id") for row in rows}
    return [
        _row(reply, now, waiting_after, stopped=reply.channel in stopped)
        for reply in pending
        if reply.entry_id not in shown_ids and reply.failure_id not in shown_statuses
    ]


def waiting_note(channel: str, *, stopped: bool) -> str:
    """What a queued reply's row says once it waits: why, when the desk knows."""
    label = channel_name(channel)
    if stopped:
        return (
            f"No {label} channel service is running: this reply is kept and goes out once one "
            "starts. Look at the conversation before writing it again."
        )
    return (
        f"The {label} channel has not recorded this reply yet: its service may be down, behind, "
        "or still trying the provider. It goes out once it can: look at the conversation before "
        "writing it again."
    )


def waiting_state(channel: str, *, stopped: bool) -> dict[str, Any]:
    """What a queued reply's row on `channel` says of its service: whether it is known stopped,
    its chip while it waits, and its note."""
    return {
        "stopped": stopped,
        "status": WAITING_STATUS[stopped],
        "note": waiting_note(channel, stopped=stopped),
    }


def not_running_warning(channel: str) -> str:
    """What the reply box says while the channel's service is not running."""
    return (
        f"No {channel_name(channel)} channel service is running right now: a reply is kept and "
        "goes out once one starts."
    )


def with_pending(
    rows: Sequence[dict[str, Any]], pending: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`rows` (newest first) with the pending ones in their place by time."""
    return sorted([*rows, *pending], key=lambda row: row["at"], reverse=True)


def _row(
    reply: PendingReply, now: datetime, waiting_after: timedelta, *, stopped: bool
) -> dict[str, Any]:
    label = channel_name(reply.channel)
    waiting = stopped or now - reply.queued_at >= waiting_after
    return {
        "id": reply.entry_id,
        "type": "message",
        "channel": reply.channel,
        "channel_name": label,
        "type_name": "Message",
        "direction": "outbound",
        "at": reply.queued_at,
        "provider_id": reply.failure_id,
        "pending": True,
        "waiting": waiting,
        "stopped": stopped,
        "waiting_status": WAITING_STATUS[stopped],
        "waiting_note": waiting_note(reply.channel, stopped=stopped),
        "status": None,
        "status_error": None,
        "text": None,
        "summary": f"Reply queued on {label}: its text shows once the channel has sent it.",
        "payload": {},
    }


def _aware(value: datetime) -> datetime:
    """MongoDB gives times back naive, in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
