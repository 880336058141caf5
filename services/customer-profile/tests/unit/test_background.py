"""The background sweep says how much it left unfinished, for operators to alert on."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from pymongo.errors import ServerSelectionTimeoutError

from customer_profile.service.background import keep_finishing


def unfinished(what: str) -> float | None:
    return REGISTRY.get_sample_value("hilo_profile_unfinished", {"what": what})


async def test_the_gauge_follows_what_each_sweep_left_and_keeps_it_while_mongodb_is_away() -> None:
    lefts: list[int | Exception] = [2, ServerSelectionTimeoutError("away"), 0]
    seen: list[float | None] = []

    async def finish() -> int:
        seen.append(unfinished("tests"))
        left = lefts.pop(0)
        if isinstance(left, Exception):
            raise left
        if not lefts:
            asyncio.get_running_loop().call_soon(sweeping.cancel)
        return left

    sweeping = asyncio.ensure_future(keep_finishing(finish, 0, "tests"))
    with pytest.raises(asyncio.CancelledError):
        await sweeping

    assert seen[1:] == [2, 2], "set after a sweep, kept through one MongoDB could not answer"
    assert unfinished("tests") == 0
