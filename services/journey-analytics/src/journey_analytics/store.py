"""The touches, stored once per entry id under the customer id they were recorded with.

Idempotent by construction: a touch is upserted by its entry id (a redelivery rewrites the same
document; an entry a split publishes again under the restored id replaces the first, and is not
replaced by it when the two are read the other way round, from two partitions after a reset:
the copy published later wins). Merges are
kept as published, one alias per absorbed id and merge (absorbed -> survivor, with the merge's
event), and never applied to what is stored: a touch reads as the customer it belongs to now by
following its recorded id's aliases to the end, when it is read. So:

- merges read in any order give the same customers (`identity.merges` is keyed by survivor, over
  several partitions: merge(s <- a) may be read before merge(a <- b)), and `journey` needs no
  order with `identity.merges`;
- a split undoes one merge, named by its event: the restored id's alias of that merge goes, and
  the undoing is kept, so the merge read later (its record is keyed by another survivor, on
  another partition, or read again after a reset) is not applied again, and a later merge of the
  same id is not undone by it. The touches recorded under the restored id and the ids merged
  into it are its own again (customer-profile publishes again only the entries that move out of
  the kept profile, those recorded under it after the merge);
- an erasure (`erasures`) deletes the touches of the ids its record names (customer-profile's,
  after every split; an earlier version's record names one, whose aliases are followed), and
  keeps those ids and their entries' ids so that their entries, read again under whichever
  customer (a copy published before a split gave one back), are not stored again; a copy
  published after the erased one (a split gave the entry to another customer) is stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime

from pymongo import ASCENDING, AsyncMongoClient, DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError

from hilo.mongo import DUPLICATE_KEY, MongoDocument, bulk_write, delete_in, find_in
from journey_analytics.measures import Touch

EARLIEST = datetime.min.replace(tzinfo=UTC)
TOUCHES = "analytics_touches"
ALIASES = "analytics_aliases"
UNDONE = "analytics_undone_merges"
ERASED = "analytics_erased"
ERASED_ENTRIES = "analytics_erased_entries"
"""Entry ids of erased people, with when the erased copy was published: a copy read later,
under whichever customer, is not stored again unless it was published after (a split gave the
entry to another customer). A mark of an earlier version (no time) takes every copy."""
LATEST_MS = 2**62
STORED: MongoDocument = {field.name: 1 for field in fields(Touch) if field.name != "id"}
"""The fields a touch is read with (a document written by another version may hold more)."""


def owner_of(aliases: Mapping[str, str], customer: str) -> str:
    """The id `customer` answers to now: its aliases followed to the end. A cycle (a merge and
    its reverse read before the split between them) answers to its smallest id, for all in it."""
    path: list[str] = []
    while customer in aliases and customer not in path:
        path.append(customer)
        customer = aliases[customer]
    return min(path[path.index(customer) :]) if customer in path else customer


class TouchStore:
    def __init__(self, client: AsyncMongoClient[MongoDocument], database: str) -> None:
        db = client[database]
        self._touches = db[TOUCHES]
        self._aliases = db[ALIASES]
        self._undone = db[UNDONE]
        self._erased = db[ERASED]
        self._erased_entries = db[ERASED_ENTRIES]

    async def create_indexes(self) -> None:
        await self._touches.create_index([("occurred_at", ASCENDING)])
        await self._touches.create_index([("customer_id", ASCENDING)])
        await self._aliases.create_index([("survivor", ASCENDING)])
        await self._aliases.create_index([("absorbed", ASCENDING)])
        await self._convert_earlier_aliases()

    async def _convert_earlier_aliases(self) -> None:
        """Aliases stored before merges were told apart (`_id` the absorbed id, no event) are
        stored again as this version's, with no event: any split of their id undoes them."""
        async for old in self._aliases.find({"absorbed": {"$exists": False}}):
            alias = {"absorbed": old["_id"], "survivor": old["survivor"], "event_id": None}
            await self._aliases.update_one(
                {"_id": _alias_id(old["_id"], None)}, {"$set": alias}, upsert=True
            )
            await self._aliases.delete_one({"_id": old["_id"], "absorbed": {"$exists": False}})

    async def save(self, touches: Sequence[Touch]) -> None:
        """Upsert by entry id, under the id it was recorded with; none of an erased person.

        An erased person's entry is marked erased (`ERASED_ENTRIES`, with when its copy was
        published) and any copy of it deleted: a copy under the profile they had been merged
        into, published before a split gave the entry back to them, is theirs too. A copy
        published after the erased one is another's: a split gave it back to them from the
        erased profile.

        Erased ids are read again after the write: an erasure another instance recorded
        meanwhile deleted the touches before this write made them (an erasure records its ids
        first and deletes after, so one of the two sees the other)."""
        if not touches:
            return
        gone = await self._of_erased(touches)
        try:
            await bulk_write(self._touches, [*_writes(touches, gone)])
        except BulkWriteError as exc:
            # A copy published later is stored: the filter missed it, and the upsert's insert
            # met its `_id`. Nothing else may fail unseen.
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
        late = await self._of_erased([t for t in touches if t.id not in gone])
        await bulk_write(self._touches, [_delete(t) for t in touches if t.id in late])

    async def _of_erased(self, touches: Sequence[Touch]) -> set[str]:
        """The ids of the touches that are an erased person's (marked erased as they are
        found), or copies of an entry an erasure took published no later than its copy."""
        recorded = {t.customer_id for t in touches}
        aliases = await self._aliases_from(recorded)
        erased = await self._erased_among(recorded | {owner_of(aliases, c) for c in recorded})
        theirs = [t for t in touches if _is_erased(t, aliases, erased)]
        await self._mark_erased_entries({t.id: t.published_ms for t in theirs})
        marks = find_in(self._erased_entries, "_id", sorted({t.id for t in touches}))
        taken = {d["_id"]: d.get("published_ms", LATEST_MS) async for d in marks}
        return {t.id for t in theirs} | {
            t.id for t in touches if t.id in taken and t.published_ms <= taken[t.id]
        }

    async def merge(
        self,
        survivor: str,
        absorbed: Sequence[str],
        event_id: str,
        occurred_at: datetime | None = None,
    ) -> None:
        """The absorbed ids answer to the survivor from now on, and so do the ids merged into
        them before (their aliases lead to them, and stay: a split gives them back); an id
        whose part in this merge a split undid (read before it) stays apart.

        The alias is written first and the undoings read after, as a split writes its undoing
        first and deletes after: of a merge and its split read at once by two instances, one
        always sees the other's write."""
        aliases = {_alias_id(a, event_id): a for a in absorbed if a != survivor}
        alias = {"survivor": survivor, "event_id": event_id, "occurred_at": occurred_at}
        await bulk_write(
            self._aliases,
            [
                UpdateOne({"_id": key}, {"$set": {"absorbed": a, **alias}}, upsert=True)
                for key, a in aliases.items()
            ],
        )
        undone = [d["_id"] async for d in find_in(self._undone, "_id", aliases, {"_id": 1})]
        await delete_in(self._aliases, "_id", undone)

    async def split(self, restored: str, undoes_event_id: str | None) -> None:
        """`restored` is a customer again, with the touches recorded under it and under the ids
        merged into it; those that move back from the kept profile come again on `journey`.
        Only the merge `undoes_event_id` is undone (an alias stored before merges were told
        apart too); a split that undoes no merge (identifiers moved to a new profile) has
        nothing to undo here."""
        if undoes_event_id is None:
            return
        undone = _alias_id(restored, undoes_event_id)
        await self._undone.update_one({"_id": undone}, {"$set": {"at": True}}, upsert=True)
        await self._aliases.delete_many({"_id": {"$in": [undone, _alias_id(restored, None)]}})

    async def erase(self, customers: Sequence[str], *, exact: bool = True) -> None:
        """An erased person leaves the measures: the touches and aliases of their ids are
        deleted, and the ids kept so that their entries, read again (a redelivery, a new
        instance reading `journey` from the start), are not stored again.

        `exact`: the ids are the person's as customer-profile named them once every split was
        done. Followed through the aliases read so far instead, a merge read before the split
        that undid it erased the customer the split gave back, and everything they did after.
        Only a record of an earlier version (no `aliases`) is followed so (`exact` False), and
        so are the ids that read as its ids later."""
        gone = sorted(set(customers) if exact else await self._leading_to(set(customers)))
        await bulk_write(
            self._erased,
            [
                UpdateOne({"_id": c}, {"$setOnInsert": {"followed": not exact}}, upsert=True)
                for c in gone
            ],
        )
        theirs = find_in(self._touches, "customer_id", gone, {"_id": 1, "published_ms": 1})
        # A touch stored before copies were told apart has no time: its mark takes every copy.
        marks = {d["_id"]: d.get("published_ms", LATEST_MS) async for d in theirs}
        await self._mark_erased_entries(marks)
        await delete_in(self._touches, "customer_id", gone)
        await delete_in(self._aliases, "absorbed", gone)
        await delete_in(self._aliases, "survivor", gone)

    async def touches(
        self, start: datetime, end: datetime, customer: str | None = None
    ) -> list[Touch]:
        """The touches in [start, end), each under the customer it belongs to now: everyone's,
        or one customer's (under any id they had)."""
        if customer is not None:
            return await self._touches_of(start, end, customer)
        found = await self._read({"occurred_at": {"$gte": start, "$lt": end}})
        # Everyone's touches name most customers: the aliases are read whole, in one query.
        aliases = _current(await self._aliases.find({}).to_list())
        now = {c: owner_of(aliases, c) for c in {t.customer_id for t in found}}
        return [replace(t, customer_id=now[t.customer_id]) for t in found]

    async def expire(self, before: datetime, at_most: int) -> int:
        """Delete at most `at_most` touches that happened before `before` (retention), oldest
        first, on the `occurred_at` index; how many. Their merges' aliases and erasure marks
        stay: a later touch of the same customer still follows them."""
        old = self._touches.find(
            {"occurred_at": {"$lt": before}}, {"_id": 1}, sort=[("occurred_at", ASCENDING)]
        ).limit(at_most)
        ids = [document["_id"] async for document in old]
        return await delete_in(self._touches, "_id", ids, {"occurred_at": {"$lt": before}})

    async def _touches_of(self, start: datetime, end: datetime, customer: str) -> list[Touch]:
        owner = owner_of(await self._aliases_from({customer}), customer)
        ids = sorted(await self._leading_to({owner}))
        found = await self._read(
            {"occurred_at": {"$gte": start, "$lt": end}, "customer_id": {"$in": ids}}
        )
        return [replace(t, customer_id=owner) for t in found]

    async def _read(self, query: MongoDocument) -> list[Touch]:
        return [_touch(d) async for d in self._touches.find(query, projection=STORED)]

    async def _mark_erased_entries(self, published: Mapping[str, int]) -> None:
        """Entry ids an erasure took, each with the latest erased copy's publishing time."""
        await bulk_write(
            self._erased_entries,
            [
                UpdateOne({"_id": e}, {"$max": {"published_ms": published[e]}}, upsert=True)
                for e in sorted(published)
            ],
        )

    async def _erased_among(self, customers: set[str]) -> dict[str, bool]:
        """Of these ids, the erased ones, each with whether ids leading to it are erased too
        (`erase`, not `exact`)."""
        found = self._erased.find({"_id": {"$in": sorted(customers)}})
        return {d["_id"]: d.get("followed", True) async for d in found}

    async def _aliases_from(self, customers: set[str]) -> dict[str, str]:
        """The aliases on the way from `customers` to whom they answer to now (one query a hop)."""
        found: list[MongoDocument] = []
        asked: set[str] = set()
        while ahead := {*customers, *_current(found).values()} - asked:
            asked |= ahead
            found += [d async for d in find_in(self._aliases, "absorbed", sorted(ahead))]
        return _current(found)

    async def _leading_to(self, customers: set[str]) -> set[str]:
        """`customers` and every id whose aliases lead to one of them (one query a hop)."""
        found, ahead = set(customers), set(customers)
        while ahead:
            merged = find_in(self._aliases, "survivor", sorted(ahead), {"absorbed": 1})
            ahead = {d["absorbed"] async for d in merged} - found
            found |= ahead
        return found


