"""What operators read of a running instance: where its batches spend their time.

The service's `/metrics` on the real broker and database: each batch step's time and each
MongoDB command's, by command and collection, move as batches are processed.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from customer_profile.service.pipeline import STEPS
from customer_profile.testing import RunningProfileService, interaction


async def samples(
    profile: RunningProfileService,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await profile.http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in after, f"{name}{labels} is not exported"
    return after[key] - before.get(key, 0.0)


async def test_metrics_say_which_step_and_which_database_command_batches_wait_for(
    profile_service: RunningProfileService,
) -> None:
    before = await samples(profile_service)

    await profile_service.publish(
        [interaction(f"m{n}", minutes=n, email=f"metrics{n}@example.com") for n in range(3)]
    )
    await profile_service.wait_for_entries(3)

    after = await samples(profile_service)
    for step in STEPS:
        assert moved(before, after, "hilo_profile_batch_step_seconds_count", step=step) >= 1, step
        assert moved(before, after, "hilo_profile_batch_step_seconds_sum", step=step) > 0, step
    assert moved(before, after, "hilo_profile_batch_records_sum") == 3
    journey = {"command": "insert", "collection": "journey"}
    assert moved(before, after, "hilo_mongodb_command_seconds_count", **journey) >= 1
    assert moved(before, after, "hilo_mongodb_command_seconds_sum", **journey) > 0
    heads = {"command": "find", "collection": "profiles"}
    assert moved(before, after, "hilo_mongodb_command_seconds_count", **heads) >= 1
