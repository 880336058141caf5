"""The current profile, derived from the journey by folding its entries in event-time order.

`ProfileView.apply` is the only place that knows how an interaction changes what we know about a
customer. Applying entries one by one as they arrive and re-deriving the whole view from the
stored journey give the same result whenever the new entries are not late, which is why a late
entry or a merge triggers a full re-derivation and everything else is incremental.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from customer_profile.domain.journey import JourneyEntry
from hilo.contract import NAME_TRAITS
from hilo.mongo import as_stored

RECENT_MESSAGES = 10
CONVERSATION_IDS_KEPT = 50
RECENT_INTERACTIONS = 10
RECENT_ORDERS = 50
"""Orders a view keeps whole. The view is rewritten at every event of its customer, so an
unbounded list made each event of a frequent buyer (a store's house account) dearer than the last,
up to MongoDB's 16 MB document limit; the journey keeps every order."""
MAX_TRAITS = 200
"""Trait names a view keeps (`_identified`)."""
MAX_CONSENTS = 100
"""Purpose and channel pairs a view keeps, the latest told: the view is one Kafka record, and a
source sending a new purpose with every event must not grow it past what Kafka takes."""
UNVERIFIED_TRAITS = 100
"""Trait names an unverified event may bring a view up to."""
MAX_TRAIT_TEXT = 1_000
REFUND_SKEW = timedelta(hours=24)
"""How long before its order a refund may be dated and still be taken off it (a till's clock
behind the web shop's, or in the wrong time zone): it waits that long for the order. Decided by
the two dates alone, so a view folded event by event, one derived whole and an order recalled
from the journey all agree."""
MAX_REFUNDS_WAITING = 100
"""A bound on `ProfileView.refunds_waiting` however many refunds one day brings (the oldest
go first, and `refunds_overflowed` says so: an order recalled from the journey would not know
which went, so the pipeline derives such a view whole instead)."""
CONVERSATION_KINDS = frozenset({"message", "call"})
DONE = "conversation_done"
"""An agent's mark that the customer's contacts were seen to (the agent desk's *Mark as done*)."""
CLOSED_ORDER_STATUSES = frozenset({"cancelled", "refunded"})
ORDER_KINDS = frozenset({"order", "refund"})
"""Entry types that change an order a view holds: its states, and money paid back on it."""


class ChannelStats(BaseModel):
    count: int = 0
    first_seen: datetime
    last_seen: datetime


class TraitValue(BaseModel):
    value: str | int | float | bool | None
    channel: str
    at: datetime
    verified: bool = Field(
        default=False,
        exclude_if=lambda verified: not verified,
        description="Told by a verified source: an unverified one (the public web key) does not "
        "overwrite it. Absent: told by an unverified or claimed one (or before this was kept).",
    )


class ConsentState(BaseModel):
    purpose: str
    channel: str | None = Field(description="None: every channel.")
    granted: bool
    at: datetime
    via_channel: str
    source: str | None = None


class MessagePreview(BaseModel):
    event_id: str
    at: datetime
    channel: str
    type: str
    summary: str


class OpenConversation(BaseModel):
    """The customer's current thread with the company, whichever channels it crossed: their
    messages and calls and the company's answers; marketing messages are no part of it."""

    started_channel: str
    started_at: datetime
    last_at: datetime
    last_channel: str
    channels: list[str]
    conversation_ids: list[str] = Field(
        description="The ids of the conversation's threads, the one last written on last; the "
        f"latest {CONVERSATION_IDS_KEPT} (a line that calls every hour would grow it without "
        "end: its snapshot past what Kafka takes)."
    )
    recent: list[MessagePreview] = Field(default_factory=list)
    awaiting_reply_since: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="When the customer's earliest message (or unanswered call) that nobody "
        "answered yet was made: the agents' queue. A reply on any channel, a call an agent "
        "took, or an agent marking it done (`conversation_done`) clears it; a marketing "
        "message, no part of any conversation, does not. Absent when nobody waits.",
    )
    last_inbound_at: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="When the customer last wrote or called in this conversation.",
    )
    done_through: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="An agent saw to the customer's contacts up to this time without an answer "
        "(`conversation_done`): they wait again only from a later one. Absent when none was.",
    )
    done_by: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The agent whose done mark is why nobody waits. Absent once a reply came or "
        "the customer wrote again, or when no mark was made.",
    )


