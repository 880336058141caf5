"""When a channel reads back its provider's log (`hilo.catch_up`): the window rule alone, then
the read-backs against the real database, with a provider log and a publisher of the test's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from hilo.catch_up import (
    MARGIN,
    WATERMARKS_COLLECTION,
    CatchUp,
    CatchUpFailed,
    ReadBack,
    window_to_read,
)
from hilo.contract import Interaction
from hilo.mongo import MongoDocument, as_stored, create_mongo_client
from hilo.settings import HiloSettings
from hilo.testkit.samples import sample_interaction

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EVERY = timedelta(seconds=15)


def window(
    watermark: datetime | None, missed: datetime | None = None, *, starting: bool = False
) -> tuple[datetime, str] | None:
    found = window_to_read(
        watermark=watermark,
        missed_since=missed,
        starting=starting,
        now=NOW,
        stale_after=2 * EVERY,
        max_age=timedelta(hours=72),
        settle=timedelta(seconds=30),
    )
    return None if found is None else (found.since, found.reason)


def test_a_new_deployment_reads_nothing_back() -> None:
    assert window(None, starting=True) is None


def test_a_running_instance_reads_back_only_after_a_refusal_or_a_watermark_left_behind() -> None:
    assert window(NOW - EVERY) is None
    assert window(NOW - EVERY, NOW - timedelta(minutes=3)) == (
        NOW - timedelta(minutes=3) - MARGIN,
        "refused",
    )
    assert window(NOW - timedelta(minutes=5)) == (
        NOW - timedelta(minutes=5) - MARGIN,
        "watermark_stale",
    )


def test_a_refusal_is_read_back_once_the_providers_lists_had_time_to_show_it() -> None:
    assert window(NOW - EVERY, NOW - timedelta(seconds=10)) is None
    assert window(NOW - EVERY, NOW - timedelta(seconds=30)) == (
        NOW - timedelta(seconds=30) - MARGIN,
        "refused",
    )


def test_an_instance_starting_reads_back_from_the_watermark_however_recent() -> None:
    assert window(NOW - timedelta(seconds=2), starting=True) == (
        NOW - timedelta(seconds=2) - MARGIN,
        "started",
    )


def test_the_earliest_reason_wins_and_nothing_older_than_the_limit_is_read() -> None:
    assert window(NOW - timedelta(minutes=5), NOW - timedelta(minutes=9)) == (
        NOW - timedelta(minutes=9) - MARGIN,
        "refused",
    )
    assert window(NOW - timedelta(days=30), starting=True) == (
        NOW - timedelta(hours=72),
        "started",
    )


class ProviderLogOfTheTest:
    """Serves `pages` to every read-back, and notes from when each one read."""

    def __init__(self, pages: list[list[Interaction]]) -> None:
        self.pages = pages
        self.reads: list[datetime] = []
        self.while_reading: CatchUp | None = None
        """Refused a webhook in the middle of a read-back."""
        self.meanwhile: Callable[[], Awaitable[None]] | None = None
        """What another instance does in the middle of a read-back."""

    async def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        self.reads.append(since)
        for page in self.pages:
            if self.while_reading is not None:
                self.while_reading.missed(datetime.now(UTC))
                self.while_reading = None
            if self.meanwhile is not None:
                await self.meanwhile()
                self.meanwhile = None
            yield page

    async def close(self) -> None:
        return None


class Published:
    def __init__(self) -> None:
        self.events: list[Interaction] = []
        self.failing = False

    async def __call__(self, interactions: Sequence[Interaction]) -> None:
        if self.failing:
            raise CatchUpFailed("Kafka is away")
        self.events.extend(interactions)


@pytest.fixture
async def watermarks(settings: HiloSettings) -> AsyncIterator[AsyncCollection[MongoDocument]]:
    mongo = create_mongo_client(settings)
    yield mongo[settings.mongodb_database][WATERMARKS_COLLECTION]
    await mongo.close()


def instance(
    channel: str, watermarks: AsyncCollection[MongoDocument], published: Published
) -> tuple[CatchUp, ProviderLogOfTheTest]:
    provider_log = ProviderLogOfTheTest([[sample_interaction()], [sample_interaction()]])
    read_back = ReadBack(provider_log, EVERY.total_seconds(), timedelta(hours=72), timedelta(0))
    reader = CatchUp(channel, watermarks, read_back, published)
    return reader, provider_log


async def test_what_a_stopped_instance_refused_is_read_back_by_another_one(
    watermarks: AsyncCollection[MongoDocument],
) -> None:
    """An instance stops (a deploy) before reading back what it refused: its refusals are
    noted in the watermark document, and an instance still running reads them back, though the
    watermark it keeps moving never fell behind."""
    channel = f"test-{uuid.uuid4().hex[:8]}"
    published = Published()
    stopping, _ = instance(channel, watermarks, published)
    running, running_log = instance(channel, watermarks, published)
    await stopping.once()
    await running.once()

    refused_at = datetime.now(UTC)
    stopping.missed(refused_at)
    await stopping.close()

    assert await running.once() == 2
    assert running_log.reads[-1] == as_stored(refused_at) - MARGIN
    assert await running.once() == 0, "read back once"
    await watermarks.delete_many({"_id": channel})


async def test_a_refusal_another_instance_noted_before_a_window_is_not_forgotten_by_it(
    watermarks: AsyncCollection[MongoDocument],
) -> None:
    """Instance A reads back its own refusal of a minute ago. Meanwhile B, which lost MongoDB for
    longer, notes a refusal from before A's window and stops: A must leave B's note for
    someone to read, not clear it with its own."""
    channel = f"test-{uuid.uuid4().hex[:8]}"
    published = Published()
    a, a_log = instance(channel, watermarks, published)
    b, _ = instance(channel, watermarks, published)
    await a.once()
    await b.once()
    b_refused_at = datetime.now(UTC) - timedelta(minutes=5)

    async def b_notes_and_stops() -> None:
        b.missed(b_refused_at)
        await b.close()

    a.missed(datetime.now(UTC) - timedelta(minutes=1))
    a_log.meanwhile = b_notes_and_stops
    await a.once()

    later, later_log = instance(channel, watermarks, published)
    await later.once()
    assert later_log.reads == [as_stored(b_refused_at) - MARGIN]
    await watermarks.delete_many({"_id": channel})


@pytest.fixture
async def catch_up(
    watermarks: AsyncCollection[MongoDocument],
) -> AsyncIterator[tuple[CatchUp, ProviderLogOfTheTest, Published]]:
    published = Published()
    channel = f"test-{uuid.uuid4().hex[:8]}"
    reader, provider_log = instance(channel, watermarks, published)
    yield reader, provider_log, published
    await watermarks.delete_many({"_id": channel})


async def test_a_refusal_is_read_back_once_and_one_during_a_read_back_is_read_next_time(
    catch_up: tuple[CatchUp, ProviderLogOfTheTest, Published],
) -> None:
    reader, provider_log, published = catch_up
    assert await reader.once() == 0, "no watermark yet: nothing to read back"

    refused_at = datetime.now(UTC)
    reader.missed(refused_at)
    provider_log.while_reading = reader
    assert await reader.once() == 2
    assert provider_log.reads == [as_stored(refused_at) - MARGIN]
    assert len(published.events) == 2

    assert await reader.once() == 2, "the refusal during the read-back is read back next"
    assert await reader.once() == 0, "then nothing more"
    assert len(provider_log.reads) == 2


async def test_a_read_back_that_could_not_publish_is_read_again(
    catch_up: tuple[CatchUp, ProviderLogOfTheTest, Published],
) -> None:
    reader, provider_log, published = catch_up
    await reader.once()
    refused_at = datetime.now(UTC)
    reader.missed(refused_at)

    published.failing = True
    with pytest.raises(CatchUpFailed):
        await reader.once()
    published.failing = False
    assert await reader.once() == 2
    assert provider_log.reads == [as_stored(refused_at) - MARGIN] * 2
