"""Notes agents leave about a customer for each other, against the real stack (Kafka, MongoDB,
the customer-profile service, the desk): shared, sealed, following merges, gone with erasures."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo import AsyncMongoClient

from agent_desk.__main__ import export_notes, main
from agent_desk.handling import HANDLING
from agent_desk.notes import NOTES, Notes
from agent_desk.testing import AGENT, PASSWORD, csrf_of, desk_settings, running_desk, signed_in
from customer_profile.testing import (
    ADMIN_API_KEY,
    API_KEY,
    RunningProfileService,
    running_profile_service,
)
from hilo.contract import (
    Direction,
    Identified,
    Identifiers,
    Interaction,
    MessageExchanged,
    new_interaction,
)
from hilo.mongo import MongoDocument, create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.serving import served

COLLEAGUE = "bo.agent"
NOTE = "Prefers a call after 6 pm.\nThe red pair waits at BCN-01 until Friday."


def wrote(n: int, identifiers: Identifiers) -> Interaction:
    return new_interaction(
        channel="whatsapp",
        instance="test",
        provider_event_id=f"notes-{n}",
        identifiers=identifiers,
        payload=MessageExchanged(
            direction=Direction.INBOUND, text=f"message {n}", provider_message_id=f"n{n}"
        ),
        occurred_at=datetime.now(UTC) - timedelta(minutes=10 - n),
    )


@dataclass
class Stack:
    settings: HiloSettings
    profile: RunningProfileService
    profile_url: str
    ana: httpx.AsyncClient
    bo: httpx.AsyncClient


@asynccontextmanager
async def running(settings: HiloSettings, **desk_overrides: object) -> AsyncIterator[Stack]:
    """The profile service and a desk two agents signed in to (`desk_overrides`: its settings)."""
    agents = {AGENT: PASSWORD, COLLEAGUE: PASSWORD}
    async with AsyncExitStack() as context:
        profile = await context.enter_async_context(running_profile_service(settings))
        url = await context.enter_async_context(served(profile.service.app, lifespan="off"))
        desk = await context.enter_async_context(
            running_desk(desk_settings(settings, url, API_KEY, agents=agents, **desk_overrides))
        )
        ana = await context.enter_async_context(signed_in(desk))
        bo = await context.enter_async_context(signed_in(desk, COLLEAGUE, PASSWORD))
        yield Stack(settings, profile, url, ana, bo)


@pytest.fixture
async def stack(settings: HiloSettings, topics: list[str]) -> AsyncIterator[Stack]:
    async with running(settings) as started:
        yield started


@pytest.fixture
async def uncached(settings: HiloSettings, topics: list[str]) -> AsyncIterator[Stack]:
    """The same with a desk that caches no key: it reads the key store every time."""
    async with running(settings, key_cache_seconds=0) as started:
        yield started


async def post_note(agent: httpx.AsyncClient, customer: str, **form: str) -> httpx.Response:
    """What the page's script posts from the notes card."""
    page = await agent.get(f"/customers/{customer}")
    return await agent.post(
        f"/customers/{customer}/notes",
        data={"csrf": csrf_of(page.text), **form},
        headers={"X-Requested-With": "fetch"},
    )


def notes_shown(page: str) -> list[str]:
    return re.findall(r'<p class="note-text">(.*?)</p>', page, re.DOTALL)


