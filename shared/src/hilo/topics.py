"""Every Kafka topic Hilo uses, with its key, cleanup policy and retention.

The registry is the single place where topics are declared; `ensure_topics` creates the missing
ones idempotently and is what tests, `make run` and the docker-compose init container call.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from enum import StrEnum

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from hilo.kafka_security import client_options
from hilo.logs import configure_logging
from hilo.settings import HiloSettings

log = structlog.get_logger(__name__)

DAY_MS = 24 * 60 * 60 * 1000


class Topic(StrEnum):
    """Logical topic names; the physical name adds the configured prefix."""

    INTERACTIONS = "interactions"
    INTERACTIONS_DLQ = "interactions.dlq"
    JOURNEY = "journey"
    PROFILES = "profiles"
    IDENTITY_MERGES = "identity.merges"
    MERGE_REQUESTS = "identity.merge_requests"
    ERASURES = "erasures"
    OUTBOUND = "outbound"
    OUTBOUND_DLQ = "outbound.dlq"
    OFFERS = "offers"
    JOURNEY_METRICS = "journey.metrics"
    ANALYTICS_DLQ = "journey-analytics.dlq"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    key: str
    description: str
    cleanup_policy: str = "delete"
    retention_ms: int = 30 * DAY_MS
    keyed: bool = True
    partitions: int | None = None
    """Fixed partition count, whatever `HILO_TOPIC_PARTITIONS` says (None: that setting)."""

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.cleanup_policy == "delete":
            configs["retention.ms"] = str(self.retention_ms)
        else:
            configs["min.compaction.lag.ms"] = "0"
            # A superseded record (a snapshot before an erasure's tombstone) is compacted away
            # within a day, even in the active segment, instead of when the segment rolls.
            configs["max.compaction.lag.ms"] = str(DAY_MS)
            configs["delete.retention.ms"] = str(DAY_MS)
        return configs


REGISTRY: tuple[TopicSpec, ...] = (
    TopicSpec(
        Topic.INTERACTIONS,
        key="subject (HMAC pseudonym) of the strongest identifier",
        description="Normalised interactions from every channel service, personal fields "
        "sealed with keys an erasure deletes (`hilo.sealing`).",
        retention_ms=365 * DAY_MS,
    ),
    TopicSpec(
        Topic.INTERACTIONS_DLQ,
        key="the original key",
        description="Messages that could not be processed, with the reason in headers.",
        retention_ms=90 * DAY_MS,
    ),
    TopicSpec(
        Topic.JOURNEY,
        key="customer id",
        description="Each accepted interaction with the customer id it was recorded under, "
        "personal fields sealed. Order per key is publish order, not event time (several "
        "instances, late events; after a merge a person's entries sit under several keys): "
        "sort by `occurred_at` and `id`, and of records with the same `id` keep the one "
        "published last (the record's timestamp): a split publishes the entries it moves again "
        "under the customer they now belong to, same `id`, another key and partition (their "
        "CloudEvents id is `<id>:split:<split id>`).",
        retention_ms=365 * DAY_MS,
    ),
    TopicSpec(
        Topic.PROFILES,
        key="customer id",
        description="Latest profile snapshot per customer; a tombstone when a customer is "
        "erased; for a profile merged away, an alias naming the profile it went into "
        "(`merged_into`), which may itself have been merged away since: follow `merged_into` "
        "until a record without it.",
        cleanup_policy="compact",
    ),
    TopicSpec(
        Topic.IDENTITY_MERGES,
        key="surviving (or kept) customer id",
        description="One record per profile merge (`type: merge`: the survivor and the "
        "profiles it absorbed) and per split (`type: split`: the profile kept and the one "
        "restored).",
        retention_ms=365 * DAY_MS,
    ),
    TopicSpec(
        Topic.MERGE_REQUESTS,
        key="merge request id",
        description="Merges waiting for a person (an unverified source asked, or the profiles "
        "were split): one record when a request opens, one when it is confirmed or rejected, or "
        "withdrawn (an erasure of a customer it involved deleted it, decided or not). "
        "Customer ids only, no personal data.",
        retention_ms=365 * DAY_MS,
    ),
    TopicSpec(
        Topic.ERASURES,
        key="erased customer id",
        description="One record per erasure, kept for good: the profile ids, the subjects (HMAC "
        "pseudonyms) of the person's identifiers, and when. A rebuild and every start read it, "
        "so erased people stay erased.",
        cleanup_policy="compact",
    ),
    TopicSpec(
        Topic.OUTBOUND,
        key="customer id",
        description="Commands to send a message to a customer on one channel (`OutboundCommand`), "
        "from the agent desk or an automation; the channel service named in each sends it once "
        "and records it as an outbound interaction. Recipient and text sealed.",
        retention_ms=7 * DAY_MS,
    ),
    TopicSpec(
        Topic.OUTBOUND_DLQ,
        key="the original key",
        description="Outbound commands no channel could read (invalid, or their person erased), "
        "with the reason in headers.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        Topic.OFFERS,
        key="`price:<sku>:<currency>` or `promotion:<id>`",
        description="List prices and promotions (`hilo.offers.model.OfferRecord`), published by "
        "the offers service: the latest record of each key, as of the version that set it (a "
        "price key carries its whole schedule). One partition, so the records of a version "
        "arrive together and in order; every pricing process reads it all from the beginning.",
        cleanup_policy="compact",
        partitions=1,
    ),
    TopicSpec(
        Topic.JOURNEY_METRICS,
        key="the window: `day:<YYYY-MM-DD>` (UTC)",
        description="Omnichannel measures of each day (journey-analytics' `Measures`, "
        "schema-versioned): continuity, conversations, CSAT and NPS by channel and channel path, "
        "cross-channel conversion, attribution, channel mix. The latest record of a day is its "
        "measures so far; no customer ids, no personal data.",
        cleanup_policy="compact",
    ),
    TopicSpec(
        Topic.ANALYTICS_DLQ,
        key="the original key",
        description="Records of `journey`, `identity.merges` and `erasures` that journey-analytics "
        "could not read, unchanged, with the reason and the original topic in headers (an "
        "erasure here was not applied to the measures: its log line says so at ERROR).",
        retention_ms=90 * DAY_MS,
    ),
)


def topic_name(topic: Topic, settings: HiloSettings) -> str:
    """Physical topic name for this deployment."""
    return f"{settings.topic_prefix}{topic.value}"


async def ensure_topics(settings: HiloSettings) -> list[str]:
    """Create every registered topic that does not exist yet; return the names created.

    One request for all of them, whose per-topic answers tell created from existing (a topic
    another instance creates meanwhile is existing too): listing the cluster's topics first
    cost more than creating, on a cluster with thousands of topics.
    """
    admin = AIOKafkaAdminClient(**client_options(settings), client_id=settings.client_id)
    await admin.start()
    try:
        wanted = [
            NewTopic(
                topic_name(spec.topic, settings),
                num_partitions=spec.partitions or settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in REGISTRY
        ]
        response = await admin.create_topics(wanted)
        created, unsure = _created(response.topic_errors)
        try:
            await _until_visible(admin, [topic.name for topic in wanted])
        except TimeoutError as exc:
            if unsure:  # the reason they are not there
                raise unsure[0] from exc
            raise
        log.info("topics_ensured", created=created, existing=len(wanted) - len(created))
        return created
    finally:
        await admin.close()


UNSURE = frozenset(
    error.errno
    for error in (
        RequestTimedOutError,
        TopicAuthorizationFailedError,
        ClusterAuthorizationFailedError,
    )
)
"""Answers that say nothing of whether the topic exists: the request timed out (it may still
be created), or these credentials may not create topics (they may exist already)."""


def _created(answers: list[tuple[str, int, str | None]]) -> tuple[list[str], list[KafkaError]]:
    """The topics a CreateTopics answer created, and the errors to raise should the topics
    not show up; raises the first other error than "exists"."""
    created: list[str] = []
    unsure: list[KafkaError] = []
    for name, code, *message in answers:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            error = for_code(code)(f"creating {name}: {(message[0] if message else None) or ''}")
            if code not in UNSURE:
                raise error
            unsure.append(error)
    return created, unsure


VISIBLE_WITHIN_SECONDS = 30.0


async def _until_visible(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Creation returns before every broker's metadata shows the topic: wait until it does."""
    timeout = VISIBLE_WITHIN_SECONDS
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics not visible after {timeout}s: {names}")
        await asyncio.sleep(0.05)


def main() -> None:
    """`hilo-topics`: create the topics (docker-compose init, `make run`)."""
    argparse.ArgumentParser(description="Create Hilo's Kafka topics if missing.").parse_args()
    settings = HiloSettings()
    configure_logging(settings)
    asyncio.run(ensure_topics(settings))
