"""Omnichannel measures over whole journeys: pure functions of the touches in a time range.

Definitions (what the numbers mean):

- A **contact** is a message or a call, either way. A customer's inbound contact more than the
  conversation window after their previous contact (either way) starts a new **conversation**;
  anything closer belongs to the open one, whatever the channel. An outbound contact after the
  window opens none (a campaign, a reminder).
- A **channel switch** is an inbound contact on another channel than the customer's previous
  inbound contact. If it joined the open conversation it **continued** it; if it started a new
  one, the customer **restarted**. Continuity rate = continued / (continued + restarted).
- **First-contact resolution**: conversations with exactly one inbound contact / conversations.
- **First response**: the first outbound contact after a conversation's first inbound one;
  **resolution time**: its first inbound contact to its last contact (conversations with more
  than one contact).
- **CSAT** (`metric: csat`): the average score; by channel: the survey's `about_channel`, else the
  channel of the customer's last contact before it; by **channel path**: the channels, in order,
  of the conversation it answers (its contacts before the survey, the last within the window),
  e.g. `voice>whatsapp`. **NPS**: % of
  9-10 minus % of 0-6.
- **Cross-channel conversion**: a web cart (first web cart entry per cart id, else per customer)
  converts when the customer's next order within the conversion window is on another channel
  (store, phone): web carts converted elsewhere / web carts.
- **Attribution** of each order to the customer's touches (any entry but an order) in the
  attribution window before it: first touch (all credit to the first), last touch (to the last),
  linear (1/n to each of n).

Everything is recomputed from the stored touches, so a redelivered record (stored once by its
id) or a restart from the topics gives the same numbers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from hilo.contract.schema import published

MEASURES_VERSION: Final = 1
CONTACTS = frozenset({"message", "call"})


@dataclass(frozen=True)
class Touch:
    """The fields of a journey entry the measures use: all in the clear on `journey`."""

    id: str
    customer_id: str
    occurred_at: datetime
    channel: str
    kind: str
    direction: str | None = None
    cart_id: str | None = None
    metric: str | None = None
    score: int | None = None
    about_channel: str | None = None

    @property
    def inbound(self) -> bool:
        return self.kind in CONTACTS and self.direction != "outbound"

    @property
    def outbound(self) -> bool:
        return self.kind in CONTACTS and self.direction == "outbound"


def touch_of(entry: dict[str, Any]) -> Touch:
    """A `journey` record (sealed or open: only clear fields are read) as a touch."""
    payload = entry.get("payload") or {}
    return Touch(
        id=entry["id"],
        customer_id=entry["customer_id"],
        occurred_at=datetime.fromisoformat(entry["occurred_at"]),
        channel=entry["channel"],
        kind=entry["type"],
        direction=payload.get("direction"),
        cart_id=payload.get("cart_id"),
        metric=payload.get("metric"),
        score=payload.get("score"),
        about_channel=payload.get("about_channel"),
    )


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conversations(_Part):
    conversations: int = 0
    channel_switches: int = 0
    continued: int = 0
    restarted: int = 0
    continuity_rate: float | None = Field(description="continued / (continued + restarted)")
    first_contact_resolution_rate: float | None
    mean_first_response_seconds: float | None
    mean_resolution_seconds: float | None


class Satisfaction(_Part):
    csat_responses: int = 0
    csat_average: float | None
    csat_by_channel: dict[str, float] = Field(default_factory=dict)
    csat_by_channel_path: dict[str, float] = Field(default_factory=dict)
    nps_responses: int = 0
    nps: float | None


class Conversion(_Part):
    web_carts: int = 0
    converted_elsewhere: int = 0
    rate: float | None
    by_order_channel: dict[str, int] = Field(default_factory=dict)


class Attribution(_Part):
    orders: int = 0
    first_touch: dict[str, int] = Field(default_factory=dict)
    last_touch: dict[str, int] = Field(default_factory=dict)
    linear: dict[str, float] = Field(default_factory=dict)


class Measures(_Part):
    """The measures of one time range: the HTTP API's answer and a `journey.metrics` record."""

    schema_version: Literal[1] = MEASURES_VERSION
    window_start: datetime
    window_end: datetime
    entries: int
    customers: int
    channel_mix: dict[str, int]
    conversations: Conversations
    satisfaction: Satisfaction
    cross_channel_conversion: Conversion
    attribution: Attribution


