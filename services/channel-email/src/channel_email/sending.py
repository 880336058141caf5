"""Outbound email through Mailgun's messages API, threaded into the customer's conversation.

A reply carries `In-Reply-To` (the message answered) and `References` (the thread's earlier ids,
then that one), in angle brackets as RFC 5322 writes them, so the customer's mail client shows
it in the same thread. Mailgun makes the Message-Id and answers it; it is kept without brackets,
as the inbound side keeps every id (`channel_email.mime.message_ids`), so the customer's answer
(whose `In-Reply-To` names it) matches it. The thread reference is the thread's first id, which
is what the inbound side derives for every message of the thread.
"""

from __future__ import annotations

from typing import Any

import httpx

from channel_email.mime import bare_message_id
from channel_email.settings import EmailSettings
from hilo.contract.outbound import OutboundCommand, OutboundMessage
from hilo.outbound import (
    Provider,
    SendRefused,
    Sent,
    accepted_without_id,
    not_configured,
    provider_call,
)

COMMAND_VARIABLE = "v:hilo-command-id"
"""A Mailgun user variable: Mailgun's events about the message carry it back, which tells the
messages Hilo sent (`channel_email.events`) from other mail of the domain."""
CONVERSATION_VARIABLE = "v:hilo-conversation"
"""The conversation the message was sent in, so that its delivery status lands there too."""
REASON_LIMIT = 500


class MailgunMessages:
    """The email channel's `Provider`: `POST {api}/v3/{domain}/messages`, HTTP Basic `api:key`."""

    def __init__(
        self,
        api_key: str,
        domain: str,
        sender: str,
        default_subject: str,
        *,
        api_url: str = "https://api.mailgun.net",
        timeout_seconds: float = 15.0,
    ) -> None:
        self._url = f"{api_url.rstrip('/')}/v3/{domain}/messages"
        self._sender = sender
        self._default_subject = default_subject
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth("api", api_key),
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
        )

    async def send(self, command: OutboundCommand) -> Sent:
        """Send one email; `SendRefused` (4xx) or `SendUnavailable` (5xx, 429, network)."""
        form = message_form(command, self._sender, self._default_subject)
        response = await provider_call(lambda: self._client.post(self._url, data=form), _reason)
        own_id = answered_id(response)
        chain = thread_chain(command.payload)
        return Sent(provider_message_id=own_id, thread=chain[0] if chain else own_id)

    async def close(self) -> None:
        await self._client.aclose()


def message_form(command: OutboundCommand, sender: str, default_subject: str) -> dict[str, str]:
    """Mailgun's form fields for `command`; `SendRefused` when it names no email address, or
    has no text (a template alone would reach the customer as its name and parameters)."""
    recipient = command.identifiers.email
    if recipient is None:
        raise SendRefused("no email address to send to")
    payload = command.payload
    if not payload.text:
        raise SendRefused("an email needs text: message templates are not sent by email")
    form = {
        "from": sender,
        "to": recipient,
        "subject": payload.subject or default_subject,
        "text": payload.text,
        COMMAND_VARIABLE: command.id,
    }
    if command.conversation is not None:
        form[CONVERSATION_VARIABLE] = command.conversation.id
    if reply_to := bare_message_id(payload.reply_to_provider_message_id):
        form["h:In-Reply-To"] = f"<{reply_to}>"
    if chain := thread_chain(payload):
        form["h:References"] = " ".join(f"<{message_id}>" for message_id in chain)
    return form


def thread_chain(message: OutboundMessage) -> list[str]:
    """The `References` of a reply: the thread's ids, oldest first, ending with the message
    answered; each once, without brackets. Ids no header could carry are left out."""
    reply_to = bare_message_id(message.reply_to_provider_message_id)
    earlier = (bare_message_id(reference) for reference in message.references)
    chain = [message_id for message_id in earlier if message_id and message_id != reply_to]
    return list(dict.fromkeys([*chain, *([reply_to] if reply_to else [])]))


def answered_id(response: httpx.Response) -> str:
    """The Message-Id Mailgun gave the message (`{"id": "<...>", "message": "Queued..."}`).

    `SendUncertain` without one, as for the other channels: recorded as sent under an id of
    its own, the mail's delivered, opened and failed events (which carry Mailgun's) matched no
    reply, and a failed one was never told."""
    try:
        answer: Any = response.json()
    except ValueError:
        raise accepted_without_id(response) from None
    value = answer.get("id") if isinstance(answer, dict) else None
    found = bare_message_id(value) if isinstance(value, str) else None
    if not found:
        raise accepted_without_id(response)
    return found


def _reason(response: httpx.Response) -> str:
    """Mailgun's own explanation: `{"message": ...}`, or the plain text of a 401 (`Forbidden`)."""
    try:
        answer: Any = response.json()
    except ValueError:
        answer = None
    message = answer.get("message") if isinstance(answer, dict) else None
    text = str(message) if message else response.text.strip() or response.reason_phrase
    return f"{response.status_code}: {text}"[:REASON_LIMIT]


def mailgun_provider(settings: EmailSettings) -> Provider:
    """The provider the settings configure; when outbound email is off, one refusing every
    reply with what is missing (`hilo.outbound.NotConfigured`)."""
    key, domain, sender = settings.mailgun_api_key, settings.mailgun_domain, settings.email_from
    if key is None or domain is None or sender is None:
        named = {
            "HILO_MAILGUN_API_KEY": key,
            "HILO_MAILGUN_DOMAIN": domain,
            "HILO_EMAIL_FROM": sender,
        }
        missing = ", ".join(n for n, v in named.items() if v is None)
        reason = f"email replies are not configured: {missing} not set"
        return not_configured("email", reason)
    return MailgunMessages(
        key.get_secret_value(),
        domain,
        sender,
        settings.email_default_subject,
        api_url=str(settings.mailgun_api_url),
    )
