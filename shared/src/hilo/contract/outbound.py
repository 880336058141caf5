"""The outbound contract: a command to send a message to a customer on one channel.

Whoever speaks for the company (the agent desk, an automation) publishes an `OutboundCommand` on
the `outbound` topic; the channel service named by `channel` sends it through its provider and
records the sent message as an outbound interaction in the same conversation. The command `id` is
the idempotency key: a redelivered command is sent once.

Personal fields (the recipient, the text, a template's parameters) are sealed on the topic like
an interaction's (`hilo.contract.personal.OUTBOUND_FIELDS`).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from hilo.contract.identifiers import Identifiers
from hilo.contract.interaction import ChannelName, Conversation, interaction_id
from hilo.contract.payloads import Purpose

OUTBOUND_SCHEMA_VERSION: Final = 1
OUTBOUND_TYPE: Final = "dev.hilo.outbound.message"

FAILURE_PREFIX: Final = "hilo-outbound:"
"""How the `provider_message_id` of a failed send starts (`OutboundCommand.failure_provider_id`)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )


class Template(_Model):
    """A message template the provider approved (WhatsApp: outside the 24-hour window)."""

    name: str = Field(min_length=1, max_length=512, examples=["order_update"])
    language: str = Field(min_length=2, max_length=15, examples=["en_US"])
    parameters: list[str] = Field(
        default_factory=list, max_length=20, description="Body parameters, in order."
    )


class OutboundMessage(_Model):
    """What to say: text (with an email subject), or an approved template."""

    kind: Literal["message"] = "message"
    text: str | None = Field(default=None, max_length=4_096)
    subject: str | None = Field(
        default=None,
        max_length=998,
        pattern=r"^[^\r\n]*$",
        description="Email subject: one line (a line break would make another mail header).",
    )
    template: Template | None = None
    purpose: Purpose = Field(
        default="service",
        description="`service` answers the customer; `marketing` needs the customer's consent "
        "to marketing on this channel.",
    )
    reply_to_provider_message_id: str | None = Field(
        default=None,
        max_length=500,
        description="The provider id of the message answered (email `In-Reply-To`, WhatsApp "
        "context).",
    )
    references: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Earlier message ids of the thread, oldest first (email `References`).",
    )

    @model_validator(mode="after")
    def _has_content(self) -> OutboundMessage:
        if not (self.text or self.template):
            raise PydanticCustomError("empty_message", "a message needs text or a template")
        if self.text and self.template:
            # WhatsApp sends the template: the journey would record words never received.
            raise PydanticCustomError(
                "text_and_template", "a message is text or a template, not both"
            )
        return self


class OutboundCommand(_Model):
    """Send `payload` to the customer through `channel`, to the identifier in `identifiers`."""

    model_config = ConfigDict(
        **_Model.model_config,
        title="OutboundCommand",
        json_schema_extra={
            "$id": f"https://hilo.dev/schemas/outbound.v{OUTBOUND_SCHEMA_VERSION}.json"
        },
    )

    specversion: Literal["1.0"] = "1.0"
    type: Literal["dev.hilo.outbound.message"] = OUTBOUND_TYPE
    id: str = Field(
        min_length=1,
        max_length=100,
        description="Idempotency key: sent once per id, however often the command is delivered.",
    )
    schema_version: Literal[1] = OUTBOUND_SCHEMA_VERSION
    customer_id: str = Field(min_length=1, max_length=200)
    channel: ChannelName
    identifiers: Identifiers = Field(
        description="The one identifier to send to (phone, email, WhatsApp id, page-scoped id)."
    )
    conversation: Conversation | None = Field(
        default=None, description="The conversation the message continues (any channel's)."
    )
    payload: OutboundMessage
    requested_by: str = Field(min_length=1, max_length=200, description="Agent or automation.")
    requested_at: AwareDatetime

    def sent_interaction_id(self) -> str:
        """The id of the outbound interaction recording this message once sent: known before
        sending, so a reader can match the command with its outcome."""
        return interaction_id(self.channel, f"outbound:{self.id}")

    def failure_provider_id(self) -> str:
        """The `provider_message_id` a failed send is reported under (no provider id exists)."""
        return failure_provider_id(self.id)


def one_line(subject: str) -> str:
    """A subject on one line, its runs of whitespace one space: a mail's subject may come
    decoded with line breaks (an encoded `=0D=0A`), and an outbound subject may hold none."""
    return " ".join(subject.split())


def failure_provider_id(command_id: str) -> str:
    """The `provider_message_id` the send of command `command_id` is reported under when it
    failed or is perhaps not sent, and under which the provider's later statuses of such a
    send are published."""
    return f"{FAILURE_PREFIX}{command_id}"