class CartState(BaseModel):
    cart_id: str | None
    channel: str
    updated_at: datetime
    checkout_started: bool = False
    items: list[dict[str, Any]] = Field(default_factory=list)
    total: dict[str, Any] | None = None


class OrderSummary(BaseModel):
    order_id: str
    first_seen: datetime
    last_update: datetime
    channel: str
    status: str
    sold_via: str
    fulfilment: str
    store_id: str | None
    total: dict[str, Any]
    item_count: int
    coupons: list[str] = Field(
        default_factory=list,
        description="The codes the customer presented with it (a later update without any keeps "
        "them).",
    )
    refunded: dict[str, Any] | None = Field(
        default=None,
        description="What was paid back on it so far, in its currency; the lifetime value "
        "counts its total less this, never below nothing. Absent: nothing.",
    )
    returned_items: int = Field(default=0, description="Items that came back (returns).")
    refunded_in_other_currencies: dict[str, str] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="What was paid back on it in another currency than its own, by currency "
        '(`{"USD": "20.00"}`): not taken off its value, since Hilo has no rate to convert '
        "at, and shown for a person to look at. Absent: none.",
    )

    def kept_value(self) -> Decimal:
        """What the customer still spent on it: its total less what was paid back, never below
        nothing (a later update of the order may lower its total under what was refunded)."""
        refunded = self.refunded
        same = refunded is not None and refunded["currency"] == self.total["currency"]
        paid_back = Decimal(refunded["amount"]) if refunded and same else Decimal(0)
        return max(Decimal(self.total["amount"]) - paid_back, Decimal(0))


class WaitingRefund(BaseModel):
    """A refund of an order the view has not seen yet."""

    order_id: str
    amount: dict[str, Any] | None = Field(description="None: the whole order.")
    returned_items: int = 0
    at: datetime


class SurveyResult(BaseModel):
    survey_id: str
    score: int
    at: datetime
    channel: str


class CampaignSeen(BaseModel):
    """The campaign a customer last came from (a landing's `utm_` parameters, a newsletter's
    link, an ad that opened a chat), and where and when."""

    name: str | None = None
    source: str | None = None
    medium: str | None = None
    channel: str
    at: datetime
    unverified: bool = Field(
        default=False,
        exclude_if=lambda unverified: not unverified,
        description="Told by an unverified source (a browser, with the web shop's public key: "
        "anyone can send one naming a customer), which the desk says.",
    )


