"""Store receipts, end-of-day files and visits against the real broker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import channel_store.app
from channel_store.app import create_app
from channel_store.end_of_day import EndOfDayFile, read_upload
from channel_store.settings import StoreSettings
from hilo.contract import interaction_id
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_refused_while_kafka_is_down,
    channel_client,
)

KEY = "pos-key-1"
HEADERS = {"X-API-Key": KEY, "Content-Type": "application/json"}
RECEIPT: dict[str, Any] = {
    "store_id": "BCN-01",
    "till_id": "T3",
    "receipt_id": "R-20261123-0042",
    "occurred_at": "2026-11-23T18:30:00+01:00",
    "currency": "EUR",
    "lines": [
        {"sku": "SKU-RED-42", "name": "Red running shoes", "quantity": 1, "unit_price": "59.90"},
        {"sku": "SOCK-3", "quantity": 2, "unit_price": "4.95"},
    ],
    "total": "69.80",
    "tax": "12.11",
    "payment_method": "card",
    "customer": {
        "loyalty_id": "LOY-000981",
        "phone": "+34 612 34 56 78",
        "email": "ana@example.com",
    },
}
PICKUP: dict[str, Any] = {
    **RECEIPT,
    "receipt_id": "R-20261123-0043",
    "pickup_order_id": "ORD-1001",
    "lines": [{"sku": "SKU-RED-42", "quantity": 1, "unit_price": "59.90"}],
    "total": "59.90",
    "tax": None,
}
RETURN: dict[str, Any] = {
    "store_id": "BCN-02",
    "till_id": "T1",
    "return_id": "RET-0007",
    "occurred_at": "2026-11-30T11:05:00+01:00",
    "currency": "EUR",
    "order_id": " BCN-01:R-20261123-0042 ",
    "lines": [{"sku": "SOCK-3", "quantity": 2, "unit_price": "4.95"}],
    "refund_total": "9.90",
    "reason": "wrong size",
    "customer": {"loyalty_id": "LOY-000981", "email": ""},
}
VISIT: dict[str, Any] = {
    "visit_id": "V-77",
    "store_id": "BCN-01",
    "occurred_at": "2026-11-23T18:10:00+01:00",
    "method": "qr_code",
    "customer": {"customer_id": "C-1042"},
    "purpose": "order_pickup",
}
CSV_HEADER = (
    "store_id,till_id,receipt_id,occurred_at,currency,sku,name,quantity,unit_price,"
    "receipt_total,tax,discount,payment_method,loyalty_id,customer_id,email,phone,pickup_order_id"
)


def json_request(path: str, document: dict[str, Any]) -> ProviderRequest:
    return ProviderRequest(path, json.dumps(document).encode(), HEADERS)


def csv_body(*rows: str) -> bytes:
    return "\n".join([CSV_HEADER, *rows]).encode()


@pytest.fixture
def store_settings(settings: HiloSettings) -> StoreSettings:
    return StoreSettings.model_validate(
        {**settings.model_dump(), "store_api_keys": [SecretStr(KEY)], "max_body_bytes": 20_000}
    )


@pytest.fixture
async def store(
    store_settings: StoreSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(store_settings)) as client:
        yield client


async def test_receipts_pickups_and_visits_honour_the_channel_contract(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    events = await assert_channel_contract(
        store,
        settings,
        [
            json_request("/v1/receipts", RECEIPT),
            json_request("/v1/receipts", PICKUP),
            json_request("/v1/visits", VISIT),
        ],
    )

    by_id = {event["id"]: event for event in events}
    sale = by_id[interaction_id("store", "receipt:BCN-01:R-20261123-0042")]
    assert sale["identifiers"] == {
        **sale["identifiers"],
        "loyalty_id": "LOY-000981",
        "phone": "+34612345678",
        "email": "ana@example.com",
    }
    assert sale["occurred_at"] == "2026-11-23T18:30:00+01:00"
    assert sale["payload"] == {
        **sale["payload"],
        "kind": "order",
        "order_id": "BCN-01:R-20261123-0042",
        "status": "completed",
        "sold_via": "store",
        "fulfilment": "in_store",
        "store_id": "BCN-01",
        "total": {"amount": "69.80", "currency": "EUR"},
    }
    pickup = by_id[interaction_id("store", "receipt:BCN-01:R-20261123-0043")]["payload"]
    assert (pickup["order_id"], pickup["status"], pickup["fulfilment"]) == (
        "ORD-1001",
        "picked_up",
        "store_pickup",
    )
    assert (pickup["receipt_id"], pickup["till_id"]) == ("BCN-01:R-20261123-0043", "T3")
    assert "coupons" not in pickup, "absent when none were presented"
    visit = by_id[interaction_id("store", "visit:BCN-01:V-77")]
    assert visit["payload"] == {
        "kind": "store_visit",
        "store_id": "BCN-01",
        "method": "qr_code",
        "purpose": "order_pickup",
    }


async def test_a_return_at_another_store_is_a_refund_of_the_sale_it_names(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    web_order = {**RETURN, "return_id": "RET-0008", "order_id": "W-1001", "lines": []}
    events = await assert_channel_contract(
        store,
        settings,
        [json_request("/v1/returns", RETURN), json_request("/v1/returns", web_order)],
    )

    by_id = {event["id"]: event for event in events}
    returned = by_id[interaction_id("store", "return:BCN-02:RET-0007")]
    assert returned["identifiers"]["loyalty_id"] == "LOY-000981"
    assert returned["identifiers"]["email"] is None, "a blank field is none"
    assert returned["payload"] == {
        "kind": "refund",
        "order_id": "BCN-01:R-20261123-0042",
        "refunded_via": "store",
        "store_id": "BCN-02",
        "items": [
            {
                "sku": "SOCK-3",
                "name": None,
                "quantity": 2,
                "unit_price": {"amount": "4.95", "currency": "EUR"},
                "category": None,
            }
        ],
        "amount": {"amount": "9.90", "currency": "EUR"},
        "reason": "wrong size",
        "receipt_id": "BCN-02:RET-0007",
        "till_id": "T1",
    }
    money_only = by_id[interaction_id("store", "return:BCN-02:RET-0008")]["payload"]
    assert (money_only["order_id"], money_only["items"]) == ("W-1001", [])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lines": [], "refund_total": "0"}, "a return needs lines or a refund_total above 0"),
        ({"order_id": "  "}, "order_id"),
        ({"refund_total": "-9.90"}, "refund_total"),
        ({"lines": [{"sku": "SOCK-3", "quantity": -2, "unit_price": "4.95"}]}, "quantity"),
    ],
)
async def test_a_return_that_says_nothing_came_back_or_names_no_order_is_refused(
    store: httpx.AsyncClient, settings: HiloSettings, change: dict[str, Any], named: str
) -> None:
    response = await store.post("/v1/returns", json={**RETURN, **change}, headers=HEADERS)
    anonymous = await store.post(
        "/v1/returns", json={**RETURN, "customer": {"email": " "}}, headers=HEADERS
    )

    assert response.status_code == 422
    assert named in json.dumps(response.json()["detail"])
    assert (anonymous.status_code, anonymous.json()["published"]) == (200, 0)
    assert await published_interactions(settings, 0) == []


async def test_an_anonymous_sale_is_acknowledged_but_joins_no_journey(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    anonymous = {key: value for key, value in RECEIPT.items() if key != "customer"}

    response = await store.post("/v1/receipts", json=anonymous, headers=HEADERS)

    assert response.status_code == 200
    assert response.json()["published"] == 0
    assert await published_interactions(settings, 0) == []


async def test_a_pickup_without_its_customer_is_refused_not_taken_for_an_anonymous_sale(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    unnamed = {key: value for key, value in PICKUP.items() if key != "customer"}
    body = csv_body(
        "BCN-01,T1,R7,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,,,,,ORD-1002",
    )

    response = await store.post("/v1/receipts", json=unnamed, headers=HEADERS)
    upload = await store.post(
        "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"}
    )

    assert response.status_code == 422
    assert "pickup_order_id" in response.json()["detail"]
    assert upload.status_code == 422
    [problem] = upload.json()["rejected"]
    assert "needs the online order's customer" in problem["errors"][0]
    assert await published_interactions(settings, 0) == []


async def test_an_end_of_day_file_publishes_good_receipts_and_reports_every_bad_row(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = csv_body(
        "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,64.85,,,card,LOY-1,,,,",
        "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-2,Socks,1,4.95,64.85,,,card,LOY-1,,,,",
        "BCN-01,T1,R2,2026-11-23T11:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,cash,,,,,",
        "BCN-01,T2,R3,2026-11-23T12:00:00+01:00,EUR,SKU-1,Shoe,one,59.90,59.90,,,card,LOY-2,,,,",
        "BCN-01,T2,R3,2026-11-23T12:00:00+01:00,EUR,SKU-9,Bag,1,5.00,59.90,,,card,LOY-2,,,,",
        "BCN-01,T2,R4,2026-11-23T13:00:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,,,bob@@x,,",
        "GIR-02,T1,R4,2026-11-23T13:00:00+01:00,EURO,SKU-1,Shoe,1,59.90,59.90,,,card,LOY-3,,,,",
        "GIR-02,T1,R5,2026-11-23T14:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,,,bob@@x,,",
        "BCN-01 ,T3, R6,2026-11-23T15:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,64.85,,,card,LOY-4,,,,",
        "BCN-01 ,T3, R6,2026-11-23T15:00:00+01:00,EUR,SKU-2,Socks,x,4.95,64.85,,,card,LOY-4,,,,",
    )

    response = await store.post(
        "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"}
    )

    assert response.status_code == 207
    report = response.json()
    assert (report["receipts_published"], report["anonymous_receipts_skipped"]) == (1, 1)
    assert (report["rows_accepted"], report["rows_rejected"]) == (3, 7)
    problems = {problem["row"]: problem for problem in report["rejected"]}
    assert problems[5]["errors"] == ["quantity: Input should be a valid decimal"]
    assert problems[6]["errors"] == ["another row of receipt R3 is invalid"]
    assert problems[7]["errors"] == ["occurred_at: Input should have timezone info"]
    assert problems[8]["errors"][0].startswith("currency:")
    assert problems[9]["errors"][0].startswith("email: not a valid email address")
    assert problems[10]["errors"] == ["another row of receipt R6 is invalid"], "ids padded"
    assert "bob@@x" not in response.text
    [event] = await published_interactions(settings, 1)
    assert event["id"] == interaction_id("store", "receipt:BCN-01:R1")
    assert [item["sku"] for item in event["payload"]["items"]] == ["SKU-1", "SKU-2"]


async def test_an_end_of_day_row_names_the_online_cart_and_quote_it_finished(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A file with the optional `cart_id` and `quote_id` columns, in any order: the receipt
    carries them as a till's JSON receipt would, so the customer's online cart is finished."""
    header = f"{CSV_HEADER},cart_id,quote_id"
    row = "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,LOY-1,,,,"
    body = "\n".join([header, f"{row},cart-77,q-1", f"{row},cart-78,q-1"]).encode()
    csv_headers = {"X-API-Key": KEY, "Content-Type": "text/csv"}

    response = await store.post("/v1/receipts/upload", content=body, headers=csv_headers)
    fixed = "\n".join([header, f"{row},cart-77,q-1"]).encode()
    again = await store.post("/v1/receipts/upload", content=fixed, headers=csv_headers)

    assert response.status_code == 422, "two rows of one receipt naming two carts"
    assert again.status_code == 200, again.text
    [event] = await published_interactions(settings, 1)
    assert (event["payload"]["cart_id"], event["payload"]["quote_id"]) == ("cart-77", "q-1")


