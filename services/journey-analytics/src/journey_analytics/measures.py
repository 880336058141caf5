"""Omnichannel measures over whole journeys: pure functions of the touches in a time range.

Definitions (what the numbers mean):

- A **contact** is a message or a call, either way. A customer's inbound contact more than the
  conversation window after their previous contact (either way) starts a new **conversation**;
  anything closer belongs to the open one, whatever the channel. So does a later contact that
  names one of the open conversation's ids as the one it `continues` (a call back the contact
  centre links to the chat, an agent's late reply), within the lookback of its last contact,
  as customer-profile's open conversation joins it. An outbound contact after the window that
  names none opens none (a campaign, a reminder). A marketing message (its `purpose`) is no
  contact of any conversation: it neither joins the open one nor keeps it open.
- A **channel switch** is an inbound contact on another channel than the customer's previous
  inbound contact, that one within the lookback (the longest window, 30 days by default) before
  it. If it joined the open conversation it **continued** it; if it started a new one, the
  customer **restarted**. Continuity rate = continued / (continued + restarted).
- **First-contact resolution**: conversations with exactly one inbound contact, answered (a
  reply, or a call either way that was taken: `completed`) / conversations. A message nobody
  answered, or a call dropped, busy or missed, resolved nothing; nor did a marketing message
  (its `purpose`) or a call back nobody took.
- **First response**: the first outbound contact that answers after a conversation's first
  inbound one: a reply (not a marketing message) or a call back that was taken (`completed`);
  **resolution time**: its first inbound contact to its last contact (conversations with more
  than one contact).
- **CSAT** (`metric: csat`): the average score; by channel: the survey's `about_channel` (when the
  customer's touches within the lookback before it have that channel), else the channel of the
  customer's last inbound contact in that time before it (not the survey's own invitation,
  sent on another channel); by **channel path**: the channels, in order,
  of the conversation it answers (its contacts before the survey, the last within the window),
  e.g. `voice>whatsapp`; a channel the customer came back to shows again
  (`voice>whatsapp>voice`), contacts in a row on one channel once. **NPS**: % of 9-10 minus %
  of 0-6. An answer counts once: a later
  one with the same `response_id` for the same survey (within the lookback) is the same answer
  sent again, as is one without a response id that repeats the score of the customer's answer
  to the same survey at most `DOUBLE_SUBMISSION` (2 minutes) before it.
- An **order** is counted once, at its first entry (same customer and `order_id`): a
  click-and-collect order is a web entry, then a store entry `picked_up`; that second one is
  no order. An order first
  seen `cancelled` or `refunded` bought nothing (as customer-profile's `_after_purchase` decides),
  and a `picked_up` entry is always a later state: neither counts. An order cancelled within
  the conversion window after it was never bought and does not count either (a cancellation
  later than that is a return); one refunded later was bought, and counts. Only orders count
  below.
- A **web cart** (an online cart: `web` or `app`) is counted at its first online cart entry
  (per cart id, else the customer's cart: the first entry naming an id takes over a cart that
  had none, an entry naming none continues the cart last touched).
  A later entry of the same cart continues it while it comes within the conversion window of
  the previous one and no order completed the cart in between (an order naming no cart or this
  cart); otherwise it is a new cart: a customer's cart after one they bought counts again.
- **Cross-channel conversion**: a web cart converts when the customer's next order within the
  conversion window of the cart's first entry is on a channel that is not online (store,
  phone): web carts converted elsewhere / web carts. From the first entry, not the last: a
  cart can go on for ever, and a range's read reaches only `forward` past it, so a cart still
  being filled on day 5 and bought in store on day 9 did not convert.
- A **refund** counts in the range it was paid back in. Its order's sales channel (`sold_via`:
  online, store, phone) is that of the customer's latest entry of that `order_id` before the
  refund, if within the lookback of it; a refund **crossed channels** when it was paid back
  through another one (`refunded_via`: an online order returned in a store). A refund of an
  older order, or of one placed before Hilo, counts in `refunds` and in no channel pair.
- **Attribution** of each order to the customer's touches (contacts, views, carts, visits, other
  tracked actions: not an order, a refund, a delivery receipt, a sign-in, a consent or a
  survey answer) in the attribution window before it: first touch (all credit to the first),
  last touch (to the last), linear (1/n to each of n). An order with no touch in the window is
  **unattributed**: counted, credited to no channel.
- **Campaigns**: a campaign visit is an entry with a `campaign`: a page view whose URL named one,
  a link clicked in an email, the first message of a chat an ad or a listed link opened; the
  customer's entries of the same campaign each within `VISIT_GAP` (30 minutes) of the one before
  are one visit, counted at its first. Each order is credited to the customer's last campaign
  view in the attribution window before it (last touch), whatever channel the order came
  through; orders with none are counted in `orders_without_campaign`.

A range counts what starts in it (an entry, a conversation's first contact, a switch, a survey, a
cart's first entry, an order) and follows it past the range's end, up to `Windows.forward`: a
cart bought the next morning converted, a conversation answered after midnight was answered (a
conversation is followed for `Windows.forward` after its first contact, then cut, so a day and
the week around it count the same). Touches are read that far forward and `Windows.lookback`
back.

Everything is recomputed from the stored touches, so a redelivered record (stored once by its
id) or a restart from the topics gives the same numbers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from itertools import accumulate
from statistics import fmean
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from hilo.contract.schema import published

MEASURES_VERSION: Final = 1
CONTACTS = frozenset({"message", "call"})
ONLINE = frozenset({"web", "app"})
"""Where an online cart is kept: the web shop and the mobile app."""
NOT_TOUCHES = frozenset(
    {"order", "refund", "message_status", "identify", "consent", "survey_answer"}
)
"""Entries that are no touch an order can be credited to: the order itself, money paid back on
one, a provider's delivery receipt, a sign-in, a consent change, a survey answer."""
VISIT_GAP: Final = timedelta(minutes=30)
"""Views tagged with the same campaign this close to the previous one are the same visit (the
session timeout of web analytics tools)."""
DOUBLE_SUBMISSION: Final = timedelta(minutes=2)
"""How close an identical answer to the same survey, without a response id, is taken for the
same answer posted again (a double click, a form re-sent) rather than a second answer."""
NOT_BOUGHT = frozenset({"cancelled", "refunded", "picked_up"})
"""Statuses of an order's first entry that make it no purchase: customer-profile's `_after_purchase`
takes the first two; a pick-up is of an order placed before, maybe before the touches read."""


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
    survey_id: str | None = None
    response_id: str | None = None
    """A survey answer's id at the survey tool: the same answer posted twice counts once."""
    order_id: str | None = None
    status: str | None = None
    sales_channel: str | None = None
    """An order's `sold_via`, a refund's `refunded_via`: online, store or phone."""
    purpose: str | None = None
    """An outbound message's purpose, when Hilo sent it: `marketing` answers nobody."""
    call_id: str | None = None
    """A call's id at its provider: Twilio's status callback and the contact centre's outcome
    of one call are two entries, one contact."""
    campaign: str | None = None
    """The name of the campaign a visit came from (`(not set)` for one with a source alone)."""
    source_medium: str | None = None
    """The campaign's `<source> / <medium>`, `(not set)` for either not told."""
    conversation_id: str | None = None
    """A contact's conversation id (the journey's `conversation.id`, in the clear)."""
    continues: str | None = None
    """The id of the conversation a contact carries on (`conversation.continues`): it joins
    that conversation after the window too."""
    published_ms: int = 0
    """When its record was published (the Kafka record's timestamp): a split publishes an entry
    again under the restored id, on another partition, and of two copies the later is right."""

    @property
    def inbound(self) -> bool:
        return self.kind in CONTACTS and self.direction != "outbound"

    @property
    def outbound(self) -> bool:
        return self.kind in CONTACTS and self.direction == "outbound"

    @property
    def conversing(self) -> bool:
        """A contact of a conversation: a marketing message is none (it answers nobody, and
        daily promotions would hold one conversation open for ever)."""
        return self.kind in CONTACTS and self.purpose != "marketing"

    @property
    def answers(self) -> bool:
        """An outbound contact of a conversation that answers the customer: neither a campaign
        or a promotion, nor a call back nobody took."""
        taken = self.kind != "call" or self.status == "completed"
        return self.outbound and taken and self.conversing


