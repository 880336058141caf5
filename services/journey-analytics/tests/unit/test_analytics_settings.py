"""Settings that would publish a day's record for the last time before its carts can convert."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from journey_analytics.settings import AnalyticsSettings


def test_the_restated_days_cover_the_conversion_window() -> None:
    """A day's carts convert up to `conversion_days` after it: its record must be restated
    that long, or its last record leaves out the late conversions."""
    with pytest.raises(ValidationError, match="HILO_METRICS_RESTATED_DAYS"):
        AnalyticsSettings(conversion_days=10, metrics_restated_days=7)

    enough = AnalyticsSettings(conversion_days=10, metrics_restated_days=10)
    assert enough.metrics_restated_days == 10
    assert AnalyticsSettings().metrics_restated_days >= AnalyticsSettings().conversion_days
