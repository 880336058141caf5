"""Who waits for a reply and who handles them: the inbox's queue and the conversation panel,
against the real stack (Kafka, MongoDB, the customer-profile service, the desk)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_desk import app as desk_app
from agent_desk import queue as desk_queue
from agent_desk.handling import DESK_CHANNEL, HANDLING, Handlings, SeenTo
from agent_desk.testing import AGENT, PASSWORD, csrf_of, desk_settings, running_desk, signed_in
from customer_profile.testing import API_KEY, RunningProfileService, running_profile_service
from hilo.contract import (
    CallHappened,
    CallStatus,
    Direction,
    Identified,
    Identifiers,
    Interaction,
    MessageExchanged,
    Purpose,
    new_interaction,
)
from hilo.kafka import KafkaPublisher, PublishFailed, Record
from hilo.mongo import create_mongo_client
from hilo.sealing import SubjectKeys
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.serving import served
from hilo.topics import Topic

COLLEAGUE = "bo.agent"
COLLEAGUE_PASSWORD = "another long and correct password"


def message(
    n: int, email: str, ago: timedelta, direction: Direction, purpose: Purpose | None = None
) -> Interaction:
    return new_interaction(
        channel="whatsapp" if direction == Direction.INBOUND else "email",
        instance="test",
        provider_event_id=f"handling-{n}",
        identifiers=Identifiers(email=email),
        payload=MessageExchanged(
            direction=direction, text=f"message {n}", provider_message_id=f"m{n}", purpose=purpose
        ),
        occurred_at=datetime.now(UTC) - ago,
    )


def on_the_web(
    event: str, ago: timedelta, identifiers: Identifiers, payload: object
) -> Interaction:
    """A web chat message or sign-in (`payload`) `ago`."""
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id=event,
        identifiers=identifiers,
        payload=payload,
        occurred_at=datetime.now(UTC) - ago,
    )


def chat(text: str, n: int) -> MessageExchanged:
    return MessageExchanged(direction=Direction.INBOUND, text=text, provider_message_id=f"v{n}")


class Desk:
    """The stack, and two agents signed in to one desk."""

    def __init__(
        self,
        profile: RunningProfileService,
        ana: httpx.AsyncClient,
        bo: httpx.AsyncClient,
        url: str,
    ) -> None:
        self.profile = profile
        self.ana = ana
        self.bo = bo
        self.url = url
        self.entries = 0

    async def written(self, *messages: Interaction) -> list[str]:
        """Publish the messages and wait for them: the customer ids of their senders, in the
        order each first wrote."""
        await self.profile.publish(messages)
        self.entries += len(messages)
        await self.profile.wait_for_entries(self.entries)
        senders = dict.fromkeys(m.identifiers.strongest() for m in messages)
        return [await self.profile.customer_of(kind, value) for kind, value in senders]

    async def act(
        self,
        agent: httpx.AsyncClient,
        customer: str,
        action: str,
        journey: bool = True,
        **form: str,
    ) -> httpx.Response:
        """What the page's script posts for a button of the conversation panel. A done mark of a
        customer who waits goes into their journey (unless the test keeps it out): waited for,
        as a message is."""
        view = (await self.profile.get(f"/v1/customers/{customer}"))["view"]
        page = await agent.get(f"/customers/{customer}")
        answer = await agent.post(
            f"/customers/{customer}/handling",
            data={"action": action, "csrf": csrf_of(page.text), **form},
            headers={"X-Requested-With": "fetch"},
        )
        waited = (view.get("conversation") or {}).get("awaiting_reply_since")
        if action == "done" and answer.status_code == 200 and waited and journey:
            self.entries += 1
            await self.profile.wait_for_entries(self.entries)
        return answer


@pytest.fixture
async def desk(settings: HiloSettings, topics: list[str]) -> AsyncIterator[Desk]:
    agents = {AGENT: PASSWORD, COLLEAGUE: COLLEAGUE_PASSWORD}
    async with AsyncExitStack() as stack:
        profile = await stack.enter_async_context(running_profile_service(settings))
        profile_url = await stack.enter_async_context(served(profile.service.app, lifespan="off"))
        desk_url = await stack.enter_async_context(
            running_desk(
                desk_settings(
                    settings,
                    profile_url,
                    API_KEY,
                    agents=agents,
                    desk_first_reply_minutes=25,
                    desk_queue_metrics_seconds=1,
                )
            )
        )
        ana = await stack.enter_async_context(signed_in(desk_url))
        bo = await stack.enter_async_context(signed_in(desk_url, COLLEAGUE, COLLEAGUE_PASSWORD))
        yield Desk(profile, ana, bo, desk_url)


def customers_listed(page: str) -> list[str]:
    return re.findall(r'<tr data-customer="([0-9a-f]+)">', page)


def overdue_rows(page: str) -> list[str]:
    """The customers the inbox shows waiting past the target (25 minutes here)."""
    rows = re.findall(r'<tr data-customer="([0-9a-f]+)">(.*?)</tr>', page, re.DOTALL)
    return [customer for customer, cells in rows if "wait overdue" in cells]


async def test_the_queue_lists_who_waits_the_longest_first_until_answered_or_done(
    desk: Desk,
) -> None:
    """Cy waits 30 minutes, Ana 20; Bo was answered by email. Marking Ana done takes her out
    of the queue until she writes again, and then she waits from that message."""
    ana, bo, cy = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=20), Direction.INBOUND),
        message(2, "bo@example.com", timedelta(minutes=15), Direction.INBOUND),
        message(3, "bo@example.com", timedelta(minutes=10), Direction.OUTBOUND),
        message(4, "cy@example.com", timedelta(minutes=30), Direction.INBOUND),
    )

    queue = (await desk.ana.get("/?show=waiting")).text
    everyone = (await desk.ana.get("/")).text
    taken = await desk.act(desk.ana, ana, "take", shown="")
    done = await desk.act(desk.ana, ana, "done")
    after_done = (await desk.ana.get("/?show=waiting")).text
    await desk.written(message(5, "ana@example.com", timedelta(minutes=1), Direction.INBOUND))
    again = (await desk.ana.get("/?show=waiting")).text
    page = (await desk.ana.get(f"/customers/{ana}")).text

    assert customers_listed(queue) == [cy, ana]
    assert overdue_rows(queue) == [cy]
    assert ">30 min<" in queue
    assert ">20 min<" in queue
    assert customers_listed(everyone) == [bo, ana, cy]
    assert "answered" in everyone
    assert (taken.status_code, done.status_code) == (200, 200)
    assert customers_listed(after_done) == [cy]
    assert customers_listed(again) == [cy, ana]
    assert "Waiting for a reply for 1 min" in page


async def test_a_marketing_message_leaves_the_customer_waiting_and_says_what_it_was(
    desk: Desk,
) -> None:
    """Dee asked on WhatsApp; a promotion went out to her by email meanwhile. She still waits,
    on WhatsApp (the promotion is no part of her conversation: the desk answers where she
    wrote), and her page tells the agent the email was marketing, not an answer."""
    (dee,) = await desk.written(
        message(1, "dee@example.com", timedelta(minutes=12), Direction.INBOUND),
        message(2, "dee@example.com", timedelta(minutes=5), Direction.OUTBOUND, "marketing"),
    )

    queue = (await desk.ana.get("/?show=waiting")).text
    page = (await desk.ana.get(f"/customers/{dee}")).text
    await desk.written(
        message(3, "dee@example.com", timedelta(minutes=1), Direction.OUTBOUND, "service")
    )
    answered = (await desk.ana.get("/?show=waiting")).text

    assert customers_listed(queue) == [dee]
    assert re.findall(r'<span class="badge ch-(\w+)">', queue) == ["whatsapp"]
    assert "Waiting for a reply for 12 min" in page
    assert 'On <span class="badge ch-whatsapp">' in page
    assert len(re.findall(r'<span class="purpose"[^>]*>marketing</span>', page)) == 1
    assert customers_listed(answered) == []


async def test_a_message_after_an_agents_call_back_carries_on_the_call(desk: Desk) -> None:
    """The contact centre called Eve back (her last conversation long closed) and names the
    agent on the call; her WhatsApp message ten minutes later carries on that call: one
    conversation started on the phone, and she waits for the answer to her message."""
    phone = Identifiers(phone="+34612000111")
    call = CallHappened(
        direction=Direction.OUTBOUND,
        status=CallStatus.COMPLETED,
        provider_call_id="CA-back-1",
        agent_id=AGENT,
    )
    (eve,) = await desk.written(
        new_interaction(
            channel="voice",
            instance="test",
            provider_event_id="call-back-1",
            identifiers=phone,
            payload=call,
            occurred_at=datetime.now(UTC) - timedelta(minutes=15),
        ),
        new_interaction(
            channel="whatsapp",
            instance="test",
            provider_event_id="after-call-1",
            identifiers=phone,
            payload=chat("one more thing about the refund", 1),
            occurred_at=datetime.now(UTC) - timedelta(minutes=5),
        ),
    )

    page = (await desk.ana.get(f"/customers/{eve}")).text
    queue = (await desk.ana.get("/?show=waiting")).text

    assert re.search(r"Started on <strong>Phone</strong>.*continued on <strong>WhatsApp", page)
    assert "Waiting for a reply for 5 min" in page
    assert customers_listed(queue) == [eve]


async def test_a_page_marks_done_only_the_messages_it_showed(desk: Desk) -> None:
    """Ana wrote again after the agent's page was drawn: marking done what the page showed
    leaves her waiting from the message the agent did not see."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=20), Direction.INBOUND)
    )
    shown = (await desk.profile.get(f"/v1/customers/{ana}"))["view"]["conversation"]
    await desk.written(message(2, "ana@example.com", timedelta(minutes=2), Direction.INBOUND))

    done = await desk.act(desk.ana, ana, "done", through=shown["last_inbound_at"])
    queue = (await desk.ana.get("/?show=waiting")).text

    assert done.status_code == 200
    assert customers_listed(queue) == [ana]
    assert ">2 min<" in queue


