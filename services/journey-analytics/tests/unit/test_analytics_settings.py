"""Settings that would publish a day's record for the last time before its carts can convert."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from journey_analytics.settings import AnalyticsSettings


def test_the_restated_days_cover_everything_a_days_measures_follow() -> None:
    """A day's carts convert up to `conversion_days` after it, and those orders can be cancelled
    as long again (`Windows.forward`): its record must be restated that long, or its last record
    says a cart converted whose order was cancelled after it (the API later says not)."""
    with pytest.raises(ValidationError, match="HILO_METRICS_RESTATED_DAYS"):
        AnalyticsSettings(environment="test", conversion_days=10, metrics_restated_days=10)
    with pytest.raises(ValidationError, match="HILO_METRICS_RESTATED_DAYS"):
        AnalyticsSettings(environment="test", conversation_window_hours=24 * 15)

    enough = AnalyticsSettings(environment="test", conversion_days=10, metrics_restated_days=20)
    assert enough.metrics_restated_days == 20
    default = AnalyticsSettings(environment="test")
    assert timedelta(days=default.metrics_restated_days) >= default.windows.forward
