"""The Segment HTTP Tracking API, as Segment documents it (only what Hilo reads).

analytics.js, the mobile SDKs and server libraries send `identify`, `track`, `page`, `screen`,
`alias` and `group` calls, one per request or many in a `batch`. Unknown fields are allowed
(SDKs add context over time); the rules Segment enforces are enforced here too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

CallType = Literal["identify", "track", "page", "screen", "alias", "group"]

SHORT_PATHS: dict[str, CallType] = {
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "a": "alias",
    "g": "group",
}
"""analytics.js (analytics-next) posts each call to its type's first letter: `/v1/t`."""

CallPath = Literal[
    "identify", "track", "page", "screen", "alias", "group", "i", "t", "p", "s", "a", "g"
]
"""The path of a single call: its type, or the letter analytics.js uses for it."""


def _whole(value: Any) -> Any:
    """A whole float (`42.0`, a server library's) as the integer it is; anything else as it
    came, for the type to take or refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


UserId = Annotated[str | StrictInt, BeforeValidator(_whole)]
"""SDKs send ids as strings, some server libraries as numbers; never `true` (a lax int took it
for 1, and every visitor whose site sent `userId: isLoggedIn` became one customer "1")."""


def _utc_unless_told(value: Any) -> Any:
    """Segment's times are UTC (its spec): one written without its zone, as
    `datetime.utcnow().isoformat()` writes it, is read so (it was refused, and the call lost).
    Anything else as it came, for the type to take or refuse."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else value
    return value


SegmentTime = Annotated[AwareDatetime | None, BeforeValidator(_utc_unless_told)]


def _none_is_empty(value: Any) -> Any:
    """`null` for an object is none of it (some libraries send `"properties": null`)."""
    return {} if value is None else value


JsonObject = Annotated[dict[str, Any], BeforeValidator(_none_is_empty)]
"""An object of a call (`properties`, `traits`, `context`); `null` is an empty one."""


class _Segment(BaseModel):
    """Segment's camelCase names (`messageId`) map to snake_case attributes (`message_id`)."""

    model_config = ConfigDict(
        extra="allow", hide_input_in_errors=True, alias_generator=to_camel, populate_by_name=True
    )


class Device(_Segment):
    id: Any = None
    """Any JSON value: one that is no valid device id is dropped from the identifiers and
    noted, never a refusal of the call (`identifiers_of`)."""


class Context(_Segment):
    """`context`: where the call came from. `app` or `device` mark a mobile app."""

    traits: JsonObject = Field(default_factory=dict)
    device: Device | None = None
    app: dict[str, Any] | None = None
    page: dict[str, Any] | None = None
    campaign: Any = None
    """`utm_` parameters of the landing URL, as analytics.js reads them (`name` is
    `utm_campaign`). Any shape: one that is not an object is ignored, never a refusal."""


class Call(_Segment):
    """One Segment call. `type` comes from the path for single calls, from the body in a batch."""

    type: CallType
    message_id: str | None = Field(default=None, min_length=1, max_length=300)
    user_id: UserId | None = None
    anonymous_id: UserId | None = None
    previous_id: UserId | None = None
    group_id: UserId | None = None
    event: str | None = None
    """Any length: a name longer than the contract holds is cut when translated, not refused."""
    name: str | None = None
    category: str | None = None
    traits: JsonObject = Field(default_factory=dict)
    properties: JsonObject = Field(default_factory=dict)
    context: Annotated[Context, BeforeValidator(_none_is_empty)] = Field(default_factory=Context)
    timestamp: SegmentTime = None
    original_timestamp: SegmentTime = None
    sent_at: SegmentTime = None

    @model_validator(mode="after")
    def _segment_rules(self) -> Call:
        if self.type == "alias":
            if self.previous_id is None or self.user_id is None:
                raise PydanticCustomError("alias", "alias needs userId and previousId")
        elif self.user_id is None and self.anonymous_id is None:
            raise PydanticCustomError("no_user", "userId or anonymousId is required")
        if self.type == "track" and not self.event:
            raise PydanticCustomError("no_event", "track needs an event name")
        return self


class Batch(_Segment):
    """`POST /v1/batch`: many calls; `context` and `sentAt` apply to each of them."""

    batch: list[Any] = Field(min_length=1, max_length=2_500)
    """Each call is checked on its own: one that is not even an object is refused alone."""
    context: JsonObject = Field(default_factory=dict)
    sent_at: SegmentTime = None
