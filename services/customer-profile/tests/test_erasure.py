"""Erasure that holds: recorded first, completed whatever fails, never undone by old events."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import ConnectionFailure

from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.identity import UNVERIFIED_MERGE, Conflict, conflict_ids
from customer_profile.service import privacy
from customer_profile.service.rebuild import rebuild
from customer_profile.testing import (
    RunningProfileService,
    attach_request,
    clear_faults,
    interaction,
    interleave,
    profile_settings,
    running_profile_service,
)
from hilo.contract import Interaction
from hilo.kafka import PublishFailed, Record, read_to_end
from hilo.mongo import create_mongo_client
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually, read_topic
from hilo.topics import Topic, topic_name

KAFKA_DOWN_SECONDS = float(os.environ.get("HILO_ERASURE_KAFKA_DOWN_SECONDS", "3"))
"""How long Kafka refuses writes during the erasure (`make faults` runs it with 30)."""


async def test_an_erasure_with_kafka_down_completes_by_itself_and_old_events_do_not_return(
    profile_service: RunningProfileService, settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background sweep meets Kafka down at least once (it leaves an erasure to its request
    for `LEFT_TO_ITS_REQUEST`, made 0 here: with 5 s it first ran after a 3 s outage), and then
    completes the erasure by itself: nobody asks again until it is done."""
    monkeypatch.setattr(privacy, "LEFT_TO_ITS_REQUEST", timedelta(0))
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com", phone="+34612345678")])
    await svc.publish([interaction(2, minutes=1, email="ana@example.com", kind="cart")])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("email", "ana@example.com")
    refused = [0]

    async def kafka_down(*_: Any, **__: Any) -> None:
        refused[0] += 1
        raise PublishFailed("Kafka did not confirm the write (injected)")

    svc.service.publisher.publish = kafka_down  # type: ignore[method-assign]
    first = await svc.http.delete(f"/v1/customers/{customer}")
    again = await svc.http.delete(f"/v1/customers/{customer}")
    hidden = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "ana@example.com"}
    )
    by_requests = refused[0]
    await eventually(lambda: _value(refused[0]), until=lambda n: n > by_requests)  # the sweep
    await asyncio.sleep(KAFKA_DOWN_SECONDS)
    clear_faults(svc.service.publisher, "publish")

    assert (first.status_code, first.json()["status"]) == (202, "pending")
    assert (again.status_code, again.json()["status"]) == (202, "pending")
    assert hidden.status_code == 404, "MongoDB is cleaned at once, Kafka or not"
    await eventually(lambda: _erasure_done(svc, customer), timeout=30)
    done = await svc.http.delete(f"/v1/customers/{customer}")
    assert (done.status_code, done.json()["status"]) == (200, "done")
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings), expected=1
    )
    assert {r.key: r.value for r in records}[customer.encode()] is None, "tombstone"

    readable = await _readable_by_topic(svc, settings)
    assert readable == {"interactions": 0, "journey": 0, "interactions.dlq": 0}, "keys deleted"

    # In flight from before the erasure (or redelivered, or replayed): not stored again.
    await svc.publish([interaction(3, minutes=2, phone="+34612345678", kind="cart")])
    await eventually(lambda: _value(svc.service.pipeline.events_of_erased), until=lambda n: n == 1)
    assert await _documents_about(svc, "ana@example.com", "+34612345678") == 0

    later = interaction(5, email="ana@example.com").model_copy(
        update={"occurred_at": datetime.now(UTC) + timedelta(seconds=1)}
    )
    await svc.publish([later])
    await svc.wait_for_entries(1)
    assert await svc.customer_of("email", "ana@example.com") != customer, "a new profile"
    assert await _rebuilt_journeys(svc, settings) == [[later.id]], "a rebuild keeps Ana erased"


async def _value(value: int) -> int:
    return value


