"""Running the customer-profile service in-process, for its own tests and cross-service tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from bson.errors import InvalidDocument

from customer_profile.adapters.store import ProfileStore
from customer_profile.bootstrap import Service, bootstrap, start, stop
from customer_profile.domain.journey import JourneyEntry
from customer_profile.service.pipeline import RawRecord
from customer_profile.settings import ProfileSettings
from hilo.contract import ConversationDone, Direction, Identifiers, Interaction, new_interaction
from hilo.kafka import KafkaPublisher, Record, create_broker
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.testkit.samples import sample_payloads

API_KEY = "test-key-1"
"""A read key: what the desk and the offers service hold."""
ADMIN_API_KEY = "test-admin-key"
"""A key that may also erase, export, split and decide merges."""


def profile_settings(settings: HiloSettings, **overrides: object) -> ProfileSettings:
    values = {
        **settings.model_dump(),
        "api_keys": [API_KEY, "test-key-2"],
        "admin_api_keys": [ADMIN_API_KEY],
        "erasure_retry_seconds": 0.5,
        "split_settle_seconds": 1.0,
        "consumer_group": f"{settings.topic_prefix}customer-profile",
    }
    values.update(overrides)
    return ProfileSettings.model_validate(values)


@dataclass
class RunningProfileService:
    service: Service
    http: httpx.AsyncClient
    publisher: KafkaPublisher

    async def publish(self, interactions: Sequence[Interaction]) -> None:
        for interaction in interactions:
            await self.publisher.publish_interaction(interaction)

    async def publish_records(self, records: Sequence[Record]) -> None:
        """Records as they are (a test's own, possibly broken, records)."""
        await self.publisher.publish_records(records)

    async def journey_count(self) -> int:
        return await self.service.store.journey.count_documents({})

    async def settled_count(self) -> int:
        return await self.service.store.settled_count()

    async def wait_for_entries(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` entries have every effect done (views saved, records published): an
        entry is stored before its batch's views, so counting stored entries would race."""
        await eventually(self.settled_count, until=lambda n: n >= count, timeout=timeout)

    async def customer_of(self, kind: str, value: str) -> str:
        response = await self.http.post("/v1/customers/lookup", json={"kind": kind, "value": value})
        assert response.status_code == 200, f"{kind} {value}: {response.text}"
        customer: str = response.json()["customer_id"]
        return customer

    def assigned_partitions(self) -> set[int]:
        """Partitions of `interactions` this instance consumes right now."""
        consumer = self.service.broker.subscribers[0].consumer  # type: ignore[attr-defined]
        return {tp.partition for tp in consumer.assignment()} if consumer else set()

    async def get(self, path: str) -> Any:
        """GET a JSON body, asserting success."""
        response = await self.http.get(path)
        assert response.status_code == 200, f"{path}: {response.text}"
        return response.json()


@asynccontextmanager
async def running_profile_service(
    settings: HiloSettings, **overrides: object
) -> AsyncIterator[RunningProfileService]:
    """Start the service (consumer + API) and a producer that seals as channels do; stop both
    afterwards."""
    service = bootstrap(profile_settings(settings, **overrides))
    await start(service)
    producer = create_broker(settings)
    await producer.start()
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://profile", headers={"X-API-Key": ADMIN_API_KEY}
        ) as http:
            publisher = KafkaPublisher(producer, settings, sealer=service.sealer)
            yield RunningProfileService(service, http, publisher)
    finally:
        await producer.stop()
        await stop(service)


async def share_partitions(instances: Sequence[RunningProfileService], partitions: int) -> bool:
    """Every instance consumes some partition, and together all of them: the group has settled."""
    assigned = [instance.assigned_partitions() for instance in instances]
    return all(assigned) and set().union(*assigned) == set(range(partitions))


def interaction(
    n: int | str,
    *,
    minutes: float = 0,
    channel: str = "web",
    kind: str = "page_view",
    **identifiers: str,
) -> Interaction:
    """A test interaction with the given identifiers, `minutes` after `T0`."""
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=f"evt-{n}",
        identifiers=Identifiers.model_validate(identifiers),
        payload=sample_payloads()[kind],
        occurred_at=T0 + timedelta(minutes=minutes),
    )


T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def message(
    n: int | str, *, minutes: float, direction: Direction, **identifiers: str
) -> Interaction:
    """A message `minutes` after `T0`, from the customer (inbound) or to them (outbound)."""
    sent = interaction(n, minutes=minutes, kind="message", **identifiers)
    payload = sent.payload.model_copy(update={"direction": direction})
    return sent.model_copy(update={"payload": payload})


def done_mark(
    n: int | str, *, minutes: float, waiting_since: datetime, **identifiers: str
) -> Interaction:
    """An agent's done mark (as the desk publishes it), `minutes` after `T0`, of the contacts
    that waited since `waiting_since`."""
    mark = interaction(n, minutes=minutes, channel="desk", kind="conversation_done", **identifiers)
    seen = ConversationDone(agent_id="ana", waiting_since=waiting_since)
    return mark.model_copy(update={"payload": seen})


def stored_entry(
    event_id: str,
    customer_id: str,
    occurred_at: datetime,
    *,
    channel: str = "web",
    kind: str = "message",
    identifiers: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
) -> JourneyEntry:
    """A journey entry as the store holds it, recorded when it happened: for tests of the
    store, of derivations and of splits, which start from stored entries."""
    return JourneyEntry(
        id=event_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        recorded_at=occurred_at,
        channel=channel,
        type=kind,
        summary="",
        source="test",
        identifiers=identifiers or {},
        payload=payload or {},
    )


async def attach_request(
    svc: RunningProfileService, first: int, email: str, phone: str
) -> dict[str, Any]:
    """A customer known by `email` (events `first` on, the test's first two), then an unverified
    event putting an unknown `phone` beside it: the merge request it opens, to attach the phone."""
    await svc.publish([interaction(first, email=email)])
    await svc.wait_for_entries(1)
    ask = interaction(first + 1, minutes=1, email=email, phone=phone)
    await svc.publish([ask.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(2)
    [request] = await svc.get("/v1/merge-requests")
    return dict(request)


class InjectedFault(RuntimeError):
    """Raised by `inject_fault`: stands for a crash, a timeout or a refused write at that step."""


@dataclass(frozen=True)
class FaultPoint:
    """Where to fail: `method` of the store or publisher, before or after its `call`-th call."""

    target: str
    method: str
    when: str
    call: int = 1

    @property
    def name(self) -> str:
        return f"{self.when}-{self.method}#{self.call}"


FAULT_POINTS = [
    FaultPoint("store", "claim", "after"),
    FaultPoint("store", "finish_merges", "before"),
    FaultPoint("store", "finish_merges", "after"),
    FaultPoint("store", "record_conflicts", "after"),
    FaultPoint("store", "insert_entries", "after"),
    FaultPoint("store", "save_views", "after"),
    FaultPoint("publisher", "publish_records", "before"),
    FaultPoint("publisher", "publish_records", "after"),
    FaultPoint("store", "head_states", "after"),
    FaultPoint("store", "settle", "before"),
]
"""Every step of `Pipeline.process` after which a crash leaves something half done."""


def inject_fault(obj: object, point: FaultPoint) -> None:
    """Make `obj.<method>` raise `InjectedFault` once, before or after its real work.

    Set on the instance, so calls the object makes to itself are intercepted too (a merge that
    finishes itself fails between its two steps).
    """
    original = getattr(obj, point.method)
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        hit = calls == point.call
        if hit and point.when == "before":
            raise InjectedFault(point.name)
        result = await original(*args, **kwargs)
        if hit:
            raise InjectedFault(point.name)
        return result

    setattr(obj, point.method, failing)


def interleave(obj: object, method: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
    """Make the next call of `obj.<method>` run `meanwhile` first, then do its real work: other
    writers act between a step's inputs being read and its write (undo with `clear_faults`).

    Calls made by `meanwhile` itself go straight through.
    """
    original = getattr(obj, method)
    waiting = [meanwhile]

    async def later(*args: Any, **kwargs: Any) -> Any:
        if waiting:
            await waiting.pop()()
        return await original(*args, **kwargs)

    setattr(obj, method, later)


def wrap_once(obj: object, method: str, wrapper: Callable[..., Awaitable[Any]]) -> None:
    """Make the next call of `obj.<method>` go through `wrapper(real, *args, **kwargs)`, which
    decides what happens before and after the real work (other writers, a crash); later calls,
    and those `wrapper` makes, go straight through (undo with `clear_faults`)."""
    original = getattr(obj, method)
    waiting = [wrapper]

    async def once(*args: Any, **kwargs: Any) -> Any:
        if waiting:
            return await waiting.pop()(original, *args, **kwargs)
        return await original(*args, **kwargs)

    setattr(obj, method, once)


def clear_faults(obj: object, *methods: str) -> None:
    """Undo `inject_fault`: the class's own methods answer again."""
    for method in methods:
        obj.__dict__.pop(method, None)


def raw_records(
    interactions: Sequence[Interaction], topic: str = "interactions"
) -> list[RawRecord]:
    """Interactions as the consumer receives them from Kafka (one partition, increasing offsets)."""
    return [
        RawRecord(
            value=event.model_dump_json().encode(),
            key=event.partition_key(),
            headers=(),
            topic=topic,
            partition=0,
            offset=n,
        )
        for n, event in enumerate(interactions)
    ]


async def assert_published_records_match_their_schemas(settings: HiloSettings) -> dict[str, int]:
    """Every record on `identity.merges`, `identity.merge_requests`, `profiles` (tombstones
    aside) and `journey` validates against the JSON Schema published for it under
    docs/schemas (what an analytics reader in any language builds on); returns the counts."""
    from jsonschema import Draft202012Validator, FormatChecker  # noqa: PLC0415 - tests only

    from customer_profile.records import schemas  # noqa: PLC0415
    from hilo.kafka import read_to_end  # noqa: PLC0415
    from hilo.topics import Topic, topic_name  # noqa: PLC0415

    files = schemas()
    topics = {
        Topic.IDENTITY_MERGES: "identity.merges.v1.schema.json",
        Topic.MERGE_REQUESTS: "identity.merge_requests.v1.schema.json",
        Topic.PROFILES: "profiles.v1.schema.json",
        Topic.JOURNEY: "journey.sealed.v1.schema.json",
    }
    counts = {}
    for topic, file in topics.items():
        validator = Draft202012Validator(files[file], format_checker=FormatChecker())
        records = await read_to_end(settings.kafka_bootstrap_servers, topic_name(topic, settings))
        documents = [json.loads(r.value) for r in records if r.value is not None]
        for document in documents:
            errors = [
                f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)
            ]
            assert not errors, f"{topic.value} record does not match {file}: {errors}"
        counts[topic.value] = len(documents)
    return counts


def refuse_event(store: ProfileStore, event_id: str) -> None:
    """The database refuses any write holding this event, every time (a real poison pill)."""
    original = store.insert_entries

    async def insert_entries(entries: list[JourneyEntry]) -> set[str]:
        if any(entry.id == event_id for entry in entries):
            raise InvalidDocument("cannot encode object: refused for the test")
        return await original(entries)

    store.insert_entries = insert_entries  # type: ignore[method-assign]
