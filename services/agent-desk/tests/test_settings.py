"""HILO_DESK_AGENTS as operators write it: `agent-desk hash-password` output, comma-separated."""

from __future__ import annotations

import pytest

from agent_desk.auth import Agents, hash_password
from agent_desk.policy import reply_options
from agent_desk.settings import DeskSettings


@pytest.fixture(autouse=True)
def _test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run (`HILO_ENVIRONMENT`): settings read from the environment may use the public
    development pepper only in one."""
    monkeypatch.setenv("HILO_ENVIRONMENT", "test")


def test_agents_with_real_hashes_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ana, bo = hash_password("ana's password"), hash_password("bo's password")
    assert "," in ana, "argon2 hashes carry their parameters, comma-separated"
    monkeypatch.setenv("HILO_DESK_AGENTS", f"ana:{ana}, bo:{bo}")

    agents = Agents(DeskSettings().desk_agents)

    assert agents.verify("ana", "ana's password")
    assert agents.verify("bo", "bo's password")
    assert not agents.verify("bo", "ana's password")


def test_a_broken_entry_is_refused_rather_than_merged_into_its_neighbour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HILO_DESK_AGENTS", f"ana:{hash_password('x')},bo:not-a-hash")

    with pytest.raises(ValueError, match="agent-id"):
        Agents(DeskSettings().desk_agents)


def test_a_new_sending_channel_is_addressed_by_settings_and_an_unaddressed_one_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel team adding RCS sets where it reaches customers; naming it without that would
    leave it out of every reply box without a word."""
    monkeypatch.setenv("HILO_DESK_REPLY_CHANNELS", "whatsapp,rcs")
    with pytest.raises(ValueError, match="HILO_DESK_REPLY_ADDRESSES"):
        DeskSettings()

    monkeypatch.setenv("HILO_DESK_REPLY_ADDRESSES", '{"rcs": ["phone"]}')
    settings = DeskSettings()
    profile = {"customer_id": "c", "identifiers": [{"kind": "phone", "value": "+34612345678"}]}

    options = reply_options(
        profile, settings.desk_reply_channels, address_kinds=settings.address_kinds
    )

    assert [(o.channel, o.address) for o in options] == [
        ("whatsapp", "+34612345678"),
        ("rcs", "+34612345678"),
    ]


@pytest.mark.parametrize(("every", "taken"), [("0", True), ("0.2", False), ("1", True)])
def test_the_queue_is_read_for_its_gauges_never_or_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch, every: str, taken: bool
) -> None:
    """Each read is up to five requests to the profile service, from every desk replica."""
    monkeypatch.setenv("HILO_DESK_QUEUE_METRICS_SECONDS", every)

    if taken:
        assert DeskSettings().desk_queue_metrics_seconds == float(every)
    else:
        with pytest.raises(ValueError, match="HILO_DESK_QUEUE_METRICS_SECONDS"):
            DeskSettings()


def test_a_run_that_does_not_say_it_is_a_development_one_needs_a_secret_and_secure_cookies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A desk deployed outside compose with no environment set signed sessions with a random
    secret per run and sent its cookie over plain HTTP: it is treated as the real one it is."""
    monkeypatch.delenv("HILO_ENVIRONMENT")
    monkeypatch.setenv("HILO_SUBJECT_PEPPER", "a-long-random-secret-of-this-deployment")

    with pytest.raises(ValueError, match="HILO_DESK_SESSION_SECRET"):
        DeskSettings()
    monkeypatch.setenv("HILO_DESK_SESSION_SECRET", "s" * 32)
    assert DeskSettings().secure_cookies
    monkeypatch.setenv("HILO_ENVIRONMENT", "development")
    assert not DeskSettings().secure_cookies
