"""Mailgun's event webhooks → what became of the email Hilo sent, and a customer's unsubscribe
or spam complaint. Pure: no I/O.

Mailgun posts `{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`, signed
as a route's post is (`channel_email.mailgun.ReplayGuard`). Of its events:

- `delivered` → `delivered`; `opened` → `read` (when open tracking is on); a `failed` of
  severity `permanent` → `failed` with the receiving server's reason. A temporary failure is
  not an outcome (Mailgun tries again for hours), nor are `accepted` or `stored`,
  nor `rejected` (Mailgun's API refused the message, and the sender recorded that already).
  Only for messages Hilo sent (they carry the user variable `hilo-command-id`): other mail of
  the domain has no message in any journey to attach to.
- `clicked` → a `page_view` on the email channel: the recipient followed a link (click tracking
  on), its `campaign` read from the link's `utm_` parameters as the web collector reads a
  landing's, so a newsletter is credited with what its reader bought later on any channel, even
  one who never signs in on the web. Each click is an event (Mailgun's event id).
- An `opened` or `clicked` Mailgun took for a bot's (`client-info.bot`: Apple's Mail Privacy
  Protection fetching every pixel, a security gateway following every link at delivery) is
  ignored: it is no reader reading, and no visit.
- `unsubscribed` → consent to `marketing` on email withdrawn; `complained` (the customer marked
  a mail as spam) → consent to `contact` on email withdrawn: Mailgun itself drops every later
  mail to a complainer, and the agent desk says so before a reply is written. Whichever
  system sent the mail: it is what the customer asked for.

One event per message, recipient and outcome: a mail opened five times is read once, and each
recipient of a newsletter sent to many under one Message-Id is heard. The recipient is keyed
with the pepper (`mail_reference`), as an inbound mail's sender is: the event id is on every
record in the clear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from channel_email.mime import bare_message_id
from channel_email.translate import CHANNEL, mail_reference
from hilo.contract import (
    ConsentChanged,
    Conversation,
    DeliveryStatus,
    Identifiers,
    Interaction,
    MessageStatusChanged,
    PageViewed,
    Truncations,
    max_length,
    new_interaction,
    unix_time,
)
from hilo.contract.campaign import campaign_from, split_url
from hilo.contract.outbound import failure_provider_id
from hilo.logs import mask_text

COMMAND_ID = "hilo-command-id"
CONVERSATION_ID = "hilo-conversation"
ERROR_LIMIT = 1_000

_Text = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]


class _Lenient(BaseModel):
    """Mailgun adds fields without notice: the ones read here are checked, the rest ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)


class MailgunSignature(_Lenient):
    timestamp: _Text = Field(max_length=20)
    token: str = Field(max_length=200)
    signature: str = Field(max_length=200)


class MessageHeaders(_Lenient):
    message_id: str | None = Field(default=None, alias="message-id", max_length=1_000)


class EventMessage(_Lenient):
    headers: MessageHeaders = MessageHeaders()


class DeliveryReport(_Lenient):
    """What the receiving server answered (an SMTP code and its text)."""

    code: int | str | None = None
    message: str | None = None
    description: str | None = None


class ClientInfo(_Lenient):
    bot: str | None = Field(
        default=None,
        description="Mailgun's bot detection: `apple` (Mail Privacy Protection), `gmail`, "
        "`generic` (a firewall or a virus scanner following links); empty for a person.",
    )


class EventData(_Lenient):
    event: str = Field(min_length=1, max_length=100)
    id: str | None = Field(default=None, max_length=200, description="Mailgun's event id.")
    timestamp: float
    recipient: str | None = Field(default=None, max_length=1_000)
    severity: str | None = None
    reason: str | None = None
    message: EventMessage = EventMessage()
    delivery_status: DeliveryReport | None = Field(default=None, alias="delivery-status")
    url: str | None = Field(default=None, description="The link a `clicked` event followed.")
    client_info: ClientInfo | None = Field(default=None, alias="client-info")
    user_variables: dict[str, Any] | list[Any] = Field(
        default_factory=dict, alias="user-variables", description="`[]` when there are none."
    )

    @property
    def by_a_bot(self) -> bool:
        """An open or a click Mailgun took for a machine's: a mail client fetching the pixel
        ahead, a security gateway following every link at delivery."""
        return bool(self.client_info and self.client_info.bot)

    def variable(self, name: str) -> str | None:
        variables = self.user_variables if isinstance(self.user_variables, dict) else {}
        value = variables.get(name)
        return value if isinstance(value, str) and value else None


_STATUSES = {
    "delivered": DeliveryStatus.DELIVERED,
    "opened": DeliveryStatus.READ,
}
_WITHDRAWN = {"unsubscribed": "marketing", "complained": "contact"}


