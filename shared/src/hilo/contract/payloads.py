"""Typed payloads, one per interaction type, discriminated by `kind`.

Names describe what happened on the channel. Money is `Decimal` with an ISO 4217 currency and is
serialised as a string, so analytics in any language read exact amounts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_extra_types.currency_code import ISO4217

MAX_STORED_INT: Final = 2**63 - 1
"""MongoDB's largest integer (8 bytes): an event holding a larger one could be read but never
stored, so every consumer that keeps it would dead-letter it after its sender was told yes."""

StoredInt = Annotated[int, Field(ge=-MAX_STORED_INT - 1, le=MAX_STORED_INT)]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""JSON has no NaN or infinity: one accepted (`NaN`, `1e400`) was published as `null`."""

JsonScalar = str | StoredInt | FiniteFloat | bool | None
"""Trait and property values are flat scalars: portable to every consumer and to FerretDB. A
whole number past `MAX_STORED_INT` is read as a number with a fraction (a float), as
JavaScript, which sent most of them, holds it."""

MAX_QUANTITY: Final = 100_000

FieldName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[^.$\x00][^.\x00]*$"),
]
"""Trait and property names: no `.`, no NUL and no leading `$`, so they can be stored as
document keys (MongoDB refuses a key holding NUL: the event was published, then dead-lettered)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )


class Money(_Model):
    """An exact, non-negative amount in one currency."""

    amount: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)] = Field(
        description="Amount as a decimal string; never a float.", examples=["59.90"]
    )
    currency: ISO4217 = Field(description="ISO 4217 currency code.", examples=["EUR"])


Purpose = Literal["service", "marketing"]
"""Why the company speaks: `service` answers the customer, `marketing` promotes (it needs the
customer's consent, and answers nobody)."""


def _absent(value: object) -> bool:
    """Left out of the record when not given: records without it serialise as before."""
    return value is None or value == []


class MeasureUnit(StrEnum):
    """Units goods are weighed or measured in at a till."""

    KG = "kg"
    G = "g"
    LB = "lb"
    OZ = "oz"
    L = "l"
    ML = "ml"
    M = "m"


class Measure(_Model):
    """How much of a product sold by weight, volume or length a line holds: 1.25 kg of cheese
    at 3.50 a kilo."""

    amount: Annotated[Decimal, Field(gt=0, le=100_000, max_digits=12, decimal_places=4)] = Field(
        description="How much, as a decimal string.", examples=["1.250"]
    )
    unit: MeasureUnit
    unit_price: Money | None = Field(
        default=None, description="The price of one `unit` (a kilo), as the till showed it."
    )


class LineItem(_Model):
    """One product line of a cart, order or receipt. A line of goods sold by weight, volume or
    length (`measure`: 1.25 kg of cheese) is one unit of them: `quantity` 1 and `unit_price`
    what the line cost, so quantity x unit price is every line's value, measured or not."""

    sku: str = Field(min_length=1, max_length=100, examples=["SKU-RED-42"])
    name: str | None = Field(default=None, max_length=300, examples=["Red running shoes"])
    quantity: int = Field(gt=0, le=MAX_QUANTITY, examples=[1])
    unit_price: Money | None = None
    category: str | None = Field(default=None, max_length=200)
    measure: Measure | None = Field(
        default=None,
        exclude_if=_absent,
        description="Goods sold by weight, volume or length: how much the line holds. Absent "
        "for goods sold by the unit.",
    )

    @model_validator(mode="after")
    def _one_measured_unit(self) -> LineItem:
        if self.measure is not None and self.quantity != 1:
            raise PydanticCustomError(
                "measured_quantity", "a measured line (measure) has quantity 1: the line itself"
            )
        measured = self.measure.unit_price if self.measure is not None else None
        _one_currency([self.unit_price, measured])
        return self


def _one_currency(amounts: list[Money | None]) -> None:
    currencies = {money.currency for money in amounts if money is not None}
    if len(currencies) > 1:
        raise PydanticCustomError(
            "currency_mismatch",
            "all amounts must share one currency, got {currencies}",
            {"currencies": ", ".join(sorted(currencies))},
        )


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class AttachmentKind(StrEnum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"
    OTHER = "other"


class Attachment(_Model):
    """A file or structured part of a message; recorded, never stored by Hilo."""

    kind: AttachmentKind
    url: HttpUrl | None = Field(default=None, description="Where the provider serves it.")
    provider_media_id: str | None = Field(default=None, max_length=300)
    mime_type: str | None = Field(default=None, max_length=200, examples=["image/jpeg"])
    filename: str | None = Field(default=None, max_length=500)
    size_bytes: int | None = Field(default=None, ge=0, le=MAX_STORED_INT)
    caption: str | None = Field(default=None, max_length=4_000)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


MAX_CAMPAIGN_TEXT: Final = 200
PERSONAL_IN_CAMPAIGN: Final = r"@|%40|(?:\+|%2[Bb])[0-9](?:[ ()./-]{0,3}[0-9]){7,}"
"""What a campaign field published in the clear must not hold: an email address (`@`, or
`%40` as a link encoded twice) or a phone number in international form (`+`, or `%2B`, and
eight digits or more, grouped any way). Digits alone are allowed: ad platforms name campaigns
by number (Google Ads' `{campaignid}`), so a number in national form is not recognised. ASCII
only and without look-arounds, so every JSON Schema validator reads the published pattern as
Python does."""
CampaignText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CAMPAIGN_TEXT)
]


