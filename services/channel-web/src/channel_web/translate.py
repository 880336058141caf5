"""Segment calls → Hilo interactions. Pure: no I/O.

Well-known `track` events of Segment's e-commerce spec (v2) become typed payloads; any other
event stays a generic `custom` event, and so does an e-commerce event too incomplete to type
(no product id, say): a tracked action is never dropped for being sparse.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from channel_web.segment import Call
from hilo.contract import (
    BUILT_IN_CHANNELS,
    NOT_TYPED,
    SECONDARY_CONTACTS,
    CartAction,
    CartChanged,
    ConsentChanged,
    CustomEvent,
    DropInvalid,
    Fulfilment,
    Identified,
    IdentifierKind,
    Identifiers,
    IdentityTrust,
    Interaction,
    LineItem,
    Money,
    OrderPlaced,
    OrderRefunded,
    OrderStatus,
    PageViewed,
    Payload,
    ProductViewed,
    SalesChannel,
    SurveyAnswered,
    SurveyMetric,
    Truncations,
    max_length,
    new_interaction,
)
from hilo.contract.adjustments import UNREADABLE
from hilo.contract.campaign import campaign_from
from hilo.contract.payloads import (
    MAX_CODE,
    MAX_CODES,
    MAX_CONSENT_SOURCE,
    MAX_QUANTITY,
    MAX_RESPONSE_ID,
    given_codes,
)

DEFAULT_CURRENCY = "USD"
"""Segment's e-commerce spec: amounts without a `currency` are in US dollars."""

SECONDARY = frozenset({*SECONDARY_CONTACTS, IdentifierKind.DEVICE_ID, IdentifierKind.LOYALTY_ID})
"""Dropped (and noted on the event) when invalid: userId or anonymousId still names the person."""


def translate(
    call: Call, received_at: datetime, instance: str, trust: IdentityTrust = "unverified"
) -> Interaction:
    """One Segment call as one interaction on the `web` or `app` channel.

    `trust` is the source's (see `WebSettings`): unverified unless its key is a server-side one.
    """
    channel = "app" if call.type == "screen" or call.context.app or call.context.device else "web"
    policy = DropInvalid(SECONDARY)
    cut = Truncations()
    return new_interaction(
        channel=channel,
        instance=instance,
        provider_event_id=event_id(call, trust),
        identifiers=identifiers_of(call, policy, trust),
        payload=payload_of(call, cut, trust),
        occurred_at=occurred_at(call, received_at),
        received_at=received_at,
        adjustments=[*policy.dropped, *cut.adjustments],
        identity_trust=trust,
    )


def event_id(call: Call, trust: IdentityTrust) -> str:
    """The call's id: its messageId (else its content's digest), in a space of the key's trust.

    A browser's messageId is anyone's to choose, and the journey keeps one event per id: sent
    first with the public key, `order-1042-cancelled` made the shop server's verified
    cancellation of that id a duplicate, dropped. (A shop sending one messageId from its
    browser and its server, for destinations to dedupe, gets two events: the order is counted
    once by its order id.)"""
    own = call.message_id or _content_id(call)
    return own if trust == "verified" else f"{trust}:{own}"


def occurred_at(call: Call, received_at: datetime) -> datetime:
    """Segment's clock-skew correction: `receivedAt - (sentAt - timestamp)`.

    A device clock that is hours off moves `timestamp` and `sentAt` alike; their difference (how
    long the event waited on the device) is what can be trusted. When the correction leaves the
    calendar (clocks of year 1 or 9999) the device's time is kept, for `new_interaction` to bound.
    """
    if call.timestamp is not None and call.original_timestamp is not None:
        # Forwarded by Segment or RudderStack: `timestamp` is already their corrected time
        # (`originalTimestamp` the device's), and correcting it again moves it by the skew twice.
        return call.timestamp
    happened = call.timestamp or call.original_timestamp
    if happened is None:
        return received_at
    if call.sent_at is None:
        return happened
    try:
        return received_at - (call.sent_at - happened)
    except OverflowError:
        return happened