def event_interaction(
    data: EventData,
    received_at: datetime,
    instance: str,
    key: bytes,
    *,
    reported_unconfirmed: bool = False,
) -> Interaction | None:
    """The interaction an event records, or None for one that records nothing (see the module
    docstring). `ValueError` when an event that would record something names no message or
    recipient: Mailgun's retry would not add them.

    `reported_unconfirmed`: the reply's send was reported not confirmed (the service stopped
    during Mailgun's call, so no message id was recorded): the status is then about that
    report (`failure_provider_id`), so the agent reads that the reply did go out,
    or bounced, where the reply is."""
    if data.event in ("opened", "clicked") and data.by_a_bot:
        return None
    if data.event == "clicked":
        return _click(data, received_at, instance, key)
    status = status_of(data)
    purpose = _WITHDRAWN.get(data.event)
    if status is None and purpose is None:
        return None
    message_id, identifiers, reference = _addressed(data, key)
    conversation = data.variable(CONVERSATION_ID)
    payload: MessageStatusChanged | ConsentChanged
    if status is not None:
        command_id = data.variable(COMMAND_ID)
        payload = MessageStatusChanged(
            provider_message_id=(
                failure_provider_id(command_id)
                if reported_unconfirmed and command_id is not None
                else message_id
            ),
            status=status,
            error=_failure(data) if status is DeliveryStatus.FAILED else None,
        )
    else:
        payload = ConsentChanged(
            purpose=str(purpose), granted=False, channel=CHANNEL, source=f"mailgun_{data.event}"
        )
    outcome = f"{reference}:{data.event}"
    if isinstance(payload, ConsentChanged) and data.id:
        # A customer who opted in again and unsubscribes through the same mail once more is
        # heard: Mailgun's own event id, the same on its retries, tells the two apart.
        outcome = f"{outcome}:{data.id}"
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=outcome,
        identifiers=identifiers,
        conversation=Conversation(id=conversation) if conversation else None,
        occurred_at=unix_time(data.timestamp),
        received_at=received_at,
        payload=payload,
    )


def _addressed(data: EventData, key: bytes) -> tuple[str, Identifiers, str]:
    """The event's message id, its recipient, and the two keyed with the pepper (the root of
    the event id: the address stays out of it). `ValueError` when either is missing."""
    message_id = bare_message_id(data.message.headers.message_id)
    if message_id is None or not data.recipient:
        raise ValueError(f"a `{data.event}` event needs message.headers.message-id and recipient")
    identifiers = Identifiers(email=data.recipient)
    return (
        message_id,
        identifiers,
        mail_reference(key, identifiers.email or data.recipient, message_id),
    )


def _click(data: EventData, received_at: datetime, instance: str, key: bytes) -> Interaction:
    """A link the recipient followed, as a page view on this channel (the link sealed as a
    page's URL is). Each click is an event of its own (Mailgun's event id): a reader who comes
    back through the same link ten days later is a campaign view that day."""
    if not data.url or not data.id:
        raise ValueError("a `clicked` event needs its id and url")
    _, identifiers, reference = _addressed(data, key)
    cut = Truncations()
    page = PageViewed(
        url=cut.clip(data.url, URL_LIMIT, "payload.url"),
        path=cut.clip(_path(data.url), URL_LIMIT, "payload.path"),
        campaign=campaign_from(None, data.url, cut),
    )
    return new_interaction(
        channel=CHANNEL,
        instance=instance,
        provider_event_id=f"{reference}:clicked:{data.id}",
        identifiers=identifiers,
        occurred_at=unix_time(data.timestamp),
        received_at=received_at,
        payload=page,
        adjustments=cut.adjustments,
    )


URL_LIMIT = max_length(PageViewed, "url")


def _path(url: str) -> str | None:
    """The link's path, what the timeline shows (`/spring`); None for a URL no parser reads."""
    parts = split_url(url)
    return (parts.path or None) if parts else None


def status_of(data: EventData) -> DeliveryStatus | None:
    """The outcome of a message Hilo sent; None for other mail and for what is no outcome."""
    if data.variable(COMMAND_ID) is None:
        return None
    if data.event == "failed":
        return DeliveryStatus.FAILED if data.severity == "permanent" else None
    return _STATUSES.get(data.event)


def _failure(data: EventData) -> str:
    """Why the mail was not delivered, as the agent reads it: the receiving server's code and
    answer, and Mailgun's reason (`bounce`, `suppress-bounce`, ...). Addresses it quotes are
    masked, as the sender masks a provider's refusal (`hilo.outbound`)."""
    report = data.delivery_status or DeliveryReport()
    answer = report.description or report.message
    reason = f"({data.reason})" if data.reason else None
    parts = [str(report.code) if report.code else None, answer, reason]
    text = " ".join(part.strip() for part in parts if part and part.strip())
    return mask_text(text or "Mailgun could not deliver the message")[:ERROR_LIMIT]