def looks_personal(value: str) -> bool:
    """Whether a campaign field holds what looks like someone's address or number."""
    return re.search(PERSONAL_IN_CAMPAIGN, value) is not None


def _campaign_field(utm: str, example: str) -> Any:
    return Field(
        default=None,
        description=f"`{utm}`, as sent (case kept). No email address or phone number.",
        examples=[example],
        json_schema_extra={"not": {"type": "string", "pattern": PERSONAL_IN_CAMPAIGN}},
    )


class Campaign(_Model):
    """The marketing campaign a page view or a conversation came from: Segment's
    `context.campaign`, or the URL's `utm_campaign`, `utm_source` and `utm_medium` (of a page, or
    of a link clicked in an email), or the ad or listed link that opened a WhatsApp, Messenger
    or Instagram chat. Kept in the clear, where the URL is sealed, so a campaign's sales can be
    measured on any channel without the keys; the URL keeps the rest (`utm_term`,
    `utm_content`). It needs a name or a source, and none of its fields may hold an email
    address or a phone number (an `@`, a `%40`, a `+` and eight digits or more): a channel
    leaves out a campaign that does rather than publish it. Names and codes that point at one
    person (a referral code as a campaign) are the sender's to keep out of `utm_` parameters:
    they stay after an erasure (a chat link's `ref` names a campaign only when listed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [part], "properties": {part: {"type": "string"}}}
                for part in ("name", "source")
            ]
        }
    )

    name: CampaignText | None = _campaign_field("utm_campaign", "spring-sale")
    source: CampaignText | None = _campaign_field("utm_source", "newsletter")
    medium: CampaignText | None = _campaign_field("utm_medium", "email")

    @model_validator(mode="after")
    def _useful_and_impersonal(self) -> Campaign:
        values = [v for v in (self.name, self.source, self.medium) if v is not None]
        if self.name is None and self.source is None:
            raise PydanticCustomError("campaign_unnamed", "a campaign needs a name or a source")
        if any(looks_personal(value) for value in values):
            raise PydanticCustomError(
                "campaign_personal",
                "a campaign's name, source and medium are published in the clear: an email "
                "address or a phone number has no place in them",
            )
        return self


class MessageExchanged(_Model):
    """A message between the customer and the company (chat, SMS, email, social DM)."""

    kind: Literal["message"] = "message"
    direction: Direction
    text: str | None = Field(default=None, max_length=100_000)
    subject: str | None = Field(default=None, max_length=1_000, description="Email subject.")
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    provider_message_id: str = Field(min_length=1, max_length=500)
    reply_to_provider_message_id: str | None = Field(default=None, max_length=500)
    interactive_reply: str | None = Field(
        default=None, max_length=1_000, description="Button or list reply id/title, postbacks."
    )
    campaign: Campaign | None = Field(
        default=None,
        exclude_if=_absent,
        description="The ad, post or listed link that opened the conversation, on the first "
        "inbound message after the click (Meta's `referral` on WhatsApp, Messenger and "
        "Instagram). Absent otherwise.",
    )
    purpose: Purpose | None = Field(
        default=None,
        exclude_if=_absent,
        description="Why the company sent it, on an outbound message Hilo sent (the command's "
        "`purpose`, or its Messenger echo's mark): `service` answers the customer, `marketing` "
        "answers nobody. Absent on inbound messages and on outbound ones sent outside Hilo (from "
        "a provider's console or app): readers take those for an answer.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> MessageExchanged:
        if not (self.text or self.attachments or self.interactive_reply or self.subject):
            raise PydanticCustomError(
                "empty_message", "a message needs text, an attachment or a reply"
            )
        if self.purpose is not None and self.direction != Direction.OUTBOUND:
            raise PydanticCustomError(
                "purpose_inbound", "only an outbound message has a purpose: the company's"
            )
        return self


class DeliveryStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class MessageStatusChanged(_Model):
    """The provider reports what became of an outbound message."""

    kind: Literal["message_status"] = "message_status"
    provider_message_id: str = Field(min_length=1, max_length=500)
    status: DeliveryStatus
    error: str | None = Field(default=None, max_length=1_000)


class PageViewed(_Model):
    """A web page or app screen was shown, or (on the `email` channel) the recipient followed a
    link in a mail."""

    kind: Literal["page_view"] = "page_view"
    screen: bool = Field(default=False, description="True for an app screen, false for a web page.")
    name: str | None = Field(default=None, max_length=500)
    url: str | None = Field(default=None, max_length=4_000)
    path: str | None = Field(default=None, max_length=4_000)
    referrer: str | None = Field(default=None, max_length=4_000)
    title: str | None = Field(default=None, max_length=1_000)
    campaign: Campaign | None = Field(
        default=None,
        exclude_if=_absent,
        description="The campaign the page view came from (the URL's `utm_` parameters). "
        "Segment's SDKs tag every view of a tagged URL, reloads too: readers counting visits "
        "group them. Absent otherwise.",
    )


class ProductViewed(_Model):
    kind: Literal["product_view"] = "product_view"
    sku: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=300)
    category: str | None = Field(default=None, max_length=200)
    price: Money | None = None


class CartAction(StrEnum):
    ITEM_ADDED = "item_added"
    ITEM_REMOVED = "item_removed"
    VIEWED = "viewed"
    CHECKOUT_STARTED = "checkout_started"
    CLEARED = "cleared"


class CartChanged(_Model):
    """The customer's cart changed or was looked at; `items` is the cart after the action."""

    kind: Literal["cart"] = "cart"
    action: CartAction
    cart_id: str | None = Field(default=None, max_length=200)
    quote_id: str | None = Field(
        default=None,
        max_length=100,
        description="The offers service's quote the prices came from (`POST /v1/quotes`).",
    )
    changed_items: list[LineItem] = Field(default_factory=list, max_length=1_000)
    items: list[LineItem] | None = Field(
        default=None, max_length=1_000, description="Whole cart after the action, when known."
    )
    total: Money | None = None

    @model_validator(mode="after")
    def _currencies(self) -> CartChanged:
        lines = [*self.changed_items, *(self.items or [])]
        _one_currency([self.total, *(line.unit_price for line in lines)])
        return self


