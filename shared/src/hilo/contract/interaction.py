"""The interaction envelope every channel publishes: CloudEvents 1.0 attributes plus Hilo's fields.

`time` and `type` are CloudEvents attributes derived from `occurred_at` and `payload.kind`; they
are written on every serialised event so that tools outside Python can route on them, and on
input they must agree with what they are derived from.

`occurred_at` is bounded (`bound_event_time`): a time too far in the future or before 2000 is a
wrong clock, not a fact, and would misplace the event in the journey; the receipt time stands in
and the event records the adjustment.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    computed_field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hilo.contract.adjustments import (
    IN_THE_FUTURE,
    MAX_ADJUSTMENTS,
    TOO_OLD,
    UNREADABLE,
    Adjustment,
)
from hilo.contract.identifiers import Identifiers
from hilo.contract.payloads import Payload

SCHEMA_VERSION: Final = 1
TYPE_PREFIX = "dev.hilo.interaction."
_ID_NAMESPACE = uuid.UUID("6f0c5d8e-3a7b-5c1e-9d2f-4b8a1e7c0d93")

EARLIEST_EVENT_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Earlier event times are zero, default or garbage clock values (no Hilo channel predates it)."""

MAX_FUTURE_SKEW: ContextVar[timedelta] = ContextVar(
    "MAX_FUTURE_SKEW", default=timedelta(seconds=300)
)
"""How far ahead of the receipt time an event time may be (set per service from its settings)."""

BUILT_IN_CHANNELS: Final = (
    "web",
    "app",
    "whatsapp",
    "sms",
    "email",
    "voice",
    "store",
    "messenger",
    "instagram",
)
"""The channels Hilo's own services record; channel services added later name their own."""

ChannelName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_-]{1,39}$",
        description="Channel slug. Built in: web, app, whatsapp, sms, email, voice, store, "
        "messenger, instagram; new channel services add their own.",
        examples=["whatsapp"],
    ),
]


def interaction_id(channel: str, provider_event_id: str) -> str:
    """Deterministic event id: a provider retry of the same message yields the same id."""
    return str(
        uuid.uuid5(_ID_NAMESPACE, f"interaction:{len(channel)}:{channel}:{provider_event_id}")
    )


def conversation_id(channel: str, thread: str, key: bytes | None = None) -> str:
    """Deterministic conversation id for a channel's own thread reference.

    A thread that names the customer (SMS `business:+34...`, WhatsApp `number id:wa_id`,
    Messenger `page:PSID`) is given `key`, the deployment's pepper (`HiloSettings.pepper`): the
    id is then an HMAC of it. The id is on every record in the clear and outlives an erasure;
    an unkeyed hash of a phone number is reversed by hashing every number of a country."""
    name = f"conversation:{len(channel)}:{channel}:{thread}"
    if key is None:
        return str(uuid.uuid5(_ID_NAMESPACE, name))
    return str(uuid.UUID(bytes=hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]))


class Conversation(BaseModel):
    """Where the interaction belongs in a dialogue with the customer."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )

    id: str = Field(min_length=1, max_length=200, description="Hilo conversation id.")
    thread: str | None = Field(
        default=None, max_length=1_000, description="The channel's own thread reference."
    )
    continues: str | None = Field(
        default=None,
        max_length=200,
        description="Id of a conversation on another channel that this one carries on "
        "(a dropped call continued in chat).",
    )


IdentityTrust = Literal["verified", "claimed", "unverified"]
"""How far the source vouches for an event's identifiers (`Interaction.identity_trust`)."""