async def test_an_end_of_day_file_carries_the_days_returns_beside_its_sales(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Rows naming `returns_order_id` make a return: its receipt id is the return's, its total
    what was paid back, its lines what came back. One that is also a pickup is refused."""
    header = f"{CSV_HEADER},returns_order_id,reason"
    sale = "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,2,59.90,119.80,,,card,LOY-1,,,,,"
    back = "BCN-01,T2,RET-1,2026-11-23T17:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,,LOY-1,,,,"
    both = "BCN-01,T2,RET-2,2026-11-23T18:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,,LOY-1,,,,W-9"
    body = "\n".join([header, sale, f"{back},BCN-01:R1,too big", f"{both},BCN-01:R1,"]).encode()

    response = await store.post(
        "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"}
    )

    assert response.status_code == 207, response.text
    [problem] = response.json()["rejected"]
    assert (problem["receipt_id"], problem["errors"]) == (
        "RET-2",
        ["return RET-2 fills what only a sale takes: pickup_order_id"],
    )
    by_id = {e["id"]: e["payload"] for e in await published_interactions(settings, 2)}
    refund = by_id[interaction_id("store", "return:BCN-01:RET-1")]
    assert (refund["kind"], refund["order_id"], refund["reason"]) == (
        "refund", "BCN-01:R1", "too big",
    )  # fmt: skip
    assert refund["amount"] == {"amount": "59.90", "currency": "EUR"}
    assert [(i["sku"], i["quantity"]) for i in refund["items"]] == [("SKU-1", 1)]
    assert by_id[interaction_id("store", "receipt:BCN-01:R1")]["kind"] == "order"


async def test_a_return_row_keyed_as_a_sale_or_a_sale_with_a_reason_is_rejected(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A reason with no `returns_order_id` is a return keyed without its order: published as a
    sale it would add to what the customer spent."""
    header = f"{CSV_HEADER},returns_order_id,reason"
    row = "BCN-01,T2,RET-3,2026-11-23T17:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,{pay},LOY-1,,,,"
    body = "\n".join(
        [header, row.format(pay="card") + ",BCN-01:R1,", row.format(pay="") + ", ,too big"]
    ).encode()

    response = await store.post(
        "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"}
    )

    assert response.status_code == 422, response.text
    assert [p["errors"] for p in response.json()["rejected"]] == [
        ["rows of receipt RET-3 disagree on its receipt fields"],
        ["rows of receipt RET-3 disagree on its receipt fields"],
    ]
    single = "\n".join([header, row.format(pay="") + ", ,too big"]).encode()
    alone = await store.post(
        "/v1/receipts/upload",
        content=single,
        headers={"X-API-Key": KEY, "Content-Type": "text/csv"},
    )
    paid_by_card = "\n".join([header, row.format(pay="card") + ",BCN-01:R1,"]).encode()
    keyed_as_sale = await store.post(
        "/v1/receipts/upload",
        content=paid_by_card,
        headers={"X-API-Key": KEY, "Content-Type": "text/csv"},
    )
    assert alone.json()["rejected"][0]["errors"] == [
        "receipt RET-3 gives a reason but no returns_order_id"
    ]
    assert keyed_as_sale.json()["rejected"][0]["errors"] == [
        "return RET-3 fills what only a sale takes: payment_method"
    ]
    assert await published_interactions(settings, 0) == []


