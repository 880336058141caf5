"""Reading what tills send (no infrastructure): blanks, stray spaces and walk-in sales."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from channel_store.end_of_day import read_whole
from channel_store.receipts import Receipt, Visit
from channel_store.translate import customer_policy, from_receipt, from_visit
from hilo.contract import OrderPlaced, OrderStatus

NOW = datetime(2026, 12, 1, 18, tzinfo=UTC)
SALE: dict[str, Any] = {
    "store_id": "BCN-01",
    "receipt_id": "R1",
    "occurred_at": "2026-12-01T10:00:00Z",
    "currency": "EUR",
    "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "59.90"}],
    "total": "59.90",
    "customer": {"loyalty_id": "LOY-1"},
}


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_pickup_order_is_an_ordinary_sale(blank: str) -> None:
    published = from_receipt(Receipt.model_validate({**SALE, "pickup_order_id": blank}), NOW, "t")

    assert published is not None
    assert isinstance(published.payload, OrderPlaced)
    assert (published.payload.order_id, published.payload.status) == (
        "BCN-01:R1",
        OrderStatus.COMPLETED,
    )


def test_a_pickup_names_the_online_order_without_stray_spaces() -> None:
    published = from_receipt(
        Receipt.model_validate({**SALE, "pickup_order_id": " W-1001 "}), NOW, "t"
    )

    assert published is not None
    assert isinstance(published.payload, OrderPlaced)
    assert (published.payload.order_id, published.payload.status) == (
        "W-1001",
        OrderStatus.PICKED_UP,
    )


@pytest.mark.parametrize(
    "customer", [{}, {"loyalty_id": None, "email": None}, {"email": ""}, {"phone": "  "}]
)
def test_a_walk_in_sale_sent_with_an_empty_customer_is_anonymous(customer: object) -> None:
    receipt = Receipt.model_validate({**SALE, "customer": customer, "pickup_order_id": ""})

    assert receipt.customer is None
    assert from_receipt(receipt, NOW, "t") is None


@pytest.mark.parametrize(
    "customer",
    [
        {"loyalty_id": "", "customer_id": " ", "email": "ana@example.com", "phone": ""},
        {"loyalty_id": "LOY-1", "email": "", "phone": None},
    ],
)
def test_blank_customer_fields_beside_a_known_one_are_absent_not_invalid(
    customer: dict[str, Any],
) -> None:
    """A POS that sends every field blanks those it does not know, as a blank cell of the
    end-of-day file is: the sale is the customer's, with nothing noted as invalid."""
    policy = customer_policy()
    receipt = Receipt.model_validate({**SALE, "customer": customer}, context=policy.context())
    published = from_receipt(receipt, NOW, "t")

    known = {kind: value for kind, value in customer.items() if value and value.strip()}
    assert published is not None
    assert published.identifiers.model_dump(exclude_none=True) == known
    assert policy.dropped == []
    assert published.adjustments == []


def test_a_visit_with_blank_fields_is_the_known_customers_and_one_of_nobody_is_refused() -> None:
    visit = {
        "visit_id": "V1",
        "store_id": "BCN-01",
        "occurred_at": "2026-12-01T10:00:00Z",
        "method": "loyalty_card",
        "customer": {"loyalty_id": "LOY-1", "email": "", "phone": "  "},
    }
    policy = customer_policy()

    known = Visit.model_validate(visit, context=policy.context())

    assert known.customer.model_dump(exclude_none=True) == {"loyalty_id": "LOY-1"}
    assert policy.dropped == []
    with pytest.raises(ValidationError):
        Visit.model_validate({**visit, "customer": {"loyalty_id": "", "email": " "}})


def test_an_end_of_day_row_names_the_picked_up_order_without_its_spaces() -> None:
    upload = (
        b"store_id,receipt_id,occurred_at,currency,sku,quantity,unit_price,receipt_total,"
        b"loyalty_id,pickup_order_id\n"
        b"BCN-01,R1,2026-12-01T10:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-1, W-1001\n"
    )

    [published] = read_whole(upload, NOW, "t")[0]

    assert isinstance(published.payload, OrderPlaced)
    assert published.payload.order_id == "W-1001"


def test_a_pickup_publishes_its_own_receipt_till_and_the_codes_presented() -> None:
    """A pickup's order id is the online order's: the handover receipt and till are its own
    fields, so the receipt as printed still names it (they were dropped before)."""
    pickup = {**SALE, "pickup_order_id": "W-1001", "till_id": " T3 ", "coupons": ["FLYER-7"]}

    published = from_receipt(Receipt.model_validate(pickup), NOW, "t")

    assert published is not None
    assert isinstance(published.payload, OrderPlaced)
    order = published.payload
    assert (order.order_id, order.receipt_id, order.till_id) == ("W-1001", "BCN-01:R1", "T3")
    assert order.coupons == ["FLYER-7"]


