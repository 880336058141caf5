"""The offers journeys: what the simulated shop charges, asked of the offers service, and the
price mismatches the customer-profile service finds in what was charged.

- The promotion (every fifth person, from the first): the customer adds the promoted SKU to the
  web cart at the price a web quote gives, and a day later buys it at a till at the price a
  store quote gives. The same promotion on both channels: no mismatch.
- The stale price (every fifth person, from the second): a till charges a SKU at its price from
  before its last change. One mismatch, charged vs the price in force.

The SKUs are those of the offers service's demo catalogue (`offers demo`, which `make run` and
compose's `demo` profile seed); the prices and the promotion are read from the service, not
assumed. Quotes are anonymous: the demo promotion has no conditions on the customer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from hilo.offers.money import round_money
from traffic_simulator.people import Person

CURRENCY = "EUR"
PROMOTED = ("SKU-CAP-1", "Running cap")
"""Promoted on the web and in store by the demo catalogue (`demo-cap-20`)."""
RAISED = ("SKU-BOTTLE-750", "Water bottle 750 ml")
"""Its price was raised in the demo catalogue; the stale-price journey charges the old one."""
WEB_CART_MINUTE = 4
PROMOTION_RECEIPT_MINUTE = 24 * 60 + 5
STALE_RECEIPT_MINUTE = 24 * 60 + 10


class OffersUnavailable(Exception):
    """The offers service did not answer what a journey needs (no price, not reachable)."""


@dataclass(frozen=True)
class Charge:
    """One line as a channel charges it."""

    sku: str
    name: str
    unit_price: Decimal
    list_price: Decimal
    """The list price in force (for the stale price: the current one, not the one charged)."""
    promotions: tuple[str, ...] = ()


@dataclass(frozen=True)
class OfferPlan:
    """What one person is charged on the offers journeys (None: not on that journey)."""

    web_cart: Charge | None = None
    store_receipt: Charge | None = None
    stale_receipt: Charge | None = None


class OffersClient:
    """Quotes and price schedules from the offers service (`http`: its URL and API key)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._schedules: dict[str, list[dict[str, Any]]] = {}

    async def plan(self, person: Person, start: datetime) -> OfferPlan:
        if person.buys_the_promotion:
            sku, name = PROMOTED
            return OfferPlan(
                web_cart=await self.quote(sku, name, "web", start + minutes(WEB_CART_MINUTE)),
                store_receipt=await self.quote(
                    sku, name, "store", start + minutes(PROMOTION_RECEIPT_MINUTE)
                ),
            )
        if person.is_charged_a_stale_price:
            sku, name = RAISED
            return OfferPlan(
                stale_receipt=await self.stale(sku, name, start + minutes(STALE_RECEIPT_MINUTE))
            )
        return OfferPlan()

    async def quote(self, sku: str, name: str, channel: str, at: datetime) -> Charge:
        """What `channel` charges for one unit at `at`: the quote's line total (after
        promotions) per unit, rounded as the profile's price check rounds it."""
        body = {
            "channel": channel,
            "currency": CURRENCY,
            "lines": [{"sku": sku, "quantity": 1}],
            "at": at.isoformat(),
        }
        answer = await self._call("POST", "/v1/quotes", json=body)
        lines = [line for line in answer["lines"] if line["sku"] == sku]
        if not lines:
            raise OffersUnavailable(f"{sku} has no {CURRENCY} price: seed it (`offers demo`)")
        line = lines[0]
        return Charge(
            sku=sku,
            name=name,
            unit_price=round_money(Decimal(line["total"]) / line["quantity"], CURRENCY),
            list_price=Decimal(line["unit_price"]),
            promotions=tuple(promotion["id"] for promotion in line["promotions"]),
        )

    async def stale(self, sku: str, name: str, at: datetime) -> Charge:
        """The SKU at the list price in force before the one in force at `at`."""
        if sku not in self._schedules:
            states = await self._call("GET", f"/v1/prices/{quote(sku, safe='')}")
            self._schedules[sku] = [
                point
                for state in states
                if state["currency"] == CURRENCY
                for point in state["points"]
            ]
        current, earlier = stale_points(self._schedules[sku], at)
        if current is None or earlier is None:
            raise OffersUnavailable(
                f"{sku} has no {CURRENCY} price changed before {at:%Y-%m-%d}: "
                "seed the demo catalogue (`offers demo`)"
            )
        return Charge(sku=sku, name=name, unit_price=earlier, list_price=current)

    async def _call(self, method: str, path: str, **request: Any) -> Any:
        """One request; a 503 (offers still loading, MongoDB busy) is tried again a few times."""
        try:
            for attempt in range(5):
                answer = await self._http.request(method, path, **request)
                if answer.status_code != 503:
                    break
                await asyncio.sleep(1 + attempt)
        except httpx.TransportError as exc:
            raise OffersUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise OffersUnavailable(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
        return answer.json()


def minutes(count: int) -> timedelta:
    return timedelta(minutes=count)


def stale_points(
    points: Iterable[Mapping[str, Any]], at: datetime
) -> tuple[Decimal | None, Decimal | None]:
    """(the amount in force at `at`, the latest earlier amount that differs from it)."""
    due = sorted(
        (
            (datetime.fromisoformat(point["valid_from"]), int(point["version"]), point["amount"])
            for point in points
        ),
        key=lambda item: (item[0], item[1]),
    )
    due = [item for item in due if item[0] <= at]
    if not due:
        return None, None
    current = Decimal(due[-1][2])
    earlier = [Decimal(item[2]) for item in due[:-1] if Decimal(item[2]) != current]
    return current, (earlier[-1] if earlier else None)


@dataclass
class OffersVerdict:
    """The read-back of the offers journeys: what to print, and whether they did what they
    should (the promotion: no mismatch; the stale price: exactly one)."""

    lines: list[str] = field(default_factory=list)
    healthy: bool = True


def judge(
    plans: Mapping[int, OfferPlan],
    customer_of: Mapping[int, str],
    mismatches: Iterable[Mapping[str, Any]],
) -> OffersVerdict:
    """Compare the offers journeys' plans (by person number) with the profile API's
    mismatches (`GET /v1/mismatches`) of this run's customers."""
    verdict = OffersVerdict()
    ours = set(customer_of.values())
    found = [m for m in mismatches if m["customer_id"] in ours]
    by_customer: dict[str, list[Mapping[str, Any]]] = {}
    for mismatch in found:
        by_customer.setdefault(mismatch["customer_id"], []).append(mismatch)

    promoted = {n: p for n, p in plans.items() if p.web_cart and p.store_receipt}
    if promoted:
        web = next(p.web_cart for p in promoted.values() if p.web_cart)
        flagged = _count(promoted, customer_of, by_customer, PROMOTED[0])
        same = all(
            p.web_cart and p.store_receipt and p.web_cart.unit_price == p.store_receipt.unit_price
            for p in promoted.values()
        )
        applied = all(p.web_cart and p.web_cart.promotions for p in promoted.values())
        ok = applied and same and flagged == 0 and _all_found(promoted, customer_of)
        verdict.healthy &= ok
        name = ", ".join(web.promotions) or "no promotion applied"
        verdict.lines.append(
            f"  promotion    {web.sku} at {web.unit_price} (list {web.list_price}, {name}) "
            f"on web and in store: {_journeys(len(promoted))}, {_mismatches(flagged)}"
            f"  {'ok' if ok else 'FAILED (expected a promotion applied and no mismatch)'}"
        )
    stale = {n: p for n, p in plans.items() if p.stale_receipt}
    if stale:
        charge = next(p.stale_receipt for p in stale.values() if p.stale_receipt)
        flagged = _count(stale, customer_of, by_customer, RAISED[0])
        each_one = all(
            len([m for m in by_customer.get(customer_of[n], []) if m["sku"] == RAISED[0]]) == 1
            for n in stale
            if n in customer_of
        )
        ok = each_one and _all_found(stale, customer_of)
        verdict.healthy &= ok
        verdict.lines.append(
            f"  stale price  {charge.sku} charged {charge.unit_price} in store "
            f"(list price now {charge.list_price}): {_journeys(len(stale))}, {_mismatches(flagged)}"
            f"  {'ok' if ok else 'FAILED (expected one mismatch per journey)'}"
        )
    for mismatch in found[:20]:
        verdict.lines.append(
            f"  price mismatch: {mismatch['channel']}, {mismatch['sku']}, "
            f"charged {mismatch['charged']}, expected {mismatch['expected']}"
            f"  ({str(mismatch.get('occurred_at', ''))[:10] or 'when unknown'})"
        )
    if len(found) > 20:
        verdict.lines.append(f"  … and {len(found) - 20} more")
    return verdict


def _count(
    plans: Mapping[int, OfferPlan],
    customer_of: Mapping[int, str],
    by_customer: Mapping[str, list[Mapping[str, Any]]],
    sku: str,
) -> int:
    return sum(
        1
        for number in plans
        if number in customer_of
        for mismatch in by_customer.get(customer_of[number], [])
        if mismatch["sku"] == sku
    )


def _all_found(plans: Mapping[int, OfferPlan], customer_of: Mapping[int, str]) -> bool:
    return all(number in customer_of for number in plans)


def _journeys(count: int) -> str:
    return f"{count} journey{'s' if count != 1 else ''}"


def _mismatches(count: int) -> str:
    return f"{count} mismatch{'es' if count != 1 else ''}"


async def price_mismatches(
    api: httpx.AsyncClient, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The profile API's mismatches of the offers journeys' SKUs and any other, deduplicated."""
    since = since or datetime.now(UTC) - timedelta(days=16)
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for sku in (PROMOTED[0], RAISED[0], None):
        params: dict[str, Any] = {"limit": 1000, "since": since.isoformat()}
        if sku is not None:
            params["sku"] = sku
        answer = await api.get("/v1/mismatches", params=params)
        answer.raise_for_status()
        for mismatch in answer.json():
            seen.setdefault((mismatch["event_id"], mismatch["sku"]), mismatch)
    return list(seen.values())
