"""Records on `interactions`, `journey` and `outbound` read by the CloudEvents SDK for Python,
as a tool outside Hilo would: every one is a whole CloudEvent, with the attributes of its value.

The SDK goes by the headers as soon as it sees one `ce_` header (binary mode), so a record
carrying some of them but not the required four (`specversion`, `id`, `source`, `type`) would
not be read at all.
"""

from __future__ import annotations

from datetime import datetime

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat
from pymongo import AsyncMongoClient

from customer_profile.testing import interaction, running_profile_service
from hilo.kafka import KafkaPublisher, create_broker
from hilo.mongo import MongoDocument
from hilo.outbound import command_record
from hilo.sealing import create_sealer
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.testkit.samples import sample_command
from hilo.topics import Topic, topic_name


async def _events(settings: HiloSettings, topic: Topic) -> list[BaseCloudEvent]:
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(topic, settings), expected=1
    )
    return [
        from_kafka(KafkaMessage(dict(r.headers), r.key, r.value or b""), JSONFormat())
        for r in records
    ]


def _time(event: BaseCloudEvent) -> datetime:
    time = event.get_time()
    assert isinstance(time, datetime), f"no time on {event.get_type()}"
    return time


async def test_interactions_journey_entries_and_commands_read_as_whole_cloudevents(
    settings: HiloSettings, topics: list[str], mongo_client: AsyncMongoClient[MongoDocument]
) -> None:
    visit = interaction(1, email="ana@example.com")
    command = sample_command("sms")
    async with running_profile_service(settings) as svc:
        await svc.publish([visit])
        await svc.wait_for_entries(1)
    broker = create_broker(settings)
    await broker.start()
    try:
        record = await command_record(command, create_sealer(settings, mongo_client))
        await KafkaPublisher(broker, settings).publish_records([record])
    finally:
        await broker.stop()

    [published] = await _events(settings, Topic.INTERACTIONS)
    [entry] = await _events(settings, Topic.JOURNEY)
    [sent] = await _events(settings, Topic.OUTBOUND)

    assert (published.get_specversion(), published.get_id()) == ("1.0", visit.id)
    assert (published.get_type(), published.get_source()) == (visit.type, visit.source)
    assert _time(published) == visit.occurred_at
    assert (entry.get_specversion(), entry.get_id()) == ("1.0", visit.id)
    assert entry.get_type() == "dev.hilo.journey.page_view"
    assert entry.get_source() == "/hilo/customer-profile"
    assert _time(entry) == visit.occurred_at
    assert (sent.get_specversion(), sent.get_id()) == ("1.0", command.id)
    assert (sent.get_type(), sent.get_source()) == (command.type, "/hilo/outbound")
    assert _time(sent) == command.requested_at