_PUBLISH_RECORDS = KafkaPublisher.publish_records


async def refusing_desk_marks(publisher: KafkaPublisher, records: Sequence[Record]) -> None:
    """`KafkaPublisher.publish_records` with Kafka refusing the desk's interactions alone (the
    test's own publishing, and the services', goes on)."""
    if any(
        record.topic is Topic.INTERACTIONS
        and record.value is not None
        and json.loads(record.value)["channel"] == DESK_CHANNEL
        for record in records
    ):
        raise PublishFailed("injected: Kafka did not confirm")
    await _PUBLISH_RECORDS(publisher, records)


async def kept_by_the_desk_alone(*_args: object) -> None:
    """`_tell_journey` of the desk before done marks went into journeys."""


async def test_a_done_mark_takes_the_customer_off_the_profile_services_queue_too(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana's thank-you is marked done by Bo: the journey says so (under the email she wrote
    from, which a split would send it with, not her stronger loyalty id), the profile service's own
    queue (its API, which other tools read) drops her and its view names Bo, until she writes
    again. With Kafka refusing the mark nothing is marked, on the desk either: the page still
    offers the button, and the mark made again is the one entry."""
    signed_in = on_the_web(
        "handling-loyal",
        timedelta(minutes=30),
        Identifiers(loyalty_id="L-77", email="ana@example.com"),
        Identified(),
    )
    ana, same = await desk.written(
        signed_in,
        message(1, "ana@example.com", timedelta(minutes=20), Direction.INBOUND),
        message(2, "ana@example.com", timedelta(minutes=19), Direction.OUTBOUND),
        message(3, "ana@example.com", timedelta(minutes=15), Direction.INBOUND),
    )
    assert same == ana
    with monkeypatch.context() as refusing:
        refusing.setattr(KafkaPublisher, "publish_records", refusing_desk_marks)
        refused = await desk.act(desk.bo, ana, "done")
    queued = await desk.profile.get("/v1/conversations?awaiting=true")
    panel = (await desk.bo.get(f"/customers/{ana}/panels")).text

    done = await desk.act(desk.bo, ana, "done")
    after = await desk.profile.get("/v1/conversations?awaiting=true")
    seen_to = (await desk.profile.get(f"/v1/customers/{ana}"))["view"]["conversation"]
    journey = (await desk.profile.get(f"/v1/customers/{ana}/journey"))["entries"]
    await desk.written(message(4, "ana@example.com", timedelta(minutes=2), Direction.INBOUND))
    again = await desk.profile.get("/v1/conversations?awaiting=true")

    assert refused.status_code == 503
    assert refused.json() == {"message": desk_app.DONE_NOT_TOLD}
    assert [c["customer_id"] for c in queued] == [ana], "the journey was not told"
    assert "Mark as done" in panel, "nor was the desk: the agent can mark it again"
    assert done.status_code == 200
    assert after == []
    assert seen_to["done_by"] == COLLEAGUE
    marks = [e for e in journey if e["type"] == "conversation_done"]
    assert [(m["channel"], m["payload"]["agent_id"]) for m in marks] == [("desk", COLLEAGUE)]
    assert marks[0]["identifiers"] == {"email": "ana@example.com"}, "the contact's, not L-77"
    assert [c["customer_id"] for c in again] == [ana]
    waiting = datetime.fromisoformat(again[0]["conversation"]["awaiting_reply_since"])
    assert timedelta(minutes=1) < datetime.now(UTC) - waiting < timedelta(minutes=3)


async def test_a_late_question_older_than_the_page_showed_waits_until_marked_again(
    desk: Desk,
) -> None:
    """Ana wrote 10 minutes ago; her page is drawn; a message she sent 20 minutes ago arrives
    late (a slow provider). The mark the page makes sees to what it showed, not the older one:
    she waits from it. Her page drawn again marks through the same message, waiting since the
    older one: another mark, and she waits no more."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=10), Direction.INBOUND)
    )
    shown = (await desk.profile.get(f"/v1/customers/{ana}"))["view"]["conversation"]
    await desk.written(message(2, "ana@example.com", timedelta(minutes=20), Direction.INBOUND))
    page = {"through": shown["last_inbound_at"], "waiting": shown["awaiting_reply_since"]}

    first = await desk.act(desk.ana, ana, "done", **page)
    still = await desk.profile.get("/v1/conversations?awaiting=true")
    again = await desk.act(desk.ana, ana, "done")
    after = await desk.profile.get("/v1/conversations?awaiting=true")

    assert (first.status_code, again.status_code) == (200, 200)
    assert [c["customer_id"] for c in still] == [ana]
    waiting = datetime.fromisoformat(still[0]["conversation"]["awaiting_reply_since"])
    assert timedelta(minutes=19) < datetime.now(UTC) - waiting < timedelta(minutes=22)
    assert after == []


