"""The admin API against real Kafka and MongoDB: every change one version, stored, published on
`offers`, and in every follower's book; bad input stores and publishes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from hilo.kafka import read_to_end
from hilo.mongo import MongoDocument
from hilo.offers.book import OffersFollower
from hilo.offers.model import OfferRecord
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.query_plans import winning_stages
from hilo.testkit.serving import served
from hilo.topics import Topic, topic_name
from offers.app import create_service
from offers.outbox import Outbox
from offers.testing import (
    ADMIN_API_KEY,
    API_KEY,
    RunningOffers,
    key_for,
    offers_settings,
    running_offers,
)

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def offers(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> AsyncIterator[RunningOffers]:
    async with running_offers(settings) as running:
        yield running


async def published(settings: HiloSettings) -> list[OfferRecord]:
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.OFFERS, settings)
    )
    return [OfferRecord.model_validate_json(record.value or b"") for record in records]


def gold_promotion(**changes: Any) -> dict[str, Any]:
    return {
        "id": "gold-10",
        "name": "Gold members 10% off",
        "kind": "percent_off",
        "skus": ["SKU-1", "SKU-2"],
        "currency": "EUR",
        "percent": "10",
        "valid_from": (NOW - timedelta(days=1)).isoformat(),
        "valid_until": (NOW + timedelta(days=30)).isoformat(),
        "timezone": "Europe/Madrid",
        "conditions": {"loyalty_tiers": ["gold"]},
        **changes,
    }


PRICES = [
    {"sku": "SKU-1", "currency": "EUR", "amount": "100.00", "tax_included": True},
    {"sku": "SKU-2", "currency": "EUR", "amount": "59.90", "tax_included": True},
    {"sku": "SKU-1", "currency": "USD", "amount": "110.00", "tax_included": False},
]


async def test_a_price_list_is_one_version_published_and_in_every_book(
    offers: RunningOffers, settings: HiloSettings
) -> None:
    answer = await offers.call(
        "PUT", "/v1/prices", json=PRICES, headers={"X-Changed-By": "merchandiser-7"}
    )

    assert answer["version"] == 1
    assert answer["published"] is True
    assert answer["by"] == "merchandiser-7"
    assert answer["keys"] == ["price:SKU-1:EUR", "price:SKU-2:EUR", "price:SKU-1:USD"]
    records = await published(settings)
    assert [(r.key, r.version, r.part, r.parts) for r in records] == [
        ("price:SKU-1:EUR", 1, 1, 3),
        ("price:SKU-2:EUR", 1, 2, 3),
        ("price:SKU-1:USD", 1, 3, 3),
    ]
    follower = OffersFollower(settings, poll_ms=100)
    await follower.start()
    try:
        await eventually(lambda: _ready(follower))
        snapshot = follower.book.snapshot()
    finally:
        await follower.stop()
    assert snapshot.version == 1
    assert {key: s.points[-1].amount for key, s in snapshot.prices.items()} == {
        ("SKU-1", "EUR"): Decimal("100.00"),
        ("SKU-2", "EUR"): Decimal("59.90"),
        ("SKU-1", "USD"): Decimal("110.00"),
    }
    await offers.caught_up_to(1)


async def _ready(follower: OffersFollower) -> bool:
    return follower.ready.is_set()


async def test_a_price_older_than_every_point_a_full_schedule_keeps_is_refused(
    offers: RunningOffers,
) -> None:
    """A schedule keeps its latest 500 points: a backdated price on a full one was cut at once,
    and the admin got a 200 for a version that changed nothing."""
    start = NOW - timedelta(days=600)
    for batch in range(5):
        points = [
            {**PRICES[0], "valid_from": (start + timedelta(days=100 * batch + n)).isoformat()}
            for n in range(100)
        ]
        await offers.call("PUT", "/v1/prices", json=points)
    backdated = {**PRICES[0], "valid_from": (start - timedelta(days=1)).isoformat()}

    refused = await offers.call("PUT", "/v1/prices", json=[PRICES[1], backdated], expect=422)
    newest = {**PRICES[0], "valid_from": NOW.isoformat()}
    taken = await offers.call("PUT", "/v1/prices", json=[newest])

    [error] = refused["detail"]
    assert error["loc"] == ["body", 1, "valid_from"]
    assert error["msg"] == (
        "SKU-1 in EUR keeps its latest 500 prices, all from after this valid_from: a price "
        "this old would not be kept"
    )
    assert [v["version"] for v in await offers.versions()][:2] == [6, 5]
    assert taken["version"] == 6
    schedule = (await offers.call("GET", "/v1/prices/SKU-1"))[0]["points"]
    assert len(schedule) == 500
    assert schedule[-1]["valid_from"] == NOW.isoformat().replace("+00:00", "Z")


async def test_a_version_stored_before_mongodb_went_away_is_answered_stored_not_500(
    offers: RunningOffers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MongoDB stored the version and went away before the heads were updated: the answer was
    a 500, the caller tried again and stored a second version (a retried retire got 409). The
    version stands, is published, and the next change brings the heads up to it."""
    store = offers.service.store
    settle_records = store._settle_records
    failures = [AutoReconnect("connection reset")]

    async def lose_the_connection(records: Sequence[OfferRecord]) -> None:
        if failures:
            raise failures.pop()
        await settle_records(records)

    monkeypatch.setattr(store, "_settle_records", lose_the_connection)

    first = await offers.call("PUT", "/v1/prices", json=PRICES[:1])
    second = await offers.call("PUT", "/v1/prices", json=PRICES[1:2])

    assert (first["version"], second["version"]) == (1, 2)
    assert [v["version"] for v in await offers.versions()] == [2, 1]
    heads = {doc["_id"]: doc["version"] async for doc in store.heads.find({})}
    assert heads == {"price:SKU-1:EUR": 1, "price:SKU-2:EUR": 2}
    await offers.caught_up_to(2)