def identifiers_of(
    call: Call, policy: DropInvalid | None = None, trust: IdentityTrust = "unverified"
) -> Identifiers:
    """userId, anonymousId, the device id and any email or phone trait; alias links
    previousId. A loyalty_id trait (a card typed at sign-up: how a web cart meets the store's
    till) only from a server-side key: a card ranks above an email, and a card number is easy
    to guess, so from the public key a stranger's browser would join the card's owner.

    Under `policy`, an invalid trait email, phone or card (or device id) is dropped, not
    refused.
    """
    # A `group` call's traits are the group's (a company's billing address and phone).
    own = {} if call.type == "group" else call.traits
    traits = {**call.context.traits, **own}
    anonymous = call.previous_id if call.type == "alias" else call.anonymous_id
    values = {
        "customer_id": _text(call.user_id),
        "anonymous_id": _text(anonymous),
        "device_id": call.context.device.id if call.context.device else None,
        "email": _text(traits.get("email")),
        "phone": _text(traits.get("phone")),
        "loyalty_id": _text(traits.get("loyalty_id")) if trust == "verified" else None,
    }
    present = {kind: value for kind, value in values.items() if value is not None}
    return Identifiers.model_validate(present, context=policy.context() if policy else None)


def payload_of(call: Call, cut: Truncations, trust: IdentityTrust = "unverified") -> Payload:
    """The typed payload; a page's texts or an event name longer than the contract holds are
    cut (noted in `cut`): a client's long URL must not lose the page view, nor its batch."""
    if call.type == "identify":
        return Identified(traits=flat_scalars(call.traits))
    if call.type == "alias":
        return Identified(previous_anonymous_id=_text(call.previous_id))
    if call.type in ("page", "screen"):
        return _page(call, cut)
    if call.type == "group":
        traits = flat_scalars(call.traits)
        traits.pop("group_id", None)
        group = {"group_id": _text(call.group_id), **traits}
        return CustomEvent(name="Group", properties=dict(list(group.items())[:MAX_PROPERTIES]))
    return _track(call, cut, trust)


_PAGE_LIMITS = {
    name: max_length(PageViewed, name) for name in ("name", "url", "path", "referrer", "title")
}
_EVENT_NAME_LIMIT = max_length(CustomEvent, "name")
MAX_PROPERTIES = max_length(CustomEvent, "properties")


def _page(call: Call, cut: Truncations) -> PageViewed:
    page = {**(call.context.page or {}), **call.properties}

    def text(name: str, value: Any) -> str | None:
        return cut.clip(_text(value), _PAGE_LIMITS[name], f"payload.{name}")

    return PageViewed(
        screen=call.type == "screen",
        name=text("name", call.name),
        url=text("url", page.get("url")),
        path=text("path", page.get("path")),
        referrer=text("referrer", page.get("referrer")),
        title=text("title", page.get("title")),
        campaign=campaign_from(call.context.campaign, page.get("url"), cut),
    )


def _track(call: Call, cut: Truncations, trust: IdentityTrust) -> Payload:
    event = call.event or ""
    typed = _ECOMMERCE.get(event)
    if trust == "verified":
        typed = _FROM_SERVER_KEYS.get(event, typed)
    if typed is _consent_changed and not _names_a_customer(call, trust):
        # On an anonymous visitor it would travel with their history to whoever a browser
        # later claims to be (an unverified identify joins anonymous history).
        typed = None
        cut.note("payload", NOT_TYPED)
    if typed is not None:
        try:
            payload = typed(call.properties)
        except (ValidationError, ValueError, TypeError, ArithmeticError, KeyError):
            cut.note("payload", NOT_TYPED)  # an order kept as custom counts as none: say so
        else:
            if isinstance(payload, OrderPlaced):
                _note_left_out(call.properties, payload, cut)
            return payload
    name = cut.clip(event, _EVENT_NAME_LIMIT, "payload.name") or event
    return CustomEvent(name=name, properties=flat_scalars(call.properties))


def _product_viewed(properties: Mapping[str, Any]) -> ProductViewed:
    return ProductViewed(
        sku=_sku(properties),
        name=_text(properties.get("name")),
        category=_text(properties.get("category")),
        price=_money(properties.get("price"), properties),
    )


def _cart_item(action: CartAction) -> Callable[[Mapping[str, Any]], CartChanged]:
    def build(properties: Mapping[str, Any]) -> CartChanged:
        return CartChanged(
            action=action,
            cart_id=_text(properties.get("cart_id")),
            quote_id=_text(properties.get("quote_id")),
            changed_items=[_line(properties, properties)],
        )

    return build