async def test_a_mark_is_refused_when_the_key_store_hangs_or_the_page_is_behind(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key store that does not answer must not hold the click: 503 after the desk's bound,
    nothing marked. A page drawn before the customer's new conversation marks nothing: 409."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    async def hanging(*_args: object, **_kwargs: object) -> None:
        await asyncio.sleep(3600)

    with monkeypatch.context() as hung:
        hung.setattr(SubjectKeys, "get", hanging)
        hung.setattr(desk_app, "HANDLING_CHANGE_SECONDS", 1.0)
        held = await desk.act(desk.ana, ana, "done")
    old_page = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    behind = await desk.act(desk.ana, ana, "done", through=old_page)
    queued = await desk.profile.get("/v1/conversations?awaiting=true")

    assert held.status_code == 503
    assert held.json() == {"message": desk_app.DATABASE_AWAY}
    assert behind.status_code == 409
    assert "wrote again since this page" in behind.json()["message"]
    assert [c["customer_id"] for c in queued] == [ana]
    assert "Mark as done" in (await desk.ana.get(f"/customers/{ana}/panels")).text


async def test_a_page_showing_an_older_wait_up_to_the_same_message_sees_to_more(
    settings: HiloSettings,
) -> None:
    """The desk's own mark: one page marks done through 10:00 what it showed waiting since
    10:00; after a merge brought a question of 9:50, a page marks through 10:00 again, waiting
    since 9:50: the mark now covers it. A page showing less moves nothing back."""
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    mongo = create_mongo_client(settings)
    try:
        handlings = Handlings(mongo[settings.mongodb_database][f"{HANDLING}_older_wait"])
        await handlings.create_indexes()
        await handlings.done("c1", "ana", SeenTo(at, at))
        await handlings.done("c1", "bo", SeenTo(at, at - timedelta(minutes=10)))
        await handlings.done("c1", "cy", SeenTo(at, at - timedelta(minutes=5)))
        kept = (await handlings.of(["c1"]))["c1"]
        await handlings.collection.drop()
    finally:
        await mongo.close()

    assert (kept.done_by, kept.done_waiting) == ("bo", at - timedelta(minutes=10))


async def test_two_agents_taking_one_conversation_at_once_do_not_both_get_it(
    desk: Desk,
) -> None:
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    taken = await asyncio.gather(
        desk.act(desk.ana, ana, "take", shown=""), desk.act(desk.bo, ana, "take", shown="")
    )
    statuses = sorted(answer.status_code for answer in taken)
    winner = AGENT if taken[0].status_code == 200 else COLLEAGUE
    loser = desk.bo if winner == AGENT else desk.ana
    refused = next(answer for answer in taken if answer.status_code == 409)
    mine = {
        agent: (await client.get("/?show=mine")).text
        for agent, client in ((AGENT, desk.ana), (COLLEAGUE, desk.bo))
    }
    panel = (await loser.get(f"/customers/{ana}/panels")).text
    again = await desk.act(desk.ana if winner == AGENT else desk.bo, ana, "take", shown="")

    assert statuses == [200, 409]
    assert refused.json() == {"message": f"{winner} took this conversation a moment ago."}
    assert customers_listed(mine[winner]) == [ana]
    assert customers_listed(mine[COLLEAGUE if winner == AGENT else AGENT]) == []
    assert f"Handled by <strong>{winner}</strong>" in panel
    assert "Take over" in panel
    assert again.status_code == 200, "a double click on Take it is no refusal"


async def test_a_conversation_is_taken_over_and_let_go(desk: Desk) -> None:
    """Bo takes over from Ana (the page showed her); Ana, letting go of it afterwards from a
    page still showing it hers, does not take it from Bo; Bo lets it go."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    first = await desk.act(desk.ana, ana, "take", shown="")
    over = await desk.act(desk.bo, ana, "take", shown=AGENT)
    stale = await desk.act(desk.ana, ana, "release")
    still_bos = (await desk.bo.get("/?show=mine")).text
    released = await desk.act(desk.bo, ana, "release")
    nobody = (await desk.ana.get(f"/customers/{ana}/panels")).text
    without_script = await desk.ana.post(
        f"/customers/{ana}/handling",
        data={
            "action": "take",
            "csrf": csrf_of((await desk.ana.get(f"/customers/{ana}")).text),
        },
    )

    assert [first.status_code, over.status_code, stale.status_code] == [200, 200, 200]
    assert customers_listed(still_bos) == [ana]
    assert released.status_code == 200
    assert "Nobody handles it yet" in nobody
    assert without_script.status_code == 303
    assert without_script.headers["location"] == f"/customers/{ana}"
    assert customers_listed((await desk.ana.get("/?show=mine")).text) == [ana]


@pytest.mark.parametrize("edge", ["9999-12-31T23:00:00-14:00", "0001-01-01T00:30:00+01:00"])
async def test_a_done_mark_with_a_time_past_the_calendar_is_refused_not_a_500(
    desk: Desk, edge: str
) -> None:
    """Only a hand-made form sends such a `waiting`: putting it in UTC overflowed (a 500)."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    refused = await desk.act(desk.ana, ana, "done", journey=False, waiting=edge)

    assert refused.status_code == 422


async def test_a_form_without_its_token_changes_nothing(desk: Desk) -> None:
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    forged = await desk.ana.post(
        f"/customers/{ana}/handling", data={"action": "take", "csrf": "not-the-token"}
    )

    assert forged.status_code == 403
    assert customers_listed((await desk.ana.get("/?show=mine")).text) == []


async def test_the_agent_who_answers_a_conversation_nobody_has_takes_it(desk: Desk) -> None:
    """As help desks assign on the first answer; a colleague's answer leaves it the agent's."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    async def reply(agent: httpx.AsyncClient) -> int:
        page = await agent.get(f"/customers/{ana}")
        answer = await agent.post(
            f"/customers/{ana}/replies",
            json={"channel": "email", "text": "Yes, it is on its way."},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )
        return answer.status_code

    nobodys = (await desk.ana.get("/?show=unassigned")).text
    statuses = [await reply(desk.ana), await reply(desk.bo)]

    assert customers_listed(nobodys) == [ana]
    assert statuses == [202, 202]
    assert customers_listed((await desk.ana.get("/?show=mine")).text) == [ana]
    assert customers_listed((await desk.bo.get("/?show=mine")).text) == []
    assert customers_listed((await desk.ana.get("/?show=unassigned")).text) == []


async def test_a_customer_nobody_answered_stays_in_the_queue_after_the_window(desk: Desk) -> None:
    """Dee wrote 30 hours ago (past the 24 h conversation window): her conversation is no longer
    open, but nobody answered her, so she heads the queue, can still be taken, and is the
    agent's; once marked done she is nobody's concern any more, and in no list."""
    (dee,) = await desk.written(
        message(1, "dee@example.com", timedelta(hours=30), Direction.INBOUND)
    )

    queue = (await desk.ana.get("/?show=waiting")).text
    everyone = (await desk.ana.get("/")).text
    nobodys = (await desk.ana.get("/?show=unassigned")).text
    taken = await desk.act(desk.ana, dee, "take", shown="")
    panel = (await desk.ana.get(f"/customers/{dee}/panels")).text
    mine = (await desk.ana.get("/?show=mine")).text
    done = await desk.act(desk.ana, dee, "done")
    mine_after = (await desk.ana.get("/?show=mine")).text

    assert customers_listed(queue) == [dee]
    assert ">1 d 6 h<" in queue
    assert customers_listed(everyone) == []
    assert customers_listed(nobodys) == [dee]
    assert taken.status_code == 200
    assert "still unanswered" in panel
    assert "Handled by <strong>you</strong>" in panel
    assert customers_listed(mine) == [dee]
    assert done.status_code == 200
    assert customers_listed(mine_after) == []


async def test_with_mongodb_hanging_pages_show_who_handles_what_as_unknown(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that does not answer must not hold every inbox load and panel for its own
    timeout: the pages come without who handles what, saying so; a change is refused 503."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    async def hanging(*_args: object, **_kwargs: object) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(Handlings, "of", hanging)
    monkeypatch.setattr(Handlings, "take", hanging)
    monkeypatch.setattr(desk_app, "HANDLING_CHANGE_SECONDS", 1.0)
    inbox = await desk.ana.get("/", timeout=20)
    nobodys = await desk.ana.get("/?show=unassigned", timeout=20)
    panel = await desk.ana.get(f"/customers/{ana}/panels", timeout=20)
    taken = await desk.act(desk.ana, ana, "take", shown="")
    page = await desk.ana.get(f"/customers/{ana}", timeout=20)
    without_script = await desk.ana.post(
        f"/customers/{ana}/handling",
        data={"action": "take", "shown": "", "csrf": csrf_of(page.text)},
        headers={"Accept": "text/html"},
        timeout=20,
    )

    assert inbox.status_code == 200
    assert "not known right now" in inbox.text
    assert ">unknown<" in inbox.text
    assert customers_listed(inbox.text) == [ana]
    assert customers_listed(nobodys.text) == [], "listed as nobody's: perhaps a colleague's"
    assert "Not known right now." in nobodys.text
    assert "not known right now" in panel.text
    assert "Take it" not in panel.text
    assert taken.status_code == 503
    assert taken.json() == {
        "message": "The desk's database is not answering: try again in a moment."
    }
    assert without_script.status_code == 503, "read as a page saying so, not the page again"
    assert "database is not answering" in without_script.text
    assert 'role="alert"' in without_script.text


async def test_the_queue_reads_on_past_the_customers_marked_done(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the profile service reads a done mark from the journey (here never: marks made
    before the upgrade that put them there), its queue lists the customer: the desk reads on, a
    page at a time (here two customers a page, the next from the last one's wait), until it has
    customers who still wait."""
    ana, bo, cy = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=30), Direction.INBOUND),
        message(2, "bo@example.com", timedelta(minutes=25), Direction.INBOUND),
        message(3, "cy@example.com", timedelta(minutes=20), Direction.INBOUND),
    )
    monkeypatch.setattr(desk_app, "_tell_journey", kept_by_the_desk_alone)
    assert (await desk.act(desk.ana, ana, "done", journey=False)).status_code == 200
    assert (await desk.act(desk.ana, bo, "done", journey=False)).status_code == 200
    monkeypatch.setattr(desk_queue, "QUEUE_PAGE", 2)
    monkeypatch.setattr(desk_app, "INBOX_SIZE", 1)

    queue = (await desk.ana.get("/?show=waiting")).text

    assert customers_listed(queue) == [cy]


