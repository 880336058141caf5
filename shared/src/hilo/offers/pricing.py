"""How Hilo prices a basket: one pure function, the same on every channel.

Given the offers in force (one version), the lines, the currency, the channel, what we know of
the customer and the moment, `price_lines` answers the same every time and everywhere. The
rules, in words a merchandiser can check:

List price. Each SKU's list price is the price point in force at the quote's time in the
quote's currency (the latest one that started by then). A SKU with no such price is not sold:
it comes back "unpriced" and counts in no total. Lines for the same SKU are added up first. A
list price set with more decimals than the currency has (0.1234 EUR) is rounded half up to it
(0.12 EUR) before anything else, since a customer can only be charged whole cents.

Which promotions. A promotion counts when it is active, the quote's time is on or after its
start and before its end, the quote's channel is one of its channels (or it names none), it is
in the quote's currency, and the customer meets every condition it sets (a loyalty tier among
those listed, marketing consent on the channel, every segment listed).

Order and stacking. Promotions are tried from the highest priority down; between equal
priorities, in order of their id (a before b). A promotion *applies* to a line when it takes
something off that line. An exclusive promotion applies to a line only if nothing has applied
to it yet, and once it has, nothing after it applies to that line. A stackable promotion applies
after the ones before it, on the price they left (20% then 10% off 100.00 is 72.00, not 70.00),
but never after an exclusive one. The kinds:

- percent off: that percentage off the price of each unit;
- amount off: that amount off the price of each unit, down to zero at most;
- fixed price: each unit sells at that amount (no change when it already costs that or less);
- buy X get Y: of every X + Y units of the SKU, Y are free (buy 2 get 1 on 7 units: 2 free);
- bundle: one unit of each listed SKU together for the amount. It needs every listed SKU in
  the basket; there are as many bundles as the scarcest of them has units. Each bundle saves
  the sum of its units' prices minus the amount (nothing if that is not a saving); the saving is
  rounded, then shared between the bundle's SKUs in proportion to their prices, each share
  rounded, the last SKU listed taking what rounding left, so the shares add up exactly. A
  bundle applies only where it may apply to every line it needs (for an exclusive bundle: lines
  nothing has applied to yet).

Units a buy-X-get-Y made free or a bundle took are settled: promotions after it (stackable
ones) price only the line's other units.

Rounding. A percentage, amount or fixed price works on each unit: its discount on one unit is
worked out exactly, then rounded to the currency's minor unit half up (0.005 EUR to 0.01; JPY
has no decimals, BHD three), so two units always cost twice what one costs, whether a till
prices unit by unit or a quote prices the line (15% off 64.90 is 55.16 a unit, 110.32 a pair).
Every other discount (free units, a bundle's shares) is rounded where it is worked out. A line's
total is its list total less those rounded discounts, and never below zero. The basket's
subtotal, discount and total are the sums of the lines', so they always add up to the cent.

Tax. Whether a price includes tax comes from its price point and is shown per line: a basket
can mix lines that include tax with lines that do not, and the totals add them as they are.

`quote_id` names a quote by what it was asked (customer, channel, currency, lines, time,
offers version) and by the customer's facts that promotions read (loyalty tier, marketing
consent on the channel asked, segments), so asking again, on any service, gives the same id,
and the same id always comes with the same numbers: a profile change that could change the
price (a new tier, a consent withdrawn) makes it another quote.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import TypeVar

from hilo.contract import BUILT_IN_CHANNELS
from hilo.offers.model import (
    AppliedPromotion,
    Conditions,
    CustomerFacts,
    OffersSnapshot,
    PricedLine,
    PricedLines,
    Promotion,
    PromotionKind,
    QuoteLine,
    Stacking,
    Unpriced,
)
from hilo.offers.money import format_amount, round_money, zero

QUOTE_NAMESPACE = uuid.UUID("3f0a330f-ef55-48c3-a01d-6ed4a7e35902")
"""Fixed for good: quote ids computed by any service, at any time, must agree."""

_ARITHMETIC = Context(prec=60, rounding=ROUND_HALF_EVEN)
"""Our own context, whatever the caller's: 60 significant digits keep the in-between amounts
exact in practice (only money rounding, half up, decides cents), and the same on every host."""


_T = TypeVar("_T")


@dataclass
class _Line:
    """A priced line while promotions work on it."""

    sku: str
    quantity: int
    list_unit: Decimal
    tax_included: bool
    unit: Decimal
    """What each unsettled unit costs now, exactly (after the promotions applied so far)."""
    taken: Decimal
    """The rounded discounts so far."""
    settled: int = 0
    """Units made free or taken into a bundle: later promotions leave them alone."""
    closed: bool = False
    """An exclusive promotion applied: nothing more does."""
    applied: list[AppliedPromotion] = field(default_factory=list)

    @property
    def open_units(self) -> int:
        return self.quantity - self.settled

    @property
    def list_total(self) -> Decimal:
        return self.list_unit * self.quantity


@dataclass(frozen=True)
class _Effect:
    """What one promotion does to one line, before rounding."""

    discount: Decimal
    unit: Decimal
    settled: int
    why: str


def price_lines(
    snapshot: OffersSnapshot,
    lines: Sequence[QuoteLine],
    *,
    currency: str,
    channel: str,
    facts: CustomerFacts,
    at: datetime,
) -> PricedLines:
    """Price `lines` as the module docstring says: list prices at `at`, then the qualifying
    promotions in order, every amount rounded to `currency`'s minor unit."""
    _require_aware(at)
    with localcontext(_ARITHMETIC):
        priced, unpriced = _list_prices(snapshot, merge_lines(lines), currency, at)
        promotions = qualifying(snapshot, facts=facts, channel=channel, at=at, currency=currency)
        for promotion in promotions:
            _apply(promotion, priced, currency)
        return _answer(snapshot.version, currency, channel, at, priced, unpriced)