class SalesChannel(StrEnum):
    ONLINE = "online"
    STORE = "store"
    PHONE = "phone"


class Fulfilment(StrEnum):
    DELIVERY = "delivery"
    STORE_PICKUP = "store_pickup"
    IN_STORE = "in_store"


class OrderStatus(StrEnum):
    PLACED = "placed"
    COMPLETED = "completed"
    PICKED_UP = "picked_up"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


MAX_CODE = 100
MAX_CODES = 20
CouponCode = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CODE)
]
"""A code as the customer gave it (a coupon, a voucher, a printed flyer's campaign code)."""


def given_codes(value: object) -> list[object]:
    """The codes a channel was given (one, or a list), nulls and blanks left out: a site or a
    till that sends `""` or `null` for "no code" presents none."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]


class OrderPlaced(_Model):
    """An order or store receipt, online or in a store."""

    kind: Literal["order"] = "order"
    order_id: str = Field(min_length=1, max_length=200)
    status: OrderStatus = OrderStatus.PLACED
    sold_via: SalesChannel
    fulfilment: Fulfilment
    store_id: str | None = Field(default=None, max_length=100)
    items: list[LineItem] = Field(min_length=1, max_length=1_000)
    total: Money
    tax: Money | None = None
    discount: Money | None = None
    payment_method: str | None = Field(default=None, max_length=100)
    cart_id: str | None = Field(default=None, max_length=200)
    quote_id: str | None = Field(
        default=None,
        max_length=100,
        description="The offers service's quote the prices came from (`POST /v1/quotes`).",
    )
    shipping: Money | None = Field(
        default=None,
        exclude_if=_absent,
        description="What delivery cost, part of `total`. Absent when the channel gave none.",
    )
    coupons: list[CouponCode] = Field(
        default_factory=list,
        max_length=MAX_CODES,
        exclude_if=_absent,
        description="Codes the customer presented with the order (a coupon, a voucher, a "
        "printed campaign's code), as the channel took them: what ties an offline campaign to "
        "the sales it brought, in any channel. Absent when none.",
        examples=[["SPRING10"]],
    )
    receipt_id: str | None = Field(
        default=None,
        max_length=200,
        exclude_if=_absent,
        description="The store receipt that recorded it, `<store_id>:<receipt_id>` as printed: "
        "for a pickup, whose `order_id` is the online order's, the handover receipt. Absent "
        "outside stores.",
        examples=["BCN-01:R-000123"],
    )
    till_id: str | None = Field(
        default=None,
        max_length=100,
        exclude_if=_absent,
        description="The till that took it, in the store. Absent when not known.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OrderPlaced:
        _one_currency(
            [
                self.total,
                self.tax,
                self.discount,
                self.shipping,
                *(i.unit_price for i in self.items),
            ]
        )
        if self.fulfilment in (Fulfilment.STORE_PICKUP, Fulfilment.IN_STORE) and not self.store_id:
            raise PydanticCustomError(
                "store_required",
                "store_id is required for {fulfilment}",
                {"fulfilment": self.fulfilment.value},
            )
        return self


class OrderRefunded(_Model):
    """Money paid back on an order, with the goods that came back if any: a return at a till,
    a refund online or by phone. One event per refund; an order may have several (a partial
    return, then another). Readers take it off the order's value, never below nothing."""

    kind: Literal["refund"] = "refund"
    order_id: str = Field(
        min_length=1,
        max_length=200,
        description="The order paid back: an online order's id, or a store sale's "
        "`<store_id>:<receipt_id>` as printed on its receipt.",
        examples=["W-1001", "BCN-01:R-000123"],
    )
    refunded_via: SalesChannel = Field(
        description="Where the money was paid back: a return of an online order at a store "
        "is `store`."
    )
    store_id: str | None = Field(default=None, max_length=100)
    items: list[LineItem] = Field(
        default_factory=list,
        max_length=1_000,
        description="The goods that came back. Empty for money alone (a goodwill refund, or a "
        "whole order refunded by its id).",
    )
    amount: Money | None = Field(
        default=None,
        description="What was paid back. Absent: the whole order (what was left of it), as "
        "Segment's `Order Refunded` names a full refund by its order id alone.",
    )
    reason: str | None = Field(default=None, max_length=500, exclude_if=_absent)
    receipt_id: str | None = Field(
        default=None,
        max_length=200,
        exclude_if=_absent,
        description="The store's return receipt, `<store_id>:<return_id>`. Absent outside stores.",
        examples=["BCN-01:RET-000045"],
    )
    till_id: str | None = Field(default=None, max_length=100, exclude_if=_absent)

    @model_validator(mode="after")
    def _consistent(self) -> OrderRefunded:
        _one_currency([self.amount, *(i.unit_price for i in self.items)])
        if self.refunded_via is SalesChannel.STORE and not self.store_id:
            raise PydanticCustomError(
                "store_required", "store_id is required for a refund paid back in a store"
            )
        return self


