"""The HTTP API: authentication, lookup, journey paging, export and erasure."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from pymongo import AsyncMongoClient

from customer_profile.bootstrap import bootstrap, start, stop
from customer_profile.testing import (
    ADMIN_API_KEY,
    API_KEY,
    T0,
    RunningProfileService,
    interaction,
    profile_settings,
    running_profile_service,
)
from hilo.contract import (
    Direction,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    MessageExchanged,
    OrderPlaced,
    OrderStatus,
    SalesChannel,
    new_interaction,
)
from hilo.kafka import PublishFailed
from hilo.mongo import MongoDocument
from hilo.profile_client import ProfileClient, customer_path
from hilo.request_size import MAX_REQUEST_BYTES
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.samples import sample_payloads
from hilo.testkit.serving import free_port
from hilo.topics import Topic, topic_name


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_requests_without_a_valid_key_are_refused(
    profile_service: RunningProfileService, headers: dict[str, str]
) -> None:
    transport = httpx.ASGITransport(app=profile_service.service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p", headers=headers) as http:
        response = await http.post(
            "/v1/customers/lookup", json={"kind": "email", "value": "a@b.co"}
        )
        profile = await http.get("/v1/customers/anything")

    assert response.status_code == 401
    assert response.json() == {"detail": "missing or unknown API key (header X-API-Key)"}
    assert profile.status_code == 401


async def test_a_body_larger_than_any_request_is_refused_before_it_is_read(
    profile_service: RunningProfileService,
) -> None:
    """FastAPI reads a body before the key is checked: a huge one is refused at once."""
    transport = httpx.ASGITransport(app=profile_service.service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
        response = await http.post(
            "/v1/customers/lookup", content=b"{" + b" " * MAX_REQUEST_BYTES + b"}"
        )

    assert response.status_code == 413


async def test_every_configured_key_works_and_operations_routes_stay_open(
    profile_service: RunningProfileService,
) -> None:
    transport = httpx.ASGITransport(app=profile_service.service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
        second = await http.post(
            "/v1/customers/lookup",
            json={"kind": "email", "value": "nobody@example.com"},
            headers={"X-API-Key": "test-key-2"},
        )
        ready = await http.get("/health/ready")
        live = await http.get("/health/live")
        openapi = await http.get("/openapi.json")

    assert second.status_code == 404
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"kafka": "ok", "mongodb": "ok", "consumer": "ok"},
    }
    assert live.status_code == 200
    assert "/v1/customers/{customer_id}/context" in openapi.json()["paths"]


async def test_a_client_given_the_whole_key_list_sends_its_first_key(
    profile_service: RunningProfileService,
) -> None:
    """Compose gives the desk and the offers service the profile API's own `HILO_API_KEYS`
    while `HILO_PROFILE_API_KEY` is unset: during a rotation that is `new,old`, which as one
    header value is no key at all (the old one here is no longer a key either)."""
    transport = httpx.ASGITransport(app=profile_service.service.app)
    rotating = ProfileClient("http://profile", " test-key-2 , retired-key", transport=transport)
    try:
        found = await rotating.lookup("email", "nobody@example.com")
    finally:
        await rotating.close()

    assert found is None  # 404: let in, nobody found (401 would raise ProfileUnavailable)


async def test_lookup_normalises_and_rejects_invalid_identifiers(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish([interaction(1, phone="+34612345678", whatsapp_id="34612345678")])
    await svc.wait_for_entries(1)

    customer = await svc.customer_of("phone", "0034 612 34 56 78")
    assert customer
    for typed in ("+34 612 34 56 78", "whatsapp:+34612345678", "34612345678"):
        assert await svc.customer_of("whatsapp_id", typed) == customer, typed
    invalid = await svc.http.post("/v1/customers/lookup", json={"kind": "phone", "value": "12"})
    unknown_kind = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "shoe_size", "value": "42"}
    )
    missing = await svc.http.get("/v1/customers/does-not-exist")

    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["msg"] == "not a phone number"
    assert unknown_kind.status_code == 422
    assert missing.status_code == 404


async def test_an_identifier_claimed_for_a_profile_not_created_yet_finds_nobody(
    profile_service: RunningProfileService,
) -> None:
    """Between a new customer's claims and its profile (or after a crash in between), a lookup
    answers 404 rather than an id that `GET` would not find."""
    svc = profile_service
    await svc.service.store.identities.insert_one(
        {"_id": "email:lea@example.com", "customer_id": "not-created-yet", "claimed_at": T0}
    )

    lookup = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "lea@example.com"}
    )

    assert lookup.status_code == 404


async def test_the_journey_pages_with_a_stable_cursor_and_filters(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    channels = ["web", "whatsapp", "email"]
    await svc.publish(
        [
            interaction(n, minutes=n, email="ana@example.com", channel=channels[n % 3])
            for n in range(7)
        ]
    )
    await svc.wait_for_entries(7)
    customer = await svc.customer_of("email", "ana@example.com")

    seen: list[str] = []
    cursor = None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        page = await svc.get(f"/v1/customers/{customer}/journey?limit=3{suffix}")
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    whatsapp = await svc.get(f"/v1/customers/{customer}/journey?channel=whatsapp")
    window = await svc.get(
        f"/v1/customers/{customer}/journey?since=2026-11-01T09:02:00Z&until=2026-11-01T09:04:00Z"
    )
    bad_cursor = await svc.http.get(f"/v1/customers/{customer}/journey?cursor=nonsense")
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode()
    deep_cursor = await svc.http.get(f"/v1/customers/{customer}/journey?cursor={nested}")

    full = await svc.get(f"/v1/customers/{customer}/journey?limit=100")
    assert seen == [e["id"] for e in full["entries"]]
    assert len(seen) == 7
    assert {e["channel"] for e in whatsapp["entries"]} == {"whatsapp"}
    assert len(whatsapp["entries"]) == 2
    assert [e["occurred_at"] for e in window["entries"]] == [
        "2026-11-01T09:02:00Z",
        "2026-11-01T09:03:00Z",
    ]
    assert bad_cursor.status_code == 400
    assert deep_cursor.status_code == 400, deep_cursor.text


async def test_a_time_mongodb_cannot_hold_is_refused_saying_so_not_answered_500(
    profile_service: RunningProfileService,
) -> None:
    """Year 1 at +01:00 is year 0 in UTC: no date can say it."""
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com")])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("email", "ana@example.com")
    too_early = "0001-01-01T00:00:00%2B01:00"
    cursor = base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00", "e"]').decode()

    journey = await svc.http.get(f"/v1/customers/{customer}/journey?since={too_early}")
    later = await svc.http.get(f"/v1/customers/{customer}/journey?until=9999-12-31T23:00:00-02:00")
    paged = await svc.http.get(f"/v1/customers/{customer}/journey?cursor={cursor}")
    mismatches = await svc.http.get(f"/v1/mismatches?since={too_early}")

    assert journey.status_code == 422, journey.text
    assert "between the years 1 and 9999" in journey.text
    assert later.status_code == 422, later.text
    assert paged.status_code == 400, paged.text
    assert mismatches.status_code == 422, mismatches.text


async def test_export_returns_everything_and_erasure_forgets_the_customer(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    await svc.publish(
        [
            interaction(1, email="ana@example.com", anonymous_id="anon-1"),
            interaction(2, minutes=1, phone="+34612345678"),
        ]
    )
    await svc.wait_for_entries(2)  # two profiles first, whatever the partitions' order
    await svc.publish(
        [interaction(3, minutes=2, email="ana@example.com", phone="+34612345678", kind="identify")]
    )
    await svc.wait_for_entries(3)
    customer = await svc.customer_of("email", "ana@example.com")
    absorbed = (await svc.get(f"/v1/customers/{customer}"))["merged_from"]

    export = await svc.get(f"/v1/customers/{customer}/export")
    erased = await svc.http.delete(f"/v1/customers/{customer}")

    assert sorted(export["identities"]) == [
        "anonymous_id:anon-1",
        "email:ana@example.com",
        "phone:+34612345678",
    ]
    assert len(export["journey"]) == 3
    assert export["profile"]["traits"]["first_name"]["value"] == "Ana"
    assert erased.status_code == 200
    assert erased.json()["erased"] == {
        "journey_entries": 3,
        "identities": 3,
        "conflicts": 0,
        "profiles": 2,
        "splits": 0,
        "checkpoints": 0,
        "keys": 3,
    }
    assert (await svc.http.get(f"/v1/customers/{customer}")).status_code == 404
    assert (await svc.http.get(f"/v1/customers/{absorbed[0]}")).status_code == 404
    lookup = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "ana@example.com"}
    )
    assert lookup.status_code == 404
    profiles = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings), expected=6
    )
    last_by_key = {r.key: r.value for r in profiles}
    assert last_by_key[customer.encode()] is None, "tombstone on the compacted topic"
    assert last_by_key[absorbed[0].encode()] is None

    # The same person writing again, after the erasure, starts a fresh profile.
    again = interaction(4, email="ana@example.com")
    await svc.publish([again.model_copy(update={"occurred_at": datetime.now(UTC)})])
    await svc.wait_for_entries(1)
    fresh = await svc.customer_of("email", "ana@example.com")
    assert fresh != customer
    assert (await svc.get(f"/v1/customers/{fresh}"))["view"]["event_count"] == 1


async def test_an_export_shows_the_identifiers_an_erasure_would_count_as_theirs(
    profile_service: RunningProfileService,
) -> None:
    """A sixth email, past the cap of five, is never claimed but stays in its entry: the
    erasure counts it as theirs (nobody else holds it), so the right of access shows it too."""
    svc = profile_service
    phone = "+34612345678"
    await svc.publish(
        [interaction(n, minutes=n, phone=phone, email=f"ana{n}@example.com") for n in range(6)]
    )
    await svc.wait_for_entries(6)
    customer = await svc.customer_of("phone", phone)

    export = await svc.get(f"/v1/customers/{customer}/export")

    claimed = {key for key in export["identities"] if key.startswith("email:")}
    assert len(claimed) == 5, "one past the cap (whichever came last) is not claimed"
    emails = {entry["identifiers"].get("email") for entry in export["journey"]}
    assert emails == {f"ana{n}@example.com" for n in range(6)}


async def test_a_timeline_pages_newest_first(profile_service: RunningProfileService) -> None:
    svc = profile_service
    await svc.publish([interaction(n, minutes=n, email="ana@example.com") for n in range(5)])
    await svc.wait_for_entries(5)
    customer = await svc.customer_of("email", "ana@example.com")

    first = await svc.get(f"/v1/customers/{customer}/journey?order=desc&limit=3")
    rest = await svc.get(
        f"/v1/customers/{customer}/journey?order=desc&limit=3&cursor={first['next_cursor']}"
    )

    times = [e["occurred_at"] for e in first["entries"] + rest["entries"]]
    assert times == sorted(times, reverse=True)
    assert len(set(times)) == 5
    assert rest["next_cursor"] is None


async def test_an_order_number_posted_through_the_public_key_does_not_take_the_lookup(
    profile_service: RunningProfileService,
) -> None:
    """Anyone with the public web key can post `Order Completed` with Ana's order number, dated
    a month earlier: the lookup answered the first entry, and the desk's search by order number
    sent the clerk to the stranger's profile for Ana's return. A verified source's order comes
    first, whatever its time."""
    svc = profile_service
    placed = interaction("ana-order", minutes=60, kind="order", email="ana@example.com")
    forged = interaction("forged", minutes=-43_200, kind="order", email="mallory@example.com")
    await svc.publish([placed, forged.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(2)
    ana = await svc.customer_of("email", "ana@example.com")

    assert await svc.get("/v1/customers/by-order/ORD-1001") == {"customer_id": ana}


async def test_a_customer_is_found_by_an_order_id_and_open_conversations_are_listed(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    now = datetime.now(UTC)
    recent = [
        new_interaction(
            channel=channel,
            instance="test",
            provider_event_id=f"recent-{n}",
            identifiers=Identifiers.model_validate({"email": email}),
            payload=sample_payloads()["message"],
            occurred_at=now - timedelta(minutes=10 - n),
        )
        for n, (channel, email) in enumerate(
            [("whatsapp", "ana@example.com"), ("email", "bo@example.com")]
        )
    ]
    # The same order picked up in a store an hour later by someone else, the receipt carrying
    # the online order's id: the order is still Cy's, who placed it, though the web shop's
    # public key records it unverified and the till's receipt is verified.
    picked_up = interaction("pickup", minutes=60, kind="order", email="dee@example.com")
    receipt = {
        "sold_via": SalesChannel.STORE,
        "store_id": "MAD-01",
        "receipt_id": "MAD-01:000123",
        "status": OrderStatus.PICKED_UP,
    }
    picked_up = picked_up.model_copy(
        update={"payload": picked_up.payload.model_copy(update=receipt)}
    )
    placed = interaction("order", kind="order", email="cy@example.com")
    await svc.publish(
        [placed.model_copy(update={"identity_trust": "unverified"}), picked_up, *recent]
    )
    await svc.wait_for_entries(4)
    cy = await svc.customer_of("email", "cy@example.com")
    ana = await svc.customer_of("email", "ana@example.com")
    bo = await svc.customer_of("email", "bo@example.com")

    found = await svc.get("/v1/customers/by-order/ORD-1001")
    dee = await svc.customer_of("email", "dee@example.com")
    # The handover's receipt, as printed at the counter: its collector's.
    by_receipt = await svc.get("/v1/customers/by-order/MAD-01:000123")
    unknown = await svc.http.get("/v1/customers/by-order/ORD-0")
    inbox = await svc.get("/v1/conversations")

    assert found == {"customer_id": cy}
    assert by_receipt == {"customer_id": dee}
    assert unknown.status_code == 404
    assert [(c["customer_id"], c["conversation"]["last_channel"]) for c in inbox] == [
        (bo, "email"),
        (ana, "whatsapp"),
    ]
    profile = await svc.get(f"/v1/customers/{ana}")
    last_inbound = profile["view"]["last_inbound"]
    assert list(last_inbound) == ["whatsapp"]
    stored = datetime.fromisoformat(last_inbound["whatsapp"])
    assert abs(stored - recent[0].occurred_at) < timedelta(milliseconds=1)  # MongoDB keeps ms


async def test_an_order_id_with_a_slash_is_found_and_no_text_reaches_another_route_as_an_id(
    profile_service: RunningProfileService,
) -> None:
    """The server decodes `%2F` before routing: `2026/00123` as printed on an invoice is still
    found, and text a desk search tries as a customer id (`<id>/journey`) is nobody."""
    svc = profile_service
    order = sample_payloads()["order"].model_copy(update={"order_id": "2026/00123"})
    await svc.publish(
        [
            new_interaction(
                channel="store",
                instance="test",
                provider_event_id="slash-order",
                identifiers=Identifiers.model_validate({"email": "cy@example.com"}),
                payload=order,
                occurred_at=T0,
            )
        ]
    )
    await svc.wait_for_entries(1)
    cy = await svc.customer_of("email", "cy@example.com")
    asgi = httpx.ASGITransport(app=svc.service.app)
    client = ProfileClient("http://profile", ADMIN_API_KEY, transport=asgi)
    try:
        found = await svc.get(f"/v1/customers/by-order/{quote('2026/00123', safe='')}")
        elsewhere = await client.profile(f"{cy}/journey")
        dots = [await client.profile(text) for text in (".", "..")]
    finally:
        await client.close()

    assert found == {"customer_id": cy}
    assert elsewhere is None
    assert dots == [None, None]
    for text in (".", ".."):  # httpx resolves dot segments: `..` asked for GET /v1
        with pytest.raises(ValueError, match="no '/'"):
            customer_path(text)
    # Why the client refuses it: the server decodes %2F before routing, so the text, quoted,
    # reaches the customer's journey route.
    routed = await svc.http.get(f"/v1/customers/{quote(f'{cy}/journey', safe='')}")
    assert "entries" in routed.json()


async def test_the_inbox_lists_as_many_customers_as_asked_however_many_were_merged_away(
    profile_service: RunningProfileService,
) -> None:
    """Three web-chat visitors who then sign in as Ana are merged into her; their views stay,
    newer than Bo's conversation, and must not crowd him out of the inbox."""
    svc = profile_service
    now = datetime.now(UTC)

    def message(n: int, minutes_ago: float, **identifiers: str) -> Interaction:
        return new_interaction(
            channel="web",
            instance="test",
            provider_event_id=f"chat-{n}",
            identifiers=Identifiers.model_validate(identifiers),
            payload=sample_payloads()["message"],
            occurred_at=now - timedelta(minutes=minutes_ago),
        )

    visitors = [message(n, 10 - n, anonymous_id=f"visitor-{n}") for n in range(3)]
    await svc.publish(
        [message(9, 30, email="bo@example.com"), message(8, 20, email="ana@example.com"), *visitors]
    )
    await svc.wait_for_entries(5)
    signed_in = [
        interaction(
            f"sign-in-{n}", kind="identify", email="ana@example.com", anonymous_id=f"visitor-{n}"
        )
        for n in range(3)
    ]
    await svc.publish(signed_in)
    await svc.wait_for_entries(8)
    ana = await svc.customer_of("email", "ana@example.com")
    bo = await svc.customer_of("email", "bo@example.com")
    assert {await svc.customer_of("anonymous_id", f"visitor-{n}") for n in range(3)} == {ana}

    inbox = await svc.get("/v1/conversations?limit=2")

    assert [c["customer_id"] for c in inbox] == [ana, bo]