def measures_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a `journey.metrics` record and of the API's answer."""
    return published(
        Measures.model_json_schema(mode="serialization"),
        f"https://hilo.dev/schemas/journey.metrics.v{MEASURES_VERSION}.json",
    )


@dataclass(frozen=True)
class Windows:
    conversation: timedelta
    conversion: timedelta
    attribution: timedelta

    @property
    def lookback(self) -> timedelta:
        """How far before a range its measures need touches."""
        return max(self.conversation, self.conversion, self.attribution)


def measure(touches: Iterable[Touch], start: datetime, end: datetime, windows: Windows) -> Measures:
    """The measures of what happened in [start, end); `touches` may reach back `lookback`."""
    by_customer: dict[str, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_customer[touch.customer_id].append(touch)
    for journey in by_customer.values():
        journey.sort(key=lambda t: (t.occurred_at, t.id))
    inside = [t for j in by_customer.values() for t in j if start <= t.occurred_at < end]
    return Measures(
        window_start=start,
        window_end=end,
        entries=len(inside),
        customers=len({t.customer_id for t in inside}),
        channel_mix=dict(sorted(Counter(t.channel for t in inside).items())),
        conversations=_conversations(by_customer.values(), start, end, windows.conversation),
        satisfaction=_satisfaction(by_customer.values(), start, end, windows.conversation),
        cross_channel_conversion=_conversion(by_customer.values(), start, end, windows.conversion),
        attribution=_attribution(by_customer.values(), start, end, windows.attribution),
    )


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 2) if values else None


def conversations_of(journey: Sequence[Touch], window: timedelta) -> list[list[Touch]]:
    """A customer's contacts grouped into conversations (see the module's definitions)."""
    grouped: list[list[Touch]] = []
    for touch in (t for t in journey if t.kind in CONTACTS):
        current = grouped[-1] if grouped else None
        if current is not None and touch.occurred_at - current[-1].occurred_at <= window:
            current.append(touch)
        elif touch.inbound:
            grouped.append([touch])
        # An outbound contact after the window opens no conversation (a campaign, a reminder).
    return grouped


def _conversations(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, window: timedelta
) -> Conversations:
    counted = switches = continued = restarted = single = 0
    responses: list[float] = []
    resolutions: list[float] = []
    for journey in journeys:
        conversations = conversations_of(journey, window)
        which = {t.id: n for n, conversation in enumerate(conversations) for t in conversation}
        previous: Touch | None = None
        for touch in (t for t in journey if t.inbound):
            if (
                previous is not None
                and touch.channel != previous.channel
                and start <= touch.occurred_at < end
            ):
                switches += 1
                same = which.get(touch.id) == which.get(previous.id)  # it joined the open one
                continued += same
                restarted += not same
            previous = touch
        for conversation in conversations:
            first = conversation[0]
            if not start <= first.occurred_at < end:
                continue
            counted += 1
            single += sum(t.inbound for t in conversation) == 1
            if answer := next((t for t in conversation if t.outbound), None):
                responses.append((answer.occurred_at - first.occurred_at).total_seconds())
            if len(conversation) > 1:
                resolutions.append(
                    (conversation[-1].occurred_at - first.occurred_at).total_seconds()
                )
    return Conversations(
        conversations=counted,
        channel_switches=switches,
        continued=continued,
        restarted=restarted,
        continuity_rate=_ratio(continued, continued + restarted),
        first_contact_resolution_rate=_ratio(single, counted),
        mean_first_response_seconds=_mean(responses),
        mean_resolution_seconds=_mean(resolutions),
    )


