"""Tasks that misbehave on purpose, for tests of what must not hang."""

from __future__ import annotations

import asyncio


async def deaf_to_cancellation(release: asyncio.Event) -> None:
    """Swallow every cancellation until `release` is set: a background task written wrong."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue
