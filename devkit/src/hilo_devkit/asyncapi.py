"""Generates the AsyncAPI 3.0 document of every Hilo topic from the code: the topic registry
(`hilo.topics`: key, cleanup policy, retention, partitions) and the record models (the
contract's, `customer_profile.records`, the offers'). Here because only the development tooling
sees every service's package; each service serves the result (`hilo.asyncapi`).

    python -m hilo_devkit.asyncapi docs/asyncapi.json shared/src/hilo/contract/asyncapi.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from customer_profile.records import journey_json_schema, record_json_schema
from hilo.contract.interaction import SCHEMA_VERSION
from hilo.contract.schema import (
    open_schema,
    render_schema,
    sealed_interaction_json_schema,
    sealed_outbound_json_schema,
)
from hilo.dead_letters import DEAD_LETTER_HEADERS, WITHOUT_VALUE
from hilo.kafka import CLOUDEVENTS_JSON
from hilo.offers.model import OfferRecord
from hilo.topics import REGISTRY, Topic, TopicSpec
from hilo_devkit.catalogue import SERVICES as CATALOGUE
from journey_analytics.measures import MEASURES_VERSION, measures_json_schema

SCHEMA_FORMAT = "application/schema+json;version=2020-12"
KAFKA_BINDINGS = "0.5.0"


@dataclass(frozen=True)
class Message:
    name: str
    summary: str
    schema: Callable[[], dict[str, Any]]
    headers: tuple[str, ...] = ()


def _header_schema(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": HEADERS[name]} for name in names},
    }


HEADERS = {
    "content-type": "The value's media type.",
    "ce_id": "CloudEvents id: the interaction's (or entry's, command's) event id; "
    "`<entry id>:split:<split id>` for a journey entry a split moved to another customer.",
    "ce_type": "CloudEvents type: `dev.hilo.interaction.<kind>` on `interactions`, "
    "`dev.hilo.journey.<kind>` on `journey`, `dev.hilo.outbound.message` on `outbound`.",
    "ce_source": "CloudEvents source: the channel instance that received it on `interactions`, "
    "`/hilo/customer-profile` on `journey`, `/hilo/outbound` on `outbound`.",
    "ce_specversion": "CloudEvents version: `1.0`.",
    "ce_time": "CloudEvents time (RFC 3339): when it happened (`occurred_at`; a command's "
    "`requested_at`).",
    "hilo_schema_version": "The contract version of the value (upcast older ones).",
    "hilo_channel": "The channel service that is to send this command.",
    "hilo_error_reason": "Why the record could not be processed (a short code).",
    "hilo_error_detail": "What was wrong, at most 1,000 characters (no personal data).",
    "hilo_original_topic": "Where the record was read.",
    "hilo_original_partition": "Its partition there.",
    "hilo_original_offset": "Its offset there.",
    "hilo_failed_at": "When it failed (ISO 8601).",
    "hilo_original_value_bytes": "Only on a letter the topic could not take whole: the size of "
    "the value left out (read it where the headers say, while that topic keeps it).",
}
CLOUDEVENT_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")
"""`hilo.kafka.cloudevent_headers`: the binding's binary mode, whole."""
INTERACTION_HEADERS = ("content-type", *CLOUDEVENT_HEADERS, "hilo_schema_version")


def _any_record() -> dict[str, Any]:
    return {"description": "The original record's value, byte for byte (JSON when it parsed)."}


def _offers() -> dict[str, Any]:
    return open_schema(OfferRecord.model_json_schema(mode="serialization"))


def _dead_letter(
    topic: str,
    again: str = "replay with `customer-profile dlq replay`, which leaves out and counts a "
    "letter without its value",
) -> Message:
    return Message(
        "DeadLetter",
        f"A record of `{topic}` that could not be processed: the original value, key and "
        f"headers untouched, plus why and where ({again}). A letter too large for this topic "
        "comes without its value, its size in `hilo_original_value_bytes`: read the record "
        "where its headers say, while that topic keeps it.",
        _any_record,
        (*DEAD_LETTER_HEADERS, WITHOUT_VALUE),
    )