async def test_a_change_mongodb_did_not_answer_is_503_saying_so_and_stores_nothing(
    offers: RunningOffers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away() -> int:
        raise ServerSelectionTimeoutError("no servers found")

    monkeypatch.setattr(offers.service.store, "head_version", away)

    response = await offers.http.put(
        "/v1/prices", json=PRICES, headers={"X-API-Key": ADMIN_API_KEY}
    )
    monkeypatch.undo()

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "the catalogue's database is not answering" in response.json()["detail"]
    assert await offers.versions() == []


async def test_a_price_keeps_its_schedule_and_answers_the_one_in_force(
    offers: RunningOffers, settings: HiloSettings
) -> None:
    await offers.call("PUT", "/v1/prices", json=PRICES[:1])
    later = (NOW + timedelta(days=7)).isoformat()
    await offers.call(
        "PUT",
        "/v1/prices",
        json=[{**PRICES[0], "amount": "80.00", "valid_from": later}],
    )

    prices = await offers.call("GET", "/v1/prices/SKU-1")

    assert len(prices) == 1
    assert [p["amount"] for p in prices[0]["points"]] == ["100.00", "80.00"]
    assert prices[0]["in_force"]["amount"] == "100.00"
    assert prices[0]["version"] == 2
    last = (await published(settings))[-1]
    assert last.price is not None
    assert [p.version for p in last.price.points] == [1, 2], "the record carries the history"
    await offers.call("GET", "/v1/prices/SKU-404", expect=404)
    await offers.call("PUT", "/v1/prices", json=[{**PRICES[0], "sku": "ACME/42"}])
    slashed = await offers.call("GET", "/v1/prices/ACME/42")
    assert [(p["sku"], p["currency"]) for p in slashed] == [("ACME/42", "EUR")]


BAD_INPUT: list[tuple[str, str, Any, list[str | int]]] = [
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": "-1.00"}], ["body", 0, "amount"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "currency": "EUX"}], ["body", 0, "currency"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "currency": "XAU"}], ["body", 0, "currency"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": 19.99}], ["body", 0, "amount"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": "19.99.1"}], ["body", 0, "amount"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": "NaN"}], ["body", 0, "amount"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": "1e400"}], ["body", 0, "amount"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "amount": "0.123456"}], ["body", 0, "amount"]),
    (
        "PUT",
        "/v1/prices",
        [{**PRICES[0], "valid_from": "2026-12-01T00:00:00"}],
        ["body", 0, "valid_from"],
    ),
    (
        "PUT",
        "/v1/prices",
        [{**PRICES[0], "valid_from": "9999-12-31T23:59:59-01:00"}],
        ["body", 0, "valid_from"],
    ),
    ("PUT", "/v1/prices", [PRICES[0], PRICES[0]], ["body", 1]),
    ("PUT", "/v1/prices", [], ["body"]),
    ("PUT", "/v1/prices", [{**PRICES[0], "sku": "no spaces"}], ["body", 0, "sku"]),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(percent=None), ["body"]),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(percent=12.5), ["body", "percent"]),
    (
        "PUT",
        "/v1/promotions/gold-10",
        gold_promotion(kind="amount_off", percent=None, amount=0.1),
        ["body", "amount"],
    ),
    (
        "PUT",
        "/v1/promotions/gold-10",
        gold_promotion(conditions={"loyalty_tiers": []}),
        ["body", "conditions", "loyalty_tiers"],
    ),
    (
        "PUT",
        "/v1/promotions/gold-10",
        gold_promotion(valid_until=(NOW - timedelta(days=2)).isoformat()),
        ["body"],
    ),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(timezone="Mars/Olympus"), ["body"]),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(id="silver-5"), ["body", "id"]),
    ("PUT", "/v1/promotions/Gold 10", gold_promotion(), ["path", "promotion_id"]),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(channels=[]), ["body", "channels"]),
    ("PUT", "/v1/promotions/gold-10", gold_promotion(channels=["Web"]), ["body", "channels", 0]),
    (
        "PUT",
        "/v1/promotions/gold-10",
        gold_promotion(conditions={"segments": ["vip_2026"]}),
        ["body", "conditions", "segments"],
    ),
]


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored_or_published(
    offers: RunningOffers, settings: HiloSettings
) -> None:
    for method, path, body, loc in BAD_INPUT:
        response = await offers.http.request(
            method, path, json=body, headers={"X-API-Key": key_for(path)}
        )

        case = f"{path} {loc}"
        assert response.status_code == 422, f"{case}: {response.text}"
        errors = response.json()["detail"]
        assert errors[0]["loc"][: len(loc)] == loc, case
        assert errors[0]["msg"], case
        assert all(set(error) == {"loc", "msg", "type"} for error in errors), "no input echoed"
        for echoed in (
            "19.99",
            "EUX",
            "Mars/Olympus",
            "no spaces",
            "0.123456",
            "silver-5",
            '"Web"',
            "vip_2026",
        ):
            assert echoed not in response.text, case
    assert await offers.versions() == []
    assert await offers.service.store.heads.count_documents({}) == 0
    assert await published(settings) == []


