"""An agent's done mark, on the real broker and database: the view says what the journey says,
whatever order the mark and the customer's contacts arrive in."""

from __future__ import annotations

from datetime import timedelta

from customer_profile.domain.profile import derive_view
from customer_profile.testing import RunningProfileService, done_mark, message
from hilo.contract import Direction, Interaction

WINDOW = timedelta(hours=24)


def sent(name: str, minutes: float, direction: Direction) -> Interaction:
    return message(name, minutes=minutes, direction=direction, phone="+34600111222")


async def test_a_message_sent_before_a_mark_that_saw_to_nobody_and_delivered_after_it(
    profile_service: RunningProfileService,
) -> None:
    """The customer asks at minute 1 and is answered at 2; an agent's done mark dated 5 comes
    after the answer and sees to nobody; the customer's message of minute 3 arrives last. The
    view the API serves is the journey's derivation (the mark saw to that message), and names
    when the mark was dated."""
    svc = profile_service
    asked = sent("question", 1, Direction.INBOUND)
    mark = done_mark("mark", minutes=5, waiting_since=asked.occurred_at, phone="+34600111222")
    arrivals = [asked, sent("answer", 2, Direction.OUTBOUND), mark]
    arrivals.append(sent("again", 3, Direction.INBOUND))
    for stored, arrival in enumerate(arrivals, start=1):
        await svc.publish([arrival])
        await svc.wait_for_entries(stored)

    customer = await svc.customer_of("phone", "+34600111222")
    served = await svc.get(f"/v1/customers/{customer}")
    [profile] = (await svc.service.store.load([customer])).values()
    journey = await svc.service.store.entries(profile.aliases)
    derived = derive_view(journey, svc.service.settings.conversation_window)
    assert profile.view == derived
    conversation = served["view"]["conversation"]
    assert "awaiting_reply_since" not in conversation, "the mark saw to the message of minute 3"
    assert conversation["done_through"] == served["view"]["last_done_mark_at"]
    assert served["view"]["last_done_mark_at"].startswith("2026-11-01T09:05:00")