async def test_unreadable_files_and_unauthenticated_requests_are_refused(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    no_key = await store.post("/v1/receipts", json=RECEIPT)
    wrong_columns = await store.post(
        "/v1/receipts/upload", content=b"store,sku\nBCN-01,SKU-1", headers={"X-API-Key": KEY}
    )
    all_bad = await store.post(
        "/v1/receipts/upload",
        content=csv_body("BCN-01,T1,R1,yesterday,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,LOY-1,,,,"),
        headers={"X-API-Key": KEY},
    )
    no_lines = await store.post("/v1/receipts", json={**RECEIPT, "lines": []}, headers=HEADERS)
    too_big = await store.post(
        "/v1/receipts/upload", content=csv_body(*["x" * 100] * 300), headers={"X-API-Key": KEY}
    )

    assert no_key.status_code == 401
    assert wrong_columns.status_code == 400
    assert wrong_columns.json()["detail"].startswith("missing columns: currency, occurred_at")
    assert all_bad.status_code == 422
    assert no_lines.status_code == 422
    assert (
        no_lines.json()["detail"]
        == "lines: List should have at least 1 item after validation, not 0"
    )
    assert too_big.status_code == 413
    assert await published_interactions(settings, 0) == []


async def test_503_while_kafka_is_down_and_the_retry_is_published(
    store_settings: StoreSettings, tmp_path: Path
) -> None:
    events = await assert_refused_while_kafka_is_down(
        create_app, store_settings, json_request("/v1/receipts", RECEIPT), tmp_path
    )

    assert {event["id"] for event in events} == {
        interaction_id("store", "receipt:BCN-01:R-20261123-0042")
    }


async def test_a_cell_over_128_kib_rejects_its_receipt_naming_the_row_not_the_file(
    store_settings: StoreSettings, topics: list[str], settings: HiloSettings
) -> None:
    roomy = store_settings.model_copy(update={"max_body_bytes": 1_000_000})
    long_name = "x" * 140_000
    body = csv_body(
        "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,LOY-1,,,,",
        f"BCN-01,T1,R2,2026-11-23T11:00:00+01:00,EUR,SKU-1,{long_name},1,5.00,5.00,,,card,LOY-2,,,,",
    )

    async with channel_client(create_app(roomy)) as client:
        response = await client.post(
            "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY}
        )

    assert response.status_code == 207, response.text
    report = response.json()
    assert (report["receipts_published"], report["rows_rejected"]) == (1, 1)
    [problem] = report["rejected"]
    assert (problem["row"], problem["receipt_id"]) == (3, "R2")
    assert problem["errors"] == ["name: String should have at most 300 characters"]
    [event] = await published_interactions(settings, 1)
    assert event["id"] == interaction_id("store", "receipt:BCN-01:R1")


async def test_a_store_id_with_a_colon_is_refused_as_it_would_make_two_receipts_one(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Store `A:B` with receipt `C` and store `A` with receipt `B:C` would share an event id
    and an order id: the second receipt would be dropped as a duplicate of the first."""
    first = {**RECEIPT, "store_id": "A:B", "receipt_id": "C"}

    response = await store.post("/v1/receipts", json=first, headers={"X-API-Key": KEY})

    assert response.status_code == 422, response.text
    assert "store_id" in response.text
    assert await published_interactions(settings, 0) == []


async def test_a_carriage_return_inside_a_cell_is_a_line_break_not_a_crash(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body = csv_body(
        "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Sh\roe,1,59.90,59.90,,,card,LOY-1,,,,"
    )

    response = await store.post("/v1/receipts/upload", content=body, headers={"X-API-Key": KEY})

    assert response.status_code == 422
    assert response.json()["rows_rejected"] == 2
    assert await published_interactions(settings, 0) == []


async def test_an_invalid_contact_drops_only_itself_when_a_card_names_the_customer(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    typo = {
        **RECEIPT,
        "receipt_id": "R-typo",
        "customer": {"loyalty_id": "LOY-000981", "phone": "(+34) 612-345-678", "email": "a@@b"},
    }
    only_a_bad_email = {**RECEIPT, "receipt_id": "R-bad", "customer": {"email": "ana@@example"}}
    body = csv_body(
        "BCN-01,T1,R9,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,card,LOY-1,,,"
        "+34 000,"
    )

    kept = await store.post("/v1/receipts", json=typo, headers=HEADERS)
    refused = await store.post("/v1/receipts", json=only_a_bad_email, headers=HEADERS)
    uploaded = await store.post("/v1/receipts/upload", content=body, headers={"X-API-Key": KEY})

    assert kept.status_code == 200, kept.text
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("customer.email: not a valid email address")
    assert "ana@@example" not in refused.text
    assert uploaded.status_code == 200, uploaded.text
    events = {e["id"]: e for e in await published_interactions(settings, 2)}
    from_json = events[interaction_id("store", "receipt:BCN-01:R-typo")]
    assert from_json["identifiers"] == {
        **from_json["identifiers"],
        "loyalty_id": "LOY-000981",
        "phone": None,
        "email": None,
    }
    assert from_json["adjustments"] == [
        {"field": "identifiers.email", "reason": "invalid_email"},
        {"field": "identifiers.phone", "reason": "invalid_phone"},
    ]
    from_csv = events[interaction_id("store", "receipt:BCN-01:R9")]
    assert from_csv["adjustments"] == [{"field": "identifiers.phone", "reason": "invalid_phone"}]


async def test_ids_too_long_to_make_an_order_id_are_refused_naming_them(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    response = await store.post(
        "/v1/receipts", json={**RECEIPT, "receipt_id": "R" * 200}, headers=HEADERS
    )

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "(body): store_id and receipt_id together must be under 200 characters"
    )
    assert await published_interactions(settings, 0) == []


async def test_weighed_goods_are_one_line_of_their_weight_priced_as_the_till_charged(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """1.25 kg of cheese at 3.30 a kilo: one unit of 1.25 kg, costing what the till charged;
    without the till's own charge, the product rounded half up to cents (4.125 -> 4.13)."""
    receipt = {
        **RECEIPT,
        "lines": [
            {"sku": "CHEESE", "quantity": "1.25", "unit": "KG", "unit_price": "3.30"},
            {
                "sku": "HAM",
                "quantity": 0.2,
                "unit": "kg",
                "unit_price": "24.90",
                "line_total": "4.97",
            },
            {"sku": "SOCK-3", "quantity": 2, "unit_price": "4.95"},
        ],
        "total": "19.25",
    }

    response = await store.post("/v1/receipts", json=receipt, headers={"X-API-Key": KEY})

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    lines = [
        (i["sku"], i["quantity"], i["unit_price"]["amount"], i.get("measure"))
        for i in event["payload"]["items"]
    ]
    assert lines == [
        (
            "CHEESE",
            1,
            "4.13",
            {"amount": "1.25", "unit": "kg", "unit_price": {"amount": "3.30", "currency": "EUR"}},
        ),
        (
            "HAM",
            1,
            "4.97",
            {"amount": "0.2", "unit": "kg", "unit_price": {"amount": "24.90", "currency": "EUR"}},
        ),
        ("SOCK-3", 2, "4.95", None),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"quantity": "1.25", "unit_price": "3.50"}, "quantity must be a whole number of units"),
        ({"quantity": 1, "unit_price": "3.50", "line_total": "3.50"}, "line_total is for measured"),
        ({"quantity": "1.25", "unit": "stone", "unit_price": "3.50"}, "Input should be 'kg'"),
        ({"quantity": "1E+1", "unit": "kg", "unit_price": "3.5", "currency": "XTS"}, "minor unit"),
    ],
)
async def test_a_fraction_of_a_unit_or_an_unknown_unit_is_refused_naming_it(
    store: httpx.AsyncClient, line: dict[str, Any], problem: str
) -> None:
    currency = line.pop("currency", "EUR")
    receipt = {**RECEIPT, "currency": currency, "lines": [{"sku": "CHEESE", **line}], "total": "4"}

    response = await store.post("/v1/receipts", json=receipt, headers={"X-API-Key": KEY})

    assert response.status_code == 422
    assert problem in response.text