async def test_the_queue_lists_who_waits_for_a_reply_the_longest_waiting_first(
    profile_service: RunningProfileService,
    mongo_client: AsyncMongoClient[MongoDocument],
    settings: HiloSettings,
) -> None:
    """Ana and Cy wait (Cy wrote twice: from the first message); Bo was answered by email; Dee
    wrote 30 hours ago, past the window, and nobody answered: she waits longest, though her
    conversation is no longer open; Eve wrote 8 days ago, past the queue's 7 days. A version of
    Bo's view from before the answer, still stored (a crash between a save and its delete),
    must not put him back in the queue."""
    svc = profile_service
    now = datetime.now(UTC)
    question = MessageExchanged(
        direction=Direction.INBOUND, text="Is my order on its way?", provider_message_id="q"
    )
    answer = question.model_copy(update={"direction": Direction.OUTBOUND})

    def message(n: int, email: str, minutes_ago: float, payload: MessageExchanged) -> Interaction:
        return new_interaction(
            channel="whatsapp" if payload is question else "email",
            instance="test",
            provider_event_id=f"queue-{n}",
            identifiers=Identifiers(email=email),
            payload=payload,
            occurred_at=now - timedelta(minutes=minutes_ago),
        )

    await svc.publish(
        [
            message(1, "ana@example.com", 30, question),
            message(2, "bo@example.com", 20, question),
            message(3, "bo@example.com", 15, answer),
            message(4, "cy@example.com", 25, question),
            message(5, "cy@example.com", 5, question),
            message(6, "dee@example.com", 30 * 60, question),
            message(7, "eve@example.com", 8 * 24 * 60, question),
        ]
    )
    await svc.wait_for_entries(7)
    ana, bo, cy, dee = [
        await svc.customer_of("email", f"{n}@example.com") for n in ("ana", "bo", "cy", "dee")
    ]
    views = mongo_client[settings.mongodb_database]["profile_views"]
    current = await views.find_one({"customer_id": bo})
    assert current is not None
    before_answer = current["view"]
    before_answer["conversation"]["awaiting_reply_since"] = now - timedelta(minutes=20)
    await views.insert_one(
        {"customer_id": bo, "version": current["version"] - 1, "view": before_answer}
    )

    queue = await svc.get("/v1/conversations?awaiting=true")
    first = await svc.get("/v1/conversations?awaiting=true&limit=2")
    ana_waits = quote(first[1]["conversation"]["awaiting_reply_since"])
    rest = await svc.get(f"/v1/conversations?awaiting=true&waiting_from={ana_waits}")
    inbox = await svc.get("/v1/conversations")

    assert [c["customer_id"] for c in queue] == [dee, ana, cy]
    assert queue[1]["heading"] == {"kind": "email", "value": "ana@example.com"}
    waited = [
        now - datetime.fromisoformat(c["conversation"]["awaiting_reply_since"]) for c in queue
    ]
    assert [round(w.total_seconds() / 60) for w in waited] == [30 * 60, 30, 25]
    assert [c["customer_id"] for c in first] == [dee, ana]
    assert [c["customer_id"] for c in rest] == [ana, cy]
    assert [c["customer_id"] for c in inbox] == [cy, bo, ana]
    dee_now = await svc.get(f"/v1/customers/{dee}")
    eve_now = await svc.get(f"/v1/customers/{await svc.customer_of('email', 'eve@example.com')}")
    assert (dee_now["conversation_open"], dee_now["conversation_waiting"]) == (False, True)
    assert (eve_now["conversation_open"], eve_now["conversation_waiting"]) == (False, False)
    assert "awaiting_reply_since" not in inbox[1]["conversation"]