MESSAGES: dict[Topic, list[Message]] = {
    Topic.INTERACTIONS: [
        Message(
            "SealedInteraction",
            "A normalised interaction; its personal fields sealed (`sealed`).",
            sealed_interaction_json_schema,
            INTERACTION_HEADERS,
        )
    ],
    Topic.INTERACTIONS_DLQ: [_dead_letter("interactions")],
    Topic.JOURNEY: [
        Message(
            "SealedJourneyEntry",
            "An accepted interaction as an entry of its customer's journey.",
            journey_json_schema,
            ("content-type", *CLOUDEVENT_HEADERS),
        )
    ],
    Topic.PROFILES: [
        Message(
            "Profile",
            "The latest profile snapshot, or an alias of a merged-away id; null: erased.",
            lambda: record_json_schema("profiles"),
            ("content-type",),
        )
    ],
    Topic.IDENTITY_MERGES: [
        Message(
            "IdentityMerge",
            "A merge (`type: merge`) or a split (`type: split`): history moves between ids.",
            lambda: record_json_schema("identity.merges"),
        )
    ],
    Topic.MERGE_REQUESTS: [
        Message(
            "MergeRequest",
            "A merge waiting for a person, then its confirmation or rejection.",
            lambda: record_json_schema("identity.merge_requests"),
        )
    ],
    Topic.ERASURES: [
        Message(
            "Erasure",
            "An erasure, kept for good.",
            lambda: record_json_schema("erasures"),
        )
    ],
    Topic.OUTBOUND: [
        Message(
            "SealedOutboundCommand",
            "A message to send on one channel; recipient and text sealed.",
            sealed_outbound_json_schema,
            ("content-type", *CLOUDEVENT_HEADERS, "hilo_channel"),
        )
    ],
    Topic.OUTBOUND_DLQ: [
        _dead_letter(
            "outbound",
            "never replayed: the desk shows each readable one as not sent, and the agent "
            "sends it again if it still matters",
        )
    ],
    Topic.ANALYTICS_DLQ: [
        _dead_letter(
            "journey`, `identity.merges` or `erasures",
            "read again by resetting journey-analytics' consumer group: its store makes a repeat "
            "harmless",
        )
    ],
    Topic.OFFERS: [Message("OfferRecord", "A list price schedule or a promotion.", _offers)],
    Topic.JOURNEY_METRICS: [
        Message(
            "Measures",
            "One day's omnichannel measures so far (the latest record of a day wins).",
            measures_json_schema,
        )
    ],
}
MEASURES_SCHEMA_FILE = f"journey.metrics.v{MEASURES_VERSION}.schema.json"

CHANNELS = tuple(
    spec.name.removeprefix("channel-") for spec in CATALOGUE if spec.name.startswith("channel-")
)
"""Every channel service of the catalogue: each sends on `interactions`."""
SENDING_CHANNELS = ("whatsapp", "sms", "email", "social")
SERVICES: dict[str, dict[str, tuple[Topic, ...]]] = {
    **{
        f"channel-{name}": {
            "send": (Topic.INTERACTIONS,)
            + ((Topic.OUTBOUND_DLQ,) if name in SENDING_CHANNELS else ()),
            "receive": (Topic.OUTBOUND,) if name in SENDING_CHANNELS else (),
        }
        for name in CHANNELS
    },
    "customer-profile": {
        "send": (
            Topic.JOURNEY,
            Topic.PROFILES,
            Topic.IDENTITY_MERGES,
            Topic.MERGE_REQUESTS,
            Topic.ERASURES,
            Topic.INTERACTIONS_DLQ,
            Topic.INTERACTIONS,
        ),
        "receive": (Topic.INTERACTIONS, Topic.ERASURES, Topic.OFFERS),
    },
    "agent-desk": {"send": (Topic.OUTBOUND,), "receive": (Topic.JOURNEY,)},
    "offers": {"send": (Topic.OFFERS,), "receive": (Topic.OFFERS,)},
    "journey-analytics": {
        "send": (Topic.JOURNEY_METRICS, Topic.ANALYTICS_DLQ),
        "receive": (Topic.JOURNEY, Topic.IDENTITY_MERGES, Topic.ERASURES),
    },
}
"""Who sends and who receives each topic (the profile service sends on `interactions` the
verified event a confirmed merge request becomes)."""


