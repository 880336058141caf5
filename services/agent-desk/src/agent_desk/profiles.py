"""The desk's read side: the customer-profile HTTP API (lookup, profile, journey, inbox).

The desk keeps no copy of customers: every page reads the profile service, which is the one
synchronised view of every channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from agent_desk.settings import DeskSettings


class ProfileUnavailable(Exception):
    """The profile API did not answer (or answered 5xx): the page says so and asks to retry."""


class ProfileApi:
    def __init__(
        self, settings: DeskSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = {}
        if settings.profile_api_key.get_secret_value():
            headers["X-API-Key"] = settings.profile_api_key.get_secret_value()
        self._http = httpx.AsyncClient(
            base_url=str(settings.profile_api_url).rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(10.0, connect=3.0),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: Any = None) -> Any | None:
        """The JSON answer, or None for 404/422 (no such customer, not an identifier)."""
        return await self._call("GET", path, params=params)

    async def _call(self, method: str, path: str, **request: Any) -> Any | None:
        """One request; every route reads the service's answers the same way: 404/422 mean
        "no such customer" (None), no answer, a 5xx or a body that is not JSON mean it is down
        (`ProfileUnavailable`, which the desk answers with 503)."""
        try:
            response = await self._http.request(method, path, **request)
        except httpx.HTTPError as exc:
            raise ProfileUnavailable(type(exc).__name__) from exc
        if response.status_code in (404, 422):
            return None
        if response.status_code >= 400:
            raise ProfileUnavailable(f"profile API answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise ProfileUnavailable("profile API answered something that is not JSON") from exc

    async def lookup(self, kind: str, value: str) -> str | None:
        """The customer holding this identifier (normalised as the channels normalise it)."""
        found = await self._call(
            "POST", "/v1/customers/lookup", json={"kind": kind, "value": value}
        )
        return None if found is None else str(found["customer_id"])

    async def by_order(self, order_id: str) -> str | None:
        found = await self._get(f"/v1/customers/by-order/{quote(order_id, safe='')}")
        return None if found is None else str(found["customer_id"])

    async def profile(self, customer_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._get(_customer(customer_id))
        return found

    async def conflicts(self, customer_id: str) -> list[dict[str, Any]]:
        return list(await self._get(f"{_customer(customer_id)}/conflicts") or [])

    async def offers(self, customer_id: str) -> list[dict[str, Any]]:
        """The promotions the customer qualifies for now, priced as a channel's quote."""
        return list(await self._get(f"{_customer(customer_id)}/offers") or [])

    async def journey(
        self,
        customer_id: str,
        *,
        cursor: str | None,
        channels: Sequence[str],
        types: Sequence[str],
        limit: int,
    ) -> dict[str, Any]:
        """A page of the timeline, newest first."""
        params: list[tuple[str, str | int]] = [("order", "desc"), ("limit", limit)]
        params += [("channel", channel) for channel in channels]
        params += [("type", kind) for kind in types]
        if cursor:
            params.append(("cursor", cursor))
        page = await self._get(f"{_customer(customer_id)}/journey", params=params)
        return page or {"entries": [], "next_cursor": None}

    async def open_conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(await self._get("/v1/conversations", params={"limit": limit}) or [])


def _customer(customer_id: str) -> str:
    """The customer's path: an id taken from a URL cannot reach another route."""
    return f"/v1/customers/{quote(customer_id, safe='')}"
