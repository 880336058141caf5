"""Fixtures: the customer-profile service in-process, on the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from customer_profile.testing import RunningProfileService, running_profile_service
from hilo.settings import HiloSettings


@pytest.fixture
async def profile_service(
    settings: HiloSettings, topics: list[str]
) -> AsyncIterator[RunningProfileService]:
    async with running_profile_service(settings) as running:
        yield running
