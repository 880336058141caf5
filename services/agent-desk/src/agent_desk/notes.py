"""Notes agents and store staff leave about a customer for each other ("prefers a call after
6 pm", "the red pair is kept at BCN-01 until Friday"). Internal: never sent to the customer.

They live in MongoDB (`desk_notes`), one document per note, under the customer id they were
written on: a profile merged into another brings its notes along (the page reads the ids it
was merged from too), and a merge undone takes them back. The text is personal data, so it is
sealed as a journey entry is (`hilo.sealing`), with the keys of every identifier the customer
held when it was written: an erasure, which deletes those keys, leaves it unreadable wherever a
copy is (a backup too), and the desk deletes the notes of the erased customers it hears of. One
written while two people's profiles were merged is sealed with both people's keys, and stays
with the survivor's id if the merge is undone: erasing the survivor then leaves the other
person's key, which still opens a copy kept elsewhere (the desk's own is deleted).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from agent_desk.profiles import ProfileApi
from hilo.mongo import MongoDocument
from hilo.sealing import NoKeys, Sealer, Unreadable, is_sealed, seal, sealed_subjects, unseal

NOTES: Final = "desk_notes"
NOTE_LENGTH: Final = 2_000
"""Characters a note may have: a few lines for a colleague, not a document."""
SHOWN: Final = 20
"""Notes a customer page shows, the latest first."""


Deleted = Literal["deleted", "not_author", "gone"]


@dataclass(frozen=True)
class Note:
    id: str
    customer_id: str
    author: str
    at: datetime
    text: str


class Notes:
    """The notes in MongoDB, sealed with the keys of the customer's identifiers."""

    def __init__(self, collection: AsyncCollection[MongoDocument], sealer: Sealer) -> None:
        self.collection = collection
        self.sealer = sealer

    async def create_indexes(self) -> None:
        await self.collection.create_index([("customer_id", 1), ("at", DESCENDING)])

    async def add(
        self, customer_id: str, identifiers: Iterable[Mapping[str, Any]], author: str, text: str
    ) -> Note:
        """Keep `text` about the customer who holds `identifiers` (as the profile service lists
        them), sealed with their keys."""
        subjects = [self.sealer.subject(f"{i['kind']}:{i['value']}") for i in identifiers]
        # Only keys that exist: every identifier a customer holds got one with its first event,
        # and making one again would outlive an erasure under way (it deletes the keys first).
        keys = await self.sealer.keys.get(subjects) if subjects else {}
        if not keys:
            raise NoKeys(customer_id)
        note = Note(uuid.uuid4().hex, customer_id, author, datetime.now(UTC), text)
        document: dict[str, Any] = {
            "id": note.id,
            "customer_id": customer_id,
            "author": author,
            "at": note.at,
            "text": text,
        }
        sealed = seal(document, [("text",)], keys, note.id.encode())
        await self.collection.insert_one({"_id": sealed.pop("id"), **sealed})
        return note

    async def of(self, customer_ids: Sequence[str], limit: int | None = SHOWN) -> list[Note]:
        """The latest notes written on any of `customer_ids` (a customer and the profiles
        merged into them), the latest first (`limit`: None, all of them); those that no longer
        open (erased) left out."""
        found = self.collection.find({"customer_id": {"$in": list(customer_ids)}})
        documents = await found.sort("at", DESCENDING).limit(limit or 0).to_list()
        wanted = {subject for doc in documents for subject in sealed_subjects(doc)}
        keys = await self.sealer.keys.get(wanted) if wanted else {}
        return [note for doc in documents if (note := _opened(doc, keys)) is not None]

    async def delete(self, note_id: str, customer_ids: Sequence[str], author: str) -> Deleted:
        """Delete a note of these customers, if `author` wrote it."""
        theirs = {"_id": note_id, "customer_id": {"$in": list(customer_ids)}}
        gone = await self.collection.delete_one({**theirs, "author": author})
        if gone.deleted_count == 1:
            return "deleted"
        return "not_author" if await self.collection.count_documents(theirs) else "gone"

    async def forget(self, customer_ids: Iterable[str]) -> int:
        """Delete the notes of erased customers (their keys are gone already)."""
        gone = await self.collection.delete_many({"customer_id": {"$in": list(customer_ids)}})
        return gone.deleted_count


def _opened(document: MongoDocument, keys: Mapping[str, bytes]) -> Note | None:
    if not is_sealed(document):
        return None
    try:
        opened = unseal(dict(document), keys, str(document["_id"]).encode())
    except Unreadable:
        return None
    return Note(
        id=str(opened["_id"]),
        customer_id=str(opened["customer_id"]),
        author=str(opened["author"]),
        at=opened["at"],  # in UTC: the client is `tz_aware` (`hilo.mongo`)
        text=str(opened.get("text", "")),
    )


def ids_of(profile: Mapping[str, Any]) -> list[str]:
    """The customer's id and those of the profiles merged into them: their notes are theirs."""
    return [str(profile["customer_id"]), *map(str, profile.get("merged_from", []))]


async def export(notes: Notes, profiles: ProfileApi, customer_id: str) -> list[dict[str, str]]:
    """Every note about the customer, as JSON objects, for a request of access: the profile
    service's export does not hold them. The profiles merged into the customer are asked of
    the profile service; one it does not know is looked up under the id given."""
    profile = await profiles.profile(customer_id)
    ids = [customer_id] if profile is None else ids_of(profile)
    found = await notes.of(ids, limit=None)
    if profile is None and not found:
        raise LookupError("no customer with this id, and no note under it")
    return [
        {
            "id": note.id,
            "customer_id": note.customer_id,
            "author": note.author,
            "at": note.at.isoformat(),
            "text": note.text,
        }
        for note in found
    ]
