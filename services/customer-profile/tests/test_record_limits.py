"""The records the profile derives from the largest interaction a channel accepts still leave
room for a dead letter's headers: a consumer that cannot read one (journey-analytics) must be
able to put it on its dead-letter topic, else its partition stops there for ever."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from customer_profile.testing import T0, running_profile_service
from hilo.contract import Identifiers, Interaction, new_interaction
from hilo.kafka import DEAD_LETTER_HEADROOM, KafkaPublisher, record_size
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.testkit.samples import longest_that_fits, sample_payloads
from hilo.topics import Topic, topic_name

LIMIT = 64 * 1024


async def largest_accepted(publisher: KafkaPublisher) -> tuple[Interaction, int]:
    """The message with the longest text a channel would still publish, and its record's size."""
    largest = message(await longest_that_fits(publisher, message, LIMIT))
    [record] = await publisher.interaction_records([largest])
    return largest, record_size(record)


def message(length: int) -> Interaction:
    payload = sample_payloads()["message"].model_copy(update={"text": "x" * length})
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id="the-longest-message",
        identifiers=Identifiers(email="ana@example.com"),
        payload=payload,
        occurred_at=T0,
    )


def size(record: ConsumerRecord[bytes, bytes]) -> int:
    headers = sum(len(name) + len(value) for name, value in record.headers)
    return len(record.key or b"") + len(record.value or b"") + headers


async def test_the_journey_record_of_the_largest_interaction_leaves_a_dead_letters_room(
    settings: HiloSettings, topics: list[str]
) -> None:
    local = settings.model_copy(update={"kafka_max_record_bytes": LIMIT})
    async with running_profile_service(local) as svc:
        largest, interaction_size = await largest_accepted(svc.publisher)
        await svc.publish([largest])
        [entry] = await read_topic(
            local.kafka_bootstrap_servers, topic_name(Topic.JOURNEY, local), expected=1
        )

    assert interaction_size > LIMIT - DEAD_LETTER_HEADROOM - 1024, "not the largest"
    assert size(entry) + DEAD_LETTER_HEADROOM <= LIMIT, (
        f"a journey record of {size(entry)} bytes leaves no room for its dead letter"
    )
