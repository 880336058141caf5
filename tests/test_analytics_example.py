"""The analysts' worked example (docs/analytics/dropped_calls.py) against a journey the real
profile service published: hand-built calls and messages whose answer is known beforehand."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from customer_profile.records import ErasureRecord
from customer_profile.testing import RunningProfileService, running_profile_service
from hilo.contract import (
    CallHappened,
    CallStatus,
    DeliveryStatus,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
    PageViewed,
    new_interaction,
)
from hilo.kafka import Record
from hilo.settings import HiloSettings
from hilo.testkit.samples import publish_entry_copies
from hilo.topics import Topic
from hilo_devkit.local_infra import Endpoints

ROOT = Path(__file__).resolve().parents[1]
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dropped_calls", ROOT / "docs" / "analytics" / "dropped_calls.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass finds its module there
    spec.loader.exec_module(module)
    return module


def event(n: int, minutes: int, channel: str, phone: str, payload: object) -> Interaction:
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=f"analytics-{n}",
        identifiers=Identifiers(phone=phone),
        payload=payload,
        occurred_at=START + timedelta(minutes=minutes),
    )


def call(status: CallStatus, n: int) -> CallHappened:
    return CallHappened(direction=Direction.INBOUND, status=status, provider_call_id=f"CA{n}")


def message(direction: Direction, n: int) -> MessageExchanged:
    return MessageExchanged(direction=direction, text="about my order", provider_message_id=f"m{n}")


ANA, BO, CARLA = "+34600000001", "+34600000002", "+34600000003"
JOURNEYS = [
    # Ana's call drops; 30 minutes later she writes on WhatsApp: continued.
    event(1, 0, "voice", ANA, call(CallStatus.DROPPED, 1)),
    event(2, 30, "whatsapp", ANA, message(Direction.INBOUND, 2)),
    # Bo's call drops; the company texts him (not his doing, nor is the receipt that says it was
    # delivered), he browses 30 h later: not continued.
    event(3, 0, "voice", BO, call(CallStatus.DROPPED, 3)),
    event(4, 10, "sms", BO, message(Direction.OUTBOUND, 4)),
    event(
        9,
        11,
        "sms",
        BO,
        MessageStatusChanged(provider_message_id="m4", status=DeliveryStatus.DELIVERED),
    ),
    event(5, 30 * 60, "web", BO, PageViewed(url="https://shop.example.com/", path="/")),
    # Carla's call completes, then she writes: no drop to count.
    event(6, 0, "voice", CARLA, call(CallStatus.COMPLETED, 6)),
    event(7, 5, "whatsapp", CARLA, message(Direction.INBOUND, 7)),
]


@pytest.fixture
async def profile(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[RunningProfileService]:
    async with running_profile_service(settings) as running:
        yield running


async def test_the_share_of_dropped_calls_continued_elsewhere(
    profile: RunningProfileService, settings: HiloSettings, tmp_path: Path
) -> None:
    await profile.publish(JOURNEYS)
    await profile.wait_for_entries(len(JOURNEYS))
    dropped_calls = example()

    entries = await dropped_calls.read_journey(
        settings.kafka_bootstrap_servers, settings.topic_prefix
    )
    parquet = tmp_path / "journey.parquet"
    dropped_calls.to_parquet(entries, parquet)

    assert len(entries) == len(JOURNEYS)
    assert parquet.stat().st_size > 0
    assert dropped_calls.dropped_calls_continued(parquet, 24) == (2, 1)
    assert dropped_calls.dropped_calls_continued(parquet, 48) == (2, 2), "Bo's visit, 30 h on"


async def test_a_call_continued_by_the_same_person_known_another_way_counts_once_merged(
    profile: RunningProfileService, settings: HiloSettings, tmp_path: Path
) -> None:
    """Dee's call drops; five minutes later she browses, signed in by email: another profile.
    An order she placed an hour earlier names both: the profiles merge, and her entries stay on
    `journey` under the ids they were recorded with. Only the merge record joins them."""
    dee_phone, dee_email = "+34600000004", "dee@example.com"
    browsing = new_interaction(
        channel="web",
        instance="test",
        provider_event_id="analytics-dee-web",
        identifiers=Identifiers(email=dee_email),
        payload=PageViewed(url="https://shop.example.com/", path="/"),
        occurred_at=START + timedelta(minutes=5),
    )
    both = browsing.model_copy(
        update={
            "id": "analytics-dee-both",
            "identifiers": Identifiers(phone=dee_phone, email=dee_email),
            "occurred_at": START - timedelta(hours=1),
        }
    )
    await profile.publish([event(8, 0, "voice", dee_phone, call(CallStatus.DROPPED, 8)), browsing])
    await profile.wait_for_entries(2)
    await profile.publish([both])
    await profile.wait_for_entries(3)
    dropped_calls = example()

    entries = await dropped_calls.read_journey(
        settings.kafka_bootstrap_servers, settings.topic_prefix
    )
    parquet = tmp_path / "journey.parquet"
    dropped_calls.to_parquet(entries, parquet)

    assert len({entry.customer_id for entry in entries}) == 1
    assert dropped_calls.dropped_calls_continued(parquet, 24) == (1, 1)


async def test_an_erased_customer_is_left_out(
    profile: RunningProfileService, settings: HiloSettings, tmp_path: Path
) -> None:
    """Ana asked to be erased: her entries stay on `journey` until retention drops them, and
    the `erasures` record (its shape checked in customer-profile's tests) says to leave them
    out."""
    await profile.publish(JOURNEYS)
    await profile.wait_for_entries(len(JOURNEYS))
    ana = await profile.customer_of("phone", ANA)
    erasure = ErasureRecord(customer_id=ana, aliases=[ana], subjects=[], erased_at=START)
    await profile.publish_records(
        [Record(Topic.ERASURES, ana.encode(), erasure.model_dump_json().encode(), {})]
    )
    dropped_calls = example()

    entries = await dropped_calls.read_journey(
        settings.kafka_bootstrap_servers, settings.topic_prefix
    )
    parquet = tmp_path / "journey.parquet"
    dropped_calls.to_parquet(entries, parquet)

    assert ana not in {entry.customer_id for entry in entries}
    assert len(entries) == len(JOURNEYS) - 2
    assert dropped_calls.dropped_calls_continued(parquet, 24) == (1, 0), "Bo's drop alone"


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_a_split_undoes_its_merge_in_whatever_order_the_records_are_read(
    order: tuple[int, ...],
) -> None:
    """a into b (m1, keyed b), split off again (undoing m1, keyed b), then a into d (m3, keyed
    d): m3 and the split can be read before m1, on another partition or after a reset."""
    records = [
        {"type": "merge", "survivor": "b", "absorbed": ["a"], "event_id": "m1"},
        {"type": "split", "kept": "b", "restored": "a", "undoes_event_id": "m1"},
        {"type": "merge", "survivor": "d", "absorbed": ["a"], "event_id": "m3"},
    ]

    now = example().current_customers([records[n] for n in order])

    assert now == {"a": "d"}


async def test_of_two_copies_of_an_entry_the_one_published_later_is_read(
    settings: HiloSettings, topics: list[str]
) -> None:
    """A split's copy of an entry, keyed by the restored id, sits on another partition than the
    first copy and may be read before it: the records' timestamps say which is right."""
    entry = {
        "id": "e-moved",
        "customer_id": "c-kept",
        "occurred_at": START.isoformat(),
        "channel": "web",
        "type": "page_view",
        "payload": {},
    }
    await publish_entry_copies(settings, entry, restored="c-restored")

    entries = await example().read_journey(settings.kafka_bootstrap_servers, settings.topic_prefix)

    assert [(e.id, e.customer_id) for e in entries] == [("e-moved", "c-restored")]


async def test_a_broker_that_takes_only_sasl_over_tls_is_read_with_the_deployments_variables(
    infrastructure: Endpoints, profile: RunningProfileService, settings: HiloSettings
) -> None:
    """A managed Kafka: the example reads the topics through the local broker's SASL_SSL
    listener, configured as the services are, from HILO_KAFKA_* variables."""
    secured = infrastructure.kafka_secured
    if secured is None:
        pytest.skip("the broker is not the local one, whose secured listeners this test uses")
    await profile.publish(JOURNEYS)
    await profile.wait_for_entries(len(JOURNEYS))
    dropped_calls = example()
    user, password = secured.user
    security = dropped_calls.security_from(
        {
            "HILO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "HILO_KAFKA_SASL_USERNAME": user,
            "HILO_KAFKA_SASL_PASSWORD": password,
            "HILO_KAFKA_SSL_CAFILE": secured.cafile,
        }
    )

    entries = await dropped_calls.read_journey(secured.sasl_ssl, settings.topic_prefix, **security)

    assert len(entries) == len(JOURNEYS)