def _cart_viewed(properties: Mapping[str, Any]) -> CartChanged:
    return CartChanged(
        action=CartAction.VIEWED,
        cart_id=_text(properties.get("cart_id")),
        quote_id=_text(properties.get("quote_id")),
        items=_cart_lines(properties),
    )


def _checkout_started(properties: Mapping[str, Any]) -> CartChanged:
    return CartChanged(
        action=CartAction.CHECKOUT_STARTED,
        cart_id=_text(properties.get("cart_id")),
        quote_id=_text(properties.get("quote_id")),
        items=_cart_lines(properties),
        total=_money(_first(properties, "value", "revenue", "total"), properties),
    )


def _order_completed(properties: Mapping[str, Any]) -> OrderPlaced:
    """`fulfilment: store_pickup` with a `store_id` marks click-and-collect (a Hilo extension)."""
    pickup = properties.get("fulfilment") == Fulfilment.STORE_PICKUP.value
    total = _money(_first(properties, "total", "revenue", "value"), properties)
    if total is None:
        raise ValueError("an order needs a total")
    return OrderPlaced(
        order_id=_text(properties.get("order_id")) or "",
        sold_via=SalesChannel.ONLINE,
        fulfilment=Fulfilment.STORE_PICKUP if pickup else Fulfilment.DELIVERY,
        store_id=_text(properties.get("store_id")),
        items=_lines(properties),
        total=total,
        tax=_money(properties.get("tax"), properties),
        discount=_money(properties.get("discount"), properties),
        shipping=_optional_money(properties.get("shipping"), properties),
        coupons=_coupons(properties.get("coupon")),
        cart_id=_text(properties.get("cart_id")),
        quote_id=_text(properties.get("quote_id")),
    )


def _coupons(value: Any) -> list[str]:
    """The spec's `coupon` is one code; a site that takes several may send a list. A blank
    is none; one longer than a code (`CouponCode`), or past the 20 an order keeps, is left out
    (`_note_left_out` says so): it must not cost the order."""
    codes = [code for v in given_codes(value) if (code := _code(v)) is not None]
    return codes[:MAX_CODES]


def _code(value: Any) -> str | None:
    """A code as text (a number is one too), or None for what no code is (a flag, an object,
    one too long)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    code = str(value).strip()
    return code if len(code) <= MAX_CODE else None


def _optional_money(amount: Any, context: Mapping[str, Any]) -> Money | None:
    """An amount the order can do without (`shipping`): one that is not a non-negative number
    (`"free"`, `""`, `-1`) is left out (`_note_left_out` says so) rather than cost the order."""
    try:
        return _money(amount, context)
    except (ValidationError, ValueError, TypeError, ArithmeticError):  # NaN: TypeError
        return None


def _note_left_out(properties: Mapping[str, Any], order: OrderPlaced, cut: Truncations) -> None:
    """Note the optional fields the call gave that the order could not keep."""
    if properties.get("shipping") not in (None, "") and order.shipping is None:
        cut.note("payload.shipping", UNREADABLE)
    if len(given_codes(properties.get("coupon"))) > len(order.coupons):
        cut.note("payload.coupons", UNREADABLE)


def _order_cancelled(properties: Mapping[str, Any]) -> OrderPlaced:
    """A whole order cancelled: the order's entry in that state (its `order_id` finds it in the
    profile, which leaves it out of the lifetime value)."""
    return _order_completed(properties).model_copy(update={"status": OrderStatus.CANCELLED})


def _order_refunded(properties: Mapping[str, Any]) -> OrderRefunded:
    """Segment's `Order Refunded`: a whole order by its `order_id` alone, or part of one with
    the `products` that came back and the `total` paid back (else what their prices add up to;
    a line with no price then keeps the event custom, as no amount can be told)."""
    items = _lines(_returned(properties))
    amount = _money(_paid_back(_first(properties, "total", "revenue", "value")), properties)
    if amount is None and items:
        amount = _priced(items)
    return OrderRefunded(
        order_id=_text(properties.get("order_id")) or "",
        refunded_via=SalesChannel.ONLINE,
        items=items,
        amount=amount,
        reason=_text(properties.get("reason")),
    )


def _returned(properties: Mapping[str, Any]) -> Mapping[str, Any]:
    """A refund's products as they came back: a shop that sends the refund as revenue going
    out writes their prices and quantities negative too."""
    products = properties.get("products")
    if not isinstance(products, list):
        return properties
    back = [
        {**p, "price": _paid_back(p.get("price")), "quantity": _paid_back(p.get("quantity"))}
        if isinstance(p, dict)
        else p
        for p in products
    ]
    return {**properties, "products": back}


def _paid_back(value: Any) -> Any:
    """An amount or a count as paid back: many shops send a refund negative (`total: -30`,
    revenue going out), which is the same 30 paid back. Anything else is left for validation."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return abs(value)
    if isinstance(value, str):
        try:
            return str(abs(Decimal(value)))
        except ArithmeticError:
            return value
    return value