class ProfileView(BaseModel):
    """What every channel and agent reads about a customer right now."""

    model_config = ConfigDict(hide_input_in_errors=True)

    event_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    last_channel: str | None = None
    channels: dict[str, ChannelStats] = Field(default_factory=dict)
    traits: dict[str, TraitValue] = Field(default_factory=dict)
    consent: list[ConsentState] = Field(default_factory=list)
    orders: list[OrderSummary] = Field(
        default_factory=list,
        description=f"The {RECENT_ORDERS} most recently updated orders, the latest last; "
        "order_count and lifetime_value count every order (all of them are in the journey).",
    )
    order_count: int = 0
    last_order_placed: datetime | None = Field(
        default=None,
        description="When the latest order was first seen, kept orders or not (what 'no order "
        "since the cart changed' asks).",
    )
    lifetime_value: dict[str, str] = Field(
        default_factory=dict, description="Per currency, decimal string; cancelled orders excluded."
    )
    conversation: OpenConversation | None = None
    cart: CartState | None = None
    surveys: dict[str, SurveyResult] = Field(default_factory=dict)
    recent_interactions: list[MessagePreview] = Field(default_factory=list)
    refunds_waiting: list[WaitingRefund] = Field(
        default_factory=list,
        description="Refunds of orders not seen yet (a till whose clock is behind the web "
        "shop's dates a return before its order): taken off the order if it comes within a day "
        "of the refund's date, let go after that (one of an order placed before Hilo).",
    )
    refunds_overflowed: bool = Field(
        default=False,
        description=f"More than {MAX_REFUNDS_WAITING} refunds waited at once and the oldest "
        "were let go: the view is derived whole when a forgotten order comes back.",
    )
    last_inbound: dict[str, datetime] = Field(
        default_factory=dict,
        description="Per channel, when the customer last wrote on it: what decides where a "
        "reply goes and whether WhatsApp's 24-hour window is open.",
    )

    last_done_mark_at: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="When the latest agent's done mark on the journey was dated, whether it "
        "saw to anything or not (nobody may have waited when it came): a contact dated up to it "
        "that arrives later is folded in journey order, before the mark, not on top of it. "
        "Absent when no mark was made.",
    )
    last_campaign: CampaignSeen | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The campaign of the customer's latest entry that named one: what the desk "
        "shows an agent as where they came from. Absent when none did.",
    )

    _orders_by_id: dict[str, OrderSummary] | None = PrivateAttr(default=None)
    """The orders by id while a fold runs, the latest updated last (see `_order_index`)."""

    def apply(self, entry: JourneyEntry, conversation_window: timedelta) -> None:
        """Fold one entry (the latest so far) into the view. An agent's done mark is the
        company's note on the conversation, not the customer's activity: it changes nothing else."""
        if entry.type == DONE:
            self._see_to(entry)
            marked = self.last_done_mark_at
            self.last_done_mark_at = max(marked, entry.occurred_at) if marked else entry.occurred_at
            return
        self._seen(entry)
        handler = _HANDLERS.get(entry.type)
        if handler is not None:
            handler(self, entry)
        if entry.type in CONVERSATION_KINDS and not _marketing(entry):
            self._converse(entry, conversation_window)
        if isinstance(campaign := entry.payload.get("campaign"), dict):
            self.last_campaign = CampaignSeen(
                **campaign,
                channel=entry.channel,
                at=entry.occurred_at,
                unverified=entry.identity_trust == "unverified",
            )
        self.recent_interactions = [*self.recent_interactions, _preview(entry)][
            -RECENT_INTERACTIONS:
        ]

    def marked_through(self) -> datetime | None:
        """The latest agent's done mark the view holds, which sets no time seen: a contact dated
        up to it cannot be folded on top. A view saved before `last_done_mark_at` was kept
        knows only the marks that saw to someone (`done_through`)."""
        done = self.conversation.done_through if self.conversation else None
        marks = [at for at in (self.last_done_mark_at, done) if at is not None]
        return max(marks, default=None)

    def _seen(self, entry: JourneyEntry) -> None:
        self.event_count += 1
        at = entry.occurred_at
        self.first_seen = at if self.first_seen is None else min(self.first_seen, at)
        self.last_seen = at if self.last_seen is None else max(self.last_seen, at)
        self.last_channel = entry.channel
        stats = self.channels.get(entry.channel)
        if stats is None:
            self.channels[entry.channel] = ChannelStats(count=1, first_seen=at, last_seen=at)
        else:
            stats.count += 1
            stats.last_seen = max(stats.last_seen, at)

    def _see_to(self, entry: JourneyEntry) -> None:
        """An agent saw to the customer's contacts up to the entry's time: nobody waits for what
        came until then, unless it waited from before what the agent saw (a question merged in
        from another profile since). Folded in time order (a late mark derives the view again),
        so every contact the open conversation holds came before it."""
        conversation = self.conversation
        waiting = conversation.awaiting_reply_since if conversation else None
        if conversation is None or waiting is None:
            return
        seen = as_stored(datetime.fromisoformat(entry.payload["waiting_since"]))
        if waiting < seen:
            return
        conversation.done_through = entry.occurred_at
        conversation.done_by = entry.payload.get("agent_id")
        conversation.awaiting_reply_since = None

    def _converse(self, entry: JourneyEntry, window: timedelta) -> None:
        """Continue the open conversation within `window` of its last contact, or past it only
        through an explicit link (`continues`). A thread's own id is no such link: a WhatsApp
        or SMS thread keeps one id for ever, and a message after weeks of silence on it starts
        a new conversation, as journey-analytics counts them. The customer starts one, or an
        agent's outbound call the contact centre reports taken, naming the agent (a call back):
        what the customer writes after it carries on that call. No other outbound contact with
        no conversation open (a campaign, a reminder) starts one: it would fill the agents'
        inbox with people who wrote nothing."""
        reference = entry.conversation or {}
        own_id = reference.get("id") or f"{entry.channel}:{entry.id}"
        current = self.conversation
        continues = current is not None and (
            reference.get("continues") in current.conversation_ids
            or entry.occurred_at - current.last_at <= window
        )
        outbound = entry.payload.get("direction") == "outbound"
        if not continues and outbound and not _agent_spoke(entry):
            return  # a campaign or a reminder opens no conversation
        if current is None or not continues:
            current = OpenConversation(
                started_channel=entry.channel,
                started_at=entry.occurred_at,
                last_at=entry.occurred_at,
                last_channel=entry.channel,
                channels=[],
                conversation_ids=[],
            )
        if entry.channel not in current.channels:
            current.channels.append(entry.channel)
        current.conversation_ids = [
            *(known for known in current.conversation_ids if known != own_id),
            own_id,
        ][-CONVERSATION_IDS_KEPT:]
        current.last_at = max(current.last_at, entry.occurred_at)
        current.last_channel = entry.channel
        current.recent = [*current.recent, _preview(entry)][-RECENT_MESSAGES:]
        _track_reply(current, entry)
        self.conversation = current

    def finish(self) -> ProfileView:
        """Keep the most recent orders whole once a fold is done (a full derivation holds every
        order until here, so an update of an old one finds it), and the refunds still waiting
        for theirs (no order can come now that would take one dated a day before the last
        entry)."""
        self._settle_orders()
        self.orders = self.orders[-RECENT_ORDERS:]
        if self.last_seen is not None:
            self.refunds_waiting = _still_waiting(self.refunds_waiting, self.last_seen)
        return self

    def finished_copy(self) -> ProfileView:
        """A copy of the view as `finish` would leave it, while this one folds on: a
        checkpoint (`service.derivation`). Only the orders `finish` keeps are copied: a walk-in
        account's fold holds every one of its orders until it finishes."""
        self._settle_orders()
        orders = self.orders
        self.orders = orders[-RECENT_ORDERS:]
        try:
            copy = self.model_copy(deep=True)
        finally:
            self.orders = orders
        return copy.finish()

    def _order_index(self) -> dict[str, OrderSummary]:
        """The orders by id while a fold runs: an update finds its order and moves it last in
        constant time, where a scan and rebuild of the list per order entry made a full
        derivation quadratic in a buyer's orders (2 s for 5,000). `finish` writes them back."""
        if self._orders_by_id is None:
            self._orders_by_id = {order.order_id: order for order in self.orders}
        return self._orders_by_id

    def _settle_orders(self) -> None:
        if self._orders_by_id is not None:
            self.orders = list(self._orders_by_id.values())
            self._orders_by_id = None

    def unknown_orders(self, entries: Iterable[JourneyEntry]) -> set[str]:
        """Order ids of `entries` this view cannot tell new from forgotten: not among its kept
        orders while older ones were let go. Folding an update of a forgotten order as a new one
        would count it twice: the journey says which were seen, and `recall_orders` puts those
        back first."""
        self._settle_orders()
        if self.order_count <= len(self.orders):
            return set()
        kept = {order.order_id for order in self.orders}
        kept |= {refund.order_id for refund in self.refunds_waiting}  # never folded: not forgotten
        return {
            str(entry.payload["order_id"])
            for entry in entries
            if _may_change_an_order(entry) and entry.payload["order_id"] not in kept
        }

    def recall_orders(self, entries: Iterable[JourneyEntry]) -> None:
        """Put back orders this view let go, as their stored entries left them, without counting
        them again: an update of one then takes back what it counted for before. Recalled
        orders go first (the oldest): the next `finish` lets go again those nothing updated."""
        recalled = ProfileView()
        for entry in sorted(entries, key=JourneyEntry.sort_key):
            _ORDER_HANDLERS[entry.type](recalled, entry)
        recalled._settle_orders()
        self._settle_orders()
        kept = {order.order_id for order in self.orders}
        self.orders = [o for o in recalled.orders if o.order_id not in kept] + self.orders

    def _count_order(self, order: OrderSummary, sign: int) -> None:
        """Add an order to (or take it from) the totals, less what was paid back on it;
        cancelled and refunded ones count 0."""
        kept = order.kept_value()
        if order.status in CLOSED_ORDER_STATUSES or kept == 0:
            return
        currency = order.total["currency"]
        total = Decimal(self.lifetime_value.get(currency, "0")) + sign * kept
        totals = {**self.lifetime_value, currency: str(total)}
        if sign < 0 and total == 0:  # its last open order was cancelled
            del totals[currency]
        self.lifetime_value = dict(sorted(totals.items()))


