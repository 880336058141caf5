"""The lines `make simulate` ends with, from journey-analytics' measures and the agents'
queue."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from traffic_simulator.omnichannel import report
from traffic_simulator.readback import customer_journey, queue_line

MEASURES = {
    "conversations": {
        "continuity_rate": 0.5,
        "channel_switches": 4,
        "restarted": 2,
        "first_contact_resolution_rate": 0.25,
        "conversations": 8,
    },
    "cross_channel_conversion": {"rate": 0.4, "web_carts": 5, "by_order_channel": {"store": 2}},
    "satisfaction": {"csat_by_channel": {"whatsapp": 4.5}},
    "campaigns": {
        "sold_via": {"Spring sale": {"store": 2}, "spring": {"online": 1, "store": 3}},
        "orders_without_campaign": 1,
    },
}


def test_the_report_credits_each_campaign_with_its_orders_and_where_they_were_sold() -> None:
    lines = report(MEASURES)

    assert lines[-1] == (
        "  orders by campaign      Spring sale 2 (store 2), spring 4 (online 1, store 3)"
        " (1 without one)"
    )


def test_measures_of_an_analytics_service_without_campaigns_still_report() -> None:
    older = {key: value for key, value in MEASURES.items() if key != "campaigns"}

    assert report(older)[-1] == "  orders by campaign      none (0 without one)"


def test_the_report_says_how_many_wait_for_a_reply_and_the_longest_wait() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    waiting = [
        {"customer_id": "c1", "conversation": {"awaiting_reply_since": "2026-12-06T11:48:30Z"}},
        {"customer_id": "c2", "conversation": {"awaiting_reply_since": "2026-12-06T11:59:00Z"}},
    ]

    assert queue_line(waiting, now) == "  waiting for a reply     2 (the longest for 11 min)"
    assert queue_line([], now) == "  waiting for a reply     nobody"
    assert queue_line(None, now) == (
        "  waiting for a reply     unknown (the profile service did not say)"
    )
    assert queue_line(waiting * 250, now).startswith("  waiting for a reply     500 or more")


async def test_an_agents_done_mark_is_not_counted_among_what_the_customer_did() -> None:
    """A simulated customer an agent marked done on the desk: their journey's message counts,
    the mark does not (no channel sent it), so a run is not reported with a duplicate."""
    entries = [
        {"id": "m", "channel": "whatsapp", "type": "message"},
        {"id": "d", "channel": "desk", "type": "conversation_done"},
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/customers/c1/journey"
        return httpx.Response(200, json={"entries": entries, "next_cursor": None})

    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport, base_url="http://profile") as api:
        read = await customer_journey(api, "c1")

    assert [entry["id"] for entry in read] == ["m"]