def touch_of(entry: dict[str, Any]) -> Touch:
    """A `journey` record (sealed or open: only clear fields are read) as a touch."""
    payload = entry.get("payload") or {}
    conversation = entry.get("conversation") or {}
    campaign, source_medium = _campaign_of(payload.get("campaign"))
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
        survey_id=payload.get("survey_id"),
        response_id=payload.get("response_id"),
        order_id=payload.get("order_id"),
        status=payload.get("status"),
        sales_channel=payload.get("sold_via") or payload.get("refunded_via"),
        purpose=payload.get("purpose"),
        call_id=payload.get("provider_call_id") if entry["type"] == "call" else None,
        campaign=campaign,
        source_medium=source_medium,
        conversation_id=conversation.get("id"),
        continues=conversation.get("continues"),
    )


MAX_PATH: Final = 6
"""The channels a path names before `…`: a path is a key of the day's record."""
NOT_SET: Final = "(not set)"
OTHER: Final = "(other)"
MAX_CAMPAIGNS: Final = 100
"""How many campaigns (and sources) a range's measures name; the rest are `(other)`."""


def _campaign_of(campaign: object) -> tuple[str | None, str | None]:
    """A page view's campaign as its name and its `<source> / <medium>`; none for no campaign."""
    if not isinstance(campaign, dict):
        return None, None
    told = {part: campaign.get(part) or NOT_SET for part in ("name", "source", "medium")}
    return told["name"], f"{told['source']} / {told['medium']}"


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
    unattributed: int = Field(
        default=0,
        description="Orders with no touch in the attribution window before them (a walk-in "
        "sale, a first order by phone): counted in `orders`, credited in none of the shares, so "
        "each share's orders plus these make `orders`.",
    )
    first_touch: dict[str, int] = Field(default_factory=dict)
    last_touch: dict[str, int] = Field(default_factory=dict)
    linear: dict[str, float] = Field(default_factory=dict)


