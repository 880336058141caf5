"""Twilio's message log, read back for the SMS its webhooks could not bring (`hilo.catch_up`).

`GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=<number>&DateSent>=<day>` lists a
number's messages newest first; the date filter is by day, so messages before the time asked
for are dropped here, and paging stops at the first page that reaches them. Only
`direction: inbound` messages are the customers'. An MMS's attachments are listed at its
`subresource_uris.media`, each served at its `uri` without `.json`: the URL its webhook gives.
Each message becomes the form Twilio's webhook would have posted (`InboundMessage`), so a
message read back is translated as its webhook is, under the same event id.

The messages sent *from* the numbers (`From=<number>`, `direction: outbound-…`) bring back their
delivery statuses: each message whose status last changed since the time asked for becomes the
status callback Twilio would have posted for that change (`StatusCallback`, the time being its
`date_updated`). The log holds a message's last status only, so a `sent` it went through on its
way to `delivered` is not read back; and `DateSent>` lists sent messages, so a `failed` one,
never sent, is probably not listed. Which of those messages the channel sent, and so had status
callbacks for, is for `hilo.channel` to say: the log lists another tool's messages from the same
number too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from channel_sms.translate import CHANNEL
from channel_sms.twilio import InboundMessage, StatusCallback
from hilo.catch_up import left_out
from hilo.contract import Interaction
from hilo.providers.twilio_api import TwilioLog, redacted, twilio_time

LATEST_STATUS = timedelta(hours=24)
"""How long after it was sent a message's last status is looked for: Twilio keeps a message
queued 10 hours at most (its longest `ValidityPeriod`), and carriers report a delivery within
hours. A status that changed later than this after sending is not read back."""


@dataclass(frozen=True)
class Translators:
    """How the channel translates its webhooks, for what is read back in their place."""

    incoming: Callable[[InboundMessage, datetime], list[Interaction]]
    """A message, and when Twilio got it, as the interactions its webhook would make."""
    status: Callable[[StatusCallback, datetime], Interaction | None] | None
    """A message's status, and when it changed, as the interaction its callback would make;
    `None` when the channel sends nothing (replies not configured): no status is its own."""


class TwilioMessageLog(TwilioLog[Translators]):
    """Incoming messages to the given numbers, and the statuses of messages sent from them,
    since a time: the SMS channel's `hilo.catch_up.ProviderLog`."""

    async def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        """The interactions of each page of incoming messages since `since`, then of each page
        of statuses changed since then."""
        async for page in self.received_since(since):
            yield [
                interaction
                for message, sent_at in page
                for interaction in self._translated(message, sent_at)
            ]
        if self._translate.status is not None:
            async for statuses in self.statuses_since(since):
                yield statuses

    def _translated(self, message: InboundMessage, sent_at: datetime) -> list[Interaction]:
        """As its webhook would have been; one its webhook would have had refused with 422 (a
        `From` that is no phone number) is left out, as the webhook would have left it."""
        try:
            return self._translate.incoming(message, sent_at)
        except ValueError:
            left_out(CHANNEL, "unreadable")
            return []

    async def statuses_since(self, since: datetime) -> AsyncIterator[list[Interaction]]:
        """Each page's statuses of messages sent from the numbers that changed at `since` or
        later (of messages sent at most `LATEST_STATUS` before it), as their callbacks would
        have made them."""
        async for items in self._pages("From", since - LATEST_STATUS, _sent_on):
            yield [
                interaction
                for item in items
                if str(item.get("direction")).startswith("outbound")
                and not _older(_changed_at(item), since)
                for interaction in self._status(item)
            ]

    def _status(self, message: dict[str, Any]) -> list[Interaction]:
        """The message's last status as its callback would have been published (nothing for
        one not recorded, as `queued`); one its callback would have had refused with 422 is
        left out and counted. One to a number Twilio redacted is left out uncounted: most are
        another tool's, whose statuses were never this channel's (`hilo.channel`)."""
        status = self._translate.status
        if status is None or redacted(message.get("to")):
            return []
        error = message.get("error_code")
        form = {
            "MessageSid": message.get("sid"),
            "MessageStatus": message.get("status"),
            "From": message.get("from"),
            "To": message.get("to"),
            "ErrorCode": str(error) if error else None,
        }
        try:
            callback = StatusCallback.model_validate(form)
            interaction = status(callback, _changed_at(message) or _now())
        except ValueError:  # a pydantic ValidationError too
            left_out(CHANNEL, "unreadable")
            return []
        return [interaction] if interaction else []

    async def received_since(
        self, since: datetime
    ) -> AsyncIterator[list[tuple[InboundMessage, datetime]]]:
        """Each page's incoming messages sent at `since` or later, with when Twilio got them."""
        async for items in self._pages("To", since, _sent_at):
            page = []
            for item in items:
                sent_at = _sent_at(item)
                if item.get("direction") != "inbound" or _older(sent_at, since):
                    continue
                message = await self._as_webhook(item)
                if message is not None:
                    page.append((message, sent_at or _now()))
            yield page

    async def _pages(
        self, side: str, since: datetime, sent: Callable[[dict[str, Any]], datetime | None]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of the messages to (`side` `To`) or from (`From`) each number, sent on the
        day of `since` or later, newest first; paging stops at the first page that reaches a
        message `sent` before `since`."""
        day = since.astimezone(UTC).date().isoformat()
        for number in self.numbers:
            pages = self._lists.pages(
                self._lists.path("Messages"),
                "messages",
                {side: number, "DateSent>": day},
                last=lambda items: any(_older(sent(item), since) for item in items),
            )
            async for items in pages:
                yield items

    async def _as_webhook(self, message: dict[str, Any]) -> InboundMessage | None:
        """The form Twilio's webhook posts for this message, its media URLs included; `None`
        (counted) for one Twilio redacted, or one its webhook would have had refused."""
        if redacted(message.get("from")):
            left_out(CHANNEL, "redacted")
            return None
        form: dict[str, Any] = {
            "MessageSid": message.get("sid"),
            "AccountSid": message.get("account_sid"),
            "From": message.get("from"),
            "To": message.get("to"),
            "Body": message.get("body") or "",
            "NumMedia": 0,
        }
        if _count(message.get("num_media")):
            media = await self._media(message)
            form["NumMedia"] = len(media)
            for n, (url, content_type) in enumerate(media):
                form[f"MediaUrl{n}"] = url
                form[f"MediaContentType{n}"] = content_type
        try:
            return InboundMessage.model_validate(form)
        except ValidationError:
            left_out(CHANNEL, "unreadable")
            return None

    async def _media(self, message: dict[str, Any]) -> list[tuple[str, str]]:
        """(URL, content type) of each attachment, as the webhook's `MediaUrlN` names them."""
        media_list = (message.get("subresource_uris") or {}).get("media")
        if not isinstance(media_list, str):
            return []
        listed = (await self._lists.get(media_list)).get("media_list") or []
        return [
            (self._lists.base + item["uri"].removesuffix(".json"), item.get("content_type") or "")
            for item in listed[:10]
            if isinstance(item, dict) and isinstance(item.get("uri"), str)
        ]


def _sent_at(message: dict[str, Any]) -> datetime | None:
    """When Twilio got the message."""
    return twilio_time(message, "date_sent", "date_created")


def _sent_on(message: dict[str, Any]) -> datetime | None:
    """When Twilio sent the message; `None` before (or without: a `failed` one) sending."""
    return twilio_time(message, "date_sent")


def _changed_at(message: dict[str, Any]) -> datetime | None:
    """When the message's status last changed."""
    return twilio_time(message, "date_updated", "date_sent", "date_created")


def _older(sent_at: datetime | None, since: datetime) -> bool:
    return sent_at is not None and sent_at < since


def _now() -> datetime:
    return datetime.now(UTC)


def _count(value: Any) -> int:
    """Twilio writes counts as strings (`"num_media": "1"`)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
