"""Who handles a customer's open conversation, and which of their messages were seen to.

The profile service says whether a customer waits for the company (their message or missed
call, unanswered on every channel: `awaiting_reply_since`). What agents decide about it lives
here, in MongoDB (`desk_handling`, one document per customer id, nothing personal), so every
desk instance shows the same:

- **taken**: the agent who handles the conversation. Taking is a compare-and-set: it succeeds
  unless someone other than the agent and the one the page showed has it, so two agents who
  click *Take* at once do not both think it theirs; the second is told who has it. A taking
  names the conversation it was for by its start (`taken_for`, the profile service's time, no
  clock of the desk's): one of the customer's last conversation counts for nothing.
- **done**: an agent saw to the customer's messages without a reply ("thanks!"). It records
  the time of the customer's latest message the page showed (`done_through`, event time as
  the profile service's), and the customer waits again from the first message dated after it.
  A message that arrives late dated before it (a slow provider) is taken as seen, unless it is
  dated before the wait the page showed (`done_waiting`): nobody saw that one.

A TTL index forgets a document a month after its last change, long after its conversation.

A done mark is also recorded in the customer's journey (`done_mark`, a `conversation_done`
interaction), so the profile service's queue, and whatever reads its API or topics, stops
counting the customer as waiting too. Takings stay here: they are the desk's own work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from hilo.contract import (
    DONE_AFTER,
    ConversationDone,
    IdentifierKind,
    Identifiers,
    Interaction,
    new_interaction,
)
from hilo.mongo import MongoDocument, find_in

HANDLING = "desk_handling"
KEPT = timedelta(days=30)
DESK_CHANNEL = "desk"
"""The channel of what the desk records in journeys: its agents' done marks."""
_STRONGEST_FIRST = [kind.value for kind in IdentifierKind]


@dataclass(frozen=True)
class Handling:
    """What agents decided about one customer's conversations."""

    agent: str | None = None
    taken_for: datetime | None = None
    done_through: datetime | None = None
    done_by: str | None = None
    done_waiting: datetime | None = None
    """Since when the page marked done showed the customer waiting: an older question (merged
    in since) is not seen to."""


@dataclass(frozen=True)
class SeenTo:
    """What a done mark sees to: the customer's contacts up to `through` (the latest the page
    showed), of a customer the page showed waiting since `waiting`."""

    through: datetime
    waiting: datetime


@dataclass(frozen=True)
class ConversationState:
    """What the inbox and the customer page show: who handles it, since when the customer
    waits (None: the company spoke last, or an agent saw to it: `done_by`)."""

    agent: str | None
    waiting_since: datetime | None
    done_by: str | None = None


class NotSaved(Exception):
    """The database answered, but what the agent asked for is not in it."""


class TakenByAnother(Exception):
    """Someone else took the conversation since the page showed who had it."""

    def __init__(self, agent: str | None) -> None:
        super().__init__(agent)
        self.agent = agent


def state_of(conversation: Mapping[str, Any], handling: Handling | None) -> ConversationState:
    """Who handles the customer's open conversation (as the profile service gives it) and
    since when they wait. The profile reads a done mark from the journey (its `done_by`); until
    it has, the desk's own mark decides: a later message then waits from the latest one (the
    profile holds the first unanswered message, not the first after that), and a question
    older than the page saw waiting (merged in since) still waits."""
    handling = handling or Handling()
    started = _time(conversation.get("started_at"))
    taken = handling.taken_for is not None and started is not None and handling.taken_for >= started
    waiting = _time(conversation.get("awaiting_reply_since"))
    latest = _time(conversation.get("last_inbound_at"))
    done = handling.done_through
    done_by = None if waiting is not None else conversation.get("done_by")
    older = (
        waiting is not None
        and handling.done_waiting is not None
        and waiting < handling.done_waiting
    )
    if waiting is not None and done is not None and not older:
        if latest is None or latest <= done:
            waiting, done_by = None, handling.done_by
        elif waiting <= done:
            waiting = latest
    return ConversationState(handling.agent if taken else None, waiting, done_by)


def overdue(state: ConversationState, target: timedelta, now: datetime) -> bool:
    """Whether the customer has waited longer than the company's target (none: `target` 0)."""
    waiting = state.waiting_since
    return bool(target) and waiting is not None and now - waiting > target


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        return _time(datetime.fromisoformat(value))
    return None