async def test_the_error_names_what_a_promotion_misses(offers: RunningOffers) -> None:
    errors = await offers.call(
        "PUT", "/v1/promotions/gold-10", expect=422, json=gold_promotion(percent=None)
    )

    assert "percent" in errors["detail"][0]["msg"]


async def test_a_promotion_that_could_never_apply_is_refused_saying_why(
    offers: RunningOffers,
) -> None:
    async def refused(**changes: Any) -> str:
        errors = await offers.call(
            "PUT", "/v1/promotions/gold-10", expect=422, json=gold_promotion(**changes)
        )
        return str(errors["detail"][0]["msg"])

    assert "leave `channels` out" in await refused(channels=[])
    assert "pattern" in await refused(channels=["web", "Web"])
    assert "cart_abandoned_7d" in await refused(conditions={"segments": ["vip_2026"]})
    past_utc = "9999-12-31T23:59:59-01:00"  # past the calendar once in UTC: pages would fail
    assert "9999-12-31 in UTC" in await refused(valid_until=past_utc)
    assert "from 1900-01-01" in await refused(valid_from="0001-01-01T00:00:00+01:00")
    await offers.call(
        "PUT", "/v1/promotions/gold-10", json=gold_promotion(valid_until="9999-12-31T00:00:00Z")
    )
    await offers.call(
        "PUT",
        "/v1/promotions/gold-10",
        json=gold_promotion(channels=["web"], conditions={"segments": ["cart_abandoned_7d"]}),
    )