def merge_lines(lines: Iterable[QuoteLine]) -> list[QuoteLine]:
    """One line per SKU, quantities added, in the order each SKU first appears."""
    quantities: dict[str, int] = {}
    for line in lines:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
    return [QuoteLine(sku=sku, quantity=quantity) for sku, quantity in quantities.items()]


def qualifying(
    snapshot: OffersSnapshot,
    *,
    facts: CustomerFacts,
    channel: str | None,
    at: datetime,
    currency: str | None = None,
) -> list[Promotion]:
    """The promotions this customer gets at `at` on `channel` (None: on some channel, see
    `open_channel`), in the order they apply. `currency`, when given, keeps only promotions in
    it."""
    _require_aware(at)
    found = [
        promotion
        for promotion in snapshot.promotions.values()
        if promotion.active
        and promotion.valid_from <= at < promotion.valid_until
        and (currency is None or promotion.currency == currency)
        and _on_channel(promotion, facts, channel)
        and _conditions_hold(promotion.conditions, facts)
    ]
    return sorted(found, key=application_order)


def application_order(promotion: Promotion) -> tuple[int, str]:
    """Higher priority first; equal priorities by id, so the order never depends on storage."""
    return (-promotion.priority, promotion.id)


def quote_id(
    applied: Iterable[str],
    channel: str,
    currency: str,
    lines: Sequence[QuoteLine],
    at: datetime,
    version: int,
    key: bytes,
) -> str:
    """A UUID named by what a quote asked and the promotions it `applied`: the same question
    (lines in any order, duplicates merged, `at` in any zone) priced the same way gives the
    same id on every service, and so the same numbers; a customer whose tier, consent or
    segments get them other promotions gets another id.

    Nothing else of the customer is in it: a quote asked by email must not tell whose the
    email is, nor that it is anyone's when the price is the one anybody gets. And it is an HMAC
    under `key` (the platform's pepper, which every service shares), so nobody without it
    recomputes ids."""
    _require_aware(at)
    merged = sorted(merge_lines(lines), key=lambda line: line.sku)
    canonical = json.dumps(
        {
            "at": at.astimezone(UTC).isoformat(),
            "channel": channel,
            "currency": currency,
            "lines": [[line.sku, line.quantity] for line in merged],
            "promotions": sorted(set(applied)),
            "version": version,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hmac.new(key, QUOTE_NAMESPACE.bytes + canonical.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _require_aware(at: datetime) -> None:
    if at.utcoffset() is None:
        raise ValueError("the quote's time needs a time zone")


def open_channel(promotion: Promotion, facts: CustomerFacts) -> str | None:
    """A channel where the promotion is open to this customer (None: there is none), so that
    what is shown for "some channel" can be priced where the customer actually gets it.

    The first of the channels it names; for one naming none, web, then the channels the
    customer consented to marketing on, then the other built-in channels."""
    return next(iter(open_channels(promotion, facts)), None)


def open_channels(promotion: Promotion, facts: CustomerFacts) -> list[str]:
    """Every channel where the promotion is open to this customer, in `open_channel`'s order:
    the ones it names, or, for one naming none, the built-in channels and those the customer
    consented to marketing on, less those a consent condition closes."""
    if promotion.channels is not None:
        candidates: Iterable[str] = promotion.channels
    else:
        named = sorted(c for c in facts.marketing_consent_channels if c is not None)
        candidates = (BUILT_IN_CHANNELS[0], *named, *BUILT_IN_CHANNELS[1:])
    return [c for c in dict.fromkeys(candidates) if _open_on(promotion, facts, c)]


def _on_channel(promotion: Promotion, facts: CustomerFacts, channel: str | None) -> bool:
    """On `channel`, or, when it is None, on a channel `open_channel` finds."""
    if channel is not None:
        return _open_on(promotion, facts, channel)
    return open_channel(promotion, facts) is not None


def _open_on(promotion: Promotion, facts: CustomerFacts, channel: str) -> bool:
    listed = promotion.channels is None or channel in promotion.channels
    return listed and (not promotion.conditions.marketing_consent or _consents_on(facts, channel))


def _consents_on(facts: CustomerFacts, channel: str) -> bool:
    """Whether the customer's marketing consent holds on `channel` (granted there, or for every
    channel and not withdrawn there)."""
    consents = facts.marketing_consent_channels
    everywhere = None in consents and channel not in facts.marketing_withdrawn_channels
    return everywhere or channel in consents


def _conditions_hold(conditions: Conditions, facts: CustomerFacts) -> bool:
    """The conditions that do not depend on the channel (consent is checked per channel)."""
    tier_ok = conditions.loyalty_tiers is None or facts.loyalty_tier in conditions.loyalty_tiers
    return tier_ok and facts.segments.issuperset(conditions.segments)


def _list_prices(
    snapshot: OffersSnapshot, lines: Sequence[QuoteLine], currency: str, at: datetime
) -> tuple[dict[str, _Line], list[Unpriced]]:
    priced: dict[str, _Line] = {}
    unpriced: list[Unpriced] = []
    for line in lines:
        schedule = snapshot.prices.get((line.sku, currency))
        point = schedule.at(at) if schedule is not None else None
        if point is None:
            unpriced.append(Unpriced(sku=line.sku))
            continue
        unit = round_money(point.amount, currency)
        priced[line.sku] = _Line(
            sku=line.sku,
            quantity=line.quantity,
            list_unit=unit,
            tax_included=point.tax_included,
            unit=unit,
            taken=zero(currency),
        )
    return priced, unpriced


def _apply(promotion: Promotion, lines: Mapping[str, _Line], currency: str) -> None:
    if promotion.kind == PromotionKind.BUNDLE:
        _apply_bundle(promotion, lines, currency)
        return
    for sku in dict.fromkeys(promotion.skus):
        line = lines.get(sku)
        if line is None or not _open_to(line, promotion):
            continue
        effect = _line_effect(promotion, line, currency)
        if effect is not None:
            _record(line, promotion, effect.discount, effect.why, currency)
            line.unit = effect.unit
            line.settled += effect.settled


def _open_to(line: _Line, promotion: Promotion) -> bool:
    """The stacking rule, for one line."""
    if line.closed or line.open_units == 0:
        return False
    return promotion.stacking == Stacking.STACKABLE or not line.applied


def _line_effect(promotion: Promotion, line: _Line, currency: str) -> _Effect | None:
    units = _count(line.open_units, "unit")
    if promotion.kind == PromotionKind.PERCENT_OFF:
        percent = _given(promotion.percent)
        cut = line.unit * percent / 100
        why = f"{percent.normalize():f}% off {units}"
        return _new_unit_price(line, line.unit - cut, why, currency)
    if promotion.kind == PromotionKind.AMOUNT_OFF:
        amount = _given(promotion.amount)
        why = f"{format_amount(amount, currency)} off {units}"
        return _new_unit_price(line, max(line.unit - amount, Decimal(0)), why, currency)
    if promotion.kind == PromotionKind.FIXED_PRICE:
        amount = _given(promotion.amount)
        why = f"{units} at {format_amount(amount, currency)}"
        return _new_unit_price(line, min(line.unit, amount), why, currency)
    return _free_units(_given(promotion.buy), _given(promotion.get), line)


def _new_unit_price(line: _Line, unit: Decimal, why: str, currency: str) -> _Effect | None:
    """The unit's discount is rounded per unit: n units always cost n times one unit, so a till
    pricing unit by unit and a quote pricing the line agree to the cent."""
    cut = round_money(line.unit - unit, currency)
    unit = line.unit - cut
    discount = cut * line.open_units
    if discount <= 0:
        return None
    return _Effect(discount=discount, unit=unit, settled=0, why=why)


def _free_units(buy: int, get: int, line: _Line) -> _Effect | None:
    free = line.open_units // (buy + get) * get
    discount = line.unit * free
    if discount <= 0:
        return None
    why = f"buy {buy} get {get}: {_count(free, 'unit')} free"
    return _Effect(discount=discount, unit=line.unit, settled=free, why=why)


def _apply_bundle(promotion: Promotion, lines: Mapping[str, _Line], currency: str) -> None:
    members = [lines.get(sku) for sku in dict.fromkeys(promotion.skus)]
    ready = [m for m in members if m is not None and _open_to(m, promotion)]
    if len(ready) < len(members):
        return
    amount = _given(promotion.amount)
    saving = round_money(sum((m.unit for m in ready), Decimal(0)) - amount, currency)
    if saving <= 0:
        return
    bundles = min(m.open_units for m in ready)
    why = f"bundle of {len(ready)} at {format_amount(amount, currency)}: "
    why += _count(bundles, "bundle")
    shares = _shares(saving, [m.unit for m in ready], currency)
    for member, share in zip(ready, shares, strict=True):
        if share > 0:  # a member the bundle takes nothing off has no promotion applied
            _record(member, promotion, share * bundles, why, currency)
        member.settled += bundles


def _shares(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """`total` (at most the weights' sum) split in proportion to `weights`, each share rounded
    and at most its weight, so a bundle costs its amount exactly and no line goes below zero.
    What rounding left goes to the last members with room, the last first: a near-free
    bundle's last member could be given more than its own price, and the cap then quietly
    charged the excess."""
    weight_sum = sum(weights, Decimal(0))
    shares = [min(round_money(total * weight / weight_sum, currency), weight) for weight in weights]
    left = total - sum(shares, Decimal(0))
    for index in reversed(range(len(shares))):
        if left > 0:  # up to the member's price
            change = min(left, weights[index] - shares[index])
        else:  # down to nothing
            change = max(left, -shares[index])
        shares[index] += change
        left -= change
    return shares


def _record(line: _Line, promotion: Promotion, discount: Decimal, why: str, currency: str) -> None:
    """Round the discount, keep the line at zero or above, and note why."""
    rounded = min(round_money(discount, currency), line.list_total - line.taken)
    line.taken += rounded
    line.applied.append(
        AppliedPromotion(id=promotion.id, name=promotion.name, discount=rounded, why=why)
    )
    if promotion.stacking == Stacking.EXCLUSIVE:
        line.closed = True


def _answer(
    version: int,
    currency: str,
    channel: str,
    at: datetime,
    lines: Mapping[str, _Line],
    unpriced: list[Unpriced],
) -> PricedLines:
    priced = [_priced(line) for line in lines.values()]
    subtotal = sum((line.list_total for line in priced), zero(currency))
    discount = sum((line.discount for line in priced), zero(currency))
    return PricedLines(
        offers_version=version,
        currency=currency,
        channel=channel,
        at=at,
        lines=priced,
        unpriced=unpriced,
        subtotal=subtotal,
        discount=discount,
        total=subtotal - discount,
    )


def _priced(line: _Line) -> PricedLine:
    return PricedLine(
        sku=line.sku,
        quantity=line.quantity,
        unit_price=line.list_unit,
        list_total=line.list_total,
        discount=line.taken,
        total=line.list_total - line.taken,
        tax_included=line.tax_included,
        promotions=list(line.applied),
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _given(value: _T | None) -> _T:
    """A field the promotion's kind requires (the model refuses a promotion without it)."""
    if value is None:
        raise ValueError("incomplete promotion")
    return value
