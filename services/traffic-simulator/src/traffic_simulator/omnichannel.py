"""The omnichannel report that ends a simulation: what journey-analytics measured over whole
journeys (continuity, cross-channel conversion, CSAT by channel), read from its API once it has
read every entry the simulation made."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from traffic_simulator.settings import SimulatorSettings

SINCE = timedelta(days=30)


class AnalyticsUnavailable(RuntimeError):
    """journey-analytics did not answer, or never caught up with the simulation."""


def _params() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - SINCE).isoformat(), "to": (now + timedelta(days=1)).isoformat()}


def _client(settings: SimulatorSettings, timeout: float) -> httpx.AsyncClient:
    headers = {"X-API-Key": settings.api_key.get_secret_value()}
    return httpx.AsyncClient(base_url=settings.analytics_url, headers=headers, timeout=timeout)


async def _measures(api: httpx.AsyncClient, params: dict[str, str]) -> dict[str, Any]:
    answer = await api.get("/v1/measures", params=params)
    answer.raise_for_status()
    measures: dict[str, Any] = answer.json()
    return measures


async def entries_now(settings: SimulatorSettings) -> int:
    """How many entries the measures count before the simulation (0 if it cannot tell yet)."""
    async with _client(settings, timeout=10) as api:
        try:
            return int((await _measures(api, _params()))["entries"])
        except httpx.HTTPError:
            return 0


async def read_measures(settings: SimulatorSettings, at_least: int) -> dict[str, Any]:
    """The last 30 days' measures, once they count `at_least` entries: the analytics service
    reads `journey` on its own time. Raises `AnalyticsUnavailable` if it does not answer, or
    has not caught up, within the read-back timeout."""
    params = _params()
    deadline = time.monotonic() + settings.readback_timeout_seconds
    async with _client(settings, timeout=30) as api:
        while True:
            try:
                measures = await _measures(api, params)
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise AnalyticsUnavailable(str(exc) or type(exc).__name__) from None
            else:
                if measures["entries"] >= at_least:
                    return measures
                if time.monotonic() > deadline:
                    raise AnalyticsUnavailable(
                        f"it counted {measures['entries']} of {at_least} entries "
                        f"after {settings.readback_timeout_seconds:.0f}s"
                    )
            await asyncio.sleep(1.0)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def report(measures: dict[str, Any]) -> list[str]:
    conversations = measures["conversations"]
    conversion = measures["cross_channel_conversion"]
    satisfaction = measures["satisfaction"]
    where = ", ".join(f"{k} {v}" for k, v in conversion["by_order_channel"].items())
    csat = ", ".join(f"{k} {v:.1f}" for k, v in satisfaction["csat_by_channel"].items())
    campaigns = measures.get("campaigns") or {}
    credited = ", ".join(
        f"{name} {sum(sold.values())} ({', '.join(f'{w} {n}' for w, n in sold.items())})"
        for name, sold in (campaigns.get("sold_via") or {}).items()
    )
    return [
        "",
        "Omnichannel (journey-analytics, the last 30 days)",
        f"  continuity              {_percent(conversations['continuity_rate'])} of "
        f"{conversations['channel_switches']} channel switches continued the conversation "
        f"({conversations['restarted']} started over)",
        f"  cross-channel conversion {_percent(conversion['rate'])} of {conversion['web_carts']} "
        f"web carts bought on another channel ({where or 'none'})",
        f"  CSAT by channel         {csat or 'no answers'}",
        f"  first-contact resolution {_percent(conversations['first_contact_resolution_rate'])} "
        f"of {conversations['conversations']} conversations",
        f"  orders by campaign      {credited or 'none'}"
        f" ({campaigns.get('orders_without_campaign', 0)} without one)",
    ]