async def test_a_read_key_reads_but_cannot_erase_export_split_or_decide_merges(
    profile_service: RunningProfileService,
) -> None:
    """The desk and the offers service hold read keys: an erasure cannot be undone."""
    await profile_service.publish([interaction(1, email="ana@example.com")])
    await profile_service.wait_for_entries(1)
    ana = await profile_service.customer_of("email", "ana@example.com")
    transport = httpx.ASGITransport(app=profile_service.service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://p", headers={"X-API-Key": API_KEY}
    ) as reader:
        read = await reader.get(f"/v1/customers/{ana}")
        refused = [
            await reader.delete(f"/v1/customers/{ana}"),
            await reader.get(f"/v1/customers/{ana}/export"),
            await reader.post(f"/v1/customers/{ana}/split", json={}),
            await reader.post("/v1/merge-requests/any/confirm", json={}),
            await reader.post("/v1/merge-requests/any/reject", json={}),
        ]

    assert read.status_code == 200
    assert [response.status_code for response in refused] == [403] * 5
    assert "HILO_ADMIN_API_KEYS" in refused[0].json()["detail"]
    assert (await profile_service.http.get(f"/v1/customers/{ana}")).status_code == 200
    exported = await profile_service.http.get(f"/v1/customers/{ana}/export")
    assert exported.status_code == 200, "an admin key may"