class Campaigns(_Part):
    visits: dict[str, int] = Field(
        default_factory=dict,
        description="Visits in the range that came from a campaign (a page whose URL or "
        "`context.campaign` named it, a link clicked in an email, a chat an ad opened), by "
        "campaign name; `(not set)` for a source alone.",
    )
    orders: dict[str, int] = Field(
        default_factory=dict,
        description="Orders in the range credited to a campaign: the last campaign visit of the "
        "customer within the attribution window before the order, whatever channel the order "
        "came through (a newsletter's visit, then a purchase in a store).",
    )
    orders_by_source_medium: dict[str, int] = Field(
        default_factory=dict,
        description="The same orders by the campaign's `<source> / <medium>`.",
    )
    sold_via: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="The same orders by campaign name, then by where they were sold (`online`, "
        "`store`, `phone`): what a campaign brought to the stores.",
    )
    orders_without_campaign: int = Field(
        default=0,
        description="Orders in the range with no campaign visit in the window before them: "
        "with `orders`, they make `attribution.orders`.",
    )


class Returns(_Part):
    refunds: int = Field(default=0, description="Refunds paid back in the range, each entry one.")
    by_channel: dict[str, int] = Field(
        default_factory=dict, description="Refunds by the channel that paid them back."
    )
    of_orders_seen: int = Field(
        default=0,
        description="Refunds whose order has an entry in the lookback before them: the ones "
        "whose sales channel is known.",
    )
    cross_channel: int = Field(
        default=0,
        description="Of those, paid back through another sales channel (online, store, phone) "
        "than the order was sold through: an online order returned in a store.",
    )
    cross_channel_rate: float | None = Field(
        default=None, description="cross_channel / of_orders_seen"
    )
    by_sale_and_refund_channel: dict[str, int] = Field(
        default_factory=dict,
        description="Of `of_orders_seen`, by `<sold via>><refunded via>` (`online>store`).",
    )


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
    returns: Returns = Field(default_factory=Returns)
    campaigns: Campaigns = Field(default_factory=Campaigns)


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

    @property
    def forward(self) -> timedelta:
        """How far after a range its measures need touches: what follows a cart (an order, and
        that order's cancellation within the conversion window) or a conversation's first
        contact (its answer, its last contact) is counted for the range."""
        return max(self.conversation, 2 * self.conversion)

    def reach(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """The touches the measures of [start, end) read: from `lookback` before to `forward`
        after, so a range's numbers are the same whatever else is read with it."""
        return start - self.lookback, end + self.forward


def measure(touches: Iterable[Touch], start: datetime, end: datetime, windows: Windows) -> Measures:
    """The measures of what happened in [start, end) (what starts in it); `touches` may reach
    back `lookback` and forward `forward` (see `Windows.reach`)."""
    by_customer: dict[str, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_customer[touch.customer_id].append(touch)
    for journey in by_customer.values():
        journey.sort(key=lambda t: (t.occurred_at, t.id))
    inside = [t for j in by_customer.values() for t in j if start <= t.occurred_at < end]
    bought = purchases((t for j in by_customer.values() for t in j), windows.conversion)
    # Entries and the channel mix count journey entries; the rest counts contacts.
    journeys = [_one_entry_per_call(journey) for journey in by_customer.values()]
    return Measures(
        window_start=start,
        window_end=end,
        entries=len(inside),
        customers=len({t.customer_id for t in inside}),
        channel_mix=dict(sorted(Counter(t.channel for t in inside).items())),
        conversations=_conversations(journeys, start, end, windows),
        satisfaction=_satisfaction(journeys, start, end, windows),
        cross_channel_conversion=_conversion(journeys, bought, start, end, windows.conversion),
        attribution=_attribution(journeys, bought, start, end, windows.attribution),
        returns=_returns(by_customer.values(), start, end, windows.lookback),
        campaigns=_campaigns(journeys, bought, start, end, windows.attribution),
    )


def _one_entry_per_call(journey: list[Touch]) -> list[Touch]:
    """The journey with each call once, at its first entry: the provider's status callback and
    the contact centre's outcome of one call (the same call id) are one contact, not two. Its
    status is the one that is not `completed` when they differ: Twilio reports a call the line
    cut as `completed`, where the contact centre says `dropped`. It carries on the conversation
    the contact centre names (`continues_conversation`; Twilio's callback names none)."""
    statuses: dict[str, str | None] = {}
    links: dict[str, str] = {}
    for touch in journey:
        if touch.call_id is not None and statuses.get(touch.call_id) in (None, "completed"):
            statuses[touch.call_id] = touch.status or statuses.get(touch.call_id)
        if touch.call_id is not None and touch.continues is not None:
            links.setdefault(touch.call_id, touch.continues)
    seen: set[str] = set()
    kept = []
    for touch in journey:
        if touch.call_id is None:
            kept.append(touch)
        elif touch.call_id not in seen:
            seen.add(touch.call_id)
            call = touch.call_id
            kept.append(replace(touch, status=statuses[call], continues=links.get(call)))
    return kept


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 2) if values else None


def conversations_of(journey: Sequence[Touch], windows: Windows) -> list[list[Touch]]:
    """A customer's contacts grouped into conversations (see the module's definitions)."""
    grouped: list[list[Touch]] = []
    ids: dict[str, datetime] = {}  # the open conversation's ids, each when last seen
    for touch in (t for t in journey if t.conversing):
        current = grouped[-1] if grouped else None
        if current is not None and _joins(touch, current[-1], ids, windows):
            current.append(touch)
        elif touch.inbound:
            grouped.append([touch])
            ids = {}
        else:
            continue  # An outbound contact after the window opens none (a campaign, a reminder).
        ids[touch.conversation_id or f"{touch.channel}:{touch.id}"] = touch.occurred_at
    return grouped


def _joins(touch: Touch, last: Touch, ids: Mapping[str, datetime], windows: Windows) -> bool:
    """Whether `touch` belongs to the conversation whose latest contact is `last`: within the
    window of it, or naming one of its ids (`continues`) seen within the lookback. No older: a
    range's read reaches `lookback` back, and a link to older would count for a long range and
    not for a short one."""
    if touch.occurred_at - last.occurred_at <= windows.conversation:
        return True
    seen = ids.get(touch.continues) if touch.continues is not None else None
    return seen is not None and touch.occurred_at - seen <= windows.lookback


def _conversations(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, windows: Windows
) -> Conversations:
    """A switch compares with the previous inbound contact within `lookback` only: one older
    would be read with a long range and not with a short one, and the days would not add up to
    the week."""
    counted = switches = continued = restarted = single = 0
    responses: list[float] = []
    resolutions: list[float] = []
    for journey in journeys:
        conversations = conversations_of(journey, windows)
        which = {t.id: n for n, conversation in enumerate(conversations) for t in conversation}
        previous: Touch | None = None
        for touch in (t for t in journey if t.inbound):
            if (
                previous is not None
                and touch.channel != previous.channel
                and start <= touch.occurred_at < end
                and touch.occurred_at - previous.occurred_at <= windows.lookback
            ):
                switches += 1
                same = which.get(touch.id) == which.get(previous.id)  # it joined the open one
                continued += same
                restarted += not same
            previous = touch
        for whole in conversations:
            first = whole[0]
            if not start <= first.occurred_at < end:
                continue
            # Followed for `forward` from its first contact, which every range's read reaches.
            conversation = [
                t for t in whole if t.occurred_at - first.occurred_at <= windows.forward
            ]
            counted += 1
            single += _resolved_at_first_contact(conversation)
            if answer := next((t for t in conversation if t.answers), None):
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


def _resolved_at_first_contact(conversation: Sequence[Touch]) -> bool:
    """One inbound contact, and it was answered: a reply came, or it was a call that was taken
    (`completed`). A message nobody answered, or a call dropped, busy or missed, resolved
    nothing."""
    inbound = [t for t in conversation if t.inbound]
    if len(inbound) != 1:
        return False
    answered_call = inbound[0].kind == "call" and inbound[0].status == "completed"
    return answered_call or any(t.answers for t in conversation)


def _repeats(journey: Sequence[Touch], lookback: timedelta) -> set[int]:
    """The indices of the survey answers that answered before (`_answer_key`), in one pass:
    each answer against the last one of its key, looking back only, so a repeat is left out
    whichever range it falls in."""
    last: dict[tuple[object, ...], datetime] = {}
    repeats: set[int] = set()
    for index, touch in enumerate(journey):
        keyed = _answer_key(touch, lookback) if touch.kind == "survey_answer" else None
        if keyed is None:
            continue
        key, within = keyed
        seen = last.get(key)
        if seen is not None and touch.occurred_at - seen <= within:
            repeats.add(index)
        last[key] = touch.occurred_at
    return repeats


def _answer_key(answer: Touch, lookback: timedelta) -> tuple[tuple[object, ...], timedelta] | None:
    """What makes two answers one, and how far apart: the same response of the same survey
    (its `response_id`) within the lookback; without a response id, the same score for the same
    survey within `DOUBLE_SUBMISSION` (a form posted twice). A touch stored before survey ids
    were (None) is never taken for another's repeat."""
    if answer.survey_id is None:
        return None
    if answer.response_id is not None:
        return ("response", answer.survey_id, answer.response_id), lookback
    return ("score", answer.survey_id, answer.metric, answer.score), DOUBLE_SUBMISSION


def _satisfaction(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, windows: Windows
) -> Satisfaction:
    """A survey's channel comes from the customer's touches within `lookback` before it only,
    so that it does not depend on how far the range's read reaches."""
    window = windows.conversation
    csat: list[int] = []
    by_channel: dict[str, list[int]] = defaultdict(list)
    by_path: dict[str, list[int]] = defaultdict(list)
    nps: list[int] = []
    for journey in journeys:
        paths = _Paths(conversations_of(journey, windows), window, windows.lookback)
        # A survey names the channel it is about in free text (anyone can post one with the
        # public web key): only a channel the customer's journey has counts, or each new text
        # would be a series on /metrics and a key of the day's record.
        repeats = _repeats(journey, windows.lookback)
        recent = _Recent(journey, windows.lookback)
        for index, survey in enumerate(journey):
            if survey.kind != "survey_answer" or survey.score is None or index in repeats:
                continue
            if not start <= survey.occurred_at < end:
                continue
            if survey.metric == "nps":
                nps.append(survey.score)
                continue
            if survey.metric != "csat":
                continue
            csat.append(survey.score)
            recent.before(index)
            channels = recent.channels | {survey.channel}
            earlier = recent.last_inbound
            channel = (
                survey.about_channel
                if survey.about_channel in channels
                else (earlier.channel if earlier else survey.channel)
            )
            by_channel[channel].append(survey.score)
            if path := paths.before(survey.occurred_at):
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


class _Recent:
    """A journey's touches within `lookback` before a survey, for each survey in time order,
    in one pass (a slice of the journey before each one made an answer posted 20,000 times,
    with the public web key, take seconds to measure): the channels they were on, and the
    last inbound contact."""

    def __init__(self, journey: Sequence[Touch], lookback: timedelta) -> None:
        self._journey = journey
        self._lookback = lookback
        self._start = self._end = 0
        self._on: Counter[str] = Counter()
        self._inbound: deque[int] = deque()

    def before(self, index: int) -> None:
        """Hold the touches before `journey[index]` within `lookback` of it."""
        journey = self._journey
        for touch in journey[self._end : index]:
            self._on[touch.channel] += 1
            if touch.inbound:
                self._inbound.append(self._end)
            self._end += 1
        since = journey[index].occurred_at - self._lookback
        while self._start < self._end and journey[self._start].occurred_at < since:
            self._on[journey[self._start].channel] -= 1
            if self._inbound and self._inbound[0] == self._start:
                self._inbound.popleft()
            self._start += 1

    @property
    def channels(self) -> set[str]:
        return {channel for channel, held in self._on.items() if held}

    @property
    def last_inbound(self) -> Touch | None:
        return self._journey[self._inbound[-1]] if self._inbound else None


class _Paths:
    """The channel path of the conversation a survey answers (`before`), found by bisection:
    each answer scanned the conversations after it and the whole of its own."""

    def __init__(
        self, conversations: list[list[Touch]], window: timedelta, lookback: timedelta
    ) -> None:
        self._conversations = conversations
        self._starts = [conversation[0].occurred_at for conversation in conversations]
        self._times = [[t.occurred_at for t in c] for c in conversations]
        self._runs = [
            [0, *(n for n in range(1, len(c)) if c[n].channel != c[n - 1].channel)]
            for c in conversations
        ]
        self._window = window
        self._lookback = lookback

    def before(self, at: datetime) -> str:
        """The channels, in order, of the conversation a survey at `at` answers: the last one
        with a contact before it, that contact within the window; only its contacts before the
        survey and within the lookback of it (what every range's read holds). A channel
        returned to shows again; the first `MAX_PATH` channels show, then `…`."""
        which = bisect_right(self._starts, at) - 1
        if which < 0:
            return ""
        times, conversation = self._times[which], self._conversations[which]
        end = bisect_right(times, at)
        if at - times[end - 1] > self._window:
            return ""
        first = bisect_left(times, at - self._lookback)
        if first >= end:
            return ""
        runs = self._runs[which]
        # The runs of channels from `first` to `end`: the one `first` is in, then those after.
        after = bisect_right(runs, first)
        starts = [first, *runs[after : min(bisect_left(runs, end), after + MAX_PATH)]]
        channels = [conversation[n].channel for n in starts]
        return ">".join(channels[:MAX_PATH] + (["…"] if len(channels) > MAX_PATH else []))


def purchases(touches: Iterable[Touch], cancellable: timedelta) -> set[str]:
    """The entry ids of the orders bought, each order once: the first entry of its order id (a
    click-and-collect order is a web entry, then a store one when picked up), unless that entry
    bought nothing (cancelled, refunded) or is a later state (picked up) of one placed earlier,
    or the order was cancelled within `cancellable` of it: a cancelled order was never bought,
    where a refunded one was bought and returned. (A bound of the order's own, which every
    range's read reaches: a later cancellation would count for a long range and not a short.)"""
    first: dict[tuple[str, bool, str], Touch] = {}
    cancelled: set[tuple[str, bool, str]] = set()
    for order in sorted(
        (t for t in touches if t.kind == "order"), key=lambda t: (t.occurred_at, t.id)
    ):
        # Per customer: two shops' order "1001" are two orders, and nobody's entry can make
        # another customer's order a "later state" of theirs.
        key = (order.customer_id, order.order_id is None, order.order_id or order.id)
        placed = first.setdefault(key, order)
        if order.status == "cancelled" and order.occurred_at - placed.occurred_at <= cancellable:
            cancelled.add(key)
    return {
        order.id
        for key, order in first.items()
        if order.status not in NOT_BOUGHT and key not in cancelled
    }


def carts_of(journey: Sequence[Touch], bought: set[str], window: timedelta) -> list[Touch]:
    """A customer's web carts, each as its first entry. A web cart entry continues the cart
    (its cart id, else the customer's cart) when that cart had an entry within the conversion
    window before it and no purchase completed it since; otherwise it starts a new one. So a
    cart depends on the conversion window before it, not on how far back the touches reach.

    The open carts are kept least recently touched first, those past the window let go as the
    journey goes on: each entry looked at every cart before it, so 20,000 carts posted with
    the public web key took half a minute to measure."""
    started: list[Touch] = []
    last: OrderedDict[str, datetime] = OrderedDict()
    for touch in journey:
        while last and touch.occurred_at - next(iter(last.values())) > window:
            last.popitem(last=False)
        if touch.id in bought:
            _complete(touch, last)
        elif touch.kind == "cart" and touch.channel in ONLINE:
            key = _cart_key(touch, last)
            if key not in last:
                started.append(touch)
            last[key] = touch.occurred_at
            last.move_to_end(key)
    return started


def _cart_key(touch: Touch, last: OrderedDict[str, datetime]) -> str:
    """Which open cart an entry continues: its cart id's; the first entry naming an id takes
    over the customer's cart that had none yet (Segment's `Product Added` without a `cart_id`,
    then `Checkout Started` with one: one cart); an entry naming none continues the cart last
    touched."""
    if touch.cart_id is None:
        return next(reversed(last), "")
    if touch.cart_id not in last and "" in last:
        last[touch.cart_id] = last.pop("")
    return touch.cart_id


def _complete(order: Touch, last: OrderedDict[str, datetime]) -> None:
    """A purchase completes the customer's cart (one without an id) and the cart it names; one
    naming no cart (a store receipt) completes any, one naming another cart leaves this one."""
    if order.cart_id is None:
        last.clear()
        return
    last.pop("", None)
    last.pop(order.cart_id, None)


def _conversion(
    journeys: Iterable[Sequence[Touch]],
    bought: set[str],
    start: datetime,
    end: datetime,
    window: timedelta,
) -> Conversion:
    carts = converted = 0
    by_channel: Counter[str] = Counter()
    for journey in journeys:
        orders = [t for t in journey if t.id in bought]
        times = [order.occurred_at for order in orders]
        for cart in carts_of(journey, bought, window):
            if not start <= cart.occurred_at < end:
                continue
            carts += 1
            # The first order after the cart (bisected: each cart scanned every order).
            after = bisect_right(times, cart.occurred_at)
            following = orders[after] if after < len(orders) else None
            if following is None or following.occurred_at > cart.occurred_at + window:
                continue
            if following.channel not in ONLINE:
                converted += 1
                by_channel[following.channel] += 1
    return Conversion(
        web_carts=carts,
        converted_elsewhere=converted,
        rate=_ratio(converted, carts),
        by_order_channel=dict(sorted(by_channel.items())),
    )


def _returns(
    journeys: Iterable[Sequence[Touch]], start: datetime, end: datetime, lookback: timedelta
) -> Returns:
    """Refunds in the range, and which of them were paid back through another sales channel
    than their order was sold through. The order's sales channel is its latest entry's (of
    that customer and `order_id`; a click-and-collect pickup says `online` too) before the
    refund, that entry within `lookback` of it: so every range that counts the refund reads
    the same entry. A refund of an older order, or of one placed before Hilo, counts in
    `refunds` alone."""
    refunds = seen = cross = 0
    by_channel: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for journey in journeys:
        latest: dict[str, Touch] = {}
        for touch in journey:
            if touch.kind == "order" and touch.order_id is not None:
                latest[touch.order_id] = touch
            if touch.kind != "refund" or not start <= touch.occurred_at < end:
                continue
            refunds += 1
            by_channel[touch.channel] += 1
            order = latest.get(touch.order_id or "")
            if order is None or touch.occurred_at - order.occurred_at > lookback:
                continue
            if order.sales_channel is None or touch.sales_channel is None:
                continue
            seen += 1
            cross += order.sales_channel != touch.sales_channel
            pairs[f"{order.sales_channel}>{touch.sales_channel}"] += 1
    return Returns(
        refunds=refunds,
        by_channel=dict(sorted(by_channel.items())),
        of_orders_seen=seen,
        cross_channel=cross,
        cross_channel_rate=_ratio(cross, seen),
        by_sale_and_refund_channel=dict(sorted(pairs.items())),
    )


class _Timeline:
    """A journey's touches (in time order) with their times and each channel's running count,
    so an order's window is found by bisection and credited per channel: scanning the whole
    journey for each order made a customer with thousands of orders take minutes, with the
    service's loop held (anyone with the public web key can post orders)."""

    def __init__(self, touches: Sequence[Touch]) -> None:
        self.touches = touches
        self.times = [touch.occurred_at for touch in touches]

    @cached_property
    def running(self) -> dict[str, list[int]]:
        """Per channel, how many of the first n touches are on it (n from 0): built only for
        the measure that credits channels (attribution), not for the campaigns'."""
        return {
            channel: list(accumulate((t.channel == channel for t in self.touches), initial=0))
            for channel in dict.fromkeys(t.channel for t in self.touches)
        }

    def between(self, since: datetime, until: datetime) -> tuple[int, int]:
        """The indexes [low, high) of the touches in [since, until)."""
        return bisect_left(self.times, since), bisect_left(self.times, until)

    def channels(self, low: int, high: int) -> Iterator[tuple[str, int]]:
        """Each channel's touches among [low, high)."""
        for channel, counts in self.running.items():
            if count := counts[high] - counts[low]:
                yield channel, count


def _attribution(
    journeys: Iterable[Sequence[Touch]],
    bought: set[str],
    start: datetime,
    end: datetime,
    window: timedelta,
) -> Attribution:
    orders = unattributed = 0
    first: Counter[str] = Counter()
    last: Counter[str] = Counter()
    linear: defaultdict[str, float] = defaultdict(float)
    for journey in journeys:
        touches = _Timeline([t for t in journey if t.kind not in NOT_TOUCHES])
        for order in journey:
            if order.id not in bought or not start <= order.occurred_at < end:
                continue
            orders += 1
            low, high = touches.between(order.occurred_at - window, order.occurred_at)
            if low == high:
                unattributed += 1
                continue
            first[touches.touches[low].channel] += 1
            last[touches.touches[high - 1].channel] += 1
            for channel, count in touches.channels(low, high):
                linear[channel] += count / (high - low)
    return Attribution(
        orders=orders,
        unattributed=unattributed,
        first_touch=dict(sorted(first.items())),
        last_touch=dict(sorted(last.items())),
        linear={k: round(v, 4) for k, v in sorted(linear.items())},
    )


def _campaigns(
    journeys: Iterable[Sequence[Touch]],
    bought: set[str],
    start: datetime,
    end: datetime,
    window: timedelta,
) -> Campaigns:
    """Campaign visits in the range, and its orders credited to the last campaign visit before
    them (last touch: the one that brought the customer back)."""
    visits: Counter[str] = Counter()
    orders: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    sold_via: defaultdict[str, Counter[str]] = defaultdict(Counter)
    without = 0
    for journey in journeys:
        visits.update(
            v.campaign
            for v in campaign_visits(journey)
            if v.campaign and start <= v.occurred_at < end
        )
        tagged = _Timeline([t for t in journey if t.campaign is not None])
        for order in journey:
            if order.id not in bought or not start <= order.occurred_at < end:
                continue
            credited = _last_campaign_visit(tagged, order, window)
            if credited is None or credited.campaign is None:
                without += 1
                continue
            orders[credited.campaign] += 1
            by_source[credited.source_medium or NOT_SET] += 1
            sold_via[credited.campaign][order.sales_channel or NOT_SET] += 1
    named = _top(orders)
    where = {name: c for name, c in sold_via.items() if name in named}
    rest: Counter[str] = sum((c for name, c in sold_via.items() if name not in named), Counter())
    if rest:
        where[OTHER] = where.get(OTHER, Counter()) + rest  # a campaign named `(other)` too
    return Campaigns(
        visits=_top(visits),
        orders=named,
        orders_by_source_medium=_top(by_source),
        sold_via={name: dict(sorted(c.items())) for name, c in sorted(where.items())},
        orders_without_campaign=without,
    )


def _top(counts: Counter[str]) -> dict[str, int]:
    """The `MAX_CAMPAIGNS` largest counts by name, the rest summed as `(other)`: anyone with the
    public web key can tag views with made-up campaigns, and a day's record must stay within
    what Kafka takes."""
    if len(counts) <= MAX_CAMPAIGNS:
        return dict(sorted(counts.items()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(sorted(ranked[:MAX_CAMPAIGNS]))
    rest = sum(count for _, count in ranked[MAX_CAMPAIGNS:])
    return kept | {OTHER: kept.get(OTHER, 0) + rest}  # a campaign named `(other)` joins them


def campaign_visits(journey: Sequence[Touch]) -> list[Touch]:
    """A customer's campaign visits, each as its first page view: SDKs tag every view of a
    tagged URL (a reload, the back button, a single-page shop keeping the query), so views of
    the same campaign (name, source and medium) each within `VISIT_GAP` of the one before are
    one visit."""
    visits: list[Touch] = []
    last_seen: dict[tuple[str, str | None], datetime] = {}
    for touch in journey:
        if touch.campaign is None:
            continue
        key = (touch.campaign, touch.source_medium)  # Instagram's and Facebook's `(not set)`
        seen = last_seen.get(key)
        if seen is None or touch.occurred_at - seen > VISIT_GAP:
            visits.append(touch)
        last_seen[key] = touch.occurred_at
    return visits


def _last_campaign_visit(tagged: _Timeline, order: Touch, window: timedelta) -> Touch | None:
    """The customer's latest campaign-tagged touch within `window` before the order, or None."""
    low, high = tagged.between(order.occurred_at - window, order.occurred_at)
    return tagged.touches[high - 1] if low < high else None