async def test_a_note_one_agent_leaves_is_what_a_colleague_reads_and_only_its_author_deletes(
    stack: Stack,
) -> None:
    await stack.profile.publish([wrote(1, Identifiers(phone="+34612345678"))])
    await stack.profile.wait_for_entries(1)
    cy = await stack.profile.customer_of("phone", "+34612345678")

    await stack.profile.publish([wrote(2, Identifiers(phone="+34612000999"))])
    await stack.profile.wait_for_entries(2)
    other = await stack.profile.customer_of("phone", "+34612000999")

    added = await post_note(stack.ana, cy, text=f"  {NOTE.replace(chr(10), chr(13) + chr(10))}  ")
    empty = await post_note(stack.ana, cy, text="   ")
    too_long = await post_note(stack.ana, cy, text="x" * 2_001)
    forged = await stack.ana.post(f"/customers/{cy}/notes", data={"text": "x", "csrf": "old"})
    seen_by_bo = (await stack.bo.get(f"/customers/{cy}")).text
    [note_id] = re.findall(r'id="note-([0-9a-f]+)"', seen_by_bo)
    not_his = await post_note(stack.bo, cy, action="delete", note_id=note_id)
    elsewhere = await post_note(stack.ana, other, action="delete", note_id=note_id)
    still = (await stack.bo.get(f"/customers/{cy}/panels")).text
    deleted = await post_note(stack.ana, cy, action="delete", note_id=note_id)
    again = await post_note(stack.ana, cy, action="delete", note_id=note_id)
    after = (await stack.ana.get(f"/customers/{cy}")).text

    assert added.status_code == 200, added.text
    assert (empty.status_code, empty.json()) == (422, {"message": "Write the note first."})
    assert too_long.json() == {"message": "A note holds at most 2,000 characters."}
    assert forged.status_code == 403
    assert notes_shown(seen_by_bo) == [NOTE], "as typed, a browser's CRLF read as a line break"
    assert f"{AGENT}, " in seen_by_bo, "the author, named to colleagues"
    assert ">Delete</button>" not in seen_by_bo, "only the author is offered to delete it"
    assert not_his.status_code == 403
    assert elsewhere.status_code == 404, "another customer's page deletes none of Cy's notes"
    assert notes_shown(still) == [NOTE], "an open page's refresh reads the notes too"
    assert deleted.status_code == 200
    assert again.json() == {"message": "This note was deleted already."}
    assert notes_shown(after) == []
    assert "No notes yet." in after


async def test_a_note_is_shown_as_text_never_as_markup(stack: Stack) -> None:
    await stack.profile.publish([wrote(1, Identifiers(phone="+34612345670"))])
    await stack.profile.wait_for_entries(1)
    fe = await stack.profile.customer_of("phone", "+34612345670")

    await post_note(stack.ana, fe, text='<script>alert("hi")</script>')
    page = (await stack.bo.get(f"/customers/{fe}")).text

    assert "<script>alert" not in page
    assert notes_shown(page) == ["&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt;"]


async def test_a_note_is_sealed_and_an_erasure_leaves_no_copy_that_opens(
    stack: Stack,
) -> None:
    """The text is the customer's personal data: sealed with their keys in MongoDB, deleted when
    the desk hears of the erasure, and a copy kept elsewhere (a backup) no longer opens."""
    await stack.profile.publish([wrote(1, Identifiers(phone="+34699000111"))])
    await stack.profile.wait_for_entries(1)
    di = await stack.profile.customer_of("phone", "+34699000111")
    assert (await post_note(stack.ana, di, text=NOTE)).status_code == 200
    mongo = create_mongo_client(stack.settings)
    notes = mongo[stack.settings.mongodb_database][NOTES]
    try:
        [stored] = await notes.find({"customer_id": di}).to_list()
        async with httpx.AsyncClient(base_url=stack.profile_url) as api:
            erased = await api.delete(f"/v1/customers/{di}", headers={"X-API-Key": ADMIN_API_KEY})
        assert erased.status_code in (200, 202), erased.text
        left = await eventually(
            lambda: notes.count_documents({"customer_id": di}), until=lambda n: n == 0
        )
        await notes.insert_one(stored)  # the backup's copy, put back
        opened = await Notes(notes, create_sealer(stack.settings, mongo)).of([di])
    finally:
        await mongo.close()

    assert "Prefers" not in str(stored), "no plain text in MongoDB"
    assert stored["author"] == AGENT
    assert left == 0
    assert opened == []