def _alias_id(absorbed: str, event_id: str | None) -> str:
    """One alias per absorbed id and merge; `absorbed:` for one stored before merges were told
    apart (customer ids and event ids hold no colon at their end)."""
    return f"{absorbed}:{event_id or ''}"


def _current(aliases: Sequence[MongoDocument]) -> dict[str, str]:
    """Absorbed id -> survivor. An id merged, split off and merged again has one alias left
    once every record is read; until then (a merge read before the split that undoes it) the
    later merge decides, by the time of the event that made it. An alias written by the
    previous version (`_id` the absorbed id) reads as one of no time."""
    ordered = sorted(aliases, key=_merged_when)
    return {_absorbed(d): str(d["survivor"]) for d in ordered}


def _absorbed(alias: MongoDocument) -> str:
    return str(alias.get("absorbed", alias["_id"]))


def _merged_when(alias: MongoDocument) -> tuple[str, datetime, str]:
    at: datetime = alias.get("occurred_at") or EARLIEST
    return _absorbed(alias), at, str(alias.get("event_id") or "")


def _is_erased(touch: Touch, aliases: Mapping[str, str], erased: Mapping[str, bool]) -> bool:
    """Recorded under an erased id, or under one leading to an id an earlier version's
    erasure record named (whose ids were followed through the aliases)."""
    if touch.customer_id in erased:
        return True
    return erased.get(owner_of(aliases, touch.customer_id), False)


def _writes(touches: Sequence[Touch], gone: set[str]) -> Iterator[UpdateOne | DeleteOne]:
    """Each touch upserted unless a copy published later is stored; an erased one deleted."""
    for touch in touches:
        if touch.id in gone:
            yield _delete(touch)
            continue
        earlier = {"_id": touch.id, "published_ms": {"$not": {"$gt": touch.published_ms}}}
        yield UpdateOne(earlier, {"$set": _document(touch)}, upsert=True)


def _delete(copy: Touch) -> DeleteOne:
    """The stored copy of an erased entry, unless a copy published after this one is stored
    (a split gave the entry to another customer: theirs stays)."""
    return DeleteOne({"_id": copy.id, "published_ms": {"$not": {"$gt": copy.published_ms}}})


def _document(touch: Touch) -> MongoDocument:
    document = asdict(touch)
    document.pop("id")
    return document


def _touch(document: MongoDocument) -> Touch:
    values = {k: v for k, v in document.items() if k != "_id"}
    return Touch(id=document["_id"], **values)