class Handlings:
    """The `desk_handling` collection, for every desk instance."""

    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection
        self._indexed = False

    async def create_indexes(self) -> None:
        await self.collection.create_index(
            "changed_at", expireAfterSeconds=int(KEPT.total_seconds())
        )
        self._indexed = True

    async def of(self, customer_ids: Iterable[str]) -> dict[str, Handling]:
        """Each customer's handling that has one."""
        found = find_in(self.collection, "_id", customer_ids)
        return {str(doc["_id"]): _handling(doc) async for doc in found}

    async def adopt(self, survivor: str, merged: Iterable[str]) -> None:
        """Give a customer the taking of a profile merged into them (an agent took an anonymous
        chat, then the visitor signed in), when it is newer than their own: from then on every
        page and action reads the survivor's. A done mark is not adopted: it saw to the merged
        profile's messages only. The merged profiles' documents go, so a taking let go on the
        survivor does not come back from them."""
        found = [doc async for doc in find_in(self.collection, "_id", merged)]
        if not found:
            return
        taken = [doc for doc in found if doc.get("agent") and doc.get("taken_for")]
        if taken:
            newest = max(taken, key=lambda doc: doc["taken_for"])
            with suppress(DuplicateKeyError):  # the survivor's own taking is newer
                await self.collection.update_one(
                    {
                        "_id": survivor,
                        "$or": [
                            {"taken_for": None},
                            {"taken_for": {"$lt": newest["taken_for"]}},
                        ],
                    },
                    {
                        "$set": {
                            "agent": newest["agent"],
                            "taken_for": newest["taken_for"],
                            "changed_at": datetime.now(UTC),
                        }
                    },
                    upsert=True,
                )
        await self.collection.delete_many({"_id": {"$in": [doc["_id"] for doc in found]}})

    async def take(
        self, customer_id: str, agent: str, *, shown: str | None, started_at: datetime
    ) -> None:
        """Make `agent` the one who handles the conversation that `started_at`, unless someone
        other than them and the one the page `shown` has it (a taking of an earlier
        conversation is nobody's)."""
        await self._prepare()
        free: list[MongoDocument] = [
            {"agent": None},
            {"agent": agent},
            {"taken_for": {"$lt": started_at}},
        ]
        if shown is not None:
            free.append({"agent": shown})
        now = datetime.now(UTC)
        change = {"$set": {"agent": agent, "taken_for": started_at, "changed_at": now}}
        try:
            await self.collection.update_one({"_id": customer_id, "$or": free}, change, upsert=True)
        except DuplicateKeyError:  # there is a document, and someone else in it
            holder = await self._agent_of(customer_id)
            if holder != agent:  # the agent's own other click, or tab, took it: no refusal
                raise TakenByAnother(holder) from None

    async def release(self, customer_id: str, agent: str) -> None:
        """Nobody handles it any more, if `agent` did (a colleague may have taken it over)."""
        await self._prepare()
        await self.collection.update_one(
            {"_id": customer_id, "agent": agent},
            {"$unset": {"agent": "", "taken_for": ""}, "$set": {"changed_at": datetime.now(UTC)}},
        )

    async def done(self, customer_id: str, agent: str, seen: SeenTo) -> None:
        """The customer's messages up to `seen.through` (their latest one the page showed) are
        seen to, waiting since `seen.waiting`; never moved back by a page that showed less
        (a page showing an older wait up to the same message sees to more)."""
        await self._prepare()
        through = seen.through
        now = datetime.now(UTC)
        marked = {
            "done_through": through,
            "done_by": agent,
            "done_waiting": seen.waiting,
            "changed_at": now,
        }
        try:
            await self.collection.update_one(
                {
                    "_id": customer_id,
                    "$or": [
                        {"done_through": None},
                        {"done_through": {"$lt": through}},
                        {"done_through": through, "done_waiting": {"$gt": seen.waiting}},
                    ],
                },
                {"$set": marked},
                upsert=True,
            )
        except DuplicateKeyError:  # there is a document: done as far, or further, already?
            doc = await self.collection.find_one({"_id": customer_id}, {"done_through": 1})
            earlier = _time((doc or {}).get("done_through"))
            if earlier is None or earlier < through:
                raise NotSaved from None

    async def _prepare(self) -> None:
        if not self._indexed:  # MongoDB did not answer at start
            await self.create_indexes()

    async def _agent_of(self, customer_id: str) -> str | None:
        doc = await self.collection.find_one({"_id": customer_id}, {"agent": 1})
        return None if doc is None else doc.get("agent")


def _handling(doc: Mapping[str, Any]) -> Handling:
    return Handling(
        agent=doc.get("agent"),
        taken_for=_time(doc.get("taken_for")),
        done_through=_time(doc.get("done_through")),
        done_by=doc.get("done_by"),
        done_waiting=_time(doc.get("done_waiting")),
    )


def done_mark(
    customer_id: str,
    identifiers: Iterable[tuple[str, str]],
    agent: str,
    seen: SeenTo,
    instance: str,
) -> Interaction | None:
    """The journey's record of an agent's done mark (`seen`): on the first of `identifiers`
    the contract reads (the latest contact's it sees to, so a split sends it with that
    contact), that one alone (one identifier merges nobody), dated just after the contact
    (`DONE_AFTER`). Its id comes from the customer and the times, so a retry, or a colleague
    marking the same, is the same event, and a mark of an older wait (a question merged in
    since) is another. None when no identifier is readable."""
    through, waiting = seen.through.astimezone(UTC), seen.waiting.astimezone(UTC)
    for kind, value in identifiers:
        with suppress(ValueError):  # a kind or value the contract refuses: the next
            return new_interaction(
                channel=DESK_CHANNEL,
                instance=instance,
                provider_event_id=f"done:{customer_id}:{through.isoformat()}:{waiting.isoformat()}",
                identifiers=Identifiers.model_validate({kind: value}),
                payload=ConversationDone(agent_id=agent, waiting_since=waiting),
                occurred_at=through + DONE_AFTER,
            )
    return None


def strongest_first(identifiers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`(kind, value)` pairs, the strongest kind first (unknown kinds last)."""
    rank = {kind: n for n, kind in enumerate(_STRONGEST_FIRST)}
    return sorted(identifiers, key=lambda pair: rank.get(pair[0], len(rank)))