def _channel(spec: TopicSpec) -> dict[str, Any]:
    configuration: dict[str, Any] = {"cleanup.policy": [spec.cleanup_policy]}
    if spec.cleanup_policy == "delete":
        configuration["retention.ms"] = spec.retention_ms
    if tombstones_kept := spec.configs().get("delete.retention.ms"):
        configuration["delete.retention.ms"] = int(tombstones_kept)
    binding: dict[str, Any] = {
        "topic": spec.topic.value,
        "topicConfiguration": configuration,
        "bindingVersion": KAFKA_BINDINGS,
    }
    if spec.partitions is not None:
        binding["partitions"] = spec.partitions
    return {
        "address": spec.topic.value,
        "description": spec.description
        + " The physical name adds the deployment's `HILO_TOPIC_PREFIX`.",
        "messages": {
            message.name: {"$ref": f"#/components/messages/{_message_id(spec.topic, message)}"}
            for message in MESSAGES[spec.topic]
        },
        "bindings": {"kafka": binding},
    }


def _message_id(topic: Topic, message: Message) -> str:
    return f"{message.name}.{topic.value}" if message.name == "DeadLetter" else message.name


def _message(spec: TopicSpec, message: Message) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": message.name,
        "summary": message.summary,
        "contentType": CLOUDEVENTS_JSON if spec.topic is Topic.INTERACTIONS else "application/json",
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": message.schema()},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": spec.key},
                "bindingVersion": KAFKA_BINDINGS,
            }
        },
    }
    if message.headers:
        body["headers"] = _header_schema(message.headers)
    return body


def _operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for service, directions in SERVICES.items():
        for action, topics in directions.items():
            for topic in topics:
                operations[f"{service}.{action}.{topic.value}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{topic.value}"},
                    "summary": f"{service} {action}s on `{topic.value}`.",
                    "messages": [
                        {"$ref": f"#/channels/{topic.value}/messages/{message.name}"}
                        for message in MESSAGES[topic]
                    ],
                }
    return operations


def generate() -> dict[str, Any]:
    """The whole document, from the registry and the models."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Hilo topics",
            "version": f"interactions v{SCHEMA_VERSION}",
            "description": "Every Kafka topic of a Hilo deployment: what is on it, keyed how, "
            "kept how long, and who writes and reads it. Payload schemas are JSON Schema draft "
            "2020-12 (also under docs/schemas). Sealed fields open only with the key store "
            "(`hilo.sealing`); an erased person's never open again. Readers must ignore "
            "fields, enum values and payload kinds they do not know (the compatibility rule "
            "every published schema keeps).",
        },
        "defaultContentType": "application/json",
        "channels": {spec.topic.value: _channel(spec) for spec in REGISTRY},
        "operations": _operations(),
        "components": {
            "messages": {
                _message_id(spec.topic, message): _message(spec, message)
                for spec in REGISTRY
                for message in MESSAGES[spec.topic]
            }
        },
    }


def render() -> str:
    return render_schema(generate())


def render_measures_schema() -> str:
    return render_schema(measures_json_schema())


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the AsyncAPI document of Hilo's topics.")
    parser.add_argument("targets", type=Path, nargs="+", help="files to write")
    parser.add_argument("--schemas", type=Path, help="also write journey.metrics' JSON Schema here")
    args = parser.parse_args()
    text = render()
    for target in args.targets:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")  # noqa: T201
    if args.schemas:
        target = args.schemas / MEASURES_SCHEMA_FILE
        target.write_text(render_measures_schema(), encoding="utf-8")
        print(f"wrote {target}")  # noqa: T201


if __name__ == "__main__":
    main()
