"""Running the offers service in-process, for its own tests and cross-service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from offers.app import OffersService, PublisherFactory, create_service
from offers.settings import OffersSettings

API_KEY = "offers-test-key"
"""A quote key: what a channel holds."""
ADMIN_API_KEY = "offers-test-admin-key"
"""An admin key: what a merchandiser's tool holds."""


def offers_settings(settings: HiloSettings, **overrides: object) -> OffersSettings:
    values: dict[str, Any] = {
        **settings.model_dump(),
        "api_keys": [API_KEY],
        "admin_api_keys": [ADMIN_API_KEY],
        "offers_outbox_seconds": 0.3,
    }
    values.update(overrides)
    return OffersSettings.model_validate(values)


@dataclass
class RunningOffers:
    service: OffersService
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, expect: int = 200, **request: Any) -> Any:
        """One request with the key its route wants (a quote key for quotes and a customer's
        offers, an admin key for the rest), asserting its status; the JSON answer."""
        headers = {"X-API-Key": key_for(path), **request.pop("headers", {})}
        response = await self.http.request(method, path, headers=headers, **request)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json()

    async def versions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.call("GET", "/v1/versions")
        return found

    async def caught_up_to(self, version: int, timeout: float = 20.0) -> None:
        """Until this service's own book shows `version`."""

        async def current() -> int:
            return self.service.follower.book.version

        await eventually(
            current, until=lambda seen: seen >= version, timeout=timeout, interval=0.05
        )


def key_for(path: str) -> str:
    """The test key a route of the offers API accepts."""
    quoting = path.startswith(("/v1/quotes", "/v1/customers/"))
    return API_KEY if quoting else ADMIN_API_KEY  # the catalogue takes either


@asynccontextmanager
async def running_offers(
    settings: HiloSettings,
    *,
    publisher: PublisherFactory | None = None,
    profile_transport: httpx.AsyncBaseTransport | None = None,
    **overrides: object,
) -> AsyncIterator[RunningOffers]:
    """The service with its lifespan (topics, producer, follower, outbox loop), an HTTP client
    holding an API key, and the book read to its end."""
    extra: dict[str, Any] = {} if publisher is None else {"publisher": publisher}
    service = create_service(
        offers_settings(settings, **overrides), profile_transport=profile_transport, **extra
    )
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://offers") as http:
            running = RunningOffers(service, http)

            async def ready() -> bool:
                return service.follower.ready.is_set()

            await eventually(ready, timeout=30, interval=0.05)
            yield running