ANSWERED_CALLS = frozenset({"completed", "in_progress"})
"""Call statuses in which someone spoke with the customer."""


def _track_reply(conversation: OpenConversation, entry: JourneyEntry) -> None:
    """Whether the customer waits for the company: their message, or call nobody took, waits
    from its time until a message goes out or an agent speaks with them, on any channel (a
    reply by SMS answers a WhatsApp question). A call answers only when the contact centre
    names the agent on it (`_agent_spoke`). The telephony provider's own `completed` names
    nobody (an agent, an IVR, a queue the customer hung up in, a voicemail all complete a call)
    and changes nothing: it comes beside the contact centre's report of the same call, at the
    same instant, in either order."""
    payload = entry.payload
    inbound = payload.get("direction") == "inbound"
    if inbound:
        conversation.last_inbound_at = entry.occurred_at
    answered_call = entry.type == "call" and payload.get("status") in ANSWERED_CALLS
    replied = entry.type == "message" and not inbound
    if _agent_spoke(entry) or replied:
        conversation.awaiting_reply_since = None
        conversation.done_by = None
    elif inbound and not answered_call and conversation.awaiting_reply_since is None:
        seen_to = conversation.done_through
        if seen_to is None or entry.occurred_at > seen_to:  # one at the mark's instant was seen
            conversation.awaiting_reply_since = entry.occurred_at
            conversation.done_by = None