async def test_an_erasure_mongodb_fails_half_way_through_is_answered_recorded_and_completes(
    profile_service: RunningProfileService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MongoDB failing once the erasure is recorded: 202 (it completes by itself, as with
    Kafka down), not a 503 that says nothing was done."""
    monkeypatch.setattr(privacy, "LEFT_TO_ITS_REQUEST", timedelta(0))
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com")])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("email", "ana@example.com")
    store = svc.service.store
    erase_for = store.erase_for

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store, "erase_for", erase_for)
        raise ConnectionFailure("MongoDB went away (injected)")

    monkeypatch.setattr(store, "erase_for", fails_once)
    answer = await svc.http.delete(f"/v1/customers/{customer}")

    assert (answer.status_code, answer.json()["status"]) == (202, "pending"), answer.text
    await eventually(lambda: _erasure_done(svc, customer), timeout=30)
    done = await svc.http.delete(f"/v1/customers/{customer}")
    assert (done.status_code, done.json()["status"]) == (200, "done")


async def _erasure_done(svc: RunningProfileService, customer: str) -> bool:
    erasure = await svc.service.store.erasure_of(customer)
    return erasure is not None and erasure.done


async def _documents_about(svc: RunningProfileService, *values: str) -> int:
    """Documents anywhere in the database that mention one of `values`."""
    db = svc.service.store.client[svc.service.settings.mongodb_database]
    found = 0
    for name in await db.list_collection_names():
        async for document in db[name].find({}):
            found += sum(value in str(document) for value in values)
    return found


async def test_after_an_erasure_no_record_about_the_person_can_be_opened_on_any_topic(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """Crypto-shredding: the records stay on `interactions`, `journey` and the dead-letter topic
    (nothing rewrites them), but nobody can read who they were about or what they said."""
    svc = profile_service
    ana = [
        interaction(1, email="ana@example.com", phone="+34612345678", kind="message"),
        interaction(2, minutes=1, phone="+34612345678", kind="call", channel="voice"),
    ]
    bo = interaction(3, minutes=2, email="bo@example.com", kind="message")
    await svc.publish([*ana, bo])
    await svc.publish_records([await _dead_letter_to_be(svc, ana[0])])
    await svc.wait_for_entries(3)
    readable = await _readable_by_topic(svc, settings)
    assert readable == {"interactions": 4, "journey": 3, "interactions.dlq": 1}, "before"

    customer = await svc.customer_of("email", "ana@example.com")
    erased = await svc.http.delete(f"/v1/customers/{customer}")
    assert erased.status_code == 200, erased.text

    assert await _readable_by_topic(settings=settings, svc=svc) == {
        "interactions": 1,
        "journey": 1,
        "interactions.dlq": 0,
    }, "only Bo's records open"
    for topic in (Topic.INTERACTIONS, Topic.JOURNEY, Topic.INTERACTIONS_DLQ):
        for record in await read_to_end(
            settings.kafka_bootstrap_servers, topic_name(topic, settings)
        ):
            raw = (record.key or b"") + (record.value or b"")
            for clear in (b"ana@example.com", b"34612345678", b"Do you have these in 42?"):
                assert clear not in raw, f"{clear!r} readable on {topic}"


async def _dead_letter_to_be(svc: RunningProfileService, event: Interaction) -> Record:
    """A record of Ana's, sealed, that the service cannot process: it goes to the DLQ as is."""
    [record] = await svc.publisher.interaction_records([event.model_copy(update={"id": "dead"})])
    document = json.loads(record.value or b"{}")
    document["schema_version"] = 99
    return replace(record, value=json.dumps(document).encode())


async def _readable_by_topic(svc: RunningProfileService, settings: HiloSettings) -> dict[str, int]:
    """How many records of each topic open with the keys in the key store now (read fresh:
    a process's cache may hold an erased key for `HILO_KEY_CACHE_SECONDS`)."""
    reader = create_sealer(
        svc.service.settings.model_copy(update={"key_cache_seconds": 0}), svc.service.store.client
    )
    counts = {}
    for topic in (Topic.INTERACTIONS, Topic.JOURNEY, Topic.INTERACTIONS_DLQ):
        records = await read_to_end(settings.kafka_bootstrap_servers, topic_name(topic, settings))
        opened = await reader.open_all([record.value for record in records])
        counts[topic.value] = sum(isinstance(document, dict) for document in opened)
    return counts


async def _rebuilt_journeys(svc: RunningProfileService, settings: HiloSettings) -> list[list[str]]:
    """Every journey a rebuild of `interactions` into a fresh database makes, as event ids."""
    target = profile_settings(settings, mongodb_database=settings.mongodb_database + "_rebuilt")
    client = create_mongo_client(target)
    try:
        store = ProfileStore(client, target.mongodb_database)
        await rebuild(target, store)
        heads = [d["_id"] async for d in store.profiles.find({"merged_into": None}, {"_id": 1})]
        profiles = await store.load(heads)
        return [[e.id for e in await store.entries(p.aliases)] for p in profiles.values()]
    finally:
        await client.drop_database(target.mongodb_database)
        await client.close()


async def test_a_backup_restored_from_before_an_erasure_is_erased_again_when_a_service_starts(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    # The service's own pass at start must be over: one still reading the topic when the
    # erasure below is published would erase the restored backup at once.
    await eventually(lambda: _true(svc.service.privacy.reapplied), until=bool, timeout=60)
    await svc.publish([interaction(1, email="ana@example.com", phone="+34612345678")])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("email", "ana@example.com")
    backup = await _dump(svc)
    assert (await svc.http.delete(f"/v1/customers/{customer}")).status_code == 200

    await _restore(svc, backup)  # what `mongorestore --drop` of that backup does
    assert await svc.customer_of("email", "ana@example.com") == customer, "she is back"
    assert (await _readable_by_topic(svc, settings))["interactions"] == 1, "her key is back"

    async with running_profile_service(settings):
        await eventually(
            lambda: _documents_about(svc, "ana@example.com", "+34612345678"),
            until=lambda n: n == 0,
            timeout=30,
        )
    assert (await _readable_by_topic(svc, settings))["interactions"] == 0


async def _true(value: bool) -> bool:
    return value


async def _dump(svc: RunningProfileService) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every document of the profiles and keys databases."""
    client, settings = svc.service.store.client, svc.service.settings
    dump = {}
    for database in (settings.mongodb_database, settings.mongodb_keys_database):
        for name in await client[database].list_collection_names():
            dump[(database, name)] = [doc async for doc in client[database][name].find({})]
    return dump


async def _restore(
    svc: RunningProfileService, dump: dict[tuple[str, str], list[dict[str, Any]]]
) -> None:
    client = svc.service.store.client
    for (database, name), documents in dump.items():
        await client[database][name].delete_many({})
        if documents:
            await client[database][name].insert_many(documents)


async def test_an_erasure_leaves_the_keys_of_another_customers_identifiers(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """Ana's order named Bo's phone (two loyalty cards: the profiles stay apart). Erasing Ana
    must not make Bo's own records unreadable."""
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com", loyalty_id="L-ANA")])
    await svc.publish([interaction(2, minutes=1, phone="+34612345678", loyalty_id="L-BO")])
    await svc.wait_for_entries(2)
    await svc.publish([interaction(3, minutes=2, email="ana@example.com", phone="+34612345678")])
    await svc.wait_for_entries(3)
    ana = await svc.customer_of("email", "ana@example.com")
    assert await svc.customer_of("phone", "+34612345678") != ana, "kept apart by the cards"

    erased = await svc.http.delete(f"/v1/customers/{ana}")

    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"]["keys"] == 2, "Ana's email and loyalty card, not Bo's phone"
    phone = svc.service.sealer.subject("phone:+34612345678")
    assert phone in await svc.service.sealer.keys.get([phone])
    assert (await _readable_by_topic(svc, settings))["interactions"] == 2, "Bo's, and Ana's order"


async def test_an_erasure_takes_the_persons_identifiers_out_of_the_merge_requests_they_raised(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """An unverified event with Ana's phone, Bo's email and a new customer number makes a new
    profile for the number and asks an agent to merge Ana and Bo. The request names only them,
    but its identifiers are the new person's: erased, they must go with the request, or
    confirming it would bring the number back on Ana and Bo's profile."""
    svc = profile_service
    await svc.publish([interaction(1, phone="+34612345601")])
    await svc.publish([interaction(2, minutes=1, email="bo@example.com")])
    await svc.wait_for_entries(2)
    poisoned = interaction(
        3, minutes=2, customer_id="C-777", email="bo@example.com", phone="+34612345601"
    )
    await svc.publish([poisoned.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(3)
    newcomer = await svc.customer_of("customer_id", "C-777")
    [request] = await svc.get("/v1/merge-requests")
    assert newcomer not in request["customer_ids"]
    assert await _documents_about(svc, "C-777") > 0
    exported = await svc.get(f"/v1/customers/{newcomer}/export")
    assert [(c["reason"], c["keys"]) for c in exported["conflicts"]] == [
        ("unverified_merge", ["customer_id:C-777"])
    ], "the request is the newcomer's data too, as far as its identifiers go"

    erased = await svc.http.delete(f"/v1/customers/{newcomer}")

    assert erased.status_code == 200, erased.text
    assert await svc.get("/v1/merge-requests") == []
    assert await _documents_about(svc, "C-777") == 0
    # Readers following the queue on Kafka close it too: it names only Ana and Bo, so nothing
    # on `erasures` would tell them.
    queue = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    told = [json.loads(r.value) for r in queue if r.key == request["id"].encode()]
    assert [t["type"] for t in told] == ["requested", "withdrawn"]
    assert told[-1]["by"] is None


async def test_an_erasure_withdraws_a_request_to_attach_the_persons_number_to_someone_else(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """An unverified event put an unknown number beside Carla's email: a request to attach it
    to Carla. The number's owner then wrote from it, and was erased: the request, which names
    only Carla, stayed pending with the erased person's number, and confirming it would have
    given it to Carla."""
    svc = profile_service
    request = await attach_request(svc, 1, "carla@example.com", "+34612345602")
    assert "phone:+34612345602" in request["keys"]
    await svc.publish([interaction(3, minutes=2, channel="sms", phone="+34612345602")])
    await svc.wait_for_entries(3)
    owner = await svc.customer_of("phone", "+34612345602")

    erased = await svc.http.delete(f"/v1/customers/{owner}")

    assert erased.status_code == 200, erased.text
    assert await svc.get("/v1/merge-requests") == []
    queue = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    told = [json.loads(r.value) for r in queue if r.key == request["id"].encode()]
    assert [t["type"] for t in told] == ["requested", "withdrawn"]


async def test_a_decision_on_a_request_an_erasure_deletes_meanwhile_is_refused_not_announced(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """The agent's confirmation is recorded, then the erasure deletes the request before the
    decision is read back: no `confirmed` with nobody behind it is announced (the erasure's
    `withdrawn` closes it), and the agent is told it went."""
    svc = profile_service
    await svc.publish([interaction(1, phone="+34612345601")])
    await svc.publish([interaction(2, minutes=1, email="bo@example.com")])
    await svc.wait_for_entries(2)
    asks = interaction(3, minutes=2, email="bo@example.com", phone="+34612345601")
    await svc.publish([asks.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(3)
    [request] = await svc.get("/v1/merge-requests")
    store = svc.service.store
    decide = store.decide_merge_request
    conflicts = svc.service.mongo[settings.mongodb_database]["identity_conflicts"]

    async def decided_then_erased(request_id: str, *args: Any, **kwargs: Any) -> bool:
        decided = await decide(request_id, *args, **kwargs)
        await conflicts.delete_one({"_id": request_id})  # the erasure's delete, just then
        return decided

    store.decide_merge_request = decided_then_erased  # type: ignore[method-assign]
    answer = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/confirm", json={"by": "agent-7", "reason": "same"}
    )

    assert answer.status_code == 409, answer.text
    assert "withdrawn" in answer.json()["detail"]
    queue = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    told = [json.loads(r.value)["type"] for r in queue if r.key == request["id"].encode()]
    assert told == ["requested"]


async def ana_and_bo(svc: RunningProfileService) -> tuple[str, str]:
    """Two customers a merge request can name: Ana (a phone) and Bo (an email)."""
    await svc.publish([interaction(1, phone="+34612345601")])
    await svc.publish([interaction(2, minutes=1, email="bo@example.com")])
    await svc.wait_for_entries(2)
    return (
        await svc.customer_of("phone", "+34612345601"),
        await svc.customer_of("email", "bo@example.com"),
    )


async def told_of(settings: HiloSettings, request_id: str) -> list[str]:
    """The types `identity.merge_requests` has published for this request, in order."""
    queue = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    return [json.loads(r.value)["type"] for r in queue if r.key == request_id.encode()]


async def test_a_request_a_racing_batch_raised_for_an_erased_customer_is_withdrawn_too(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """A batch that resolved before Ana's erasure records a merge request naming her after the
    erasure deleted hers, publishes it, and then finds her head gone (`forget_erased`): the
    request goes, and the erasure, completed again, tells Kafka it is withdrawn."""
    svc = profile_service
    ana, bo = await ana_and_bo(svc)
    assert (await svc.http.delete(f"/v1/customers/{ana}")).status_code == 200
    store = svc.service.store
    late = Conflict(UNVERIFIED_MERGE, None, tuple(sorted([ana, bo])), ("phone:+34612345601",))
    await store.record_conflicts([(late, "evt-late")])
    [request_id] = conflict_ids([(late, "evt-late")])

    assert await store.forget_erased([ana], svc.service.sealer.subject) == {ana}
    erasure = await store.erasure_of(ana)
    assert erasure is not None
    assert not erasure.done, "extended: it is to be completed again"
    assert (await svc.service.privacy.complete(erasure))["status"] == "done"

    assert await told_of(settings, request_id) == ["withdrawn"]


async def test_a_request_recorded_between_the_erasures_listing_and_its_delete_is_withdrawn(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """A batch records a merge request naming Ana just after her erasure listed the requests to
    withdraw, before it deletes them: it is not deleted unannounced. The erasure notes it when it
    finds it, deletes it, and, completed again, tells Kafka it is withdrawn."""
    svc = profile_service
    ana, bo = await ana_and_bo(svc)
    store = svc.service.store
    late = Conflict(UNVERIFIED_MERGE, None, tuple(sorted([ana, bo])), ("phone:+34612345601",))
    [request_id] = conflict_ids([(late, "evt-late")])
    raised: list[str] = []

    async def a_batch_raises_one() -> None:
        raised.append(request_id)
        await store.record_conflicts([(late, "evt-late")])

    # The erasure notes what it listed, then deletes: the batch writes in between.
    interleave(store._erasures, "note_withdrawn", a_batch_raises_one)
    first = await svc.http.delete(f"/v1/customers/{ana}")
    await eventually(  # completed again in the background (`keep_finishing`)
        lambda: svc.http.delete(f"/v1/customers/{ana}"),
        until=lambda r: r.json()["status"] == "done",
        timeout=30,
    )

    assert raised == [request_id]
    assert first.json()["status"] == "pending", "it found one more request to announce"
    assert await svc.get("/v1/merge-requests") == []
    assert await told_of(settings, request_id) == ["withdrawn"]


async def test_a_request_a_batch_records_for_a_customer_erased_after_it_resolved_is_withdrawn(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    """An unverified event with Ana's phone, Bo's email and a new customer number is resolved;
    Ana is erased before the batch records the merge request naming her and Bo. The event's
    entry is the newcomer's, so nothing the batch wrote for it is gone: the request itself tells
    the batch Ana is, and it does not stay naming her and holding her phone."""
    svc = profile_service
    ana, _ = await ana_and_bo(svc)
    store = svc.service.store
    record = store.record_conflicts
    erasures: list[int] = []

    async def erased_then_recorded(conflicts: list[tuple[Conflict, str]]) -> set[str]:
        if conflicts and not erasures:
            erasures.append((await svc.http.delete(f"/v1/customers/{ana}")).status_code)
        return await record(conflicts)

    store.record_conflicts = erased_then_recorded  # type: ignore[method-assign]
    asks = interaction(
        3, minutes=2, customer_id="C-777", email="bo@example.com", phone="+34612345601"
    )
    await svc.publish([asks.model_copy(update={"identity_trust": "unverified"})])
    await eventually(lambda: _value(len(erasures)), timeout=30)
    queue_name = topic_name(Topic.MERGE_REQUESTS, settings)

    async def told_once_erased() -> list[str]:
        """What the queue says of the request (the batch reopened the erasure: it is completed
        again in the background, `keep_finishing`)."""
        queue = await read_to_end(settings.kafka_bootstrap_servers, queue_name)
        return [json.loads(r.value)["type"] for r in queue if r.value is not None]

    told = await eventually(told_once_erased, until=lambda t: "withdrawn" in t, timeout=30)

    assert erasures == [200]
    assert told == ["requested", "withdrawn"]
    assert await svc.get("/v1/merge-requests") == []
    conflicts = svc.service.mongo[settings.mongodb_database]["identity_conflicts"]
    assert await conflicts.count_documents({"customer_ids": ana}) == 0