async def test_a_note_left_on_an_anonymous_visitor_follows_them_once_they_sign_in(
    stack: Stack,
) -> None:
    """An agent chatting with a visitor notes something; the visitor signs in and their profile
    is merged into the known customer's, whose page now shows the note."""
    await stack.profile.publish(
        [
            wrote(1, Identifiers(email="eva@example.com")),
            wrote(2, Identifiers(anonymous_id="anon-notes-1")),
        ]
    )
    await stack.profile.wait_for_entries(2)
    eva = await stack.profile.customer_of("email", "eva@example.com")
    visitor = await stack.profile.customer_of("anonymous_id", "anon-notes-1")
    assert (await post_note(stack.ana, visitor, text="Asked about size 42")).status_code == 200
    signed = new_interaction(
        channel="web",
        instance="test",
        provider_event_id="notes-sign-in",
        identifiers=Identifiers(email="eva@example.com", anonymous_id="anon-notes-1"),
        payload=Identified(traits={}),
        occurred_at=datetime.now(UTC),
    )
    await stack.profile.publish([signed])
    await stack.profile.wait_for_entries(3)

    page = (await stack.bo.get(f"/customers/{eva}")).text
    exported = await export_notes(desk_settings(stack.settings, stack.profile_url, API_KEY), eva)

    assert await stack.profile.customer_of("anonymous_id", "anon-notes-1") == eva, "merged"
    assert notes_shown(page) == ["Asked about size 42"]
    assert [(n["customer_id"], n["author"], n["text"]) for n in exported] == [
        (visitor, AGENT, "Asked about size 42")
    ], "a request of access gets them too (agent-desk export-notes)"


def test_exporting_notes_needs_whose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["agent-desk", "export-notes"])

    with pytest.raises(SystemExit) as refused:
        main()

    assert refused.value.code == 2


@asynccontextmanager
async def being_erased(
    stack: Stack, phone: str
) -> AsyncIterator[
    tuple[str, AsyncMongoClient[MongoDocument], Callable[[], Awaitable[dict[str, bytes]]]]
]:
    """A customer who wrote from `phone`, caught between an erasure's two steps: their keys
    deleted, their profile still there. Yields their id, a MongoDB client and what reads their
    key (none is left, unless something made it again)."""
    await stack.profile.publish([wrote(1, Identifiers(phone=phone))])
    await stack.profile.wait_for_entries(1)
    customer = await stack.profile.customer_of("phone", phone)
    mongo = create_mongo_client(stack.settings)
    try:
        sealer = create_sealer(stack.settings, mongo)
        subject = sealer.subject(f"phone:{phone}")
        assert await sealer.keys.get([subject]), "the channel made the key with the event"
        await sealer.keys.forget([subject], made_until=datetime.now(UTC))
        yield customer, mongo, lambda: sealer.keys.get([subject])
    finally:
        await mongo.close()


async def test_a_note_written_while_an_erasure_is_under_way_makes_no_key_again(
    uncached: Stack,
) -> None:
    """An erasure deletes the keys first and the profile after: a page still open between the
    two must not seal a note with keys made anew, which would outlive the erasure. (A desk
    whose cache still holds the old key, for `HILO_KEY_CACHE_SECONDS`, seals with it: no copy
    opens either.)"""
    stack = uncached
    async with being_erased(stack, "+34699000222") as (gi, mongo, keys_left):
        written = await post_note(stack.ana, gi, text=NOTE)
        keys_after = await keys_left()
        notes = mongo[stack.settings.mongodb_database][NOTES]
        opened = await Notes(notes, create_sealer(stack.settings, mongo)).of([gi])

    assert written.status_code == 409
    assert written.json() == {
        "message": "Nothing can be kept about this customer: their data is being erased."
    }
    assert keys_after == {}
    assert opened == []


async def test_a_done_mark_made_while_an_erasure_is_under_way_makes_no_key_again(
    uncached: Stack,
) -> None:
    """The same for an agent's done mark, which goes into the journey sealed: refused, and the
    desk keeps no mark either."""
    stack = uncached
    async with being_erased(stack, "+34699000333") as (hu, mongo, keys_left):
        page = await stack.ana.get(f"/customers/{hu}")
        marked = await stack.ana.post(
            f"/customers/{hu}/handling",
            data={"action": "done", "csrf": csrf_of(page.text)},
            headers={"X-Requested-With": "fetch"},
        )
        keys_after = await keys_left()
        kept = await mongo[stack.settings.mongodb_database][HANDLING].find_one({"_id": hu})

    assert marked.status_code == 409
    assert marked.json() == {
        "message": "Nothing can be kept about this customer: their data is being erased."
    }
    assert keys_after == {}
    assert kept is None


async def test_exporting_the_notes_of_nobody_is_an_error_not_an_empty_list(stack: Stack) -> None:
    """A mistyped id must not read as "no notes" to whoever answers a request of access."""
    settings = desk_settings(stack.settings, stack.profile_url, API_KEY)

    with pytest.raises(LookupError, match="no customer with this id"):
        await export_notes(settings, "0000000000000000000000000000dead")