async def test_one_agent_taking_twice_at_once_is_no_refusal(desk: Desk) -> None:
    """Two tabs, or a click beside the take a reply makes: both are the agent's own."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=5), Direction.INBOUND)
    )

    taken = await asyncio.gather(*(desk.act(desk.ana, ana, "take", shown="") for _ in range(4)))

    assert [answer.status_code for answer in taken] == [200] * 4
    assert customers_listed((await desk.ana.get("/?show=mine")).text) == [ana]


async def test_a_chat_taken_before_the_visitor_signed_in_stays_taken_and_can_be_let_go(
    desk: Desk,
) -> None:
    """Ana wrote by email, and ana.agent marked it done; an anonymous visitor chats on the web
    and Bo takes the chat; the visitor signs in as Ana, merged into her. Bo has her now,
    everywhere, though her own record held a done mark, and she waits from the chat (the done
    mark covered her email alone); Bo lets her go, and she stays let go."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=30), Direction.INBOUND)
    )
    await desk.act(desk.ana, ana, "done")
    (visitor,) = await desk.written(
        on_the_web(
            "visitor-chat",
            timedelta(minutes=10),
            Identifiers(anonymous_id="visitor-1"),
            chat("Is it in stock?", 1),
        )
    )
    taken = await desk.act(desk.bo, visitor, "take", shown="")
    await desk.written(
        on_the_web(
            "visitor-signs-in",
            timedelta(minutes=5),
            Identifiers(anonymous_id="visitor-1", email="ana@example.com"),
            Identified(),
        )
    )
    assert await desk.profile.customer_of("anonymous_id", "visitor-1") == ana

    panel = (await desk.bo.get(f"/customers/{ana}/panels")).text
    bos = (await desk.bo.get("/?show=mine")).text
    released = await desk.act(desk.bo, ana, "release")
    after = (await desk.bo.get(f"/customers/{ana}/panels")).text
    again = (await desk.bo.get(f"/customers/{ana}/panels")).text

    assert taken.status_code == 200
    assert "Handled by <strong>you</strong>" in panel
    assert "Waiting for a reply for 10 min" in panel
    assert customers_listed(bos) == [ana]
    assert released.status_code == 200
    assert "Nobody handles it yet" in after
    assert "Nobody handles it yet" in again, "the merged profile's taking does not come back"