async def test_a_change_made_from_an_old_version_of_a_promotion_is_refused_not_applied(
    offers: RunningOffers,
) -> None:
    """B retires the promotion (it is being abused) while A edits it from version 1: A's save
    with `If-Match: "1"` is refused 412, where without it the promotion came back to life."""
    first = await offers.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
    await offers.call(
        "POST", "/v1/promotions/gold-10/retire", headers={"If-Match": f'"{first["version"]}"'}
    )
    stale = {"If-Match": f'"{first["version"]}"'}

    refused = await offers.call(
        "PUT", "/v1/promotions/gold-10", json=gold_promotion(), headers=stale, expect=412
    )
    stale_retire = await offers.call(
        "POST", "/v1/promotions/gold-10/retire", headers=stale, expect=412
    )
    missing = await offers.call(
        "PUT",
        "/v1/promotions/new-1",
        json=gold_promotion(id="new-1"),
        headers={"If-Match": "*"},
        expect=412,
    )
    garbage = await offers.call(
        "PUT",
        "/v1/promotions/gold-10",
        json=gold_promotion(),
        headers={"If-Match": "yesterday"},
        expect=422,
    )
    superscript = await offers.http.put(
        "/v1/promotions/gold-10",
        json=gold_promotion(),
        headers=[(b"X-API-Key", key_for("/v1/promotions").encode()), (b"If-Match", b"\xb2")],
    )
    assert superscript.status_code == 422, superscript.text
    listed = {p["promotion"]["id"]: p for p in await offers.call("GET", "/v1/promotions")}
    current = {"If-Match": str(listed["gold-10"]["version"])}
    again = await offers.call(
        "PUT", "/v1/promotions/gold-10", json=gold_promotion(), headers=current
    )

    assert refused["detail"] == "the promotion is at version 2: read it again"
    assert stale_retire["detail"] == refused["detail"]
    assert missing["detail"] == "no promotion with this id yet"
    assert garbage["detail"][0]["loc"] == ["header", "If-Match"]
    assert again["version"] == 3
    assert [v["version"] for v in await offers.versions()] == [3, 2, 1]


async def test_a_promotion_is_retired_by_a_version_of_its_own(
    offers: RunningOffers, settings: HiloSettings
) -> None:
    await offers.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
    await offers.call("PUT", "/v1/promotions/silver-5", json=gold_promotion(id="silver-5"))
    await offers.caught_up_to(2)
    assert set(offers.service.follower.book.snapshot().promotions) == {"gold-10", "silver-5"}

    retired = await offers.call("POST", "/v1/promotions/gold-10/retire")

    assert retired["version"] == 3
    assert retired["keys"] == ["promotion:gold-10"]
    await offers.caught_up_to(3)
    assert set(offers.service.follower.book.snapshot().promotions) == {"silver-5"}
    listed = {p["promotion"]["id"]: p for p in await offers.call("GET", "/v1/promotions")}
    assert listed["gold-10"]["promotion"]["active"] is False
    assert listed["gold-10"]["version"] == 3
    assert listed["gold-10"]["promotion"]["percent"] == "10", "retired as it was"
    active = await offers.call("GET", "/v1/promotions", params={"active": "true"})
    assert [p["promotion"]["id"] for p in active] == ["silver-5"]
    await offers.call("POST", "/v1/promotions/gold-10/retire", expect=409)
    await offers.call("POST", "/v1/promotions/nobody/retire", expect=404)
    assert [v["version"] for v in await offers.versions()] == [3, 2, 1]
    assert len(await published(settings)) == 3


