"""The MongoDB command metrics every service exports (`hilo.mongo.CommandTimes`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from hilo.mongo import COMMANDS_IN_FLIGHT, CommandTimes, command_target


def test_command_times_forget_the_oldest_commands_that_never_got_an_answer() -> None:
    """PyMongo sends no event for a command whose task was cancelled: what the listener keeps
    for such commands is bounded, and later commands are still measured."""
    times = CommandTimes()
    for request in range(COMMANDS_IN_FLIGHT + 5):
        times.started(_event(request, "find", {"find": "journey"}))  # type: ignore[arg-type]
    before = _count("find", "journey")

    times.succeeded(_event(COMMANDS_IN_FLIGHT + 4, "find", {}))  # type: ignore[arg-type]
    times.succeeded(_event(0, "find", {}))  # type: ignore[arg-type]

    assert len(times._collections) == COMMANDS_IN_FLIGHT - 1
    assert _count("find", "journey") == before + 1, "the oldest was forgotten, the newest counted"


def _event(request_id: int, name: str, command: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(
        request_id=request_id,
        operation_id=request_id,
        command_name=name,
        command=command,
        duration_micros=1500,
    )


def _count(command: str, collection: str) -> float:
    value = REGISTRY.get_sample_value(
        "hilo_mongodb_command_seconds_count", {"command": command, "collection": collection}
    )
    return value or 0.0


def test_a_get_more_is_put_under_the_collection_its_cursor_reads() -> None:
    more = _event(1, "getMore", {"getMore": 7340032, "collection": "journey"})
    whole_database = _event(2, "aggregate", {"aggregate": 1, "pipeline": []})

    assert command_target(more) == "journey"  # type: ignore[arg-type]
    assert command_target(whole_database) == 1  # type: ignore[arg-type]
