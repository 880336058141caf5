"""What stores send: receipts (one JSON document, or CSV rows of an end-of-day file) and visits."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_extra_types.currency_code import ISO4217

from hilo.contract import CouponCode, DropInvalid, Identifiers, MeasureUnit, VisitMethod
from hilo.contract.payloads import MAX_CODES, given_codes

Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


StoreId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^:]+$",
        description="No `:`: event and order ids join it with the receipt's or visit's id, so "
        "store `A:B` with receipt `C` and store `A` with receipt `B:C` would be one.",
        examples=["BCN-01"],
    ),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def _trimmed(value: object) -> object:
    """A till's text as meant: `" W-1001"` is the order `W-1001`, and a blank is no value (an
    empty `pickup_order_id` made a sale a pickup of the order `""`)."""
    return (value.strip() or None) if isinstance(value, str) else value


Reference = Annotated[str | None, BeforeValidator(_trimmed)]
"""A field that names something else (a till, an online order, a cart, a quote): trimmed, a
blank none. The receipt's own ids are published as they came, as earlier uploads published
them."""


def _codes(value: object) -> object:
    """A till's codes as meant (`given_codes`): none for null or a blank, nulls and blanks in a
    list left out, a single code given as text is one; anything else is left for validation to
    refuse."""
    return given_codes(value) if value is None or isinstance(value, str | list) else value


def _without_blanks(value: object) -> object:
    """A customer as a till means it: a POS that always sends every field sends blanks for
    those it does not know (a blank is no value, as in the end-of-day file), and `{}` or only
    blanks for a walk-in sale (None)."""
    if not isinstance(value, dict):
        return value
    known = {kind: v for kind, v in value.items() if _trimmed(v) is not None}
    return known or None


def _as_written(value: object) -> object:
    """A word as a till's export writes it: `KG`, ` kg ` and `kg` are one; a blank is none."""
    trimmed = _trimmed(value)
    return trimmed.lower() if isinstance(trimmed, str) else trimmed


TillCustomer = Annotated[Identifiers | None, BeforeValidator(_without_blanks)]
"""The customer of a sale or a return, blanks absent (`_without_blanks`)."""

CustomerEntry = Annotated[
    Literal["scanned", "typed"],
    BeforeValidator(lambda value: _as_written(value) or "scanned"),
    Field(
        description="How the till knew the customer: `scanned`, a card, app or code the "
        "customer showed (the default, as before); `typed`, what the customer said, typed by "
        "the clerk (a card number, a phone, an email). A typed customer's sale joins their "
        "journey, but never adds a new contact to a known customer nor joins two: a person "
        "confirms that (`GET /v1/merge-requests`), as for a web form, since anyone can say "
        "someone else's card number.",
    ),
]


Quantity = Annotated[Decimal, Field(gt=0, le=100_000, max_digits=12, decimal_places=4)]


Unit = Annotated[MeasureUnit | None, BeforeValidator(_as_written)]


class ReceiptLine(_Input):
    """A line of a receipt or a return: units of a product, or how much of one sold by weight,
    volume or length (`unit`: 1.25 kg of cheese at a `unit_price` of 3.50 a kilo)."""

    sku: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=300)
    quantity: Quantity = Field(
        description="Units, a whole number; with `unit`, how much (1.25): a fraction then too."
    )
    unit_price: Amount = Field(description="The price of one unit; with `unit`, of one kilo...")
    unit: Unit = Field(
        default=None,
        description="For goods sold by weight, volume or length: kg, g, lb, oz, l, ml, m.",
    )
    line_total: Amount | None = Field(
        default=None,
        description="What the till charged for a measured line (its rounding of quantity x "
        "unit_price); left out, that product rounded to the currency's cents.",
    )
    category: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _units_are_whole(self) -> ReceiptLine:
        """A fraction is how much of a product sold by measure; of one sold by the unit, it is
        a typo (or a weighed line without its `unit`), never to be rounded away."""
        if self.unit is None and self.quantity != self.quantity.to_integral_value():
            raise PydanticCustomError(
                "fractional_units",
                "quantity must be a whole number of units; a weighed or measured line says its "
                "unit (unit: kg)",
            )
        if self.unit is None and self.line_total is not None:
            raise PydanticCustomError(
                "line_total_unmeasured", "line_total is for measured lines (with a unit) only"
            )
        return self