async def test_promotions_are_listed_a_page_at_a_time_each_linking_the_next(
    offers: RunningOffers,
) -> None:
    """Seven promotions, one retired: pages of three in id order, each full page linking the
    next (`after` its last id), the last linking none; `active=true` pages leave the retired
    one out and keep the filter in their links; the query runs on the `(kind, _id)` index."""
    for n in range(7):
        await offers.call("PUT", f"/v1/promotions/p-{n}", json=gold_promotion(id=f"p-{n}"))
    await offers.call("POST", "/v1/promotions/p-4/retire")

    assert await _pages(offers, "/v1/promotions?limit=3") == [
        ["p-0", "p-1", "p-2"],
        ["p-3", "p-4", "p-5"],
        ["p-6"],
    ]
    assert await _pages(offers, "/v1/promotions?active=true&limit=3") == [
        ["p-0", "p-1", "p-2"],
        ["p-3", "p-5", "p-6"],
    ]
    assert await _pages(offers, "/v1/promotions?after=p-6") == [[]]
    assert len(await offers.call("GET", "/v1/promotions")) == 7, "200 a page by default"
    await offers.call("GET", "/v1/promotions", params={"limit": 1001}, expect=422)
    await offers.call("GET", "/v1/promotions", params={"after": "Gold 10"}, expect=422)

    heads = offers.service.store.heads
    query = {"kind": "promotion", "_id": {"$gt": "promotion:p-2"}}
    plan = await heads.find(query).sort("_id", 1).limit(4).explain()
    assert "COLLSCAN" not in winning_stages(plan), plan


async def _pages(offers: RunningOffers, first: str) -> list[list[str]]:
    """The promotion ids of each page, following `Link: rel="next"` from `first`."""
    pages: list[list[str]] = []
    url: str | None = first
    while url is not None:
        answer = await offers.http.get(url, headers={"X-API-Key": key_for("/v1/promotions")})
        assert answer.status_code == 200, answer.text
        pages.append([state["promotion"]["id"] for state in answer.json()])
        url = answer.links.get("next", {}).get("url")
        assert url is None or url.startswith("/v1/promotions?"), "relative to the host"
    return pages


