"""Journey entries: one per accepted interaction, in event-time order, each keeping its channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hilo.contract import IdentityTrust, Interaction
from hilo.contract.payloads import (
    CallHappened,
    Campaign,
    CartChanged,
    ConsentChanged,
    ConversationDone,
    CustomEvent,
    Identified,
    MessageExchanged,
    MessageStatusChanged,
    Money,
    OrderPlaced,
    OrderRefunded,
    PageViewed,
    Payload,
    ProductViewed,
    StoreVisited,
    SurveyAnswered,
)
from hilo.mongo import as_stored

EXCERPT_CHARS = 80


class JourneyEntry(BaseModel):
    """What happened, where, when, and to whom: the unit of a customer's journey."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    id: str = Field(description="The interaction's event id; an entry is stored once per id.")
    customer_id: str
    occurred_at: datetime = Field(description="Event time: the journey is ordered by it.")
    recorded_at: datetime = Field(description="When Hilo stored the entry.")
    channel: str
    type: str = Field(description="Payload kind, e.g. `message`, `order`.")
    summary: str
    source: str
    conversation: dict[str, Any] | None = None
    identifiers: dict[str, str]
    payload: dict[str, Any]
    late: bool = Field(
        default=False,
        description="It happened before entries already recorded: placed by event time, flagged.",
    )
    adjustments: list[dict[str, str]] = Field(
        default_factory=list,
        description="What the channel dropped or replaced to keep the event (field and reason).",
    )
    identity_trust: IdentityTrust = Field(
        default="verified",
        description="The event's `identity_trust`: an unverified source (a public web key) "
        "adds fewer traits to the profile, overwrites none a verified source told and changes "
        "no order it holds (`domain.profile`); a claimed one (a clerk typed who it was) changes "
        "orders as a verified one does, and traits as an unverified one.",
    )
    price_mismatches: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Lines charged differently from the offer in force for this customer, "
        "channel and time: SKU, charged and expected unit price, the promotions expected, the "
        "offers version (`customer_profile.service.prices`).",
    )

    def sort_key(self) -> tuple[datetime, str]:
        return (self.occurred_at, self.id)


UNVERIFIED_SOURCE = "unverified_source"
"""Adjustment reason: a trait only a verified source may set came from an unverified one."""


def new_entry(
    interaction: Interaction,
    customer_id: str,
    recorded_at: datetime,
    *,
    late: bool,
    price_mismatches: list[dict[str, Any]] | None = None,
    verified_only_traits: frozenset[str] = frozenset(),
) -> JourneyEntry:
    """Turn an accepted interaction into the customer's journey entry.

    Traits in `verified_only_traits` (a loyalty tier, which prices follow) are left out of an
    unverified event's (anyone can send one with the public web key) or a claimed one's (who
    it was is only what the customer said), noted in `adjustments`.
    """
    payload = interaction.payload.model_dump(mode="json")
    adjustments = [adjustment.model_dump() for adjustment in interaction.adjustments]
    if interaction.identity_trust != "verified" and verified_only_traits:
        traits = payload.get("traits") or {}
        if withheld := verified_only_traits & traits.keys():
            payload["traits"] = {k: v for k, v in traits.items() if k not in withheld}
            adjustments.append({"field": "payload.traits", "reason": UNVERIFIED_SOURCE})
    return JourneyEntry(
        id=interaction.id,
        customer_id=customer_id,
        # As MongoDB gives it back: the record on `journey`, the API and the journey read back
        # agree, with no channel's offset (an email's Date header) left to compare as text
        # downstream; and a view folded in memory orders entries as one derived from the
        # stored journey does.
        occurred_at=as_stored(interaction.occurred_at),
        recorded_at=recorded_at,
        channel=interaction.channel,
        type=interaction.payload.kind,
        summary=summarise(interaction.payload, interaction.channel),
        source=interaction.source,
        conversation=interaction.conversation.model_dump() if interaction.conversation else None,
        identifiers={kind.value: value for kind, value in interaction.identifiers.pairs()},
        payload=payload,
        late=late,
        adjustments=adjustments,
        identity_trust=interaction.identity_trust,
        price_mismatches=price_mismatches or [],
    )


