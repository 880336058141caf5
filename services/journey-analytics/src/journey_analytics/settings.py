"""Settings of the journey-analytics service (environment variables, prefix `HILO_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from hilo.settings import HiloSettings, SecretList
from journey_analytics.measures import Windows


class AnalyticsSettings(HiloSettings):
    service_name: str = "journey-analytics"
    http_host: str = Field(default="0.0.0.0", description="Address the HTTP API listens on.")  # noqa: S104
    http_port: int = Field(default=8096, ge=1, le=65535)
    api_keys: SecretList = Field(
        default_factory=list,
        description="Comma-separated keys that may read the measures (`X-API-Key`); the "
        "profile API's keys in compose. Required outside development.",
    )
    consumer_group: str = Field(
        default="journey-analytics", description="Kafka consumer group of the instances."
    )
    conversation_window_hours: float = Field(
        default=24.0,
        gt=0,
        description="A contact within this long of the customer's previous one continues the "
        "conversation (on any channel); later, it starts over.",
    )
    conversion_days: float = Field(
        default=7.0, gt=0, description="A web cart converts when an order follows within this."
    )
    attribution_days: float = Field(
        default=30.0, gt=0, description="The touchpoints an order is attributed to: this far back."
    )
    metrics_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often today's (and yesterday's) measures are published on "
        "`journey.metrics`, and today's to Prometheus.",
    )
    metrics_restated_days: int = Field(
        default=14,
        ge=1,
        le=92,
        description="Days before yesterday published again every hour, so events that arrive "
        "late (a store's end-of-day upload), merges and erasures reach their day's record.",
    )
    analytics_retention_days: float = Field(
        default=400.0,
        gt=0,
        le=36_500,
        description="Touches (`analytics_touches`) that happened longer ago than this are "
        "deleted (the `journey` topic keeps 365 days); measures reaching further back are "
        "refused. At least the restated days, two more and the longest window back.",
    )
    analytics_sweep_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often touches past `HILO_ANALYTICS_RETENTION_DAYS` are deleted.",
    )

    @model_validator(mode="after")
    def _restated_while_carts_convert(self) -> AnalyticsSettings:
        """A day's record is published for the last time `metrics_restated_days` after
        yesterday: everything its measures follow (`Windows.forward`: a cart's order and that
        order's cancellation, a conversation's answer) must have come by then, or that last
        record leaves out what followed and the API later says otherwise."""
        forward = self.windows.forward / timedelta(days=1)
        if self.metrics_restated_days < forward:
            raise ValueError(
                f"HILO_METRICS_RESTATED_DAYS ({self.metrics_restated_days}) must be at least "
                f"twice HILO_CONVERSION_DAYS ({self.conversion_days}) and the conversation "
                "window in days: a day's carts convert, and their orders are cancelled, that "
                "long after it"
            )
        return self

    @model_validator(mode="after")
    def _kept_while_restated(self) -> AnalyticsSettings:
        """The hourly restatement reads back `metrics_restated_days` before yesterday, and the
        measures of each day `lookback` before it: retention shorter than that would restate
        days with their touches gone, over records that had them."""
        needed = self.metrics_restated_days + 2 + self.windows.lookback / timedelta(days=1)
        if self.analytics_retention_days < needed:
            raise ValueError(
                f"HILO_ANALYTICS_RETENTION_DAYS ({self.analytics_retention_days:g}) must be at "
                f"least {needed:g}: HILO_METRICS_RESTATED_DAYS, today and yesterday, and the "
                "longest window the measures look back (attribution, conversion, conversation)"
            )
        return self

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.analytics_retention_days)

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.conversation_window_hours)

    @property
    def windows(self) -> Windows:
        days = timedelta(days=1)
        return Windows(self.window, days * self.conversion_days, days * self.attribution_days)

    def open_api_refusal(self) -> str | None:
        """Why the API must not be served without keys, or None when it may."""
        if self.api_keys:
            return None
        if self.explicitly_development:
            return None
        return (
            "HILO_API_KEYS is empty: set it, or HILO_ENVIRONMENT=development for a local run "
            "(measures are about customers: they are not served to anyone)"
        )
