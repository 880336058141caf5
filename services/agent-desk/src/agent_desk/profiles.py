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
from hilo.profile_client import (
    ProfileClient,
    ProfileRequestRefused,
    ProfileUnavailable,
    customer_path,
)

__all__ = ["ProfileApi", "ProfileRequestRefused", "ProfileUnavailable"]


class ProfileApi(ProfileClient):
    """What the desk's pages read: the shared client plus the timeline, inbox and panels."""

    def __init__(
        self, settings: DeskSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(
            str(settings.profile_api_url),
            settings.profile_api_key.get_secret_value(),
            transport=transport,
        )

    async def _get(self, path: str, params: Any = None) -> Any | None:
        return await self.call("GET", path, params=params)

    async def by_order(self, order_id: str) -> str | None:
        found = await self._get(f"/v1/customers/by-order/{quote(order_id, safe='')}")
        return None if found is None else str(found["customer_id"])

    async def conflicts(self, customer_id: str) -> list[dict[str, Any]]:
        return list(await self._get(f"{customer_path(customer_id)}/conflicts") or [])

    async def offers(self, customer_id: str) -> list[dict[str, Any]] | None:
        """The promotions the customer qualifies for now, priced as a channel's quote; None
        while the profile service cannot say (its offers not loaded yet, or it is away): the
        page shows them as unknown, not as none, and the rest of it all the same."""
        try:
            return list(await self._get(f"{customer_path(customer_id)}/offers") or [])
        except ProfileUnavailable:
            return None

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
        page = await self._get(f"{customer_path(customer_id)}/journey", params=params)
        return page or {"entries": [], "next_cursor": None}

    async def open_conversations(
        self, limit: int = 50, *, awaiting: bool = False, waiting_from: str | None = None
    ) -> list[dict[str, Any]]:
        """The inbox; with `awaiting`, the customers who wait for a reply, the longest first
        (from `waiting_from` on: the next page)."""
        params: dict[str, str | int] = {"limit": limit, "awaiting": str(awaiting).lower()}
        if waiting_from is not None:
            params["waiting_from"] = waiting_from
        found = await self.call("GET", "/v1/conversations", params=params, always_there=True)
        return list(found or [])
