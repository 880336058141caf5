"""Customer facts for quotes, from the customer-profile API.

Offers keeps no copy of customers: a quote for a known customer reads the profile service (the
one synchronised view of every channel), and derives the facts the same way every other service
does (`hilo.offers.facts`).
"""

from __future__ import annotations

from datetime import datetime

import httpx
from pydantic import ValidationError

from hilo.contract import Identifiers
from hilo.offers.facts import facts_from_profile
from hilo.offers.model import CustomerFacts
from hilo.profile_client import ProfileClient, ProfileUnavailable
from offers.settings import OffersSettings

__all__ = ["CustomerNotFound", "CustomerProfiles", "ProfileUnavailable"]


class CustomerNotFound(Exception):
    """The customer id asked for is not one the profile service knows."""


class CustomerProfiles(ProfileClient):
    """The shared profile client, answering with the facts quotes need."""

    def __init__(
        self, settings: OffersSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(
            str(settings.profile_api_url),
            settings.profile_api_key.get_secret_value(),
            timeout=5.0,
            transport=transport,
        )

    async def facts(
        self, *, customer_id: str | None, identifiers: Identifiers | None, at: datetime
    ) -> CustomerFacts:
        """The facts of the customer named by id, else by the first identifier a profile holds
        (strongest first); anonymous (no facts) when neither names anyone.

        Raises `CustomerNotFound` for an id the profile service does not know.
        """
        if customer_id is not None:
            profile = await self.profile(customer_id)
            if profile is None:
                raise CustomerNotFound(customer_id)
        else:
            found = None if identifiers is None else await self._lookup(identifiers)
            profile = None if found is None else await self.profile(found)
            if profile is None:
                return CustomerFacts()
        try:
            return facts_from_profile(profile, at)
        except ValidationError as exc:
            raise ProfileUnavailable("the profile API answered something else") from exc

    async def _lookup(self, identifiers: Identifiers) -> str | None:
        for kind, value in identifiers.pairs():
            found = await self.lookup(kind.value, value)
            if found is not None:
                return found
        return None
