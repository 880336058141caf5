"""Sending agents' replies through Meta's Send API: Messenger and Instagram direct messages.

Messenger replies go to `POST /{version}/me/messages` with the Page access token, Instagram ones
to `POST /{version}/{account}/messages` with the Instagram token, each as `{"recipient": {"id":
<PSID or IGSID>}, "messaging_type": ..., "message": {"text": ...}}`; Meta answers
`{"recipient_id", "message_id"}`, and its receipts name that `message_id`.

The messaging window. Untagged (`RESPONSE`), a reply reaches the customer within 24 hours of
their last message; later Meta refuses it with `10: This message is sent outside of allowed
window`, which the agent sees. The `HUMAN_AGENT` tag (`messaging_type: MESSAGE_TAG`) stretches
that to 7 days, but Meta allows it only (a) to apps granted the Human Agent feature in App Review,
refusing tagged messages from any other app, (b) for messages a person wrote, never automated
ones, and (c) for content that is not promotional. Hence: with `HILO_META_HUMAN_AGENT` (the app
has the feature), `service` replies are tagged, within the first 24 hours as well (Meta allows
the tag there, and the desk does not know when the customer last wrote); `marketing` ones never
are. Every command on `outbound` today is a reply an agent typed in the desk (`requested_by` names
the agent); an automation that publishes commands must be told apart before it shares this rule.

A Messenger reply carries `metadata: hilo:<command id>`, which Meta hands back in the page's
echo of it: the echo is recorded under the id of the sender's own record (`translate.py`), so it
is stored once, and tells of a reply Graph took but answered with an error. Instagram documents
no such field: its echoes are dropped by the message id this service sent (`hilo.channel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx
import structlog
from pydantic import SecretStr
from pydantic_core import from_json

from channel_social.settings import SocialSettings
from hilo.contract import Purpose
from hilo.contract.outbound import OutboundCommand
from hilo.outbound import SENT_BY, SendRefused, Sent, accepted_without_id, provider_call
from hilo.providers.meta import graph_error, graph_reason, graph_throttled

log = structlog.get_logger(__name__)

CHANNELS: Final = tuple(channel for channel, service in SENT_BY.items() if service == "social")
ECHO_MARKS: Final[Mapping[str, Purpose]] = {"hilo:": "service", "hilo-marketing:": "marketing"}
"""What starts the `metadata` of a message Hilo sent, by its purpose: the echo says which, so
an echo recorded before (or instead of) the sender's own record keeps it (a marketing message
answers nobody)."""
_TOKENS: Final = {
    "messenger": "HILO_MESSENGER_PAGE_ACCESS_TOKEN",
    "instagram": "HILO_INSTAGRAM_ACCESS_TOKEN",
}


class SendApi:
    """The `Provider` of the social channel: Messenger and/or Instagram, each with its token."""

    def __init__(self, clients: Mapping[str, httpx.AsyncClient], *, human_agent: bool) -> None:
        self._clients = dict(clients)
        self._human_agent = human_agent

    async def send(self, command: OutboundCommand) -> Sent:
        client = self._clients.get(command.channel)
        if client is None:
            raise SendRefused(_not_sent_reason(command.channel))
        body = message_request(command, human_agent=self._human_agent)
        response = await provider_call(
            lambda: client.post("/messages", json=body), refusal_reason, graph_throttled
        )
        return Sent(provider_message_id=accepted_id(response))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def account_client(
    token: SecretStr, graph_url: str, api_version: str, account: str, timeout_seconds: float = 10
) -> httpx.AsyncClient:
    """A client of one Page's or Instagram account's Send API (`account`: `me` or its ID)."""
    return httpx.AsyncClient(
        base_url=f"{graph_url.rstrip('/')}/{api_version}/{account}",
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
        timeout=timeout_seconds,
    )


def send_api(settings: SocialSettings) -> SendApi:
    """The provider the settings configure; a channel without its token refuses its replies
    with the reason, so the agent sees why they were not sent."""
    tokens = {
        "messenger": settings.messenger_page_access_token,
        "instagram": settings.instagram_access_token,
    }
    configured = {channel: t for channel, t in tokens.items() if t and t.get_secret_value()}
    if len(configured) < len(tokens):
        log.warning(
            "outbound_not_configured",
            channels=[channel for channel in tokens if channel not in configured],
            reason="no access token: "
            + ", ".join(_TOKENS[channel] for channel in tokens if channel not in configured),
        )
    places = {
        "messenger": (settings.meta_graph_url, "me"),
        "instagram": (settings.instagram_graph_url, settings.instagram_account_id),
    }
    clients = {
        channel: account_client(
            token, places[channel][0], settings.meta_api_version, places[channel][1]
        )
        for channel, token in configured.items()
    }
    return SendApi(clients, human_agent=settings.meta_human_agent)


def recipient(command: OutboundCommand) -> str:
    """The page-scoped (Messenger) or Instagram-scoped id the command is for."""
    if command.channel == "messenger" and command.identifiers.messenger_psid:
        return command.identifiers.messenger_psid
    if command.channel == "instagram" and command.identifiers.instagram_sid:
        return command.identifiers.instagram_sid
    kind = "page-scoped id (messenger_psid)"
    if command.channel == "instagram":
        kind = "Instagram-scoped id (instagram_sid)"
    raise SendRefused(f"no {kind} to send to")


def message_request(command: OutboundCommand, *, human_agent: bool) -> dict[str, Any]:
    """The Send API request body of a text reply (see the module docstring for the tag)."""
    message = command.payload
    if message.template is not None or not message.text:
        raise SendRefused("Messenger and Instagram replies are text; templates are WhatsApp's")
    body: dict[str, Any] = {"recipient": {"id": recipient(command)}}
    if human_agent and message.purpose == "service":
        body |= {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    else:
        body["messaging_type"] = "RESPONSE"
    content: dict[str, Any] = {"text": message.text}
    if command.channel == "messenger":
        content["metadata"] = echo_metadata(command)
    body["message"] = content
    return body


def echo_metadata(command: OutboundCommand) -> str:
    """The `metadata` Meta gives back in the echo: which command sent it, and why."""
    mark = next(m for m, purpose in ECHO_MARKS.items() if purpose == command.payload.purpose)
    return f"{mark}{command.id}"


def sent_by_hilo(metadata: str | None) -> tuple[str, Purpose] | None:
    """The command id and purpose an echo's `metadata` names (`echo_metadata`), or None when
    it is not the echo of a message Hilo sent."""
    for mark, purpose in ECHO_MARKS.items():
        if metadata and metadata.startswith(mark):
            return metadata.removeprefix(mark), purpose
    return None


def accepted_id(response: httpx.Response) -> str:
    """The `message_id` Meta gave the message; its receipts name it."""
    try:
        message_id = from_json(response.content)["message_id"]
    except (ValueError, KeyError, TypeError):
        message_id = None
    if not isinstance(message_id, str) or not message_id:
        raise accepted_without_id(response)
    return message_id


def refusal_reason(response: httpx.Response) -> str:
    """Meta's own explanation, `<code>: <message>` (e.g. `10: This message is sent outside of
    allowed window. ...`); the `(#code) ` Graph puts before messages is not repeated."""
    reason = graph_reason(graph_error(response))
    if reason is None:
        return f"HTTP {response.status_code}"
    code, message = reason
    return f"{code}: {message}"


def _not_sent_reason(channel: str) -> str:
    if channel in _TOKENS:
        return f"{channel} replies are not configured: {_TOKENS[channel]} is not set"
    return f"channel-social sends Messenger and Instagram messages, not {channel}"