def _agent_spoke(entry: JourneyEntry) -> bool:
    """A call on which an agent spoke with the customer, as the contact centre reports it
    (naming the agent): the telephony provider's `completed` names nobody."""
    payload = entry.payload
    return (
        entry.type == "call"
        and payload.get("status") in ANSWERED_CALLS
        and bool(payload.get("agent_id"))
    )


def _marketing(entry: JourneyEntry) -> bool:
    """A promotion is no part of any conversation: it answers nobody (a campaign sent while a
    question waits must not take it off the agents' queue), and neither keeps the conversation
    open past its window nor moves it to the promotion's channel, where the desk would answer.
    A customer's reply to one is a contact like any other."""
    return entry.type == "message" and entry.payload.get("purpose") == "marketing"


def _preview(entry: JourneyEntry) -> MessagePreview:
    return MessagePreview(
        event_id=entry.id,
        at=entry.occurred_at,
        channel=entry.channel,
        type=entry.type,
        summary=entry.summary,
    )


def _identified(view: ProfileView, entry: JourneyEntry) -> None:
    """Traits as last told, each text cut to `MAX_TRAIT_TEXT`; at most `MAX_TRAITS` names (the
    first ones kept): the view is one Kafka record, and a caller with the public web key must
    not be able to grow it past what Kafka takes, which would stop the customer's events. Nor
    fill it: an unverified event adds new names only up to `UNVERIFIED_TRAITS`, leaving room
    for what verified sources tell. Nor may it, or a claimed one, overwrite what a verified
    source told (a name the desk greets the customer by, `_told_verified`): it sets traits that
    are new, or were told unverified."""
    room = UNVERIFIED_TRAITS if entry.identity_trust == "unverified" else MAX_TRAITS
    verified = entry.identity_trust == "verified"
    for name, told in entry.payload.get("traits", {}).items():
        current = view.traits.get(name)
        if current is None and len(view.traits) >= room:
            continue
        if not verified and _told_verified(view, name):
            continue  # anyone with the public key could rename a customer the desk shows
        value = told[:MAX_TRAIT_TEXT] if isinstance(told, str) else told
        view.traits[name] = TraitValue(
            value=value, channel=entry.channel, at=entry.occurred_at, verified=verified
        )


