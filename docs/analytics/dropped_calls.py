"""What share of dropped calls continued on another channel? A worked example for analysts.

    python docs/analytics/dropped_calls.py --bootstrap-servers localhost:29092 \
        [--topic-prefix ""] [--hours 24] [--parquet journey.parquet]

A managed Kafka is reached as the deployment's services reach it, from the same environment
variables: HILO_KAFKA_SECURITY_PROTOCOL (SASL_SSL, SSL, SASL_PLAINTEXT), HILO_KAFKA_SASL_MECHANISM,
HILO_KAFKA_SASL_USERNAME, HILO_KAFKA_SASL_PASSWORD and HILO_KAFKA_SSL_CAFILE.

1. Reads the `journey` topic from the beginning (aiokafka). Only the fields in the clear are
   used (customer id, entry id, time, channel, kind, a call's status, a message's direction),
   so no key store is needed; the sealed personal fields are left sealed.
2. Keeps the latest record of each entry id, by the records' timestamps: a split publishes the
   entries it gives back again under the id they now belong to, keyed by it, so on another
   partition than the first copy, which may be read after it: the copy published later is
   right.
3. Reads `identity.merges` and files every entry under the customer it belongs to now. A merge
   does not publish the absorbed customer's entries again: they stay under the id they were
   recorded with, and the merge record (`survivor`, `absorbed`) says whose they are now; a
   split (`restored`, `undoes_event_id`) undoes that merge for the id it gives back, in
   whatever order the two are read. Skip this and a call dropped by a
   customer known by their phone, then continued on the web by the same person known by their
   email, counts as not continued: the very case where people switch channels.
4. Reads `erasures` and leaves out every entry of an erased customer (the record names the
   profile and every id merged into it): their entries stay on `journey` (sealed, times and
   channels in the clear) until the topic's retention drops them, and an analysis must not.
5. Writes them to Parquet with DuckDB, then asks DuckDB: of the calls whose status is `dropped`,
   how many were followed, within `--hours`, by something the same customer did on another
   channel: not an outbound message or call, a provider's delivery receipt of one
   (`message_status`) or an agent's action (channel `agent`): those are the company's, not the
   customer's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.helpers import create_ssl_context

COLUMNS = "id VARCHAR, customer_id VARCHAR, occurred_at TIMESTAMPTZ, channel VARCHAR, kind VARCHAR, status VARCHAR, direction VARCHAR"  # noqa: E501
CONTINUED = """
WITH journey AS (SELECT * FROM read_parquet($parquet)),
drops AS (SELECT id, customer_id, occurred_at FROM journey WHERE kind = 'call' AND status = 'dropped'),
continued AS (
    SELECT DISTINCT drops.id
    FROM drops JOIN journey AS later ON later.customer_id = drops.customer_id
    WHERE later.channel NOT IN ('voice', 'agent')
      AND later.kind <> 'message_status'
      AND coalesce(later.direction, 'inbound') = 'inbound'
      AND later.occurred_at > drops.occurred_at
      AND later.occurred_at <= drops.occurred_at + to_hours($hours)
)
SELECT (SELECT count(*) FROM drops), (SELECT count(*) FROM continued)
"""  # noqa: E501


@dataclass(frozen=True)
class Entry:
    id: str
    customer_id: str
    occurred_at: datetime
    channel: str
    kind: str
    status: str | None
    direction: str | None


def entry(value: dict[str, Any]) -> Entry:
    payload = value.get("payload") or {}
    return Entry(
        value["id"],
        value["customer_id"],
        datetime.fromisoformat(value["occurred_at"]),
        value["channel"],
        value["type"],
        payload.get("status"),
        payload.get("direction"),
    )


def security_from(environment: dict[str, str]) -> dict[str, Any]:
    """aiokafka's security arguments from the deployment's HILO_KAFKA_* variables."""
    protocol = environment.get("HILO_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT"
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options |= {
            "sasl_mechanism": environment.get("HILO_KAFKA_SASL_MECHANISM") or "PLAIN",
            "sasl_plain_username": environment["HILO_KAFKA_SASL_USERNAME"],
            "sasl_plain_password": environment["HILO_KAFKA_SASL_PASSWORD"],
        }
    if protocol.endswith("SSL"):
        cafile = environment.get("HILO_KAFKA_SSL_CAFILE") or None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    return options


async def read_to_end(
    bootstrap_servers: str, topic: str, within: float = 60.0, **security: Any
) -> list[tuple[int, Any]]:
    """Every record on the topic up to its end as of now, as (timestamp in ms, JSON value), in
    each partition's order (tombstones left out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        **security,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[tuple[int, Any]] = []
    deadline = time.monotonic() + within
    try:
        ends: dict[TopicPartition, int] = {}
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [
                    (record.timestamp, json.loads(record.value))
                    for record in records
                    if record.value
                ]
            if not ends and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            if ends and all([await consumer.position(p) >= ends[p] for p in ends]):
                return values
    finally:
        await consumer.stop()
    raise SystemExit(f"could not read {topic!r} to its end within {within:.0f} s")