def _money(money: Money | None) -> str:
    return f"{money.amount} {money.currency}" if money else "no total"


def _excerpt(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


def _words(value: str) -> str:
    return value.replace("_", " ")


def _campaign(campaign: Campaign) -> str:
    """`, from campaign spring (newsletter / email)`: what brought a customer in, for the desk."""
    told = " / ".join(part for part in (campaign.source, campaign.medium) if part)
    name = f"campaign {campaign.name}" if campaign.name else "a campaign"
    return f", from {name}" + (f" ({told})" if told else "")


def summarise(payload: Payload, channel: str) -> str:  # noqa: PLR0911, PLR0912 - one per kind
    """One line an agent can scan in a timeline."""
    match payload:
        case MessageExchanged():
            content = _excerpt(payload.text or payload.subject or payload.interactive_reply)
            files = f" (+{len(payload.attachments)} attachment(s))" if payload.attachments else ""
            direction = payload.direction.value.capitalize()
            came = _campaign(payload.campaign) if payload.campaign else ""
            return f"{direction} {channel} message: {content}{files}".rstrip() + came
        case MessageStatusChanged():
            return f"Outbound {channel} message {payload.status.value}"
        case PageViewed():
            what = "screen" if payload.screen else "page"
            name = payload.name or payload.title or payload.path or payload.url or ""
            came = _campaign(payload.campaign) if payload.campaign else ""
            viewed = "Followed a link in an email to" if channel == "email" else f"Viewed {what}"
            return f"{viewed} {name}".rstrip() + came
        case ProductViewed():
            return f"Viewed product {payload.name or payload.sku}"
        case CartChanged():
            count = len(payload.items or payload.changed_items)
            return f"Cart {_words(payload.action.value)}: {count} item(s), {_money(payload.total)}"
        case OrderPlaced():
            where = f"in store {payload.store_id}" if payload.store_id else payload.sold_via.value
            status = f"Order {payload.order_id} {payload.status.value}"
            codes = f", with {', '.join(payload.coupons)}" if payload.coupons else ""
            how = f"{where}, {_words(payload.fulfilment.value)}{codes}"
            return f"{status}: {_money(payload.total)}, {how}"
        case OrderRefunded():
            where = (
                f"in store {payload.store_id}" if payload.store_id else payload.refunded_via.value
            )
            paid = _money(payload.amount) if payload.amount else "the whole order"
            count = sum(item.quantity for item in payload.items)
            goods = f", {count} item(s) returned" if count else ""
            return f"Refund on order {payload.order_id}: {paid}{goods}, {where}"
        case CallHappened():
            seconds = payload.duration_seconds
            length = f" after {seconds}s" if seconds is not None else ""
            outcome = f", {payload.outcome}" if payload.outcome else ""
            direction = payload.direction.value.capitalize()
            return f"{direction} call {_words(payload.status.value)}{length}{outcome}"
        case StoreVisited():
            return f"Visited store {payload.store_id} ({_words(payload.method.value)})"
        case SurveyAnswered():
            return f"{payload.metric.value.upper()} {payload.score} on {payload.survey_id}"
        case ConsentChanged():
            scope = payload.channel or "all channels"
            verdict = "granted" if payload.granted else "withdrawn"
            return f"Consent to {payload.purpose} on {scope} {verdict}"
        case Identified():
            return "Identified" + (f" ({len(payload.traits)} trait(s))" if payload.traits else "")
        case ConversationDone():
            return f"Marked done by {payload.agent_id}"
        case CustomEvent():
            return payload.name
    return payload.kind  # pragma: no cover - the union is exhaustive
