"""Replies queued and not yet recorded by their channel (`agent_desk.pending`), against the real
MongoDB-wire server: what a reload of the customer's page shows as sending, or as waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from agent_desk.pending import (
    PENDING_REPLIES,
    PendingReplies,
    PendingReply,
    pending_rows,
    with_pending,
)
from agent_desk.timeline import row
from hilo.contract.outbound import OutboundCommand
from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings
from hilo.testkit.query_plans import winning_stages
from hilo.testkit.samples import sample_command

WAIT = timedelta(seconds=60)


def entry(entry_id: str, at: datetime, **payload: Any) -> dict[str, Any]:
    return row(
        {
            "id": entry_id,
            "type": payload.pop("type", "message"),
            "channel": "sms",
            "occurred_at": at.isoformat(),
            "payload": payload,
        }
    )


async def test_only_replies_not_yet_recorded_are_shown_in_their_place_and_old_ones_wait(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    pending = PendingReplies(mongo_client[settings.mongodb_database][PENDING_REPLIES])
    sent, failed, waiting, fresh = (sample_command(customer_id="cus-1") for _ in range(4))
    merged = sample_command("email", customer_id="cus-merged")
    for command in (sent, failed, waiting, fresh, merged):
        await pending.queued(command)
    await pending.queued(fresh)  # the same command queued again (a retry) is one reply
    now = datetime.now(UTC)
    await pending.collection.update_one(
        {"_id": waiting.id}, {"$set": {"queued_at": now - timedelta(minutes=5)}}
    )
    rows = [
        entry(sent.sent_interaction_id(), now, direction="outbound"),
        entry(
            "status-1",
            now,
            type="message_status",
            provider_message_id=failed.failure_provider_id(),
            status="failed",
        ),
        entry("inbound-1", now - timedelta(hours=1), direction="inbound"),
    ]

    found = await pending.of(["cus-1", "cus-merged"])
    shown = pending_rows(found, rows, now=datetime.now(UTC), waiting_after=WAIT)
    page = with_pending(rows, shown)

    assert len(found) == 5
    assert {r["id"]: r["waiting"] for r in shown} == {
        waiting.sent_interaction_id(): True,
        fresh.sent_interaction_id(): False,
        merged.sent_interaction_id(): False,
    }
    assert [r["id"] for r in page][-2:] == [waiting.sent_interaction_id(), "inbound-1"]
    assert {r["provider_id"] for r in shown} >= {waiting.failure_provider_id()}
    explained = await pending.collection.find({"customer_id": {"$in": ["cus-1"]}}).explain()
    assert "COLLSCAN" not in winning_stages(explained)


async def test_a_reply_is_forgotten_once_its_sent_message_or_its_failure_is_read(
    settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """The desk's journey feed tells the notes every entry it reads: however many replies
    follow, one still unrecorded is never pushed out by recorded ones."""
    pending = PendingReplies(mongo_client[settings.mongodb_database][PENDING_REPLIES])
    await pending.create_indexes()
    sent, failed, waiting = (sample_command(customer_id="cus-1") for _ in range(3))
    for command in (sent, failed, waiting):
        await pending.queued(command)
    read = [
        {"id": sent.sent_interaction_id(), "type": "message", "payload": {"direction": "outbound"}},
        {
            "id": "status-1",
            "type": "message_status",
            "payload": {"provider_message_id": failed.failure_provider_id(), "status": "failed"},
        },
        {"id": "inbound-1", "type": "message", "payload": {"direction": "inbound"}},
    ]

    await pending.recorded(read)

    assert [reply.command_id for reply in await pending.of(["cus-1"])] == [waiting.id]
    now = datetime.now(UTC)
    [row] = pending_rows(
        [_pending(waiting, now - timedelta(hours=2))], [], now=now, waiting_after=WAIT
    )
    assert row["waiting"]


def _pending(command: OutboundCommand, at: datetime) -> PendingReply:
    return PendingReply(
        command.id,
        command.channel,
        command.sent_interaction_id(),
        command.failure_provider_id(),
        at,
    )