def _priced(items: list[LineItem]) -> Money:
    prices = [line.unit_price for line in items if line.unit_price is not None]
    if len(prices) < len(items):
        raise ValueError("a refund of products needs their prices or a total")
    paid = sum(
        (p.amount * line.quantity for p, line in zip(prices, items, strict=True)), Decimal(0)
    )
    return Money(amount=paid, currency=prices[0].currency)


def _survey_answered(properties: Mapping[str, Any]) -> SurveyAnswered:
    """A Hilo extension of the spec: a CSAT, NPS or CES answer given on the site (after a chat,
    a call or a visit: `about_channel` says which; `response_id`, the survey tool's id of the
    answer, so that one posted twice counts once)."""
    return SurveyAnswered(
        survey_id=_text(properties.get("survey_id")) or "",
        metric=SurveyMetric(str(properties.get("metric", "")).lower()),
        score=_score(properties.get("score")),
        comment=_text(properties.get("comment")),
        about_channel=_text(properties.get("about_channel")),
        response_id=_response_id(properties.get("response_id")),
    )


def _score(value: object) -> int:
    """A score as the whole number it is (`4`, `4.0`, `"4"`); `int()` read `true` as 1, the
    worst CSAT, and cut `4.7` to 4."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("a survey's score must be a whole number")


def _response_id(value: object) -> str | None:
    """The survey tool's id of the answer; one longer than the contract takes is kept as its
    SHA-256, which still tells the same answer from another (the answer itself never lost)."""
    text = _text(value)
    if text is None or len(text) <= MAX_RESPONSE_ID:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


_ECOMMERCE: dict[str, Callable[[Mapping[str, Any]], Payload]] = {
    "Product Viewed": _product_viewed,
    "Product Added": _cart_item(CartAction.ITEM_ADDED),
    "Product Removed": _cart_item(CartAction.ITEM_REMOVED),
    "Cart Viewed": _cart_viewed,
    "Checkout Started": _checkout_started,
    "Order Completed": _order_completed,
    "Survey Answered": _survey_answered,
}


def _consent_changed(properties: Mapping[str, Any]) -> ConsentChanged:
    """A Hilo extension of the spec: the shop's preference centre or checkout recorded that the
    customer granted or withdrew consent for a `purpose` (`marketing`), on one of Hilo's
    channels (`channel`) or on every one (none). `granted` must be a JSON boolean (a string
    "false" is not read as yes); a channel Hilo does not know would match nothing, and a
    withdrawal sent so would be lost, so it is refused (the event stays custom). A grant of
    `contact` is the channels' own (an SMS START): Twilio keeps refusing a number that sent STOP
    whatever the web says."""
    granted = properties.get("granted")
    if not isinstance(granted, bool):
        raise TypeError("granted must be true or false")
    purpose = (_text(properties.get("purpose")) or "").strip().lower()
    if purpose == "contact" and granted:
        raise ValueError("a contact grant is the channel's own")
    channel = (_text(properties.get("channel")) or "").strip().lower() or None
    if channel is not None and channel not in BUILT_IN_CHANNELS:
        raise ValueError("not one of Hilo's channels")
    return ConsentChanged(
        purpose=purpose,
        granted=granted,
        channel=channel,
        source=(_text(properties.get("source")) or "web")[:MAX_CONSENT_SOURCE],
    )


def _names_a_customer(call: Call, trust: IdentityTrust) -> bool:
    """The call names a customer (their id, or an email or phone that is valid), not only a
    browser: an invalid email is dropped from the event, which then names the browser alone."""
    identifiers = identifiers_of(call, DropInvalid(SECONDARY), trust)
    return bool(identifiers.customer_id or identifiers.email or identifiers.phone)


_FROM_SERVER_KEYS: dict[str, Callable[[Mapping[str, Any]], Payload]] = {
    "Order Cancelled": _order_cancelled,
    "Order Refunded": _order_refunded,
    "Consent Changed": _consent_changed,
}
"""Typed only from a server-side (verified) key: with the public key anyone could cancel or
refund someone's order out of their lifetime value, or grant marketing in their name (or
withdraw it), so there they stay `custom`."""


def _cart_lines(properties: Mapping[str, Any]) -> list[LineItem] | None:
    """The whole cart, or None when the event does not list it: a `Checkout Started` with only
    its value says nothing of the items, and an empty list would empty the customer's cart."""
    return None if properties.get("products") is None else _lines(properties)


