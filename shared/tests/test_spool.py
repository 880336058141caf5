"""Webhooks kept while Kafka is away (`hilo.spool`), against the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from hilo import spool as spool_module
from hilo.channel import ChannelSettings, create_channel_app
from hilo.kafka import KafkaPublisher, PublishFailed, Record
from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings
from hilo.shutdown import cancelled
from hilo.spool import FREE, Spool, record_document
from hilo.testkit.probes import eventually
from hilo.testkit.query_plans import winning_stages
from hilo.testkit.samples import publishing_one_sample
from hilo.topics import Topic
from hilo_devkit.channel_contract import channel_client


class Kafka:
    """The publisher port: away while `down`, takes `delay` seconds per publish, refuses for
    good the records whose value is in `too_large` and for now those in `unreachable`, fails
    with `bug` once if set."""

    def __init__(self, *, down: bool = False, delay: float = 0.0) -> None:
        self.down = down
        self.delay = delay
        self.too_large: set[bytes] = set()
        self.unreachable: set[bytes] = set()
        self.deadline = 0.0
        self.bug: Exception | None = None
        self.buggy: set[bytes] = set()
        """Values whose publish trips a bug every time."""
        self.published: list[Record] = []

    async def publish_records(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(self.delay)
        if self.bug is not None:
            bug, self.bug = self.bug, None
            raise bug
        if any(record.value in self.buggy for record in records):
            raise AttributeError("'int' object has no attribute 'encode'")
        if self.down:
            raise PublishFailed("no acknowledgement") from TimeoutError()
        if any(record.value in self.unreachable for record in records):
            await asyncio.sleep(self.deadline)  # Kafka gives up on it only at the deadline
            raise PublishFailed("no leader for the partition") from TimeoutError()
        if any(record.value in self.too_large for record in records):
            raise PublishFailed("refused") from MessageSizeTooLargeError()
        self.published += records


def request(n: int) -> list[Record]:
    return [
        Record(Topic.INTERACTIONS, f"subject-{n}".encode(), f"event-{n}-{i}".encode(), {"n": "1"})
        for i in range(2)
    ]


@pytest.fixture
def spool(settings: HiloSettings, mongo_client: AsyncMongoClient[MongoDocument]) -> Spool:
    return Spool("sms", mongo_client[settings.mongodb_database]["spooled_records"])


async def test_kept_requests_wait_for_kafka_then_go_out_whole_and_in_order(spool: Spool) -> None:
    for n in range(3):
        await spool.keep(request(n))
    kafka = Kafka(down=True)

    with pytest.raises(PublishFailed):
        await spool.drain(kafka)
    assert await spool.collection.count_documents({}) == 3

    kafka.down = False
    await spool.collection.update_many({}, {"$set": {"lease": datetime.now(UTC)}})  # waited
    assert await spool.drain(kafka) == 3

    assert kafka.published == [*request(0), *request(1), *request(2)]
    assert await spool.collection.count_documents({}) == 0


@pytest.mark.parametrize("stuck", [1, 2])
async def test_requests_kafka_does_not_take_for_now_wait_behind_the_others(
    spool: Spool, stuck: int
) -> None:
    """The oldest requests' partition has no leader (one, or two of one key, as Twilio's
    callbacks for one message are): they must not hold up the others (before, every drain
    tried the oldest first and stopped there, for as long as the partition was away)."""
    for n in range(2 + stuck):
        await spool.keep(request(n))
    kafka = Kafka()
    kafka.unreachable = {request(n)[0].value or b"" for n in range(stuck)}

    for _ in range(stuck):  # a pass stops once two failed and nothing went out
        with contextlib.suppress(PublishFailed):
            await spool.drain(kafka)
    assert kafka.published == [*request(stuck), *request(stuck + 1)]
    assert await spool.drain(kafka) == 0, "they wait before they are tried again"

    kafka.unreachable = set()
    await spool.collection.update_many({}, {"$set": {"lease": datetime.now(UTC)}})  # waited
    assert await spool.drain(kafka) == stuck
    assert kafka.published[4:] == [r for n in range(stuck) for r in request(n)]


async def test_requests_that_fail_slowly_do_not_take_turns_ahead_of_the_others(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish to a partition with no leader fails at its deadline, as long as the wait
    behind. One at a time, the first of two such requests was free again when the pass gave up
    on the second, so the next pass took it first, and the two took turns ahead of every other
    request. Published together, the third goes out beside them in the first pass, which then
    says Kafka is away (more failed than went), and both wait behind from when they failed."""
    monkeypatch.setattr("hilo.spool.BEHIND", timedelta(seconds=0.6))
    for n in range(3):
        await spool.keep(request(n))
    kafka = Kafka()
    kafka.unreachable = {request(n)[0].value or b"" for n in range(2)}
    kafka.deadline = 0.5

    with pytest.raises(PublishFailed):
        await spool.drain(kafka)  # both fail at 0.5 s: Kafka away?
    assert kafka.published == request(2)
    await asyncio.sleep(0.2)

    assert await spool.drain(kafka) == 0, "neither is free again yet"
    assert await spool.collection.count_documents({"queue": "sms"}) == 2