def _told_verified(view: ProfileView, name: str) -> bool:
    """Whether a verified source told the trait (or, for a name, any of the names).

    While a verified source told any name, an unverified one sets none: a `name` a browser
    added would be shown (`display_name`) before the verified `first_name`.
    """
    group = NAME_TRAITS if name in NAME_TRAITS else (name,)
    return any((told := view.traits.get(n)) is not None and told.verified for n in group)


def _message(view: ProfileView, entry: JourneyEntry) -> None:
    if entry.payload.get("direction") == "inbound":
        last = view.last_inbound.get(entry.channel)
        view.last_inbound[entry.channel] = (
            entry.occurred_at if last is None else max(last, entry.occurred_at)
        )


def _consent(view: ProfileView, entry: JourneyEntry) -> None:
    payload = entry.payload
    state = ConsentState(
        purpose=payload["purpose"],
        channel=payload.get("channel"),
        granted=payload["granted"],
        at=entry.occurred_at,
        via_channel=entry.channel,
        source=payload.get("source"),
    )
    kept = [c for c in view.consent if (c.purpose, c.channel) != (state.purpose, state.channel)]
    view.consent = [*kept, state][-MAX_CONSENTS:]


def _cart(view: ProfileView, entry: JourneyEntry) -> None:
    payload = entry.payload
    action = payload["action"]
    if action == "cleared":
        view.cart = None
        return
    cart = view.cart
    if cart is None or (payload.get("cart_id") and cart.cart_id not in (None, payload["cart_id"])):
        cart = CartState(
            cart_id=payload.get("cart_id"), channel=entry.channel, updated_at=entry.occurred_at
        )
    cart.channel = entry.channel
    cart.updated_at = entry.occurred_at
    cart.cart_id = payload.get("cart_id") or cart.cart_id
    before = cart.items
    if payload.get("items") is not None:
        cart.items = list(payload["items"])
    elif action in ("item_added", "item_removed"):
        cart.items = _apply_changes(
            cart.items, payload.get("changed_items", []), action == "item_added"
        )
    if payload.get("total") is not None:
        cart.total = payload["total"]
    elif cart.items != before:  # the items changed and no total came with them: it is unknown
        cart.total = None
    if action == "checkout_started":
        cart.checkout_started = True
    view.cart = cart


def _apply_changes(
    items: list[dict[str, Any]], changes: list[dict[str, Any]], add: bool
) -> list[dict[str, Any]]:
    lines = {item["sku"]: dict(item) for item in items}
    for change in changes:
        line = lines.get(change["sku"])
        if add:
            if line is None:
                lines[change["sku"]] = dict(change)
            else:
                line["quantity"] += change["quantity"]
        elif line is not None:
            line["quantity"] -= change["quantity"]
            if line["quantity"] <= 0:
                del lines[change["sku"]]
    return list(lines.values())


