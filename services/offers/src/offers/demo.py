"""`offers demo`: a small demo catalogue, set through the admin API (what `make run` and
docker-compose's `demo` profile seed before the traffic simulator plays).

- List prices (EUR, tax included) of the traffic simulator's products, equal to what its
  journeys charge for them, from a year back.
- `SKU-CAP-1`, a running cap at 24.90 with the promotion `demo-cap-20`: 20% off on the web and
  in store (19.92), from 30 days back for a year. The simulator quotes it on both channels.
- `SKU-BOTTLE-750`, a water bottle raised from 12.90 to 14.90 30 days back: the simulator charges
  the old price at a till, and the customer-profile service flags the mismatch.

Seeding is idempotent and never overrides: a SKU the service prices already and a promotion it
holds already (retired or not) are left as they are, so running it again (a compose volume that
outlives a run) changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

CURRENCY = "EUR"
LIST_PRICES: dict[str, str] = {
    "SKU-RED-42": "59.90",
    "SKU-TRAIL-41": "89.00",
    "SKU-JACKET-M": "74.50",
    "SKU-SOCKS-3": "12.95",
}
"""The traffic simulator's products (`traffic_simulator.people.PRODUCTS`; a test compares)."""
PROMOTED_SKU = "SKU-CAP-1"
PROMOTED_LIST_PRICE = "24.90"
PROMOTION_ID = "demo-cap-20"
RAISED_SKU = "SKU-BOTTLE-750"
RAISED_FROM = "12.90"
RAISED_TO = "14.90"
CHANGED_BY = "offers-demo"
PROMOTIONS_PAGE = 1000
"""Promotions read a request while looking for the demo's (the API's largest page)."""


def catalogue(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prices (`PUT /v1/prices` items) and promotions (`PUT /v1/promotions/{id}` bodies),
    their windows relative to `now` (the traffic simulator's journeys lie in the last 15 days)."""
    now = now.astimezone(UTC).replace(microsecond=0)
    year_ago = (now - timedelta(days=365)).isoformat()
    month_ago = (now - timedelta(days=30)).isoformat()

    def price(sku: str, amount: str, valid_from: str) -> dict[str, Any]:
        return {
            "sku": sku,
            "currency": CURRENCY,
            "amount": amount,
            "tax_included": True,
            "valid_from": valid_from,
        }

    prices = [price(sku, amount, year_ago) for sku, amount in LIST_PRICES.items()]
    prices += [
        price(PROMOTED_SKU, PROMOTED_LIST_PRICE, year_ago),
        price(RAISED_SKU, RAISED_FROM, year_ago),
        price(RAISED_SKU, RAISED_TO, month_ago),
    ]
    promotions = [
        {
            "id": PROMOTION_ID,
            "name": "Running cap: 20% off on the web and in store",
            "kind": "percent_off",
            "percent": "20",
            "skus": [PROMOTED_SKU],
            "currency": CURRENCY,
            "valid_from": month_ago,
            "valid_until": (now + timedelta(days=365)).isoformat(),
            "timezone": "Europe/Madrid",
            "channels": ["web", "store"],
        }
    ]
    return prices, promotions


class SeedError(RuntimeError):
    """The offers service refused a change of the demo catalogue, or did not answer."""


@dataclass
class Seeded:
    prices_set: list[str] = field(default_factory=list)
    prices_kept: list[str] = field(default_factory=list)
    promotions_set: list[str] = field(default_factory=list)
    promotions_kept: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"demo catalogue: {len(self.prices_set)} SKUs priced, "
            f"{len(self.prices_kept)} priced already; "
            f"promotions set: {', '.join(self.promotions_set) or 'none'}, "
            f"kept: {', '.join(self.promotions_kept) or 'none'}"
        )


def seed(http: httpx.Client, now: datetime | None = None) -> Seeded:
    """Set what is missing of the catalogue through `http` (base URL and `X-API-Key` set)."""
    prices, promotions = catalogue(now or datetime.now(UTC))
    seeded = Seeded()
    skus = list(dict.fromkeys(item["sku"] for item in prices))
    missing: list[str] = []
    for sku in skus:
        answer = _call(http, "GET", f"/v1/prices/{quote(sku, safe='')}", expect=(200, 404))
        (seeded.prices_kept if answer.status_code == 200 else missing).append(sku)
    if missing:
        _call(http, "PUT", "/v1/prices", json=[p for p in prices if p["sku"] in missing])
        seeded.prices_set = missing
    held = _promotion_ids(http)
    for promotion in promotions:
        if promotion["id"] in held:
            seeded.promotions_kept.append(promotion["id"])
            continue
        _call(http, "PUT", f"/v1/promotions/{promotion['id']}", json=promotion)
        seeded.promotions_set.append(promotion["id"])
    return seeded


def _promotion_ids(http: httpx.Client) -> set[str]:
    """Every promotion's id, page after page (`Link: rel="next"`)."""
    ids: set[str] = set()
    page: str | None = f"/v1/promotions?limit={PROMOTIONS_PAGE}"
    while page is not None:
        answer = _call(http, "GET", page)
        ids |= {entry["promotion"]["id"] for entry in answer.json()}
        page = answer.links.get("next", {}).get("url")
    return ids


def _call(
    http: httpx.Client, method: str, path: str, expect: tuple[int, ...] = (200, 202), **request: Any
) -> httpx.Response:
    """One request; a 503 (MongoDB busy) is tried again a few times."""
    for attempt in range(5):
        try:
            answer = http.request(method, path, headers={"X-Changed-By": CHANGED_BY}, **request)
        except httpx.TransportError as exc:
            raise SeedError(f"{method} {path}: {type(exc).__name__}") from None
        if answer.status_code != 503:
            break
        time.sleep(0.5 * (attempt + 1))
    if answer.status_code not in expect:
        raise SeedError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
    return answer


def wait_ready(http: httpx.Client, timeout: float) -> None:
    """Until the service answers ready (its book read), or `SeedError`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SeedError(f"the offers service was not ready within {timeout:.0f}s")
        time.sleep(1.0)


def seed_url(url: str, api_key: str, *, wait_seconds: float = 0.0) -> Seeded:
    """`seed` against the service at `url` with `api_key`, waiting for it first if asked."""
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0) as http:
        if wait_seconds:
            wait_ready(http, wait_seconds)
        return seed(http)
