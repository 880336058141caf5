"""Cross-service tests: whole journeys through the real broker and database.

Fixtures for the infrastructure come from the `hilo.testkit` pytest plugin.
"""

from __future__ import annotations

from typing import Any

import pytest

FUZZ_TOTALS = pytest.StashKey[dict[str, dict[str, Any]]]()


@pytest.fixture(scope="session")
def fuzz_totals(pytestconfig: pytest.Config) -> dict[str, dict[str, Any]]:
    """Inputs tried per route and answers by status class, printed at the end of the run."""
    return pytestconfig.stash.setdefault(FUZZ_TOTALS, {})


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    totals = config.stash.get(FUZZ_TOTALS, {})
    if not totals:
        return
    terminalreporter.section("channel fuzzing: inputs tried per route")
    for route, counts in sorted(totals.items()):
        answers = ", ".join(
            f"{key} {value}" for key, value in sorted(counts.items()) if key != "tried"
        )
        terminalreporter.write_line(f"{route:40} {counts['tried']:6} tried: {answers}")
    tried = sum(counts["tried"] for counts in totals.values())
    failed = sum(counts.get("5xx", 0) for counts in totals.values())
    terminalreporter.write_line(f"{'total':40} {tried:6} tried, {failed} answered 5xx")