def _lines(properties: Mapping[str, Any]) -> list[LineItem]:
    products = properties.get("products") or []
    if not isinstance(products, list):
        raise TypeError("products must be a list")
    return [_line(product, properties) for product in products if isinstance(product, dict)]


def _line(product: Mapping[str, Any], order: Mapping[str, Any]) -> LineItem:
    return LineItem(
        sku=_sku(product),
        name=_text(product.get("name")),
        quantity=_quantity(product.get("quantity")),
        unit_price=_money(product.get("price"), order),
        category=_text(product.get("category")),
    )


def _quantity(value: Any) -> int:
    """Segment's `quantity`, a whole number of units (1 when left out). A fraction or zero is
    no quantity Hilo can price: it raises, and the event is kept as custom (`not_typed`) rather
    than recorded with another quantity than the shop's."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("quantity must be a number")
    quantity = Decimal(str(value))
    if quantity != quantity.to_integral_value() or not 1 <= quantity <= MAX_QUANTITY:
        # Compared before `int`: turning `1e600000` into an integer took minutes of CPU.
        raise ValueError(f"quantity must be a whole number from 1 to {MAX_QUANTITY}")
    return int(quantity)


def _sku(product: Mapping[str, Any]) -> str:
    return _text(_first(product, "sku", "product_id")) or ""


def _money(amount: Any, context: Mapping[str, Any]) -> Money | None:
    """Segment sends amounts as JSON numbers: read them through their decimal text, not binary."""
    if amount is None or isinstance(amount, bool):
        return None
    value = Decimal(str(amount))
    if value.as_tuple().exponent < -4:  # type: ignore[operator]
        value = value.quantize(Decimal("0.0001"))
    currency = str(context.get("currency") or DEFAULT_CURRENCY).upper()
    return Money.model_validate({"amount": value, "currency": currency})


def _first(mapping: Mapping[str, Any], *names: str) -> Any:
    return next((mapping[name] for name in names if mapping.get(name) is not None), None)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)


def flat_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Traits and properties as flat scalars (`address.city` → `address_city`); lists dropped.

    The contract keeps them flat so that every consumer, and FerretDB, can store them; `.` and a
    leading `$` cannot be document keys.
    """
    flat: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = f"{prefix}{raw_name}".replace(".", "_").replace("\x00", "").lstrip("$")
        if not name:
            continue
        if isinstance(value, dict):
            flat.update(flat_scalars(value, f"{name}_"))
        elif isinstance(value, int) and abs(value) > sys.float_info.max:
            continue  # no number the contract holds: neither MongoDB's 8 bytes nor a float
        elif isinstance(value, float) and not math.isfinite(value):
            continue  # JSON has none: NaN or `1e400`, which Python's parser reads as infinity
        elif value is None or isinstance(value, str | int | float | bool):
            flat[name[:100]] = value
    return dict(list(flat.items())[:MAX_PROPERTIES])


def _content_id(call: Call) -> str:
    """Without a messageId (old clients), the same call sent twice still gets one id: `sentAt`,
    which a client sets again on every retry, is left out when the call has a time of its own,
    `timestamp` or `originalTimestamp` (without one, `sentAt` is all that tells two identical
    calls apart)."""
    own_time = call.timestamp or call.original_timestamp
    content = call.model_dump(mode="json", exclude={"sent_at"} if own_time else None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