async def test_a_chat_marked_done_then_merged_leaves_the_customers_older_question_waiting(
    desk: Desk,
) -> None:
    """Ana asked by email 30 minutes ago, unanswered; an anonymous visitor chats on the web and
    an agent marks the chat done; the visitor signs in as Ana. The mark saw to the chat, not to
    the email nobody saw: Ana waits from it, in the profile service's queue and the desk's,
    until an agent who saw it marks her done (another mark: it sees to an older wait)."""
    (ana,) = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=30), Direction.INBOUND)
    )
    (visitor,) = await desk.written(
        on_the_web(
            "merged-visitor-chat",
            timedelta(minutes=10),
            Identifiers(anonymous_id="visitor-2"),
            chat("Thanks!", 2),
        )
    )
    assert (await desk.act(desk.ana, visitor, "done")).status_code == 200
    await desk.written(
        on_the_web(
            "merged-visitor-signs-in",
            timedelta(minutes=5),
            Identifiers(anonymous_id="visitor-2", email="ana@example.com"),
            Identified(),
        )
    )
    assert await desk.profile.customer_of("anonymous_id", "visitor-2") == ana

    profiles_queue = await desk.profile.get("/v1/conversations?awaiting=true")
    desks_queue = (await desk.ana.get("/?show=waiting")).text

    assert [c["customer_id"] for c in profiles_queue] == [ana]
    waiting = datetime.fromisoformat(profiles_queue[0]["conversation"]["awaiting_reply_since"])
    assert timedelta(minutes=29) < datetime.now(UTC) - waiting < timedelta(minutes=32)
    assert customers_listed(desks_queue) == [ana]
    assert ">30 min<" in desks_queue

    again = await desk.act(desk.ana, ana, "done")  # now the agent has seen the email

    assert again.status_code == 200
    assert await desk.profile.get("/v1/conversations?awaiting=true") == []
    assert customers_listed((await desk.ana.get("/?show=waiting")).text) == []