class CallStatus(StrEnum):
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"
    DROPPED = "dropped"


class CallHappened(_Model):
    """A phone call, from the telephony provider or the contact centre."""

    kind: Literal["call"] = "call"
    direction: Direction
    status: CallStatus
    provider_call_id: str = Field(min_length=1, max_length=200)
    duration_seconds: int | None = Field(default=None, ge=0, le=MAX_STORED_INT)
    outcome: str | None = Field(default=None, max_length=200, examples=["resolved"])
    disposition: str | None = Field(default=None, max_length=200, examples=["billing_question"])
    agent_id: str | None = Field(default=None, max_length=200)
    transcript: str | None = Field(default=None, max_length=500_000)
    summary: str | None = Field(default=None, max_length=10_000)


class VisitMethod(StrEnum):
    LOYALTY_CARD = "loyalty_card"
    QR_CODE = "qr_code"
    STAFF = "staff"
    WIFI = "wifi"


class StoreVisited(_Model):
    kind: Literal["store_visit"] = "store_visit"
    store_id: str = Field(min_length=1, max_length=100)
    method: VisitMethod
    purpose: str | None = Field(default=None, max_length=200, examples=["order_pickup"])


class SurveyMetric(StrEnum):
    CSAT = "csat"
    NPS = "nps"
    CES = "ces"


MAX_RESPONSE_ID = 200


