"""Reading the plan a MongoDB-wire server chose for a query (`explain`), to check that a query
is served by an index on whichever server the tests run on."""

from __future__ import annotations

from typing import Any


def plan_stages(plan: Any) -> set[str]:
    """Every stage name in an explain plan tree (`IXSCAN`, `COLLSCAN`, `FETCH`, ...)."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            found.add(plan["stage"])
        for value in plan.values():
            found |= plan_stages(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= plan_stages(item)
    return found


def winning_stages(explained: Any) -> set[str]:
    """The stages of the plan the server chose, from `explain`'s answer."""
    return plan_stages(explained.get("queryPlanner", {}).get("winningPlan", explained))