def test_an_end_of_day_rows_coupons_are_its_receipts() -> None:
    upload = (
        b"store_id,till_id,receipt_id,occurred_at,currency,sku,quantity,unit_price,"
        b"receipt_total,loyalty_id,coupons\n"
        b"BCN-01,T1,R1,2026-12-01T10:00:00Z,EUR,SKU-1,1,59.90,99.80,LOY-1,SPRING10; FLYER-7\n"
        b"BCN-01,T1,R1,2026-12-01T10:00:00Z,EUR,SKU-2,1,39.90,99.80,LOY-1,SPRING10; FLYER-7\n"
        b"BCN-01,T1,R2,2026-12-01T11:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-1,\n"
    )

    first, second = read_whole(upload, NOW, "t")[0]

    assert isinstance(first.payload, OrderPlaced)
    assert isinstance(second.payload, OrderPlaced)
    assert (first.payload.coupons, first.payload.till_id) == (["SPRING10", "FLYER-7"], "T1")
    assert (first.payload.order_id, first.payload.receipt_id) == ("BCN-01:R1", "BCN-01:R1")
    assert second.payload.coupons == []


def test_a_receipts_codes_are_read_as_the_till_meant_them() -> None:
    """Null is none and a blank code is none (as from the web); rows of one receipt that write
    its codes with or without spaces agree."""
    assert Receipt.model_validate({**SALE, "coupons": None}).coupons == []
    assert Receipt.model_validate({**SALE, "coupons": ["A1", " ", None]}).coupons == ["A1"]
    assert Receipt.model_validate({**SALE, "coupons": ""}).coupons == []
    upload = (
        b"store_id,receipt_id,occurred_at,currency,sku,quantity,unit_price,receipt_total,"
        b"loyalty_id,coupons\n"
        b"BCN-01,R1,2026-12-01T10:00:00Z,EUR,SKU-1,1,59.90,99.80,LOY-1,SPRING10;FLYER-7\n"
        b"BCN-01,R1,2026-12-01T10:00:00Z,EUR,SKU-2,1,39.90,99.80,LOY-1,SPRING10; FLYER-7\n"
    )

    [published] = read_whole(upload, NOW, "t")[0]

    assert isinstance(published.payload, OrderPlaced)
    assert published.payload.coupons == ["SPRING10", "FLYER-7"]


def test_a_pickup_whose_receipt_the_contract_cannot_name_is_refused_saying_why() -> None:
    """Its `receipt_id` is `store_id:receipt_id` too: a 422 naming them, not a 500."""
    with pytest.raises(ValidationError, match="store_id and receipt_id together"):
        Receipt.model_validate(
            {**SALE, "store_id": "S" * 100, "receipt_id": "R" * 150, "pickup_order_id": "W-1"}
        )


@pytest.mark.parametrize(
    ("entry", "trust"),
    [(None, "verified"), ("scanned", "verified"), (" TYPED ", "claimed"), ("", "verified")],
)
def test_a_customer_the_clerk_typed_is_claimed_not_proven(entry: str | None, trust: str) -> None:
    """Anyone can say someone else's card number: the till vouches for the sale, not for that."""
    sale = {**SALE, "customer_entry": entry} if entry is not None else SALE

    published = from_receipt(Receipt.model_validate(sale), NOW, "t")

    assert published is not None
    assert published.identity_trust == trust


def test_an_end_of_day_row_says_how_the_customer_was_known() -> None:
    upload = (
        b"store_id,receipt_id,occurred_at,currency,sku,quantity,unit_price,receipt_total,"
        b"loyalty_id,customer_entry,returns_order_id\n"
        b"BCN-01,R1,2026-12-01T10:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-1,typed,\n"
        b"BCN-01,R2,2026-12-01T11:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-2,,\n"
        b"BCN-01,RET-1,2026-12-01T12:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-1,Typed,BCN-01:R1\n"
        b"BCN-01,R3,2026-12-01T13:00:00Z,EUR,SKU-1,1,59.90,59.90,LOY-3,keyed,\n"
    )

    interactions, report = read_whole(upload, NOW, "t")

    assert [i.identity_trust for i in interactions] == ["claimed", "verified", "claimed"]
    [problem] = report.rejected
    assert problem.receipt_id == "R3"
    assert "customer_entry" in " ".join(problem.errors)


def test_a_check_in_whose_phone_was_typed_is_claimed() -> None:
    """A wifi portal or a clerk's tablet where the customer types a phone proves nothing."""
    visit = {
        "visit_id": "V1",
        "store_id": "BCN-01",
        "occurred_at": "2026-12-01T10:00:00Z",
        "method": "wifi",
        "customer": {"phone": "+34600111222"},
    }

    typed = from_visit(Visit.model_validate({**visit, "customer_entry": "typed"}), NOW, "t")
    scanned = from_visit(Visit.model_validate(visit), NOW, "t")

    assert (typed.identity_trust, scanned.identity_trust) == ("claimed", "verified")