class SurveyAnswered(_Model):
    """Feedback: CSAT (1-5), NPS (0-10) or CES (1-7)."""

    kind: Literal["survey_answer"] = "survey_answer"
    survey_id: str = Field(min_length=1, max_length=200)
    metric: SurveyMetric
    score: int = Field(description="A whole number (`4.0` is one); `true` is no score.")
    comment: str | None = Field(default=None, max_length=10_000)
    about_channel: str | None = Field(default=None, max_length=50)
    response_id: str | None = Field(
        default=None,
        max_length=MAX_RESPONSE_ID,
        exclude_if=_absent,
        description="The survey tool's id of this answer: the same answer sent again (a double "
        "submission, a form posted twice) has the same one, a second answer another. Measures "
        "count a response once. Absent: an identical answer to the same survey within minutes "
        "is taken for the same one.",
        examples=["resp_8f2c1a"],
    )

    @field_validator("score", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        """JSON's `true` is no score (pydantic's integers take it as 1, the worst CSAT); `4.0`
        is one, as JSON Schema's integer, which the published schema says, counts it."""
        if isinstance(value, bool):
            raise PydanticCustomError("score_bool", "a score is a number, not true or false")
        return value

    @model_validator(mode="after")
    def _score_in_range(self) -> SurveyAnswered:
        low, high = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}[self.metric.value]
        if not low <= self.score <= high:
            raise PydanticCustomError(
                "score_range",
                "{metric} score must be between {low} and {high}",
                {"metric": self.metric.value.upper(), "low": low, "high": high},
            )
        return self


MAX_CONSENT_SOURCE = 200


class ConsentChanged(_Model):
    """The customer granted or withdrew consent for a purpose, optionally on one channel."""

    kind: Literal["consent"] = "consent"
    purpose: str = Field(min_length=1, max_length=100, examples=["marketing"])
    granted: bool
    channel: str | None = Field(
        default=None, max_length=50, description="None means every channel."
    )
    source: str | None = Field(
        default=None, max_length=MAX_CONSENT_SOURCE, examples=["checkout_checkbox"]
    )


class Identified(_Model):
    """The customer told us who they are (sign-in, sign-up, profile update, alias)."""

    kind: Literal["identify"] = "identify"
    traits: dict[FieldName, JsonScalar] = Field(default_factory=dict, max_length=200)
    previous_anonymous_id: str | None = Field(
        default=None, max_length=200, description="Segment `alias`: the id being linked."
    )


NAME_TRAITS: Final = ("name", "first_name", "last_name")
"""The traits a customer is called by, in the order a name is read from them."""


def display_name(traits: Mapping[str, object]) -> str | None:
    """What a person is called by: `name`, else `first_name last_name`; None when all are blank.

    One reading for every screen (the desk's heading, a clerk's context), so a browser that
    sent an empty `name` does not leave a customer called "" in one and by name in the other.
    """
    name = traits.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    parts = (traits.get(part) for part in NAME_TRAITS[1:])
    joined = " ".join(str(part).strip() for part in parts if part is not None and str(part).strip())
    return joined or None


DONE_AFTER: Final = timedelta(milliseconds=1)
"""How long after the latest contact it sees to a `conversation_done` is dated: just after, so it
is ordered after that contact (a journey orders one instant's entries by id), in MongoDB's
millisecond time."""


AGENT_MARKS: Final = frozenset({"conversation_done"})
"""Payload kinds that record what an agent decided about a conversation, not what the customer
or the company did: no activity of the customer's, no touch to measure."""


class ConversationDone(_Model):
    """An agent saw to the customer's messages without answering them (a thank-you needs no
    reply): the customer no longer waits. Recorded by the agent desk (channel `desk`). Its
    `occurred_at` is `DONE_AFTER` past the customer's latest contact the agent saw, so everything
    up to it is seen to and the customer waits again from their next message; its `received_at`
    is when the agent marked it. A company action, not the customer's activity."""

    kind: Literal["conversation_done"] = "conversation_done"
    agent_id: str = Field(min_length=1, max_length=200, description="Who marked it done.")
    waiting_since: AwareDatetime = Field(
        description="Since when the agent saw the customer waiting (their earliest unanswered "
        "contact, as the agent's page showed it). The mark sees to nothing older: a question "
        "merged in from another profile since, which the agent never saw, still waits."
    )


class CustomEvent(_Model):
    """Any other tracked action (Segment `track` calls with no typed payload)."""

    kind: Literal["custom"] = "custom"
    name: str = Field(min_length=1, max_length=300, examples=["Newsletter Opened"])
    properties: dict[FieldName, JsonScalar] = Field(default_factory=dict, max_length=200)


Payload = Annotated[
    MessageExchanged
    | MessageStatusChanged
    | PageViewed
    | ProductViewed
    | CartChanged
    | OrderPlaced
    | OrderRefunded
    | CallHappened
    | StoreVisited
    | SurveyAnswered
    | ConsentChanged
    | Identified
    | ConversationDone
    | CustomEvent,
    Field(discriminator="kind"),
]