def _order(view: ProfileView, entry: JourneyEntry) -> None:
    """An order as last told. An unverified event (the public web key, which anyone can send
    naming a customer's email) adds an order but never changes one the view holds: it could
    otherwise set a customer's order to a total of 0 and take it out of their lifetime value,
    as `Order Cancelled` from that key is kept from doing."""
    payload = entry.payload
    orders = view._order_index()
    if entry.identity_trust == "unverified" and payload["order_id"] in orders:
        return
    existing = orders.pop(payload["order_id"], None)
    summary = OrderSummary(
        order_id=payload["order_id"],
        first_seen=existing.first_seen if existing else entry.occurred_at,
        last_update=entry.occurred_at,
        channel=existing.channel if existing else entry.channel,
        status=_status_after(existing, payload["status"]),
        sold_via=payload["sold_via"],
        fulfilment=payload["fulfilment"],
        store_id=payload.get("store_id"),
        total=payload["total"],
        item_count=sum(item["quantity"] for item in payload["items"]),
        coupons=payload.get("coupons") or (existing.coupons if existing else []),
        refunded=existing.refunded if existing else None,
        refunded_in_other_currencies=existing.refunded_in_other_currencies if existing else None,
    )
    if existing is not None:  # never more back than it now has (`_returned`)
        summary.returned_items = _returned(summary, existing.returned_items)
    if existing is None:
        view.order_count += 1
        last = view.last_order_placed
        view.last_order_placed = entry.occurred_at if last is None else max(last, entry.occurred_at)
    else:
        view._count_order(existing, -1)
    view._count_order(summary, +1)
    orders[summary.order_id] = summary
    if existing is None:
        _pay_back_waiting(view, summary.order_id, entry.occurred_at)
    if existing is None and view.cart is not None:
        view.cart = _after_purchase(view.cart, payload)


def _may_change_an_order(entry: JourneyEntry) -> bool:
    """An order's state, or a refund from an authenticated source (verified, or claimed: a
    till whose clerk typed the card): an unverified one changes nothing (the public web key
    must not take someone's order out of their lifetime value)."""
    trusted = entry.identity_trust != "unverified"
    return entry.type == "order" or (entry.type == "refund" and trusted)


def _refund(view: ProfileView, entry: JourneyEntry) -> None:
    """Money paid back on an order the view holds, taken off its value (never below nothing):
    a refund with no amount pays back what was left. Unverified events change no order (see
    `_order`). A refund of an order not seen yet waits for it (`refunds_waiting`): a till whose
    clock is behind the web shop's dates a return before the order it returns."""
    if not _may_change_an_order(entry):
        return
    payload = entry.payload
    refund = WaitingRefund(
        order_id=payload["order_id"],
        amount=payload.get("amount"),
        returned_items=sum(item["quantity"] for item in payload.get("items", [])),
        at=entry.occurred_at,
    )
    existing = view._order_index().get(refund.order_id)
    if existing is not None:
        _pay_back(view, existing, refund)
        return
    waiting = [*_still_waiting(view.refunds_waiting, entry.occurred_at), refund]
    view.refunds_overflowed |= len(waiting) > MAX_REFUNDS_WAITING
    view.refunds_waiting = waiting[-MAX_REFUNDS_WAITING:]


def _still_waiting(refunds: list[WaitingRefund], now: datetime) -> list[WaitingRefund]:
    return [refund for refund in refunds if now - refund.at <= REFUND_SKEW]


def _pay_back_waiting(view: ProfileView, order_id: str, placed_at: datetime) -> None:
    """Take off a new order the refunds that waited for it, dated at most `REFUND_SKEW` before
    it; let go of those dated earlier than that, of any order."""
    waiting = _still_waiting(view.refunds_waiting, placed_at)
    view.refunds_waiting = [refund for refund in waiting if refund.order_id != order_id]
    for refund in waiting:
        if refund.order_id == order_id:
            _pay_back(view, view._order_index()[order_id], refund)


def _returned(order: OrderSummary, more: int) -> int:
    """Items back on the order, never more than it has: two returns of 0.3 kg from an order of
    one weighed line of 0.735 kg bring back one item, not two; an order updated to fewer items
    than came back has them all back."""
    returned = order.returned_items + more
    return min(returned, order.item_count) if order.item_count else returned


