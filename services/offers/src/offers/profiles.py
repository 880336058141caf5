"""Customer facts for quotes, from the customer-profile API.

Offers keeps no copy of customers: a quote for a known customer reads the profile service (the
one synchronised view of every channel), and derives the facts the same way every other service
does (`hilo.offers.facts`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from hilo.contract import Identifiers
from hilo.offers.facts import facts_from_profile
from hilo.offers.model import CustomerFacts
from offers.settings import OffersSettings


class ProfileUnavailable(Exception):
    """The profile API did not answer usably: a quote would guess the customer, so none is
    given (503)."""


class CustomerNotFound(Exception):
    """The customer id asked for is not one the profile service knows."""


class CustomerProfiles:
    def __init__(
        self, settings: OffersSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = {}
        if key := settings.profile_api_key.get_secret_value():
            headers["X-API-Key"] = key
        self._http = httpx.AsyncClient(
            base_url=str(settings.profile_api_url).rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(5.0, connect=2.0),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def facts(
        self, *, customer_id: str | None, identifiers: Identifiers | None, at: datetime
    ) -> CustomerFacts:
        """The facts of the customer named by id, else by the first identifier a profile holds
        (strongest first); anonymous (no facts) when neither names anyone.

        Raises `CustomerNotFound` for an id the profile service does not know.
        """
        if customer_id is not None:
            profile = await self._call("GET", _customer(customer_id))
            if profile is None:
                raise CustomerNotFound(customer_id)
        else:
            found = None if identifiers is None else await self._lookup(identifiers)
            profile = None if found is None else await self._call("GET", _customer(found))
            if profile is None:
                return CustomerFacts()
        try:
            return facts_from_profile(profile, at)
        except ValidationError as exc:
            raise ProfileUnavailable("the profile API answered something else") from exc

    async def _lookup(self, identifiers: Identifiers) -> str | None:
        for kind, value in identifiers.pairs():
            found = await self._call(
                "POST", "/v1/customers/lookup", json={"kind": kind.value, "value": value}
            )
            if found is not None:
                return str(found["customer_id"])
        return None

    async def _call(self, method: str, path: str, **request: Any) -> Any | None:
        """The JSON answer, None for 404/422 (nobody), `ProfileUnavailable` for anything else."""
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


def _customer(customer_id: str) -> str:
    """The customer's path: an id taken from a request cannot reach another route."""
    return f"/v1/customers/{quote(customer_id, safe='')}"
