"""Who handles a conversation and since when its customer waits, as the desk reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from agent_desk.handling import (
    ConversationState,
    Handling,
    SeenTo,
    done_mark,
    overdue,
    state_of,
    strongest_first,
)
from hilo.contract import DONE_AFTER, ConversationDone, IdentifierKind

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def conversation(*, waiting: int | None, latest: int | None, started: int = 0) -> dict[str, str]:
    """A conversation as the profile service sends it (times in minutes after T0)."""
    found = {"started_at": (T0 + timedelta(minutes=started)).isoformat()}
    if waiting is not None:
        found["awaiting_reply_since"] = (T0 + timedelta(minutes=waiting)).isoformat()
    if latest is not None:
        found["last_inbound_at"] = (T0 + timedelta(minutes=latest)).isoformat()
    return found


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_nobody_handles_an_answered_conversation_nobody_took() -> None:
    assert state_of(conversation(waiting=None, latest=3), None) == ConversationState(None, None)


def test_a_customer_waits_from_their_first_unanswered_message() -> None:
    state = state_of(conversation(waiting=3, latest=8), Handling(agent="ana", taken_for=at(0)))

    assert state == ConversationState("ana", at(3))


def test_a_taking_of_the_customers_last_conversation_is_nobodys_in_this_one() -> None:
    state = state_of(conversation(waiting=60, latest=60, started=60), Handling("ana", at(4)))

    assert state.agent is None


def test_messages_marked_done_wait_no_more_and_a_later_one_waits_from_itself() -> None:
    done = Handling(done_through=at(8), done_by="ana")

    assert state_of(conversation(waiting=3, latest=8), done) == ConversationState(None, None, "ana")
    assert state_of(conversation(waiting=3, latest=12), done).waiting_since == at(12)
    assert state_of(conversation(waiting=10, latest=12), done).waiting_since == at(10)


def test_a_customer_waiting_past_the_target_is_overdue_and_without_a_target_never() -> None:
    waiting = ConversationState(None, at(0))

    assert overdue(waiting, timedelta(minutes=30), at(31))
    assert not overdue(waiting, timedelta(minutes=30), at(30))
    assert not overdue(waiting, timedelta(0), at(600))
    assert not overdue(ConversationState(None, None), timedelta(minutes=30), at(600))


def test_an_answer_after_done_leaves_nobody_waiting() -> None:
    done = Handling(done_through=at(8), done_by="ana")

    assert state_of(conversation(waiting=None, latest=12), done) == ConversationState(None, None)


def test_once_the_profile_read_a_done_mark_it_says_who_made_it() -> None:
    """The profile service read Bo's mark from the journey (another desk's, or this one's
    before its own document was forgotten): nobody waits, and the page says Bo saw to it."""
    read = {**conversation(waiting=None, latest=8), "done_by": "bo"}

    assert state_of(read, None) == ConversationState(None, None, "bo")
    assert state_of(conversation(waiting=None, latest=8), None).done_by is None


def test_a_question_older_than_the_page_saw_waiting_is_not_seen_to() -> None:
    """A mark made on a chat waiting since minute 10; a merge brought an email unanswered
    since minute 3: the customer waits from it."""
    done = Handling(done_through=at(10), done_by="ana", done_waiting=at(10))

    assert state_of(conversation(waiting=3, latest=10), done).waiting_since == at(3)
    assert state_of(conversation(waiting=10, latest=10), done).waiting_since is None


def test_a_done_mark_on_the_first_identifier_the_contract_reads_just_after_the_contact() -> None:
    seen = SeenTo(through=at(8).astimezone(timezone(timedelta(hours=2))), waiting=at(3))
    identifiers = [("made_up", "x"), ("email", "not an email"), ("phone", "+34611222333")]

    mark = done_mark("c1", identifiers, "ana", seen, "desk-1")
    again = done_mark("c1", identifiers, "bo", SeenTo(at(8), at(3)), "desk-2")

    assert mark is not None
    assert again is not None
    assert mark.identifiers.pairs() == [(IdentifierKind.PHONE, "+34611222333")], "one, readable"
    assert (mark.channel, mark.occurred_at) == ("desk", at(8) + DONE_AFTER)
    assert mark.payload == ConversationDone(agent_id="ana", waiting_since=at(3))
    assert mark.id == again.id, "a retry, or a colleague's mark of the same, whatever its offset"
    later = done_mark("c1", identifiers, "ana", SeenTo(at(9), at(3)), "desk-1")
    older = done_mark("c1", identifiers, "ana", SeenTo(at(8), at(1)), "desk-1")
    assert later is not None
    assert older is not None
    assert len({mark.id, later.id, older.id}) == 3, "a mark of more is another event"
    assert done_mark("c2", [("made_up", "x")], "ana", seen, "d") is None


def test_identifiers_strongest_first() -> None:
    held = [("anonymous_id", "a"), ("made_up", "x"), ("email", "e@example.com")]

    assert strongest_first(held) == [
        ("email", "e@example.com"), ("anonymous_id", "a"), ("made_up", "x"),
    ]  # fmt: skip