async def test_the_history_says_when_who_and_what(offers: RunningOffers) -> None:
    await offers.call("PUT", "/v1/prices", json=PRICES[:2], headers={"X-Changed-By": "ana"})
    await offers.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
    await offers.call("POST", "/v1/promotions/gold-10/retire", headers={"X-Changed-By": "bo"})

    history = await offers.versions()

    assert [(v["version"], v["by"], v["keys"], v["published"]) for v in history] == [
        (3, "bo", ["promotion:gold-10"], True),
        (2, "api", ["promotion:gold-10"], True),
        (1, "ana", ["price:SKU-1:EUR", "price:SKU-2:EUR"], True),
    ]
    assert all(
        abs(datetime.fromisoformat(v["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
        for v in history
    )
    older = await offers.call("GET", "/v1/versions", params={"before": 3, "limit": 1})
    assert [v["version"] for v in older] == [2]
    # Larger than MongoDB's integers: refused, not a 500 from the driver.
    await offers.call("GET", "/v1/versions", params={"before": 2**63}, expect=422)


async def test_a_catalogue_lost_with_its_database_is_taken_back_from_the_topic(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """The offers topic holds every key's latest record: a new start on an empty catalogue
    (the database lost, or restored from an older backup) takes them back, and the next change
    numbers after the topic's versions, so that no reader ignores it."""
    async with running_offers(settings) as before:
        await before.call("PUT", "/v1/prices", json=PRICES[:2])
        await before.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
        await before.caught_up_to(2)
    database = mongo_client[settings.mongodb_database]
    for collection in ("offers_changes", "offers_heads"):
        await database.drop_collection(collection)

    async with running_offers(settings) as after:

        async def restored() -> list[dict[str, Any]]:
            return await after.versions()

        await eventually(restored, until=lambda history: len(history) == 1)
        price = await after.call("GET", "/v1/prices/SKU-1")
        change = await after.call("PUT", "/v1/prices", json=PRICES[2:])
        await after.caught_up_to(3)
        book = after.service.follower.book.snapshot()

    assert price[0]["currency"] == "EUR"
    assert change["version"] == 3
    assert book.version == 3
    assert set(book.prices) == {("SKU-1", "EUR"), ("SKU-2", "EUR"), ("SKU-1", "USD")}
    assert set(book.promotions) == {"gold-10"}


async def test_a_topic_lost_with_kafkas_data_is_filled_again_from_the_catalogue(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Kafka's data lost (or a new cluster), MongoDB intact: the catalogue puts every key's
    latest record back on the recreated topic, so readers started since quote its prices."""
    async with running_offers(settings) as before:
        await before.call("PUT", "/v1/prices", json=PRICES[:2])
        await before.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": "90.00"}])
        await before.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
        await before.caught_up_to(3)
    await _delete_topic(settings, topic_name(Topic.OFFERS, settings))

    async with running_offers(settings) as after:
        await eventually(lambda: published(settings), until=lambda records: len(records) >= 3)
    async with running_offers(settings) as reader:
        book = reader.service.follower.book.snapshot()
        change = await reader.call("PUT", "/v1/prices", json=PRICES[2:])
    records = await published(settings)

    assert book.version == 3
    assert set(book.prices) == {("SKU-1", "EUR"), ("SKU-2", "EUR")}
    assert book.prices[("SKU-1", "EUR")].points[-1].amount == Decimal("90.00")
    assert set(book.promotions) == {"gold-10"}
    assert change["version"] == 4
    assert [r.version for r in records[:3]] == sorted(r.version for r in records[:3])
    assert after.service.follower.book.version == 3


async def test_a_change_published_to_the_emptied_topic_does_not_hide_the_others_loss(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance, running through Kafka's loss, published a change to the emptied topic
    before this one started: the topic's highest version is the catalogue's, and every other
    key is still missing from it (compared by version alone, it looked whole)."""
    async with running_offers(settings) as before:
        await before.call("PUT", "/v1/prices", json=PRICES[:2])
        await before.call("PUT", "/v1/promotions/gold-10", json=gold_promotion())
        await before.caught_up_to(2)
    await _delete_topic(settings, topic_name(Topic.OFFERS, settings))
    with monkeypatch.context() as running_through:
        running_through.setattr(Outbox, "restore_topic", _already_whole)
        async with running_offers(settings) as other:
            await other.call("PUT", "/v1/prices", json=PRICES[2:])
            await eventually(lambda: published(settings), until=lambda records: len(records) == 1)

    async with running_offers(settings) as after:
        await eventually(lambda: published(settings), until=lambda records: len(records) >= 4)
    async with running_offers(settings) as reader:
        book = reader.service.follower.book.snapshot()

    assert set(book.prices) == {("SKU-1", "EUR"), ("SKU-2", "EUR"), ("SKU-1", "USD")}
    assert set(book.promotions) == {"gold-10"}
    assert after.service.follower.book.version == 3


async def _already_whole(_outbox: Outbox) -> bool:
    return True


async def _delete_topic(settings: HiloSettings, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([name])

        async def gone() -> bool:
            return name not in await admin.list_topics()

        await eventually(gone, timeout=30)
    finally:
        await admin.close()


async def test_a_version_an_older_backup_holds_as_unpublished_is_not_sent_again(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """Restored from a backup taken between storing version 1 and publishing it: version 1 is on
    the topic, and 2 after it. Sent again, it would come last and compaction would keep its
    older price for every new reader."""
    async with running_offers(settings) as before:
        await before.call("PUT", "/v1/prices", json=PRICES[:1])
        await before.call("PUT", "/v1/prices", json=[{**PRICES[0], "amount": "120.00"}])
        await before.caught_up_to(2)
    database = mongo_client[settings.mongodb_database]
    await database["offers_changes"].delete_one({"_id": 2})
    await database["offers_changes"].update_one({"_id": 1}, {"$set": {"published": False}})
    await database["offers_heads"].drop()
    on_topic = len(await published(settings))

    async with running_offers(settings) as after:

        async def restored() -> list[dict[str, Any]]:
            return await after.versions()

        history = await eventually(restored, until=lambda found: len(found) == 2)
        price = await after.call("GET", "/v1/prices/SKU-1")
        change = await after.call("PUT", "/v1/prices", json=PRICES[2:])

    assert [(v["version"], v["published"]) for v in history] == [(2, True), (1, True)]
    assert (price[0]["version"], price[0]["in_force"]["amount"]) == (2, "120.00")
    assert change["version"] == 3
    assert len(await published(settings)) == on_topic + 1, "version 3 alone went out"


async def test_no_change_is_numbered_before_the_topic_was_read(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    """Until the topic is read, the catalogue cannot know whether it is behind: a change then
    is refused (503, try again), not numbered from what may be a lost database."""
    service = create_service(offers_settings(settings))  # not started: the topic is unread
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://offers") as http:
        answer = await http.put("/v1/prices", json=PRICES[:1], headers={"X-API-Key": ADMIN_API_KEY})

    assert answer.status_code == 503
    assert "still being read" in answer.json()["detail"]
    assert answer.headers["retry-after"] == "2"
    assert await mongo_client[settings.mongodb_database]["offers_changes"].count_documents({}) == 0


async def test_changes_need_an_admin_key_which_a_channel_does_not_hold(
    offers: RunningOffers,
) -> None:
    wrong = await offers.http.put("/v1/prices", json=PRICES, headers={"X-API-Key": "wrong"})
    channel = await offers.http.put("/v1/prices", json=PRICES, headers={"X-API-Key": API_KEY})
    quote = {"channel": "web", "currency": "EUR", "lines": [{"sku": "SKU-1", "quantity": 1}]}
    admin_quoting = await offers.http.post(
        "/v1/quotes", json=quote, headers={"X-API-Key": ADMIN_API_KEY}
    )

    assert wrong.status_code == channel.status_code == admin_quoting.status_code == 401
    assert await offers.versions() == []


async def test_concurrent_changes_of_one_sku_keep_every_point(offers: RunningOffers) -> None:
    """Two writers that read the same head: the unique version decides, the loser rebuilds."""
    days = range(1, 9)
    await asyncio.gather(
        *(
            offers.call(
                "PUT",
                "/v1/prices",
                json=[
                    {
                        **PRICES[0],
                        "amount": f"{day}.00",
                        "valid_from": (NOW + timedelta(days=day)).isoformat(),
                    }
                ],
            )
            for day in days
        )
    )

    prices = await offers.call("GET", "/v1/prices/SKU-1")
    assert sorted(p["amount"] for p in prices[0]["points"]) == sorted(f"{d}.00" for d in days)
    assert [v["version"] for v in await offers.versions()] == list(range(8, 0, -1))


async def test_served_over_http_with_health_and_metrics(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    service = create_service(offers_settings(settings))
    async with (
        served(service.app) as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": ADMIN_API_KEY}) as http,
    ):
        assert (await http.get("/health/live")).json() == {"status": "ok", "checks": {}}

        async def ready() -> int:
            return (await http.get("/health/ready")).status_code

        await eventually(ready, until=lambda status: status == 200)
        assert (await http.put("/v1/prices", json=PRICES)).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert "hilo_offers_versions_published_total" in metrics