def _satisfaction(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, window: timedelta
) -> Satisfaction:
    csat: list[int] = []
    by_channel: dict[str, list[int]] = defaultdict(list)
    by_path: dict[str, list[int]] = defaultdict(list)
    nps: list[int] = []
    for journey in journeys:
        conversations = conversations_of(journey, window)
        for index, survey in enumerate(journey):
            if survey.kind != "survey_answer" or survey.score is None:
                continue
            if not start <= survey.occurred_at < end:
                continue
            if survey.metric == "nps":
                nps.append(survey.score)
                continue
            if survey.metric != "csat":
                continue
            csat.append(survey.score)
            earlier = [t for t in journey[:index] if t.kind in CONTACTS]
            channel = survey.about_channel or (earlier[-1].channel if earlier else survey.channel)
            by_channel[channel].append(survey.score)
            if path := _path_before(conversations, survey.occurred_at, window):
                by_path[path].append(survey.score)
    promoters = sum(score >= 9 for score in nps)
    detractors = sum(score <= 6 for score in nps)
    return Satisfaction(
        csat_responses=len(csat),
        csat_average=_mean(csat),
        csat_by_channel={k: round(fmean(v), 2) for k, v in sorted(by_channel.items())},
        csat_by_channel_path={k: round(fmean(v), 2) for k, v in sorted(by_path.items())},
        nps_responses=len(nps),
        nps=round(100 * (promoters - detractors) / len(nps), 1) if nps else None,
    )


def _path_before(conversations: list[list[Touch]], at: datetime, window: timedelta) -> str:
    """The channels, in order, of the conversation a survey at `at` answers: the last one with a
    contact before it, that contact within the window; only its contacts before the survey."""
    for conversation in reversed(conversations):
        before = [t for t in conversation if t.occurred_at <= at]
        if before and at - before[-1].occurred_at <= window:
            return ">".join(dict.fromkeys(t.channel for t in before))
        if before:
            return ""
    return ""


def _conversion(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, window: timedelta
) -> Conversion:
    carts = converted = 0
    by_channel: Counter[str] = Counter()
    for journey in journeys:
        seen: set[str] = set()
        orders = [t for t in journey if t.kind == "order"]
        for cart in journey:
            key = cart.cart_id or cart.customer_id
            if cart.kind != "cart" or cart.channel != "web" or key in seen:
                continue
            seen.add(key)
            if not start <= cart.occurred_at < end:
                continue
            carts += 1
            following = [
                o for o in orders if cart.occurred_at < o.occurred_at <= cart.occurred_at + window
            ]
            if following and following[0].channel != "web":
                converted += 1
                by_channel[following[0].channel] += 1
    return Conversion(
        web_carts=carts,
        converted_elsewhere=converted,
        rate=_ratio(converted, carts),
        by_order_channel=dict(sorted(by_channel.items())),
    )


def _attribution(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, window: timedelta
) -> Attribution:
    orders = 0
    first: Counter[str] = Counter()
    last: Counter[str] = Counter()
    linear: defaultdict[str, float] = defaultdict(float)
    for journey in journeys:
        for order in journey:
            if order.kind != "order" or not start <= order.occurred_at < end:
                continue
            orders += 1
            touches = [
                t
                for t in journey
                if t.kind != "order"
                and order.occurred_at - window <= t.occurred_at < order.occurred_at
            ]
            if not touches:
                continue
            first[touches[0].channel] += 1
            last[touches[-1].channel] += 1
            for touch in touches:
                linear[touch.channel] += 1 / len(touches)
    return Attribution(
        orders=orders,
        first_touch=dict(sorted(first.items())),
        last_touch=dict(sorted(last.items())),
        linear={k: round(v, 4) for k, v in sorted(linear.items())},
    )