class Interaction(BaseModel):
    """One thing that happened between a customer and the company, on one channel."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
        title="Interaction",
        json_schema_extra={"$id": f"https://hilo.dev/schemas/interaction.v{SCHEMA_VERSION}.json"},
    )

    specversion: Literal["1.0"] = Field(default="1.0", description="CloudEvents version.")
    id: str = Field(
        min_length=1, max_length=100, description="Deterministic id (see `interaction_id`)."
    )
    source: str = Field(
        min_length=1,
        max_length=300,
        description="CloudEvents source: the channel service instance.",
        examples=["/channels/whatsapp/eu-1"],
    )
    subject: str | None = Field(
        default=None, max_length=200, description="CloudEvents subject: the conversation id."
    )
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Contract version.")
    channel: ChannelName
    identifiers: Identifiers
    conversation: Conversation | None = None
    occurred_at: AwareDatetime = Field(description="When it happened, with its timezone.")
    received_at: AwareDatetime = Field(description="When the channel service received it.")
    payload: Payload
    identity_trust: IdentityTrust = Field(
        default="verified",
        description="Whether the source vouches for the identifiers: `verified` (a signed provider "
        "webhook, an authenticated server-side call, a clerk's scan) may merge two known "
        "customers; `unverified` (a public browser write key, an unchecked form) attaches "
        "identifiers but never merges known customers on its own, nor adds a strong identifier "
        "to a known one: such a merge waits for a person to confirm it. `claimed`: an "
        "authenticated source vouches for what happened, not for who it was (a clerk typed the "
        "card number or phone the customer said): its identifiers count as unverified ones, "
        "the event as a verified one (an order it updates, a refund it pays back).",
    )
    adjustments: list[Adjustment] = Field(
        default_factory=list,
        max_length=MAX_ADJUSTMENTS,
        exclude_if=lambda adjustments: not adjustments,
        description="What the channel dropped or replaced to keep the event (an invalid "
        "secondary identifier, an impossible time): fields and reasons, never values. Absent "
        "when nothing was adjusted.",
    )

    @computed_field(description="CloudEvents time: equal to `occurred_at`.")  # type: ignore[prop-decorator]
    @property
    def time(self) -> datetime:
        return self.occurred_at

    @computed_field(description="CloudEvents type: `dev.hilo.interaction.<payload kind>`.")  # type: ignore[prop-decorator]
    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.payload.kind

    @model_validator(mode="before")
    @classmethod
    def _derived_attributes_agree(cls, data: Any) -> Any:
        """Accept `time` and `type` on input only when they match what they are derived from."""
        if not isinstance(data, dict) or not ({"time", "type"} & data.keys()):
            return data
        data = dict(data)
        given_time, given_type = data.pop("time", None), data.pop("type", None)
        payload = data.get("payload")
        kind = payload.get("kind") if isinstance(payload, dict) else getattr(payload, "kind", None)
        if given_type is not None and kind is not None and given_type != TYPE_PREFIX + str(kind):
            raise PydanticCustomError("type_mismatch", "type does not match payload.kind")
        if given_time is not None and "occurred_at" in data:
            try:
                same = _AWARE.validate_python(given_time) == _AWARE.validate_python(
                    data["occurred_at"]
                )
            except ValidationError:
                return data
            if not same:
                raise PydanticCustomError("time_mismatch", "time does not equal occurred_at")
        return data

    def partition_key(self) -> bytes:
        """Kafka key of the `interactions` topic: the strongest identifier."""
        return self.identifiers.partition_key()


_AWARE: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def new_interaction(
    *,
    channel: str,
    instance: str,
    provider_event_id: str,
    identifiers: Identifiers,
    payload: Any,
    occurred_at: datetime | None,
    conversation: Conversation | None = None,
    received_at: datetime | None = None,
    adjustments: Sequence[Adjustment] = (),
    identity_trust: IdentityTrust = "verified",
) -> Interaction:
    """Build an interaction the way every channel service should: id, source and subject derived,
    the event time bounded (`bound_event_time`, with the service's `MAX_FUTURE_SKEW`).

    `occurred_at=None` says the provider's time was unreadable: the receipt time stands in, and
    the event is marked so. (A channel whose provider sends no time passes the receipt time.)
    """
    received = received_at or datetime.now(UTC)
    noted = list(adjustments)
    if occurred_at is None:
        noted.append(Adjustment(field="occurred_at", reason=UNREADABLE))
    interaction = Interaction(
        id=interaction_id(channel, provider_event_id),
        source=f"/channels/{channel}/{instance}",
        subject=conversation.id if conversation else None,
        channel=channel,
        identifiers=identifiers,
        conversation=conversation,
        occurred_at=occurred_at or received,
        received_at=received,
        payload=payload,
        identity_trust=identity_trust,
        adjustments=noted,
    )
    return bound_event_time(interaction, max_future_skew=MAX_FUTURE_SKEW.get(), now=received)


def bound_event_time(
    interaction: Interaction, *, max_future_skew: timedelta, now: datetime
) -> Interaction:
    """The interaction with an impossible `occurred_at` replaced, as a copy marked with why.

    Later than `now + max_future_skew` is `in_the_future` (a device or provider clock ahead);
    before `EARLIEST_EVENT_TIME` is `too_old`. Either is replaced by the receipt time (or `now`
    when that is out of bounds too), so journeys stay in a true order. Idempotent: consumers may
    apply it again.
    """
    latest = now + max_future_skew
    if interaction.occurred_at > latest:
        reason = IN_THE_FUTURE
    elif interaction.occurred_at < EARLIEST_EVENT_TIME:
        reason = TOO_OLD
    else:
        return interaction
    received = interaction.received_at
    replacement = received if EARLIEST_EVENT_TIME <= received <= latest else now
    adjustments = [
        *interaction.adjustments[: MAX_ADJUSTMENTS - 1],
        Adjustment(field="occurred_at", reason=reason),
    ]
    return interaction.model_copy(update={"occurred_at": replacement, "adjustments": adjustments})


def unix_time(value: str | float, *, per_second: int = 1) -> datetime | None:
    """A provider's Unix timestamp (`per_second=1000` for milliseconds) as an aware UTC time;
    `None` when it is not a number or no date can hold it."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value) / per_second
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def rfc2822_time(value: str | None, *, zone_less_as_utc: bool = False) -> datetime | None:
    """An RFC 5322 date (a mail's `Date`, Twilio's `Timestamp`, an HTTP date) as an aware time;
    `None` when missing or unreadable. `-0000` says the time is UTC and the sender's own zone
    unknown (RFC 5322 3.3): UTC. A date without a zone, or with a name Python does not know
    (`CEST`), is unreadable, hours off as UTC, unless the sender is known to write UTC
    (`zone_less_as_utc`)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is not None:
        return parsed
    if zone_less_as_utc or "-0000" in value.split():
        return parsed.replace(tzinfo=UTC)
    return None