class Receipt(_Input):
    """A till receipt. A sale with no customer identifier is not part of anyone's journey."""

    store_id: StoreId
    till_id: Reference = Field(default=None, max_length=100)
    receipt_id: str = Field(min_length=1, max_length=200, description="Unique within the store.")
    occurred_at: AwareDatetime
    currency: ISO4217
    lines: list[ReceiptLine] = Field(min_length=1, max_length=1_000)
    total: Amount
    tax: Amount | None = None
    discount: Amount | None = None
    payment_method: Reference = Field(default=None, max_length=100, examples=["card"])
    customer: TillCustomer = Field(
        default=None, description="Loyalty card, customer number, email or phone, as known."
    )
    customer_entry: CustomerEntry = "scanned"
    pickup_order_id: Reference = Field(
        default=None,
        max_length=200,
        description="Set when this receipt hands over an online order (click and collect).",
    )
    cart_id: Reference = Field(default=None, max_length=200)
    quote_id: Reference = Field(
        default=None, max_length=100, description="The offers quote the till charged from."
    )
    coupons: Annotated[list[CouponCode], BeforeValidator(_codes)] = Field(
        default_factory=list,
        max_length=MAX_CODES,
        description="Codes the customer presented (a coupon, a printed campaign's code); null "
        "and blanks are none.",
    )

    @model_validator(mode="after")
    def _order_id_fits(self) -> Receipt:
        """`store_id:receipt_id` names the receipt in the contract (the order id of a sale, the
        `receipt_id` of any), at most 200 characters."""
        if len(self.store_id) + len(self.receipt_id) >= 200:
            raise PydanticCustomError(
                "order_id_too_long", "store_id and receipt_id together must be under 200 characters"
            )
        return self

    @model_validator(mode="after")
    def _pickup_names_its_customer(self) -> Receipt:
        """A pickup moves an online order on: without its customer it would be taken for an
        anonymous sale and the order would wait for its pickup for good."""
        if self.pickup_order_id is not None and self.customer is None:
            raise PydanticCustomError(
                "pickup_without_customer",
                "a pickup (pickup_order_id) needs the online order's customer: their loyalty_id, "
                "customer_id, email or phone",
            )
        return self


class Return(_Input):
    """Goods brought back to a till, or money paid back there: a refund of an earlier order,
    bought in a store or online. A return of nobody's sale is not part of anyone's journey."""

    store_id: StoreId
    till_id: Reference = Field(default=None, max_length=100)
    return_id: str = Field(min_length=1, max_length=200, description="Unique within the store.")
    occurred_at: AwareDatetime
    currency: ISO4217
    order_id: Annotated[str, BeforeValidator(_trimmed)] = Field(
        min_length=1,
        max_length=200,
        description="The order the goods came from: a store sale as printed on its receipt "
        "(`<store_id>:<receipt_id>`), or an online order's id.",
        examples=["BCN-01:R-000123", "W-1001"],
    )
    lines: list[ReceiptLine] = Field(
        default_factory=list, max_length=1_000, description="What came back; none: money alone."
    )
    refund_total: Amount = Field(description="What the till paid back.")
    reason: Reference = Field(default=None, max_length=500, examples=["too small"])
    customer: TillCustomer = Field(
        default=None,
        description="The customer of the sale, as the till knows them (the original receipt's "
        "loyalty card, say).",
    )
    customer_entry: CustomerEntry = "scanned"

    @model_validator(mode="after")
    def _something_came_back(self) -> Return:
        """A return pays something back or takes goods back: one that does neither is a typo,
        and `store_id:return_id` names it in the contract (at most 200 characters)."""
        if not self.lines and self.refund_total == 0:
            raise PydanticCustomError(
                "empty_return", "a return needs lines or a refund_total above 0"
            )
        if len(self.store_id) + len(self.return_id) >= 200:
            raise PydanticCustomError(
                "receipt_id_too_long",
                "store_id and return_id together must be under 200 characters",
            )
        return self


