"""Measurings wait for a slot before they read (no infrastructure: nothing is started)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from journey_analytics.app import create_service
from journey_analytics.measures import Touch
from journey_analytics.settings import AnalyticsSettings

NOW = datetime(2026, 12, 7, tzinfo=UTC)


async def test_a_measuring_waiting_for_its_slot_holds_no_touches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten dashboard calls each held their read (every touch of 136 days) while they waited
    for one of the two slots: memory grew with the callers, not the slots."""
    service = create_service(AnalyticsSettings(environment="test"))
    reads: list[datetime] = []

    async def touches(start: datetime, end: datetime, customer: str | None = None) -> list[Touch]:
        reads.append(start)
        return []

    monkeypatch.setattr(service.store, "touches", touches)
    async with service.measuring, service.measuring:  # both slots taken
        waiting = [
            asyncio.create_task(service.measures(NOW - timedelta(days=1), NOW)) for _ in range(3)
        ]
        await asyncio.sleep(0.2)
        assert reads == [], "read before a slot was free"
    await asyncio.gather(*waiting)
    assert len(reads) == 3
    await service.mongo.close()