def current_customers(changes: list[dict[str, Any]]) -> dict[str, str]:
    """Each customer id merged away (and not split off again) -> the customer it is now.

    A split names the merge it undoes (`undoes_event_id`), and that merge's record may come
    after it: merges are keyed by their survivor, a split by the profile kept, so the two can
    sit on different partitions. So the undone merges are gathered first, whatever the order,
    and an id merged again after its split keeps that later merge."""
    undone = {
        (change["restored"], change["undoes_event_id"])
        for change in changes
        if change.get("type") == "split" and change.get("undoes_event_id")
    }
    merged_into: dict[str, str] = {}
    for change in changes:
        if change.get("type") == "merge":
            for absorbed in change["absorbed"]:
                if (absorbed, change["event_id"]) not in undone:
                    merged_into[absorbed] = change["survivor"]

    def now(customer: str) -> str:
        seen = {customer}
        while (customer := merged_into.get(customer, customer)) not in seen:
            seen.add(customer)
        return customer

    return {customer: now(customer) for customer in merged_into}


def erased_customers(erasures: list[dict[str, Any]]) -> set[str]:
    """Every customer id an erasure names: the profile and the ids merged into it."""
    return {erased for record in erasures for erased in (record["customer_id"], *record["aliases"])}


async def read_journey(bootstrap_servers: str, prefix: str = "", **security: Any) -> list[Entry]:
    """Every entry on `journey`, the latest record per entry id, under its customer now;
    none of an erased customer."""
    records = await read_to_end(bootstrap_servers, f"{prefix}journey", **security)
    merges = await read_to_end(bootstrap_servers, f"{prefix}identity.merges", **security)
    erasures = await read_to_end(bootstrap_servers, f"{prefix}erasures", **security)
    now = current_customers([value for _, value in merges])
    erased = erased_customers([value for _, value in erasures])
    by_time = sorted(records, key=lambda record: record[0])  # stable: a partition's order stays
    latest = {value["id"]: entry(value) for _, value in by_time}
    kept = []
    for found in latest.values():
        owner = now.get(found.customer_id, found.customer_id)
        if erased.isdisjoint((found.customer_id, owner)):
            kept.append(replace(found, customer_id=owner))
    return kept


def to_parquet(entries: list[Entry], path: Path) -> None:
    with duckdb.connect() as db:
        db.execute(f"CREATE TABLE journey ({COLUMNS})")
        db.executemany(
            "INSERT INTO journey VALUES (?, ?, ?, ?, ?, ?, ?)", [astuple(e) for e in entries]
        )
        db.execute(f"COPY journey TO '{path}' (FORMAT parquet)")


def dropped_calls_continued(parquet: Path, hours: int) -> tuple[int, int]:
    """(dropped calls, of which continued on another channel within `hours`)."""
    with duckdb.connect() as db:
        row = db.execute(CONTINUED, {"parquet": str(parquet), "hours": hours}).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", default="", help="the deployment's HILO_TOPIC_PREFIX")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--parquet", type=Path, default=Path("journey.parquet"))
    args = parser.parse_args()
    security = security_from(dict(os.environ))
    entries = asyncio.run(read_journey(args.bootstrap_servers, args.topic_prefix, **security))
    to_parquet(entries, args.parquet)
    dropped, continued = dropped_calls_continued(args.parquet, args.hours)
    share = f"{continued / dropped:.0%}" if dropped else "n/a"
    print(f"{len(entries)} journey entries -> {args.parquet}")  # noqa: T201
    within = f"continued on another channel within {args.hours} h"
    print(f"dropped calls: {dropped}; {within}: {continued} ({share})")  # noqa: T201


if __name__ == "__main__":
    main()
