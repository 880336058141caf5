"""Right of access and right to be forgotten."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog

from customer_profile.adapters.store import ProfileStore
from customer_profile.service.ports import StoredProfile
from hilo.kafka import KafkaPublisher
from hilo.topics import Topic

log = structlog.get_logger(__name__)


class Privacy:
    def __init__(self, store: ProfileStore, publisher: KafkaPublisher | None) -> None:
        self._store = store
        self._publisher = publisher

    async def export(self, profile: StoredProfile) -> dict[str, Any]:
        """Everything Hilo holds about the customer, in one document."""
        entries = await self._store.entries(profile.aliases)
        return {
            "exported_at": datetime.now(UTC).isoformat(),
            "customer_id": profile.customer_id,
            "merged_from": profile.merged_from,
            "identities": await self._store.identities_of(profile.aliases),
            "profile": profile.view.model_dump(mode="json") if profile.view else None,
            "conflicts": await self._store.conflicts_of(profile.aliases),
            "journey": [
                entry.model_copy(update={"customer_id": profile.customer_id}).model_dump(
                    mode="json"
                )
                for entry in entries
            ],
        }

    async def erase(self, profile: StoredProfile) -> dict[str, Any]:
        """Delete the customer and its aliases, then tombstone them on the compacted topic.

        Later events with the same identifiers start a fresh profile. Raw interactions stay on
        the `interactions` topic until its retention expires (see docs/operations).
        """
        deleted = await self._store.erase(profile)
        if self._publisher is not None:
            publish = self._publisher.publish
            await asyncio.gather(
                *(publish(Topic.PROFILES, None, key=alias.encode()) for alias in profile.aliases)
            )
        log.info("customer_erased", customer_id=profile.customer_id, **deleted)
        return {
            "customer_id": profile.customer_id,
            "erased": deleted,
            "tombstoned": profile.aliases,
        }
