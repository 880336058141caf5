"""What a channel changed to keep an event whose input was partly unusable.

Bad input never loses the good part: an invalid secondary identifier is dropped and an impossible
event time replaced, and the event says so. An adjustment names the field and the reason, never
the value, which may be personal data.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

MAX_ADJUSTMENTS: Final = 50

IN_THE_FUTURE: Final = "in_the_future"
"""`occurred_at` was later than the receipt time plus `HILO_MAX_FUTURE_SKEW_SECONDS`."""
TOO_OLD: Final = "too_old"
"""`occurred_at` was before `EARLIEST_EVENT_TIME`: a zero, default or garbage clock value."""
UNREADABLE: Final = "unreadable"
"""The provider's time could not be read as a date."""
TRUNCATED: Final = "truncated"
"""A text or list was longer than the contract holds and was cut to its maximum."""
NOT_TYPED: Final = "not_typed"
"""An event of a kind the contract types (an order, a cart) could not be read as that kind (a
price written `59,90`, say) and was kept as a `custom` event: it counts as no order."""
LOOKS_PERSONAL: Final = "looks_personal"
"""A field published in the clear for analytics (a page view's `campaign`) held what looks like
an email address, and was left out: the rest of the event is kept."""


class Adjustment(BaseModel):
    """One field of the interaction that differs from what the provider sent, and why."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )

    field: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$",
        description="Path of the adjusted field in the interaction.",
        examples=["identifiers.phone", "occurred_at"],
    )
    reason: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Why: `invalid_<identifier kind>` (the identifier was dropped), "
        "`in_the_future`, `too_old` or `unreadable` (`occurred_at` became the receipt time), "
        "`truncated` (cut to the contract's maximum length), `not_typed` (on `payload`: an "
        "event of a typed kind, an order say, that could not be read as one, kept as `custom`), "
        "`looks_personal` (a field kept in the clear held an email address and was left out).",
        examples=["invalid_phone", "in_the_future"],
    )


def max_length(model: type[BaseModel], field: str) -> int:
    """The contract's own limit of a field, so a channel cutting to it cannot drift from it."""
    rules = model.model_fields[field].metadata
    return next(int(rule.max_length) for rule in rules if hasattr(rule, "max_length"))


class Truncations:
    """Free text cut to the contract's limits rather than refused: the rest of the event is worth
    keeping. Each field cut is noted once (`adjustments`), by path, never by value."""

    def __init__(self) -> None:
        self.adjustments: list[Adjustment] = []

    def clip(self, value: str | None, limit: int, field: str) -> str | None:
        if value is None or len(value) <= limit:
            return value
        self.note(field)
        return value[:limit]

    def note(self, field: str, reason: str = TRUNCATED) -> None:
        """Say that `field` was cut (a list shortened, say), or changed for another `reason`,
        once however often it is said."""
        if not any(adjustment.field == field for adjustment in self.adjustments):
            self.adjustments.append(Adjustment(field=field, reason=reason))
