"""Sending outbound SMS through Twilio's Messages API.

One `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` per command (form-encoded, HTTP Basic
auth with the account SID and auth token), with `StatusCallback` set to this channel's status
webhook so that Twilio's delivery statuses come back as `message_status` interactions of the
message's SID. The URL names the command (`COMMAND_PARAM`; Twilio signs the whole URL): a
status of a send reported perhaps not sent, whose SID was never recorded, then finds the reply.
Retries, idempotency and recording are `hilo.outbound`'s.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
from pydantic import AnyHttpUrl

from channel_sms.translate import reference
from hilo.contract.outbound import OutboundCommand
from hilo.outbound import SendRefused, Sent, accepted_without_id, provider_call
from hilo.providers.twilio_api import API_VERSION, TIMEOUT_SECONDS, twilio_reason


class TwilioMessages:
    """The SMS channel's `hilo.outbound.Provider`: a command becomes one Twilio message."""

    def __init__(
        self,
        *,
        api_url: AnyHttpUrl | str,
        account_sid: str,
        auth_token: str,
        status_callback_url: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a sender is needed: a from number or a messaging service sid")
        self._client = httpx.AsyncClient(
            base_url=str(api_url).rstrip("/"),
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=TIMEOUT_SECONDS,
        )
        self._path = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
        self._status_callback_url = status_callback_url
        # A Messaging Service picks the sender from its pool (and applies its opt-out rules).
        self._sender = (
            {"MessagingServiceSid": messaging_service_sid}
            if messaging_service_sid
            else {"From": str(from_number)}
        )

    async def send(self, command: OutboundCommand) -> Sent:
        """Create the message; `SendRefused` without a call when the command has no phone, or
        no text (a WhatsApp template alone would reach the customer as its name and
        parameters)."""
        to = command.identifiers.phone
        if to is None:
            raise SendRefused("no phone number to send the SMS to (the command's identifiers)")
        if not command.payload.text:
            raise SendRefused("an SMS needs text: message templates are not sent by SMS")
        form = {
            "To": to,
            **self._sender,
            "Body": command.payload.text,
            "StatusCallback": status_callback_of(self._status_callback_url, command),
        }
        response = await provider_call(
            lambda: self._client.post(self._path, data=form), twilio_reason
        )
        return _sent(response, to)

    async def close(self) -> None:
        await self._client.aclose()


COMMAND_PARAM = "hilo_command"


def status_callback_of(url: str, command: OutboundCommand) -> str:
    """The status webhook's URL for the command's message."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode({COMMAND_PARAM: command.id})}"


def _sent(response: httpx.Response, to: str) -> Sent:
    """The SID Twilio gave the message, and the SMS thread when Twilio already names the sender.

    An answer without a SID is not retried and not called a failure: Twilio may have taken the
    message, and an agent told it failed would send it again.
    """
    try:
        created = response.json()
    except ValueError:
        created = None
    if not isinstance(created, dict) or not isinstance(created.get("sid"), str):
        raise accepted_without_id(response)
    sender = created.get("from")
    return Sent(
        provider_message_id=created["sid"],
        thread=reference(sender, to) if isinstance(sender, str) and sender else None,
    )
