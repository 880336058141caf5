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


def test_touches_are_kept_as_long_as_the_restated_days_read_back() -> None:
    """The hourly restatement measures the `metrics_restated_days` before yesterday, each
    reading `lookback` (30 days of attribution) before it: 46 days by default. Retention
    shorter than that would restate days with their touches deleted."""
    with pytest.raises(ValidationError, match=r"HILO_ANALYTICS_RETENTION_DAYS.*at least 46"):
        AnalyticsSettings(environment="test", analytics_retention_days=45)
    with pytest.raises(ValidationError, match="at least 76"):
        AnalyticsSettings(environment="test", analytics_retention_days=60, attribution_days=60)

    assert AnalyticsSettings(environment="test", analytics_retention_days=46).retention == (
        timedelta(days=46)
    )
    assert AnalyticsSettings(environment="test").retention == timedelta(days=400)
    with pytest.raises(ValidationError, match="less than or equal to 36500"):
        AnalyticsSettings(environment="test", analytics_retention_days=1e6)  # past the calendar
