"""Which channel services are running, as the desk reads it from Kafka's consumer groups on
`outbound` (`agent_desk.channel_services`), against the real broker."""

from __future__ import annotations

import pytest

from agent_desk import channel_services
from agent_desk.channel_services import ChannelServices
from agent_desk.testing import behind_service
from hilo.settings import HiloSettings


async def test_a_channel_whose_service_has_no_instance_is_stopped_once_kafka_says_so_twice(
    settings: HiloSettings, topics: list[str]
) -> None:
    services = ChannelServices(settings, ["sms", "email", "messenger", "instagram"])
    try:
        async with behind_service(settings, "sms"), behind_service(settings, "social"):
            await services.refresh()
            first = services.stopped
            await services.refresh()
            while_running = services.stopped
        await services.refresh()
        after_sms_stopped = services.stopped
        await services.refresh()
        after_asking_again = services.stopped
    finally:
        await services.close()

    assert first == frozenset(), "one answer is not enough: a service may be joining"
    assert while_running == {"email"}, "Messenger and Instagram are channel-social's"
    assert after_sms_stopped == {"email"}
    assert after_asking_again == {"email", "sms", "messenger", "instagram"}


async def test_kafka_not_answering_says_no_service_is_stopped(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_services, "ASK_SECONDS", 1.0)
    away = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9"})
    services = ChannelServices(away, ["sms", "email"])
    try:
        for _ in range(3):
            await services.refresh()
    finally:
        await services.close()

    assert services.stopped == frozenset()


async def test_an_unexpected_failure_says_nothing_is_stopped_and_the_next_answer_counts(
    settings: HiloSettings,
) -> None:
    """A bug (or a broker that no longer speaks DescribeGroups v0-v2) must not leave the last
    warnings shown until the desk restarts."""
    answers: list[dict[str, str] | Exception] = [
        {"empty": "Empty"},
        {"empty": "Empty"},
        NotImplementedError("no DescribeGroups version in common"),
        {"empty": "Empty"},
        {"empty": "Empty"},
    ]
    services = ChannelServices(settings, ["email"])
    services.groups = {"email": "empty"}

    async def answer() -> dict[str, str]:
        given = answers.pop(0)
        if isinstance(given, Exception):
            raise given
        return given

    services._group_states = answer  # type: ignore[method-assign]
    seen = []
    for _ in range(5):
        await services.refresh()
        seen.append(services.stopped)

    assert seen == [frozenset(), {"email"}, frozenset(), frozenset(), {"email"}]
