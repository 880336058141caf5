"""Which SKUs of a late event the price watch cannot price as they were then
(`service.prices._following`): those a promotion prices on a fact told since, and their bundle
partners, whose price depends on whether the bundle formed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from customer_profile.service.prices import CONSENT, SEGMENTS, TIER, _following
from hilo.offers.model import Conditions, OffersSnapshot, Promotion, PromotionKind

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def promotion(promotion_id: str, skus: list[str], **fields: object) -> Promotion:
    kind = fields.pop("kind", PromotionKind.PERCENT_OFF)
    value = {"amount": Decimal(80)} if kind == PromotionKind.BUNDLE else {"percent": Decimal(10)}
    return Promotion.model_validate(
        {
            "id": promotion_id,
            "name": promotion_id,
            "kind": kind,
            "skus": skus,
            "currency": "EUR",
            "valid_from": NOW - timedelta(days=1),
            "valid_until": NOW + timedelta(days=1),
            **value,
            **fields,
        }
    )


SNAPSHOT = OffersSnapshot(
    version=1,
    prices={},
    promotions={
        p.id: p
        for p in (
            promotion("gold", ["A"], conditions=Conditions(loyalty_tiers=["gold"])),
            promotion("pair", ["A", "B"], kind=PromotionKind.BUNDLE),
            promotion("trio", ["B", "C"], kind=PromotionKind.BUNDLE),
            promotion("opted-in", ["D"], conditions=Conditions(marketing_consent=True)),
            promotion("came-back", ["E"], conditions=Conditions(segments=["cart_abandoned_7d"])),
            promotion("everyone", ["F"]),
        )
    },
)


def test_a_tier_told_since_leaves_out_its_skus_and_every_bundle_partner() -> None:
    assert _following(SNAPSHOT, "EUR", frozenset({TIER})) == {"A", "B", "C"}


def test_each_fact_leaves_out_only_the_skus_priced_on_it() -> None:
    assert _following(SNAPSHOT, "EUR", frozenset({CONSENT})) == {"D"}
    assert _following(SNAPSHOT, "EUR", frozenset({SEGMENTS})) == {"E"}
    assert _following(SNAPSHOT, "EUR", frozenset()) == set()
    assert _following(SNAPSHOT, "USD", frozenset({TIER, CONSENT, SEGMENTS})) == set()
