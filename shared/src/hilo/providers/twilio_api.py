"""Twilio's REST API as the Twilio channels call it: its errors, and its lists read a page at a
time (the message log and the call log, read back by `hilo.catch_up`).

A list answers `{"<key>": [...], "next_page_uri": "/2010-04-01/...&PageToken=...", ...}`, newest
first; the next page's URI, relative to the API's base, carries the first page's filters.
Requests use HTTP Basic with the account SID and its auth token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import AnyHttpUrl

from hilo.catch_up import CatchUpFailed
from hilo.contract import rfc2822_time
from hilo.logs import mask_text

API_VERSION = "2010-04-01"
TIMEOUT_SECONDS = 15.0
PAGE_SIZE = 200


class TwilioListFailed(CatchUpFailed):
    """A list could not be read whole: Twilio answered an error, or something not a list."""


def twilio_reason(response: httpx.Response) -> str:
    """Twilio's own code and message (`21610: Attempt to send to unsubscribed recipient`).

    Twilio quotes the recipient in some messages (21211): numbers are masked, since the reason is
    stored in the clear with the send's state.
    """
    try:
        error = response.json()
    except ValueError:
        error = None
    if not isinstance(error, dict) or "code" not in error:
        return f"Twilio answered {response.status_code}"
    return mask_text(f"{error['code']}: {error.get('message') or 'no message'}")[:1_000]


def redacted(party: Any) -> bool:
    """Whether Twilio's Message Redaction masked the phone number (`+1415555XXXX`,
    `whatsapp:+1415555XXXX`): letters in it would otherwise read as a vanity number, someone
    else's. A softphone (`client:alice`) is no phone number, and not redacted."""
    if not isinstance(party, str):
        return False
    number = party.removeprefix("whatsapp:").strip()
    return number.startswith("+") and any(c.isalpha() for c in number)


def twilio_time(resource: dict[str, Any], *fields: str) -> datetime | None:
    """The first of `fields` that holds a time (RFC 2822, `Thu, 24 Aug 2023 05:01:45 +0000`), in
    UTC; `None` when none does."""
    for field in fields:
        value = resource.get(field)
        parsed = rfc2822_time(value, zone_less_as_utc=True) if isinstance(value, str) else None
        if parsed is not None:
            return parsed.astimezone(UTC)
    return None


class TwilioLists:
    """One account's list resources (`Messages`, `Calls`), read a page at a time."""

    def __init__(
        self,
        *,
        api_url: AnyHttpUrl | str,
        account_sid: str,
        auth_token: str,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.base = str(api_url).rstrip("/")
        self.page_size = page_size
        self.account_sid = account_sid
        self._client = httpx.AsyncClient(
            base_url=self.base,
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=TIMEOUT_SECONDS,
        )

    def path(self, resource: str) -> str:
        """`/2010-04-01/Accounts/{sid}/{resource}.json`."""
        return f"/{API_VERSION}/Accounts/{self.account_sid}/{resource}.json"

    async def pages(
        self,
        url: str,
        key: str,
        params: dict[str, Any],
        *,
        last: Callable[[list[dict[str, Any]]], bool] = lambda _items: False,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's items under `key`, following `next_page_uri` until there is none, or
        until `last(items)` says the page just given was the last one needed."""
        query: dict[str, Any] | None = {"PageSize": self.page_size, **params}
        while url:
            page = await self.get(url, query)
            items = [item for item in page.get(key) or [] if isinstance(item, dict)]
            yield items
            next_page = page.get("next_page_uri")
            url = next_page if isinstance(next_page, str) and not last(items) else ""
            query = None  # the next page's URI carries the filters

    async def get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One resource or page; `TwilioListFailed` for an error or a body not an object."""
        response = await self._client.get(url, params=params)
        if response.status_code != 200:
            raise TwilioListFailed(f"Twilio answered {twilio_reason(response)}")
        try:
            page = response.json()
        except ValueError:
            page = None
        if not isinstance(page, dict):
            raise TwilioListFailed("Twilio answered something else than a JSON object")
        return page

    async def close(self) -> None:
        await self._client.aclose()


Translator = TypeVar("Translator")


class TwilioLog(Generic[Translator]):
    """What a channel's read-back of one of Twilio's logs holds: the account's lists, the
    numbers whose webhooks point at the channel, and how the channel translates."""

    def __init__(self, lists: TwilioLists, numbers: Sequence[str], translate: Translator) -> None:
        self._lists = lists
        self.numbers = tuple(numbers)
        self._translate = translate

    async def close(self) -> None:
        await self._lists.close()