async def test_an_end_of_day_file_and_a_return_carry_weighed_lines(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    header = f"{CSV_HEADER},returns_order_id,reason,unit,line_total"
    sale = "BCN-01,T1,R9,2026-11-23T10:00:00+01:00,EUR,{sku},{quantity},{price},26.20,,,card"
    rows = [
        sale.format(sku="CHEESE,Manchego", quantity="0.735", price="18.00") + ",LOY-1,,,,,,,kg,",
        sale.format(sku="HAM,Jamón", quantity="0.41", price="31.90") + ",LOY-1,,,,,,,Kg,12.97",
        "BCN-01,T1,R10,2026-11-23T10:05:00+01:00,EUR,OLIVES,,0.5,9.00,4.50,,,card,LOY-1,,,,,,,,",
    ]
    body = "\n".join([header, *rows]).encode()
    uploaded = await store.post(
        "/v1/receipts/upload", content=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"}
    )
    weighed_back = {
        **RETURN,
        "lines": [{"sku": "CHEESE", "quantity": "0.3", "unit": "kg", "unit_price": "18.00"}],
        "refund_total": "5.40",
    }
    returned = await store.post("/v1/returns", json=weighed_back, headers={"X-API-Key": KEY})

    assert (uploaded.status_code, returned.status_code) == (207, 200), uploaded.text
    [refused] = uploaded.json()["rejected"]
    assert "quantity must be a whole number of units" in refused["errors"][0], "olives unweighed"
    by_kind = {
        e["payload"]["kind"]: e["payload"] for e in await published_interactions(settings, 2)
    }
    cheese, ham = by_kind["order"]["items"]
    [back] = by_kind["refund"]["items"]
    assert [
        (i["quantity"], i["unit_price"]["amount"], i["measure"]["amount"]) for i in (cheese, ham)
    ] == [(1, "13.23", "0.735"), (1, "12.97", "0.41")], "the till's own 12.97, not 13.079"
    assert (back["unit_price"]["amount"], back["measure"]["amount"]) == ("5.40", "0.3")


EOD_ROW = "BCN-01,T1,{id},2026-11-23T10:00:00+01:00,EUR,SKU-1,{name},1,59.90,59.90,,,card,LOY-1,,,,"


async def test_a_quote_left_open_in_a_file_refuses_it_naming_the_lines_it_took(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """A name cell `"Shoe 42` with no closing quote takes every line after it into that cell:
    the receipts on them were neither published nor reported, and a receipt with a row among
    them was published without it (a corrected upload then kept its id: the row never came).
    The file is refused whole, naming the lines from the one the row starts on (after a blank
    line too), and nothing is published."""
    rows = [EOD_ROW.format(id=f"R{n}", name='"Shoe 42' if n == 2 else "Shoe") for n in range(1, 6)]
    rows.insert(1, "")
    rows.append(EOD_ROW.format(id="R1", name="Sock"))

    uploaded = await store.post(
        "/v1/receipts/upload", content=csv_body(*rows), headers={"X-API-Key": KEY}
    )

    assert uploaded.status_code == 400, uploaded.text
    assert uploaded.json()["detail"] == (
        "lines 4-8 were read as one row: a cell holds a line break (is a quote left open on "
        "line 4?); nothing was published: fix the file and upload it again"
    )
    assert await published_interactions(settings, 0) == []


async def test_rows_of_one_receipt_whose_ids_differ_by_spaces_are_one_order(
    store: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """`R1` and `R1 `: two orders each holding the receipt's whole total doubled the customer's
    spend; they are one receipt, published under the ids without the spaces, whichever row
    comes first (under the first row's, its event id changed with the order, and differed from
    the till's live `R1`)."""
    rows = [EOD_ROW.format(id=" R1 ", name="Shoe"), EOD_ROW.format(id="R1", name="Sock")]

    uploaded = await store.post(
        "/v1/receipts/upload", content=csv_body(*rows), headers={"X-API-Key": KEY}
    )

    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["receipts_published"] == 1
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["order_id"] == "BCN-01:R1"
    assert [item["name"] for item in event["payload"]["items"]] == ["Shoe", "Sock"]


async def test_a_days_file_is_read_while_the_service_answers_other_requests(
    store: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a 20 MB file takes seconds: read on the event loop, it held every till's
    receipt and every health probe until it was done. Here the reading waits until another
    request has been answered, which only a reading off the loop lets happen."""
    reading, answered = threading.Event(), threading.Event()

    def read_after_an_answer(body: bytes, received_at: datetime, instance: str) -> EndOfDayFile:
        reading.set()
        assert answered.wait(timeout=10), "nothing was answered while the file was read"
        return read_upload(body, received_at, instance)

    monkeypatch.setattr(channel_store.app, "read_upload", read_after_an_answer)

    async def probe() -> int:
        assert await asyncio.to_thread(reading.wait, 10), "the file was never read"
        live = await store.get("/health/live")
        answered.set()
        return live.status_code

    upload = store.post(
        "/v1/receipts/upload",
        content=csv_body(EOD_ROW.format(id="R1", name="Shoe")),
        headers={"X-API-Key": KEY},
    )
    uploaded, live = await asyncio.gather(upload, probe())

    assert (uploaded.status_code, live) == (200, 200), uploaded.text


async def test_a_receipt_larger_than_kafka_takes_rejects_its_rows_and_the_file_goes_on(
    store_settings: StoreSettings, topics: list[str], settings: HiloSettings
) -> None:
    """Receipts are published a chunk at a time: one larger than a record may be answered the
    whole file 413 after the chunks before it were published, and those after it were not."""
    small_records = store_settings.model_copy(
        update={"kafka_max_record_bytes": 8_192, "max_body_bytes": 200_000}
    )
    big = [EOD_ROW.format(id="R2", name=f"Item {n} " + "x" * 200) for n in range(60)]
    rows = [EOD_ROW.format(id="R1", name="Shoe"), *big, EOD_ROW.format(id="R3", name="Sock")]

    async with channel_client(create_app(small_records)) as client:
        uploaded = await client.post(
            "/v1/receipts/upload", content=csv_body(*rows), headers={"X-API-Key": KEY}
        )

    assert uploaded.status_code == 207, uploaded.text
    report = uploaded.json()
    assert (report["receipts_published"], report["rows_accepted"]) == (2, 2)
    assert [problem["row"] for problem in report["rejected"]] == list(range(3, 63))
    assert report["rejected"][0]["errors"] == ["event larger than 8192 bytes after translation"]
    published = await published_interactions(settings, 2)
    assert sorted(e["payload"]["order_id"] for e in published) == ["BCN-01:R1", "BCN-01:R3"]
