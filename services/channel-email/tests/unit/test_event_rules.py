"""Which Mailgun events record what (`channel_email.events`), without infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from channel_email.events import EventData, event_interaction
from hilo.contract import PageViewed
from hilo.testkit.standins.mailgun import DOMAIN, AcceptedEmail, event_body

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PEPPER = b"pepper" * 6
NEWSLETTER = AcceptedEmail(
    "<20261205090000.7.C3D4@mg.shop.example>",
    DOMAIN,
    (("from", "News <news@shop.example>"), ("to", "ana@example.com"), ("subject", "Spring")),
)
SPRING = "https://shop.example/spring?utm_source=newsletter&utm_medium=email&utm_campaign=spring"


def data(event: str, **details: Any) -> EventData:
    return EventData.model_validate(event_body(NEWSLETTER, event, **details)["event-data"])


def test_each_click_is_an_event_of_its_own_with_the_links_campaign() -> None:
    first = event_interaction(data("clicked", url=SPRING), NOW, "t", PEPPER)
    ten_days_on = event_interaction(data("clicked", url=SPRING), NOW, "t", PEPPER)

    assert first is not None
    assert ten_days_on is not None
    assert first.id != ten_days_on.id, "a reader back through the same link is seen again"
    assert first.channel == "email"
    assert first.identifiers.email == "ana@example.com"
    assert isinstance(first.payload, PageViewed)
    assert first.payload.path == "/spring"
    assert first.payload.campaign is not None
    assert first.payload.campaign.name == "spring"


@pytest.mark.parametrize("event", ["opened", "clicked"])
@pytest.mark.parametrize("bot", ["apple", "gmail", "generic"])
def test_an_open_or_a_click_by_a_bot_records_nothing(event: str, bot: str) -> None:
    by_a_bot = data(event, url=SPRING, **{"client-info": {"client-name": "unknown", "bot": bot}})
    by_a_person = data(event, url=SPRING, **{"client-info": {"client-name": "Chrome", "bot": ""}})

    assert event_interaction(by_a_bot, NOW, "t", PEPPER) is None
    if event == "clicked":
        assert event_interaction(by_a_person, NOW, "t", PEPPER) is not None


def test_a_click_without_its_link_or_its_id_is_unreadable() -> None:
    without_id = data("clicked", url=SPRING).model_copy(update={"id": None})

    with pytest.raises(ValueError, match="url"):
        event_interaction(data("clicked"), NOW, "t", PEPPER)
    with pytest.raises(ValueError, match="id"):
        event_interaction(without_id, NOW, "t", PEPPER)


@pytest.mark.parametrize("event", ["unsubscribed", "complained"])
def test_a_second_withdrawal_through_the_same_mail_is_heard_and_a_retry_is_not(event: str) -> None:
    """Both withdrawals had one event id (message, recipient, outcome): a customer who opted in
    again and unsubscribed through the same newsletter a month later stayed subscribed."""
    first = data(event)
    retried = first.model_copy()
    a_month_on = data(event)

    ids = [event_interaction(d, NOW, "t", PEPPER) for d in (first, retried, a_month_on)]

    assert all(i is not None for i in ids)
    one, again, later = (i.id for i in ids if i is not None)
    assert one == again
    assert one != later
