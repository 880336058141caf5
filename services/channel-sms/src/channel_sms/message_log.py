"""Twilio's message log, read back for the SMS its webhooks could not bring (`hilo.catch_up`).

`GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=<number>&DateSent>=<day>` lists a
number's messages newest first, a page at a time (`next_page_uri`); the date filter is by day,
so messages before the time asked for are dropped here, and paging stops at the first one. Only
`direction: inbound` messages are the customers'; an MMS's attachments are listed at its
`subresource_uris.media`, and served at each one's `uri` without `.json`, the URL its webhook
gives. Each message becomes the webhook form Twilio would have posted (`InboundMessage`), so a
message read back is translated exactly as its webhook is, under the same event id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import AnyHttpUrl, ValidationError

from channel_sms.sending import API_VERSION, TIMEOUT_SECONDS, twilio_reason
from channel_sms.twilio import InboundMessage
from hilo.catch_up import CatchUpFailed
from hilo.contract import Interaction

PAGE_SIZE = 200

Translate = Callable[[InboundMessage, datetime], list[Interaction]]
"""A message read back, and when Twilio got it, as the interactions its webhook would make."""


class TwilioMessageLog:
    """Inbound messages to the given numbers, since a time, from Twilio's Messages API: the SMS
    channel's `hilo.catch_up.ProviderLog`."""

    def __init__(
        self,
        *,
        api_url: AnyHttpUrl | str,
        account_sid: str,
        auth_token: str,
        numbers: Sequence[str],
        translate: Translate,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._base = str(api_url).rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self._base,
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=TIMEOUT_SECONDS,
        )
        self._path = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
        self.numbers = tuple(numbers)
        self._translate = translate
        self._page_size = page_size

    async def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        """The interactions of each page of inbound messages since `since`."""
        async for page in self.received_since(since):
            yield [
                interaction
                for message, sent_at in page
                for interaction in self._translate(message, sent_at)
            ]

    async def received_since(
        self, since: datetime
    ) -> AsyncIterator[list[tuple[InboundMessage, datetime]]]:
        """Each page's inbound messages sent at `since` or later, with when Twilio got them."""
        for number in self.numbers:
            params: dict[str, Any] | None = {
                "To": number,
                "DateSent>": since.astimezone(UTC).date().isoformat(),
                "PageSize": self._page_size,
            }
            url = self._path
            while url:
                page = await self._get(url, params)
                found, older = await self._inbound(page.get("messages") or [], since)
                yield found
                next_page = page.get("next_page_uri")
                url = "" if older or not isinstance(next_page, str) else next_page
                params = None  # the next page's URI carries the filters

    async def _inbound(
        self, messages: list[dict[str, Any]], since: datetime
    ) -> tuple[list[tuple[InboundMessage, datetime]], bool]:
        """The page's inbound messages from `since` on, and whether it reached older ones."""
        found: list[tuple[InboundMessage, datetime]] = []
        older = False
        for message in messages:
            sent = _sent_at(message)
            if sent is not None and sent < since:
                older = True
                continue
            if message.get("direction") != "inbound":
                continue
            found.append((await self._as_webhook(message), sent or datetime.now(UTC)))
        return found, older

    async def _as_webhook(self, message: dict[str, Any]) -> InboundMessage:
        """The form Twilio's webhook posts for this message, its media URLs included."""
        form: dict[str, Any] = {
            "MessageSid": message.get("sid"),
            "AccountSid": message.get("account_sid"),
            "From": message.get("from"),
            "To": message.get("to"),
            "Body": message.get("body") or "",
            "NumMedia": 0,
        }
        if int(message.get("num_media") or 0):
            media = await self._media(message)
            form["NumMedia"] = len(media)
            for n, (url, content_type) in enumerate(media):
                form[f"MediaUrl{n}"] = url
                form[f"MediaContentType{n}"] = content_type
        try:
            return InboundMessage.model_validate(form)
        except ValidationError as exc:
            raise CatchUpFailed(f"Twilio listed a message Hilo cannot read: {exc}") from None

    async def _media(self, message: dict[str, Any]) -> list[tuple[str, str]]:
        media_list = (message.get("subresource_uris") or {}).get("media")
        if not isinstance(media_list, str):
            return []
        listed = (await self._get(media_list, None)).get("media_list") or []
        return [
            (self._base + str(item["uri"]).removesuffix(".json"), str(item.get("content_type")))
            for item in listed[:10]
            if isinstance(item, dict) and isinstance(item.get("uri"), str)
        ]

    async def _get(self, url: str, params: dict[str, Any] | None) -> dict[str, Any]:
        response = await self._client.get(url, params=params)
        if response.status_code != 200:
            raise CatchUpFailed(f"Twilio's message log answered {twilio_reason(response)}")
        try:
            page = response.json()
        except ValueError:
            page = None
        if not isinstance(page, dict):
            raise CatchUpFailed("Twilio's message log answered something else than an object")
        return page

    async def close(self) -> None:
        await self._client.aclose()


def _sent_at(message: dict[str, Any]) -> datetime | None:
    """When Twilio received the message (RFC 2822, `Thu, 24 Aug 2023 05:01:45 +0000`)."""
    for field in ("date_sent", "date_created"):
        value = message.get(field)
        if isinstance(value, str) and value:
            try:
                return parsedate_to_datetime(value).astimezone(UTC)
            except (TypeError, ValueError):
                continue
    return None
