"""Sending agents' replies through the WhatsApp Cloud API (`POST /{phone-number-id}/messages`).

Free text reaches a customer only within 24 hours of their last message; outside that window
Meta still accepts the request and reports error 131047 later, in a `failed` status webhook
(`translate.py` publishes it). Only an approved template opens a conversation.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_core import from_json

from channel_whatsapp.settings import WhatsAppSettings
from hilo.contract.identifiers import Identifiers
from hilo.contract.outbound import OutboundCommand, OutboundMessage
from hilo.outbound import (
    COMMAND_TAG,
    Provider,
    SendRefused,
    Sent,
    accepted_without_id,
    not_configured,
    provider_call,
)
from hilo.providers.meta import graph_error, graph_reason, graph_throttled


class CloudApiMessages:
    """The `Provider` of the WhatsApp channel: one business phone number's `/messages`."""

    def __init__(
        self,
        access_token: SecretStr,
        phone_number_id: str,
        *,
        graph_url: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        timeout_seconds: float = 10.0,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"{graph_url.rstrip('/')}/{api_version}/{phone_number_id}",
            headers={"Authorization": f"Bearer {access_token.get_secret_value()}"},
            timeout=timeout_seconds,
        )

    async def send(self, command: OutboundCommand) -> Sent:
        body = message_request(command)
        response = await provider_call(
            lambda: self._client.post("/messages", json=body), refusal_reason, graph_throttled
        )
        return Sent(provider_message_id=accepted_id(response))

    async def close(self) -> None:
        await self._client.aclose()


def cloud_api(settings: WhatsAppSettings) -> Provider:
    """The provider the settings configure; without token and number, one refusing every reply
    with the reason (`hilo.outbound.NotConfigured`)."""
    token = settings.whatsapp_access_token
    if not (token and token.get_secret_value() and settings.whatsapp_phone_number_id):
        reason = (
            "WhatsApp replies are not configured: HILO_WHATSAPP_ACCESS_TOKEN and "
            "HILO_WHATSAPP_PHONE_NUMBER_ID are not both set"
        )
        return not_configured("whatsapp", reason)
    return CloudApiMessages(
        token,
        settings.whatsapp_phone_number_id,
        graph_url=settings.whatsapp_graph_url,
        api_version=settings.whatsapp_api_version,
    )


def recipient(identifiers: Identifiers) -> dict[str, str]:
    """Whom a message goes to: `to` the WhatsApp id, else the phone's digits (what a wa_id is),
    as Meta advises; else `recipient`, the business-scoped user id of a user with a username."""
    if identifiers.whatsapp_id:
        return {"to": identifiers.whatsapp_id}
    if identifiers.phone:
        return {"to": identifiers.phone.lstrip("+")}
    if identifiers.whatsapp_user_id:
        return {"recipient": identifiers.whatsapp_user_id}
    raise SendRefused("no WhatsApp id, phone number or WhatsApp user id to send to")


def message_request(command: OutboundCommand) -> dict[str, Any]:
    """The Cloud API request body: a template when the command has one, else text. Meta echoes
    `biz_opaque_callback_data` in the message's statuses: the command id, so a status of a send
    reported perhaps not sent (its wamid never recorded) still finds the reply
    (`translate.translate`)."""
    message = command.payload
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **recipient(command.identifiers),
        **_content(message),
        "biz_opaque_callback_data": f"{COMMAND_TAG}{command.id}",
    }
    if message.reply_to_provider_message_id:
        body["context"] = {"message_id": message.reply_to_provider_message_id}
    return body


def _content(message: OutboundMessage) -> dict[str, Any]:
    template = message.template
    if template is None:
        return {"type": "text", "text": {"body": message.text or "", "preview_url": False}}
    content: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        parameters = [{"type": "text", "text": value} for value in template.parameters]
        content["components"] = [{"type": "body", "parameters": parameters}]
    return {"type": "template", "template": content}


def accepted_id(response: httpx.Response) -> str:
    """The `wamid` Meta gave the message; its statuses arrive under that id."""
    try:
        messages = from_json(response.content)["messages"]
        message_id = messages[0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        message_id = None
    if not isinstance(message_id, str) or not message_id:
        raise accepted_without_id(response)
    return message_id


def refusal_reason(response: httpx.Response) -> str:
    """Meta's own explanation: `<code>: <message> (<details>)`, e.g. `131026: Message
    Undeliverable (...)`; the `(#code)` Graph puts before messages is not repeated."""
    error = graph_error(response)
    reason = graph_reason(error)
    if error is None or reason is None:
        return f"HTTP {response.status_code}"
    code, message = reason
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if isinstance(details, str) and details and details != message:
        message = f"{message} ({details})"
    return f"{code}: {message}"
