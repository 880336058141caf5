"""Two service instances, six partitions, people showing up through different identifiers.

Events of one person are keyed by different identifiers, so they land on different partitions and
are processed by both instances at the same time. Correctness must come from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from datetime import UTC, datetime
from typing import Any

from customer_profile.service.resolver import IdentityResolver, Pending
from customer_profile.testing import (
    RunningProfileService,
    interaction,
    running_profile_service,
    share_partitions,
)
from hilo.contract import Interaction
from hilo.kafka import read_to_end
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.topics import Topic, ensure_topics, topic_name

PEOPLE = 30


def journey_of(person: int) -> list[Interaction]:
    ids = {
        "email": f"person{person}@example.com",
        "phone": f"+3461{person:07d}",
        "loyalty_id": f"LOY-{person}",
        "anonymous_id": f"anon-{person}",
        "whatsapp_id": f"3461{person:07d}",
    }

    def pick(*kinds: str) -> dict[str, str]:
        return {kind: ids[kind] for kind in kinds}

    steps = [
        ("page_view", pick("anonymous_id")),
        ("message", pick("email")),
        ("call", pick("phone")),
        ("message", pick("whatsapp_id", "phone")),
        ("identify", pick("anonymous_id", "email")),
        ("order", pick("loyalty_id", "phone", "email")),
        ("message", pick("email")),
        ("call", pick("phone")),
    ]
    return [
        interaction(f"{person}-{n}", minutes=n, kind=kind, **identifiers)
        for n, (kind, identifiers) in enumerate(steps)
    ]


async def test_two_instances_build_one_profile_per_person_with_every_event_once(
    settings: HiloSettings,
) -> None:
    settings = settings.model_copy(update={"topic_partitions": 6})
    await ensure_topics(settings)
    stream = [event for person in range(PEOPLE) for event in journey_of(person)]
    random.Random(42).shuffle(stream)

    async with (
        running_profile_service(settings, batch_max_records=20) as one,
        running_profile_service(settings, batch_max_records=20) as two,
    ):
        await eventually(lambda: share_partitions((one, two), 6), until=bool, timeout=60)
        half = len(stream) // 2
        await asyncio.gather(one.publish(stream[:half]), two.publish(stream[half:]))
        await one.wait_for_entries(len(stream), timeout=120)
        await eventually(lambda: _settled(one), until=bool, timeout=30)

        counts = await one.service.store.counts()
        heads = [doc async for doc in one.service.store.profiles.find({"merged_into": None})]
        assert counts["journey_entries"] == len(stream), "every event once: none lost, none twice"
        assert counts["profiles"] == PEOPLE, f"one profile per person, got {heads}"
        assert one.service.pipeline.events_processed > 0
        assert two.service.pipeline.events_processed > 0
        for person in range(PEOPLE):
            events = journey_of(person)
            customers = {
                await one.customer_of(kind, value)
                for event in events
                for kind, value in ((k.value, v) for k, v in event.identifiers.pairs())
            }
            assert len(customers) == 1, f"person {person} is split over {customers}"
            customer = customers.pop()
            journey = await one.get(f"/v1/customers/{customer}/journey?limit=100")
            assert sorted(e["id"] for e in journey["entries"]) == sorted(e.id for e in events)
            profile = await one.get(f"/v1/customers/{customer}")
            assert profile["view"]["event_count"] == len(events)
        await _assert_compacted_topic_ends_on_the_latest(one, settings)


async def _assert_compacted_topic_ends_on_the_latest(
    running: RunningProfileService, settings: HiloSettings
) -> None:
    """Both instances published snapshots of the same people: the last one per key is current."""
    last: dict[str, dict[str, Any]] = {}
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    for record in records:
        last[record.key.decode()] = json.loads(record.value)
    async for head in running.service.store.profiles.find({}):
        if head.get("merged_into"):
            assert last[head["_id"]] == {
                "customer_id": head["_id"],
                "merged_into": head["merged_into"],
            }
        elif head.get("identifiers"):
            [state] = (await running.service.store.head_states([head["_id"]])).values()
            assert last[head["_id"]]["version"] == state.version, "an older snapshot landed last"


async def _settled(running: RunningProfileService) -> bool:
    """Every profile's view counts exactly the entries its journey holds."""
    store = running.service.store
    heads = [doc["_id"] async for doc in store.profiles.find({"merged_into": None}, {"_id": 1})]
    for profile in (await store.load(heads)).values():
        stored = await store.journey.count_documents({"customer_id": {"$in": profile.aliases}})
        if (profile.view.event_count if profile.view else 0) != stored:
            return False
    return True


async def test_a_merge_protection_breach_by_two_instances_at_once_is_recorded_not_silent(
    profile_service: RunningProfileService,
) -> None:
    """Two loyalty cards meet one shared email on two instances at the same moment: each decides
    against the shared profile as it was (no loyalty id yet) and merges its card's profile into
    it. Each merge alone is allowed, together they break merge protection. The store's atomic
    operations do not prevent this yet; the instance that reads last sees it and records it as
    an open conflict for a person, instead of nobody ever knowing."""
    svc = profile_service
    for n, ids in enumerate([{"email": "shared@example.com"}, {"loyalty_id": "L1"}], 1):
        await svc.publish([interaction(f"seed-{n}", minutes=n, **ids)])
        await svc.wait_for_entries(n)
    await svc.publish([interaction("seed-3", minutes=3, loyalty_id="L2")])
    await svc.wait_for_entries(3)
    shared = await svc.customer_of("email", "shared@example.com")
    store = svc.service.store
    both_read = asyncio.Barrier(2)
    read = store.identity_state

    async def identity_state(*args: Any) -> Any:
        state = await read(*args)
        if both_read.n_waiting < 2 and not both_read.broken:
            with contextlib.suppress(asyncio.BrokenBarrierError, TimeoutError):
                async with asyncio.timeout(5):
                    await both_read.wait()
        return state

    store.identity_state = identity_state  # type: ignore[method-assign,assignment]
    policy = svc.service.settings.identity_policy()
    since = datetime.now(UTC)
    cards = [
        Pending(f"card-{card}", since, [f"loyalty_id:{card}", "email:shared@example.com"])
        for card in ("L1", "L2")
    ]
    first, second = await asyncio.gather(
        *(IdentityResolver(store, policy).resolve([card], since) for card in cards)
    )

    survivor = (await store.load([shared]))[shared]
    assert {"loyalty_id:L1", "loyalty_id:L2"} <= set(survivor.identifiers), "the race happened"
    breaches = [
        conflict
        for conflict, _ in [*first.conflicts, *second.conflicts]
        if conflict.reason == "concurrent_merge"
    ]
    assert breaches, "nobody recorded the breach"
    assert {(c.kind, c.customer_ids[0]) for c in breaches} == {("loyalty_id", shared)}
