"""The demo catalogue's seed (`offers demo`) against the running service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from hilo.settings import HiloSettings
from hilo.testkit.serving import served
from offers import demo
from offers.testing import ADMIN_API_KEY, running_offers


async def test_a_seed_again_finds_the_demo_promotions_past_the_first_page(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three promotions of the shop's own (ids before the demo's), pages of two: a second seed
    follows the pages and keeps the demo promotion as it is, where reading one page would have
    missed it and put it again (undoing an operator's edit, or bringing back a retired one)."""
    monkeypatch.setattr(demo, "PROMOTIONS_PAGE", 2)
    async with running_offers(settings) as offers:
        _, promotions = demo.catalogue(datetime.now(UTC))
        for n in range(3):
            own = {**promotions[0], "id": f"a-{n}", "name": f"Shop {n}"}
            await offers.call("PUT", f"/v1/promotions/a-{n}", json=own)
        async with served(offers.service.app, lifespan="off") as url:
            first, again = await asyncio.to_thread(_seed_twice, url)

    assert first.promotions_set == [demo.PROMOTION_ID]
    assert again.promotions_set == []
    assert again.promotions_kept == [demo.PROMOTION_ID]


def _seed_twice(url: str) -> tuple[demo.Seeded, demo.Seeded]:
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_API_KEY}, timeout=10) as http:
        return demo.seed(http), demo.seed(http)