def _pay_back(view: ProfileView, existing: OrderSummary, refund: WaitingRefund) -> None:
    """Take `refund` off the order and move the order last, as updated. Money paid back in
    another currency is not comparable: it is kept beside the order, not taken off (the goods
    that came back count all the same)."""
    currency = existing.total["currency"]
    amount = refund.amount
    money: dict[str, Any]
    if amount is not None and amount["currency"] != currency:
        money = {"refunded_in_other_currencies": _added(existing, amount)}
    else:
        left = existing.kept_value()
        paid = left if amount is None else min(left, Decimal(amount["amount"]))
        already = Decimal(existing.refunded["amount"]) if existing.refunded else Decimal(0)
        money = {"refunded": {"amount": str(already + paid), "currency": currency}}
    view._count_order(existing, -1)
    summary = existing.model_copy(
        update={
            **money,
            "returned_items": _returned(existing, refund.returned_items),
            "last_update": max(existing.last_update, refund.at),
        }
    )
    view._count_order(summary, +1)
    orders = view._order_index()
    del orders[summary.order_id]
    orders[summary.order_id] = summary


def _added(order: OrderSummary, amount: dict[str, Any]) -> dict[str, str]:
    """The order's refunds in other currencies, with `amount` added to its currency's."""
    elsewhere = dict(order.refunded_in_other_currencies or {})
    before = Decimal(elsewhere.get(amount["currency"], "0"))
    elsewhere[amount["currency"]] = str(before + Decimal(amount["amount"]))
    return elsewhere


def _status_after(existing: OrderSummary | None, status: str) -> str:
    """An order never goes back to `placed` once it was picked up, completed, cancelled or
    refunded: a shop that sends `Order Completed` when the till takes the payment, seconds
    after the handover, or a till whose clock is behind, would otherwise show it waiting for
    its pickup for good."""
    if existing is not None and status == "placed":
        return existing.status
    return status


_NOT_BOUGHT = frozenset({"cancelled", "refunded"})


def _after_purchase(cart: CartState, order: dict[str, Any]) -> CartState | None:
    """The cart once a new order is known: gone when the order names it; untouched when it
    names another cart; else less what the order bought of its products (bought in a store,
    say), gone once nothing is left. One first seen cancelled or refunded bought nothing; a
    later state of an order (picked up, refunded) is not a purchase: the cart since is another
    one."""
    if order["status"] in _NOT_BOUGHT:
        return cart
    if order.get("cart_id") and order["cart_id"] == cart.cart_id:
        return None
    if order.get("cart_id") and cart.cart_id:
        return cart  # it bought another cart: this one is untouched (as analytics counts it)
    carted = {item["sku"] for item in cart.items}
    bought = [item for item in order["items"] if item["sku"] in carted]
    if not bought:
        return cart
    left = _apply_changes(cart.items, bought, add=False)
    if not left:
        return None
    return cart.model_copy(update={"items": left, "total": None})


def _survey(view: ProfileView, entry: JourneyEntry) -> None:
    payload = entry.payload
    view.surveys[payload["metric"]] = SurveyResult(
        survey_id=payload["survey_id"],
        score=payload["score"],
        at=entry.occurred_at,
        channel=entry.channel,
    )


_HANDLERS = {
    "message": _message,
    "identify": _identified,
    "consent": _consent,
    "cart": _cart,
    "order": _order,
    "refund": _refund,
    "survey_answer": _survey,
}
_ORDER_HANDLERS = {kind: _HANDLERS[kind] for kind in ORDER_KINDS}


def derive_view(entries: Iterable[JourneyEntry], conversation_window: timedelta) -> ProfileView:
    """The profile as the journey implies it: entries folded in event-time order."""
    view = ProfileView()
    for entry in sorted(entries, key=JourneyEntry.sort_key):
        view.apply(entry, conversation_window)
    return view.finish()