async def test_a_backlog_goes_out_a_batch_of_publishes_at_once_oldest_batch_first(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One acknowledgement at a time, a backlog drained at 23 requests a second: a drain claims
    `DRAIN_BATCH` documents and has all their publishes in flight together, the oldest batch
    first, and a request Kafka does not take for now costs its batch one deadline."""
    monkeypatch.setattr("hilo.spool.DRAIN_BATCH", 3)
    for n in range(7):
        await spool.keep(request(n))
    kafka = InFlight(delay=0.05)
    kafka.unreachable = {request(4)[0].value or b""}

    assert await spool.drain(kafka) == 6

    assert kafka.most_in_flight == 3
    assert [r.value for r in kafka.published[:6]] == [
        r.value for n in range(3) for r in request(n)
    ], "the oldest batch first, in order"
    assert sorted(r.value or b"" for r in kafka.published[6:]) == sorted(
        r.value or b"" for n in (3, 5, 6) for r in request(n)
    )
    assert await spool.collection.count_documents({"queue": "sms"}) == 1, "4 waits behind"


class InFlight(Kafka):
    """Counts the publishes in flight at once."""

    in_flight = most_in_flight = 0

    async def publish_records(self, records: Sequence[Record]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await super().publish_records(records)
        finally:
            self.in_flight -= 1


async def test_requests_that_fail_slowly_one_batch_after_another_wait_behind_from_the_end(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, one request a batch (as a drain of many such requests is): the first fails at
    0.5 s and the second at 1 s, when the pass gives up. Each waiting from its own failure,
    the first was free again at the next pass and taken first, and the two took turns ahead of
    every other request: every one that failed in the pass waits from its end."""
    monkeypatch.setattr("hilo.spool.BEHIND", timedelta(seconds=0.6))
    monkeypatch.setattr("hilo.spool.DRAIN_BATCH", 1)
    for n in range(3):
        await spool.keep(request(n))
    kafka = Kafka()
    kafka.unreachable = {request(n)[0].value or b"" for n in range(2)}
    kafka.deadline = 0.5

    with pytest.raises(PublishFailed):
        await spool.drain(kafka)  # the first fails at 0.5 s, the second at 1 s: Kafka away?
    await asyncio.sleep(0.2)  # the next pass: past the first one's wait from when it failed

    assert await spool.drain(kafka) == 1
    assert kafka.published == request(2)


async def test_a_drain_stopped_mid_batch_deletes_what_went_and_frees_the_rest(
    spool: Spool,
) -> None:
    """The service stops while a batch is in flight: what Kafka took is not left to be
    published again, and what it did not is free for the next drain at once, not after the
    30 s lease."""
    for n in range(5):
        await spool.keep(request(n))
    kafka = Kafka()
    kafka.unreachable = {request(n)[0].value or b"" for n in (3, 4)}
    kafka.deadline = 60.0  # they hang until the stop
    draining = asyncio.create_task(spool.drain(kafka))

    async def published() -> int:
        return len(kafka.published)

    await eventually(published, until=lambda n: n == 6)
    await cancelled([draining])

    assert await spool.collection.count_documents({"queue": "sms"}) == 2
    kafka.unreachable = set()
    assert await spool.drain(kafka) == 2, "free at once"
    assert kafka.published[6:] == [*request(3), *request(4)]


async def test_a_batch_holds_at_most_its_bytes_of_records_and_one_request_however_large(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hundred kept emails of a MiB each would be 200 MiB in a channel that runs in 512:
    a batch stops at `DRAIN_BYTES`, and takes a request larger than that alone."""
    monkeypatch.setattr("hilo.spool.DRAIN_BYTES", 100)
    sizes = [40, 40, 40, 150, 10]
    for n, size in enumerate(sizes):
        await spool.keep([Record(Topic.INTERACTIONS, b"k", b"x" * (size - 1), {"n": str(n)})])
    kafka = InFlight()
    batches: list[int] = []
    claim = spool._claim_batch

    async def claiming() -> list[MongoDocument]:
        batch = await claim()
        batches.append(len(batch))
        return batch

    monkeypatch.setattr(spool, "_claim_batch", claiming)

    assert await spool.drain(kafka) == 5
    assert batches == [2, 1, 1, 1, 0], "40 + 40, then 40 (with 150: over), 150 alone, 10"


async def test_two_instances_draining_at_once_publish_each_request_once(spool: Spool) -> None:
    for n in range(6):
        await spool.keep(request(n))
    other = Spool("sms", spool.collection)
    kafka = Kafka(delay=0.05)

    counts = await asyncio.gather(spool.drain(kafka), other.drain(kafka))

    assert sum(counts) == 6
    assert sorted(r.value or b"" for r in kafka.published) == sorted(
        r.value or b"" for n in range(6) for r in request(n)
    )


async def test_a_request_kafka_refuses_for_good_is_set_aside_and_the_rest_go_out(
    spool: Spool,
) -> None:
    for n in range(3):
        await spool.keep(request(n))
    await spool.collection.insert_one(  # kept by a release before `queue`, then broken
        {"channel": "sms", "records": [{"topic": "no-such-topic"}], "lease": datetime.now(UTC)}
    )
    await spool.prepare()
    kafka = Kafka()
    kafka.too_large = {request(0)[1].value or b""}

    assert await spool.drain(kafka) == 2

    assert kafka.published == [*request(1), *request(2)]
    aside = await spool.collection.find({}, {"refused.reason": 1, "_id": 0}).to_list()
    assert [doc["refused"]["reason"].split(":")[0] for doc in aside] == [
        "MessageSizeTooLargeError",
        "ValueError",
    ]


async def test_the_drain_outlives_a_bug_and_its_gauge_counts_during_an_outage(
    spool: Spool,
) -> None:
    other_channel = Spool("voice", spool.collection)
    await other_channel.keep(request(9))
    for n in range(2):
        await spool.keep(request(n))
    kafka = Kafka(down=True)
    kafka.bug = RuntimeError("unexpected")
    draining = asyncio.create_task(spool.drain_forever(kafka, every=0.05))
    try:

        async def waiting() -> float | None:
            return REGISTRY.get_sample_value(
                "hilo_channel_spooled_requests", {"channel": "sms", "state": "waiting"}
            )

        assert await eventually(waiting, until=lambda n: n == 2) == 2, "counted while down"
        kafka.down = False
        await eventually(waiting, until=lambda n: n == 0)
    finally:
        await cancelled([draining])

    assert sorted(r.value or b"" for r in kafka.published) == [
        r.value for r in (*request(0), *request(1))
    ], "after the bug, and only its own"
    assert await spool.collection.count_documents({"channel": "voice"}) == 1


async def test_a_request_that_trips_a_bug_every_time_does_not_hold_the_others_up(
    spool: Spool,
) -> None:
    """Found by a review: a document failing with anything but `PublishFailed` was first in
    line again on every pass, which it ended: nothing behind it was ever published."""
    for n in range(4):
        await spool.keep(request(n))
    kafka = Kafka()
    kafka.buggy = {record.value or b"" for record in request(0)}
    draining = asyncio.create_task(spool.drain_forever(kafka, every=0.05))
    try:

        async def published() -> int:
            return len(kafka.published)

        await eventually(published, until=lambda n: n == 6)
    finally:
        await cancelled([draining])

    assert kafka.published == [*request(1), *request(2), *request(3)]
    assert await spool.collection.count_documents({"queue": "sms"}) == 1, "still kept"


async def test_kafka_and_mongodb_both_refusing_is_a_503(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept nowhere: the provider must be told, even one that will not retry."""

    async def refused(*_args: object) -> None:
        raise PublishFailed("no acknowledgement")

    async def unreachable(*_args: object) -> None:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(KafkaPublisher, "publish_records", refused)
    monkeypatch.setattr(Spool, "keep", unreachable)

    channel_settings = ChannelSettings.model_validate(settings.model_dump())
    app = create_channel_app(
        "test", channel_settings, publishing_one_sample, description="t", spool=True
    )
    async with channel_client(app) as channel:
        response = await channel.post("/event")

    assert response.status_code == 503
    assert response.headers["Retry-After"]


async def cancelled_while_kafka_hangs(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> BaseException | httpx.Response:
    """A spooling channel's request cancelled while its publish hangs (a stopping service):
    what the request ended with."""
    publishing = asyncio.Event()

    async def hanging(*_args: object) -> None:
        publishing.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(KafkaPublisher, "publish_records", hanging)
    channel_settings = ChannelSettings.model_validate(settings.model_dump())
    app = create_channel_app(
        "test", channel_settings, publishing_one_sample, description="t", spool=True
    )
    async with channel_client(app) as channel:
        request = asyncio.create_task(channel.post("/event"))
        await asyncio.wait_for(publishing.wait(), timeout=10)
        request.cancel()
        [ended] = await asyncio.gather(request, return_exceptions=True)
    return ended


async def test_a_request_cancelled_while_kafka_hangs_is_kept_for_later(
    settings: HiloSettings,
    topics: list[str],
    mongo_client: AsyncMongoClient[MongoDocument],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service stops while Kafka hangs: uvicorn cancels the open requests after its
    graceful wait (5 s), before the publish timeout (10 s) would have spooled them, and Twilio
    never sends a webhook twice. The cancelled request's records are kept all the same."""
    await cancelled_while_kafka_hangs(settings, monkeypatch)

    kept = mongo_client[settings.mongodb_database]["spooled_records"]
    assert await kept.count_documents({}) == 1


async def test_a_cancelled_request_whose_spool_fails_is_still_cancelled(
    settings: HiloSettings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's failure must not stand in for the cancellation: a stopping service waits
    for its requests to end, not for an error answer."""

    async def unreachable(*_args: object) -> None:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(Spool, "keep", unreachable)

    assert isinstance(
        await cancelled_while_kafka_hangs(settings, monkeypatch), asyncio.CancelledError
    )


async def test_documents_kept_before_the_queue_are_drained_and_every_query_uses_the_index(
    spool: Spool,
) -> None:
    """A drain after a long outage must not scan every kept webhook for each one it publishes:
    asked of the real server with `explain`."""
    older = [
        {
            "channel": "sms",
            "records": [record_document(r) for r in request(n)],
            "lease": datetime(2000, 1, 1, tzinfo=UTC),
        }
        for n in range(3)
    ]
    older.append({**older[0], "refused": {"reason": "MessageSizeTooLargeError: x"}})
    await spool.collection.insert_many([{**doc} for doc in older])
    await spool.prepare()
    ids = [doc["_id"] async for doc in spool.collection.find({}, {"_id": 1})]
    queries = [
        spool.collection.find({"queue": "sms", "lease": {"$lte": datetime.now(UTC)}}).sort(
            [("lease", 1), ("_id", 1)]
        ),
        # The claim's lease (`_id` in a list and `lease`) is left out: SecantusDB's explain
        # says COLLSCAN, but it finds them by `_id` (10 ms at 12,000 kept, 8.8 at 2,000;
        # with `queue` too it scanned: 1.4 s), and MongoDB answers it from `_id`.
        spool.collection.find({"_id": {"$in": ids}}),  # read back, delete what went
        spool.collection.find({"_id": ids[0]}),  # lease again, set aside
        spool.collection.find({"queue": "sms"}),
        spool.collection.find({"queue": "sms:refused"}),
    ]
    plans = [winning_stages(await query.explain()) for query in queries]
    kafka = Kafka()

    assert await spool.drain(kafka) == 3
    assert kafka.published == [r for n in range(3) for r in request(n)]
    scans = [n for n, plan in enumerate(plans) if "COLLSCAN" in plan or "IXSCAN" not in plan]
    assert scans == [], plans
    assert await spool.collection.count_documents({"queue": "sms:refused"}) == 1


async def test_a_document_an_earlier_release_keeps_during_a_rolling_upgrade_is_drained(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance of the earlier release, still running, keeps a document without `queue`
    after this one started: it is adopted within `ADOPT_EVERY`, and published."""
    monkeypatch.setattr(spool_module, "ADOPT_EVERY", 0.05)
    kafka = Kafka()
    draining = asyncio.create_task(spool.drain_forever(kafka, every=0.05))
    try:
        await spool.keep(request(6))  # once it is out, this instance has started draining
        await eventually(lambda: _published(kafka), until=lambda n: n == 2, timeout=10)
        await spool.collection.insert_one(
            {"channel": "sms", "records": [record_document(r) for r in request(7)], "lease": FREE}
        )
        await eventually(lambda: _published(kafka), until=lambda n: n == 4, timeout=10)
    finally:
        await cancelled([draining])

    assert kafka.published == [*request(6), *request(7)]


async def _published(kafka: Kafka) -> int:
    return len(kafka.published)
