"""The interaction envelope every channel publishes: CloudEvents 1.0 attributes plus Hilo's fields.

`time` and `type` are CloudEvents attributes derived from `occurred_at` and `payload.kind`; they
are written on every serialised event so that tools outside Python can route on them, and on
input they must agree with what they are derived from.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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

from hilo.contract.identifiers import Identifiers
from hilo.contract.payloads import Payload

SCHEMA_VERSION: Final = 1
TYPE_PREFIX = "dev.hilo.interaction."
_ID_NAMESPACE = uuid.UUID("6f0c5d8e-3a7b-5c1e-9d2f-4b8a1e7c0d93")

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


def conversation_id(channel: str, thread: str) -> str:
    """Deterministic conversation id for a channel's own thread reference."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"conversation:{len(channel)}:{channel}:{thread}"))


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
    occurred_at: datetime,
    conversation: Conversation | None = None,
    received_at: datetime | None = None,
) -> Interaction:
    """Build an interaction the way every channel service should: id, source and subject derived."""
    return Interaction(
        id=interaction_id(channel, provider_event_id),
        source=f"/channels/{channel}/{instance}",
        subject=conversation.id if conversation else None,
        channel=channel,
        identifiers=identifiers,
        conversation=conversation,
        occurred_at=occurred_at,
        received_at=received_at or datetime.now(UTC),
        payload=payload,
    )
