"""A promotion an admin sends is refused where, as written, it could never apply; one already
stored or on the topic still reads, so it can be listed, replaced and retired."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hilo.offers.model import NewPromotion, Promotion

GOLD: dict[str, Any] = {
    "id": "gold-10",
    "name": "Gold members 10% off",
    "kind": "percent_off",
    "skus": ["SKU-1"],
    "currency": "EUR",
    "percent": "10",
    "valid_from": "2026-01-01T00:00:00Z",
    "valid_until": "2027-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    ("fields", "loc", "says"),
    [
        pytest.param({"channels": []}, ("channels",), "leave `channels` out", id="no-channel"),
        pytest.param({"channels": ["web", "Web"]}, ("channels", 1), "pattern", id="capitals"),
        pytest.param({"channels": ["in store"]}, ("channels", 0), "pattern", id="space"),
        pytest.param(
            {"conditions": {"segments": ["cart_abandoned_7d", "vip"]}},
            ("conditions", "segments"),
            "known: cart_abandoned_7d",
            id="unknown-segment",
        ),
        pytest.param(
            {"kind": "bundle", "skus": ["A", "A", "B"], "amount": "15.00", "percent": None},
            ("skus",),
            "A listed more than once",
            id="bundle-sku-twice",
        ),
    ],
)
def test_a_new_promotion_that_could_never_apply_is_refused(
    fields: dict[str, Any], loc: tuple[str | int, ...], says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        NewPromotion.model_validate({**GOLD, **fields})

    (error,) = refused.value.errors()
    assert error["loc"] == loc
    assert says in error["msg"]
    assert Promotion.model_validate({**GOLD, **fields}), "as stored, it still reads"


def test_a_new_promotion_is_the_promotion_every_reader_sees() -> None:
    fields = {"channels": ["web", "store"], "conditions": {"segments": ["cart_abandoned_7d"]}}

    written = NewPromotion.model_validate({**GOLD, **fields}).as_promotion()

    assert type(written) is Promotion
    assert written == Promotion.model_validate({**GOLD, **fields})