async def queue_gauges(desk_url: str) -> dict[str, float]:
    """The desk's `hilo_desk_queue_*` gauges, as Prometheus scrapes them."""
    async with httpx.AsyncClient(base_url=desk_url) as client:
        text = (await client.get("/metrics")).text
    return {
        family.name.removeprefix("hilo_desk_queue_"): family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("hilo_desk_queue_")
    }


async def test_a_supervisor_reads_the_queue_on_the_desks_gauges(desk: Desk) -> None:
    """Ana waits 40 minutes (past the 25-minute target) and nobody has her; Bo waits 10 and
    an agent took him; Cy was marked done and Di answered: two wait, one overdue, one
    nobody's, the longest for 40 minutes."""
    _ana, bo, cy, _di = await desk.written(
        message(1, "ana@example.com", timedelta(minutes=40), Direction.INBOUND),
        message(2, "bo@example.com", timedelta(minutes=10), Direction.INBOUND),
        message(3, "cy@example.com", timedelta(minutes=50), Direction.INBOUND),
        message(4, "di@example.com", timedelta(minutes=60), Direction.INBOUND),
        message(5, "di@example.com", timedelta(minutes=55), Direction.OUTBOUND),
    )
    await desk.act(desk.bo, bo, "take", shown="")
    await desk.act(desk.ana, cy, "done")
    asked = time.time()

    first = await eventually(
        lambda: queue_gauges(desk.url), until=lambda g: g.get("read_timestamp_seconds", 0) > asked
    )
    # The read after one that ended after the marks began after them.
    gauges = await eventually(
        lambda: queue_gauges(desk.url),
        until=lambda g: g["read_timestamp_seconds"] > first["read_timestamp_seconds"],
    )

    assert (gauges["waiting"], gauges["overdue"], gauges["unassigned"]) == (2, 1, 1)
    assert 40 * 60 <= gauges["longest_wait_seconds"] < 42 * 60