class Visit(_Input):
    """A store check-in: loyalty card or app QR code scanned, staff or wifi recognition."""

    visit_id: str = Field(min_length=1, max_length=200, description="Unique within the store.")
    store_id: StoreId
    occurred_at: AwareDatetime
    method: VisitMethod
    customer: Identifiers
    customer_entry: CustomerEntry = "scanned"
    purpose: str | None = Field(default=None, max_length=200, examples=["order_pickup"])

    @field_validator("customer", mode="before")
    @classmethod
    def _known(cls, value: object) -> object:
        """Blank fields are none; a visit of nobody (every field blank) is still refused."""
        return _without_blanks(value) or {}


CSV_COLUMNS = (
    "store_id",
    "till_id",
    "receipt_id",
    "occurred_at",
    "currency",
    "sku",
    "name",
    "quantity",
    "unit_price",
    "receipt_total",
    "tax",
    "discount",
    "payment_method",
    "loyalty_id",
    "customer_id",
    "email",
    "phone",
    "pickup_order_id",
    "cart_id",
    "quote_id",
    "coupons",
    "returns_order_id",
    "reason",
    "unit",
    "line_total",
    "customer_entry",
)
"""The end-of-day file: one row per receipt line; a receipt's rows repeat its receipt fields."""

REQUIRED_CSV_COLUMNS = frozenset(
    {
        "store_id",
        "receipt_id",
        "occurred_at",
        "currency",
        "sku",
        "quantity",
        "unit_price",
        "receipt_total",
    }
)


class CsvRow(_Input):
    """One row of the end-of-day file; blank cells are absent values."""

    store_id: StoreId
    till_id: Reference = None
    receipt_id: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    currency: ISO4217
    sku: str = Field(min_length=1, max_length=100)
    name: str | None = None
    quantity: Quantity
    unit_price: Amount
    unit: Unit = Field(default=None, description="A measured line's unit (kg).")
    line_total: Amount | None = Field(default=None, description="A measured line's charge.")
    receipt_total: Amount
    tax: Amount | None = None
    discount: Amount | None = None
    payment_method: Reference = None
    loyalty_id: str | None = None
    customer_id: str | None = None
    email: str | None = None
    phone: str | None = None
    pickup_order_id: Reference = None
    cart_id: Reference = Field(default=None, max_length=200)
    quote_id: Reference = Field(default=None, max_length=100)
    coupons: str | None = Field(
        default=None, max_length=2_100, description="The receipt's codes, separated by `;`."
    )
    returns_order_id: Reference = Field(
        default=None,
        max_length=200,
        description="Set on a return's rows: the order the goods came from (a `Return`'s "
        "`order_id`); its `receipt_id` is then the return's id and `receipt_total` what was paid "
        "back.",
    )
    reason: Reference = Field(default=None, max_length=500, description="A return's reason.")
    customer_entry: CustomerEntry = "scanned"

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def coupon_codes(self) -> list[str]:
        """The codes of the `coupons` cell (`SPRING10;FLYER-7`): a blank between is none."""
        return [code.strip() for code in (self.coupons or "").split(";") if code.strip()]

    def line(self) -> ReceiptLine:
        return ReceiptLine(
            sku=self.sku,
            name=self.name,
            quantity=self.quantity,
            unit_price=self.unit_price,
            unit=self.unit,
            line_total=self.line_total,
        )

    def customer(self, policy: DropInvalid) -> Identifiers | None:
        known = {
            "loyalty_id": self.loyalty_id,
            "customer_id": self.customer_id,
            "email": self.email,
            "phone": self.phone,
        }
        present = {kind: value for kind, value in known.items() if value}
        return Identifiers.model_validate(present, context=policy.context()) if present else None

    def receipt_fields(self) -> tuple[object, ...]:
        """What every row of one receipt must agree on."""
        return (
            self.till_id,
            self.occurred_at,
            self.currency,
            self.receipt_total,
            self.tax,
            self.discount,
            self.payment_method,
            self.loyalty_id,
            self.customer_id,
            self.email,
            self.phone,
            self.pickup_order_id,
            self.cart_id,
            self.quote_id,
            tuple(self.coupon_codes()),
            self.returns_order_id,
            self.reason,
            self.customer_entry,
        )
