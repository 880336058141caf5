"""Settings of the customer-profile service (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from customer_profile.domain.identity import (
    DEFAULT_BLOCKED_VALUES,
    DEFAULT_MAX_PER_KIND,
    IdentityPolicy,
)
from customer_profile.service.batches import RetryPolicy
from hilo.contract import IdentifierKind
from hilo.settings import CommaSeparated, HiloSettings, SecretList


class ProfileSettings(HiloSettings):
    service_name: str = "customer-profile"
    http_host: str = Field(default="0.0.0.0", description="Address the HTTP API listens on.")  # noqa: S104
    http_port: int = Field(default=8080, ge=1, le=65535)
    api_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated keys accepted in `X-API-Key` for reading profiles, journeys "
        "and offers (what the agent desk, the offers service and channels hold); required "
        "outside development.",
    )
    admin_api_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated keys that may also erase and export a customer, split "
        "profiles and decide merge requests; the read keys cannot. Required outside "
        "development.",
    )
    consumer_group: str = Field(default="customer-profile", description="Kafka consumer group.")
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    batch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="How long a poll waits for records; a poll that found none is followed by a "
        "pause this long (FastStream's batch subscriber), so on a quiet stream an event can wait "
        "twice this before it is processed. Batches never wait to fill: a poll returns what "
        "arrived.",
    )
    conversation_window_hours: float = Field(
        default=24.0, gt=0, description="Activity gap after which a new conversation starts."
    )
    checkpoint_behind_hours: float = Field(
        default=1.0,
        gt=0,
        le=168,
        description="How far behind a long journey's last entry (over 1,000 entries) its view "
        "is kept as a checkpoint (renewed as the journey grows: one to two of these behind): a "
        "late event dated after the checkpoint folds only the entries since; one dated before "
        "folds from an earlier checkpoint, one kept per doubling of this back (up to 128 of "
        "these), or past them all derives the view from the whole journey (29 s for 100,000 "
        "entries), and keeps the checkpoint just before it, so that till's next late batches "
        "fold from there. Longer makes events late by more than this fold less often from an "
        "earlier one, at the cost of the entries of that many hours folded at each late event.",
    )
    checkpoint_sweep_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=86_400,
        description="How often customer-profile deletes the checkpoints of long journeys that "
        "no stored view names, an hour after they were kept: those a batch kept before failing, "
        "or an earlier release's save left unnamed (`hilo_profile_checkpoints_swept_total`).",
    )
    queue_days: int = Field(
        default=7,
        ge=1,
        le=30,
        description="How long a customer nobody answered stays in the agents' queue "
        "(`GET /v1/conversations?awaiting=true`), however long ago they last wrote. At most 30: "
        "the desk forgets a conversation's handling (a done mark) 30 days after its last change.",
    )
    identity_unique_kinds: CommaSeparated[IdentifierKind] = Field(
        default=[IdentifierKind.CUSTOMER_ID, IdentifierKind.LOYALTY_ID],
        description="Identifier kinds a person has at most one of (merge protection).",
    )
    identity_max_per_kind: dict[IdentifierKind, int] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_PER_KIND),
        description='JSON object, e.g. {"email": 5}; merged over the defaults.',
    )
    identity_max_merges: int = Field(default=50, ge=0)
    identity_verified_only_traits: CommaSeparated[str] = Field(
        default=["loyalty_tier"],
        description="Traits an unverified event (public web keys) may not set: anything that "
        "decides prices or service, e.g. loyalty_tier,name.",
    )
    identity_blocked_values: CommaSeparated[str] = Field(
        default_factory=list, description="Extra placeholder values never used as identifiers."
    )
    store_retry_seconds: float = Field(
        default=60.0, gt=0, description="How long a batch retries while MongoDB is unreachable."
    )
    poison_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Attempts of a batch failing for another reason before its records are "
        "processed one by one and the failing one is dead-lettered.",
    )
    stuck_after_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Readiness says `degraded` (still 200) and `hilo_profile_consumer_stuck` turns "
        "1 once a batch has been failing for this long: alert on the metric.",
    )
    shutdown_grace_seconds: float = Field(
        default=7.0,
        gt=0,
        le=60,
        description="On stop, how long an in-flight batch may finish (below compose's 10 s); an "
        "unfinished batch is redelivered and completed by the next instance.",
    )

    erasure_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often an erasure that Kafka or MongoDB interrupted is tried again "
        "(and a split, see below).",
    )
    split_settle_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="A split is applied at once and swept once more after this long: an event "
        "another instance resolved against the merged profile just before the split lands where "
        "it belongs. Longer than a batch takes (`HILO_BATCH_MAX_WAIT_MS` plus processing).",
    )

    def open_api_refusal(self) -> str | None:
        """Why the API must not be served without keys, or None when it may.

        The API holds personal data: without `HILO_API_KEYS` and `HILO_ADMIN_API_KEYS` (the
        keys that may erase, export, split and decide merges) it is served only when the run says
        explicitly that it is a development or test one (`make run` does); an unset environment
        is not enough. Checked when serving, not when reading settings, so `init`, `rebuild` and
        `dlq replay` run without keys.
        """
        if self.api_keys and self.admin_api_keys:
            return None
        if self.explicitly_development:
            return None
        return (
            "HILO_API_KEYS or HILO_ADMIN_API_KEYS is empty: the profile API holds personal data, "
            "and an erasure cannot be undone. Set both, or set HILO_ENVIRONMENT=development for a "
            "development run."
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            transient_seconds=self.store_retry_seconds, poison_attempts=self.poison_attempts
        )

    def identity_policy(self) -> IdentityPolicy:
        return IdentityPolicy(
            unique_kinds=frozenset(self.identity_unique_kinds),
            max_per_kind={**DEFAULT_MAX_PER_KIND, **self.identity_max_per_kind},
            max_merges=self.identity_max_merges,
            verified_only_traits=frozenset(self.identity_verified_only_traits),
            blocked_values=DEFAULT_BLOCKED_VALUES
            | {value.strip().lower() for value in self.identity_blocked_values},
        )

    @property
    def max_future_skew(self) -> timedelta:
        return timedelta(seconds=self.max_future_skew_seconds)

    @property
    def conversation_window(self) -> timedelta:
        return timedelta(hours=self.conversation_window_hours)

    @property
    def checkpoint_behind(self) -> timedelta:
        return timedelta(hours=self.checkpoint_behind_hours)