async def test_with_kafka_away_the_api_starts_and_serves_journeys(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """Agents read journeys from MongoDB: an instance (re)started during a Kafka outage serves
    them, ready but `degraded`, and consumes once Kafka answers."""
    await profile_service.publish([interaction(1, email="ana@example.com")])
    await profile_service.wait_for_entries(1)
    customer = await profile_service.customer_of("email", "ana@example.com")
    away = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    service = bootstrap(profile_settings(away, consumer_group=f"{settings.topic_prefix}other"))
    await start(service)
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://p", headers={"X-API-Key": API_KEY}
        ) as http:
            journey = await http.get(f"/v1/customers/{customer}/journey")
            ready = await http.get("/health/ready")
    finally:
        await stop(service)

    assert journey.status_code == 200
    assert [entry["id"] for entry in journey.json()["entries"]] == [
        interaction(1, email="ana@example.com").id
    ]
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "degraded",
        "checks": {"kafka": "failing", "mongodb": "ok", "consumer": "ok"},
    }


async def test_a_consumer_stuck_on_kafka_leaves_the_api_serving_and_readiness_degraded(
    settings: HiloSettings, topics: list[str]
) -> None:
    """Kafka stops confirming mid-run: batches wait (`consumer` failing, the stuck gauge at 1),
    and the journeys already stored are read all the same."""
    async with running_profile_service(settings, stuck_after_seconds=0.5) as svc:
        await svc.publish([interaction(1, email="ana@example.com")])
        await svc.wait_for_entries(1)
        customer = await svc.customer_of("email", "ana@example.com")
        publisher = svc.service.pipeline._publisher
        assert publisher is not None
        confirming = publisher.publish_records

        async def not_confirmed(_records: object) -> None:
            raise PublishFailed("Kafka did not confirm the write to journey")

        publisher.publish_records = not_confirmed  # type: ignore[method-assign,assignment]
        await svc.publish([interaction(2, minutes=1, email="ana@example.com")])
        stuck = await eventually(
            lambda: svc.http.get("/health/ready"),
            until=lambda answer: answer.json()["checks"]["consumer"] == "failing",
        )
        journey = await svc.http.get(f"/v1/customers/{customer}/journey")
        publisher.publish_records = confirming  # type: ignore[method-assign]
        await svc.wait_for_entries(2)
        again = await eventually(
            lambda: svc.http.get("/health/ready"),
            until=lambda answer: answer.json()["status"] == "ok",
        )

    assert stuck.status_code == 200
    assert stuck.json()["status"] == "degraded"
    assert journey.status_code == 200
    assert len(journey.json()["entries"]) >= 1
    assert again.status_code == 200


