"""Cross-service tests: whole journeys through the real broker and database.

Fixtures for the infrastructure come from the `hilo.testkit` pytest plugin.
"""

from __future__ import annotations

from typing import Any

import pytest

FUZZ_PROPERTY = "hilo_fuzz_totals"
_fuzz_totals: dict[str, dict[str, Any]] = {}


@pytest.fixture
def fuzz_totals(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Inputs tried per route and answers by status class, printed at the end of the run. They
    travel in the test's report, which is how they reach the summary from a test worker
    (`make test` runs two)."""
    totals: dict[str, dict[str, Any]] = {}
    request.node.user_properties.append((FUZZ_PROPERTY, totals))
    return totals


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if name == FUZZ_PROPERTY and isinstance(value, dict):
                _fuzz_totals.update(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    totals = _fuzz_totals
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
