"""Today's measures as Prometheus gauges: what the omnichannel dashboard shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from journey_analytics.app import _export
from journey_analytics.measures import Touch, Windows, measure

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WINDOWS = Windows(timedelta(hours=24), timedelta(days=7), timedelta(days=30))
DAY = timedelta(days=1)


def campaign_orders(campaign: str, sold_via: str) -> float | None:
    labels = {"campaign": campaign, "sold_via": sold_via}
    return REGISTRY.get_sample_value("hilo_journey_campaign_orders", labels)


def test_a_campaigns_orders_are_exported_by_where_they_were_sold_and_cleared_next_day() -> None:
    journey = [
        Touch("v1", "ana", T0, "web", "page_view", campaign="spring"),
        Touch("o1", "ana", T0 + timedelta(hours=1), "store", "order", sales_channel="store"),
    ]

    _export(measure(journey, T0, T0 + DAY, WINDOWS))
    assert campaign_orders("spring", "store") == 1

    _export(measure([], T0 + DAY, T0 + 2 * DAY, WINDOWS))
    assert campaign_orders("spring", "store") is None, "a new day starts without yesterday's"


def test_only_the_twenty_largest_campaigns_become_series() -> None:
    """Campaign names come from anyone with the public web key: each exported one is a series
    Prometheus keeps."""
    journey = []
    for n in range(30):
        when = T0 + timedelta(minutes=n)
        journey += [
            Touch(f"v{n}", f"c{n}", when, "web", "page_view", campaign=f"made-up-{n:02}"),
            Touch(f"o{n}", f"c{n}", when + timedelta(hours=1), "web", "order"),
        ]
    journey += [
        Touch(f"b{n}", f"b{n}", T0, "web", "page_view", campaign="spring") for n in range(3)
    ] + [Touch(f"p{n}", f"b{n}", T0 + timedelta(hours=1), "store", "order") for n in range(3)]

    _export(measure(journey, T0, T0 + DAY, WINDOWS))

    exported = {
        sample.labels["campaign"]
        for metric in REGISTRY.collect()
        if metric.name == "hilo_journey_campaign_orders"
        for sample in metric.samples
    }
    assert len(exported) == 20
    assert "spring" in exported, "the largest is kept"