async def test_the_context_shows_a_clerk_the_lines_of_the_latest_orders(
    profile_service: RunningProfileService,
) -> None:
    """At the till, a return or an exchange needs what was bought: each recent order comes with
    the lines of its latest state (an order changed to fewer lines shows those)."""
    svc = profile_service
    sample = sample_payloads()["order"]
    assert isinstance(sample, OrderPlaced)
    socks = LineItem(sku="SKU-SOCKS", name="Socks", quantity=2, unit_price=sample.total)
    placed = sample.model_copy(update={"order_id": "W-1", "items": [*sample.items, socks]})
    changed = placed.model_copy(update={"items": sample.items, "status": OrderStatus.COMPLETED})
    other = sample.model_copy(update={"order_id": "W-2"})
    same_id = sample.model_copy(update={"order_id": "W-1", "items": [socks]})

    def order(n: int, payload: OrderPlaced, email: str) -> Interaction:
        return new_interaction(
            channel="web",
            instance="test",
            provider_event_id=f"order-{n}",
            identifiers=Identifiers(email=email),
            payload=payload,
            occurred_at=T0 + timedelta(minutes=n),
        )

    unverified = {"identity_trust": "unverified"}
    forged = order(5, same_id, "ana@example.com").model_copy(update=unverified)
    await svc.publish(
        [
            order(1, placed, "ana@example.com"),
            order(2, other, "bo@example.com"),
            order(3, changed, "ana@example.com"),
            order(4, same_id, "bo@example.com"),
            forged,
        ]
    )
    await svc.wait_for_entries(5)
    ana = await svc.customer_of("email", "ana@example.com")
    context = await svc.get(f"/v1/customers/{ana}/context")

    [recent] = context["recent_orders"]
    assert recent["order_id"] == "W-1"
    assert [(line["sku"], line["quantity"]) for line in recent["items"]] == [("SKU-RED-42", 1)], (
        "her order's latest lines: not those of someone else's order with the same id, nor "
        "of a browser's event that names it (which changes no order)"
    )


async def test_a_blank_name_is_not_what_a_customer_is_called(
    profile_service: RunningProfileService,
) -> None:
    """A sign-up form that sends `name: ""` beside the first and last names: the clerk's context
    greets the customer by those, as the desk's heading does, not by nothing."""
    svc = profile_service
    traits: dict[str, str | int | float | bool | None] = {
        "name": " ",
        "first_name": "Ana",
        "last_name": "García",
    }
    await svc.publish(
        [
            new_interaction(
                channel="web",
                instance="test",
                provider_event_id="signup-1",
                identifiers=Identifiers(email="ana@example.com"),
                payload=Identified(traits=traits),
                occurred_at=T0,
            )
        ]
    )
    await svc.wait_for_entries(1)
    ana = await svc.customer_of("email", "ana@example.com")

    context = await svc.get(f"/v1/customers/{ana}/context")

    assert context["display_name"] == "Ana García"
