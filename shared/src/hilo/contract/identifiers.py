"""Customer identifiers, normalised before anything compares them.

Identity resolution only works if the same person's identifier is spelled the same way on every
channel: `Ana@Example.COM ` on the web and `ana@example.com` in a mail header, `+34 612 34 56 78`
at the till and `34612345678` from WhatsApp. Every identifier therefore passes through one
normaliser here, and the contract stores only the normalised form.

Validation errors never repeat the offending value: they end up in logs and HTTP answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Final

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hilo.contract.adjustments import Adjustment

DEFAULT_PHONE_REGION: ContextVar[str | None] = ContextVar("DEFAULT_PHONE_REGION", default=None)
"""Region used to read phone numbers written without a country code (set per service)."""


class IdentifierKind(StrEnum):
    """The kinds of identifier a channel can know, strongest first."""

    CUSTOMER_ID = "customer_id"
    LOYALTY_ID = "loyalty_id"
    EMAIL = "email"
    PHONE = "phone"
    WHATSAPP_ID = "whatsapp_id"
    WHATSAPP_USER_ID = "whatsapp_user_id"
    MESSENGER_PSID = "messenger_psid"
    INSTAGRAM_SID = "instagram_sid"
    ANONYMOUS_ID = "anonymous_id"
    DEVICE_ID = "device_id"


_KINDS_STRONGEST_FIRST: Final = tuple((kind, kind.value) for kind in IdentifierKind)
"""Each kind with its field name, in order: `pairs` runs several times per event, and walking
the enum costs four times what walking this tuple does."""

IDENTIFIER_CACHE_SIZE = 65_536
"""Normalised emails and phones kept per process (bounded: ~10 MiB at most)."""

WEAK_KINDS: frozenset[IdentifierKind] = frozenset(
    {IdentifierKind.ANONYMOUS_ID, IdentifierKind.DEVICE_ID}
)
"""Identifiers that may attach to a profile but never bridge two known profiles on their own."""

HEADING_KINDS: Final = (
    IdentifierKind.EMAIL,
    IdentifierKind.PHONE,
    IdentifierKind.WHATSAPP_ID,
    IdentifierKind.LOYALTY_ID,
    IdentifierKind.CUSTOMER_ID,
    IdentifierKind.WHATSAPP_USER_ID,
    IdentifierKind.MESSENGER_PSID,
    IdentifierKind.INSTAGRAM_SID,
)
"""What a person recognises a customer without a name by, the first first: never a web cookie
or a device id (`WEAK_KINDS`), which only says who was browsing."""


def heading_identifier(held: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The (kind, value) a screen names a customer without a name by: the first held of the
    earliest of `HEADING_KINDS`; None when they hold none (an anonymous visitor)."""
    first: dict[str, str] = {}
    for kind, value in held:
        first.setdefault(kind, value)
    return next(((kind, first[kind]) for kind in HEADING_KINDS if kind in first), None)


def normalise_email(raw: str) -> str:
    """Return the canonical form of an email address: trimmed, IDNA-decoded, lower case.

    Raises `ValueError` without echoing the address. Results are cached: the same few addresses
    come back in every batch, and checking one costs ~0.1 ms.
    """
    return _canonical_email(raw.strip())


@functools.lru_cache(maxsize=IDENTIFIER_CACHE_SIZE)
def _canonical_email(raw: str) -> str:
    try:
        checked = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        reason = _email_reason(str(exc))
        raise ValueError(f"not a valid email address ({reason})") from None
    return checked.normalized.lower()


def _email_reason(message: str) -> str:
    """Keep email-validator's explanation but drop any quoted part of the address."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "…", message).rstrip(".")


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """Return a phone number in E.164 (`+34612345678`).

    Numbers without a leading `+` (or `00`) are read in `default_region` (ISO 3166 alpha-2),
    falling back to the service-wide `DEFAULT_PHONE_REGION`. Without a region such a number is
    refused: read as starting with a country code, one in ten national numbers is another
    country's valid number (a US `(479) 857-0523` is Norway's `+47 98570523`), a wrong identity
    no one would notice. Raises `ValueError` without echoing the number.
    """
    text = raw.strip()
    if len(text) > MAX_PHONE_TEXT:
        raise ValueError("not a phone number")
    return _e164(text, default_region or DEFAULT_PHONE_REGION.get())


MAX_PHONE_TEXT = 100
"""Longer than any number written with its formatting and extension: past it, a value is
refused before it is read (the check below takes time growing with the square of its length,
and one request of a million digits would hold the whole service)."""

_NATIONAL_NUMBER = re.compile(r"[\d\s().\-/]*\d[\d\s().\-/]*")
"""Digits, maybe grouped: what a number written without its country code looks like."""


@functools.lru_cache(maxsize=IDENTIFIER_CACHE_SIZE)
def _e164(text: str, region: str | None) -> str:
    """Cached like `_canonical_email`: parsing a number costs ~0.1 ms."""
    if region is None and text.startswith("00"):  # a region knows its own exit codes (AU 0011)
        text = "+" + text[2:]
    if not text.startswith("+") and region is None:
        if not (_NATIONAL_NUMBER.fullmatch(text) and sum(c.isdigit() for c in text) >= 6):
            raise ValueError("not a phone number")
        raise ValueError(
            "a phone number without its country code (+ or 00), and no "
            "HILO_DEFAULT_PHONE_REGION to read it in"
        )
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _clean_token(raw: str) -> str:
    """Opaque ids (customer numbers, handles) are compared exactly, minus stray whitespace."""
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 200:
        raise ValueError("must be at most 200 characters")
    return value


def _as_str(raw: Any) -> Any:
    """Providers send numeric ids (loyalty cards, WhatsApp ids) as numbers; compare them as text."""
    return str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw


def _validated(normaliser: Any, error_type: str) -> Any:
    def run(value: str) -> str:
        try:
            return str(normaliser(value))
        except ValueError as exc:
            raise PydanticCustomError(error_type, str(exc)) from None

    return AfterValidator(run)


DROP_INVALID: Final = "hilo.drop_invalid_identifiers"
"""Key of a `DropInvalid` policy in the validation context of `Identifiers`."""


@dataclass
class DropInvalid:
    """Validation context for `Identifiers`: keep the event when a secondary identifier is bad.

    An invalid identifier of one of `kinds` is dropped, and named in `dropped`, as long as another
    identifier is valid; the request's primary identifiers (kinds not listed) still refuse it.
    Pass it as `Identifiers.model_validate(data, context=policy.context())`, or to the model that
    holds the identifiers.
    """

    kinds: Collection[IdentifierKind]
    dropped: list[Adjustment] = field(default_factory=list)

    def context(self) -> dict[str, DropInvalid]:
        return {DROP_INVALID: self}


SECONDARY_CONTACTS: Final = frozenset({IdentifierKind.EMAIL, IdentifierKind.PHONE})
"""Contact details typed by people (traits, a clerk at the till): secondary where an id exists."""


Email = Annotated[str, _validated(normalise_email, "email")]
Phone = Annotated[str, BeforeValidator(_as_str), _validated(normalise_phone, "phone")]
Token = Annotated[str, BeforeValidator(_as_str), _validated(_clean_token, "identifier")]


class Identifiers(BaseModel):
    """Everything the channel knows about who this is, normalised.

    At least one identifier is required: an event nobody can be attributed to cannot join a
    journey.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_serialization_defaults_required=True,
    )

    customer_id: Token | None = Field(
        default=None, description="The company's own customer number.", examples=["C-1042"]
    )
    loyalty_id: Token | None = Field(
        default=None, description="Loyalty card number.", examples=["LOY-000981"]
    )
    email: Email | None = Field(
        default=None, description="Email address, lower case.", examples=["ana@example.com"]
    )
    phone: Phone | None = Field(
        default=None, description="Phone number in E.164.", examples=["+34612345678"]
    )
    whatsapp_id: Token | None = Field(
        default=None, description="WhatsApp `wa_id`.", examples=["34612345678"]
    )
    whatsapp_user_id: Token | None = Field(
        default=None,
        description="WhatsApp business-scoped user id (BSUID, Meta's `user_id`): the one "
        "WhatsApp identifier of a user with a username, whose number Meta withholds.",
        examples=["US.13491208655302741918"],
    )
    messenger_psid: Token | None = Field(
        default=None, description="Facebook Messenger page-scoped id.", examples=["2417895"]
    )
    instagram_sid: Token | None = Field(
        default=None, description="Instagram-scoped id.", examples=["17841405"]
    )
    anonymous_id: Token | None = Field(
        default=None, description="Anonymous browser or app id (weak).", examples=["a1b2c3"]
    )
    device_id: Token | None = Field(
        default=None, description="Device id (weak).", examples=["ios-4f1c"]
    )

    @model_validator(mode="wrap")
    @classmethod
    def _drop_invalid_secondary(
        cls, data: Any, handler: ModelWrapValidatorHandler[Identifiers], info: ValidationInfo
    ) -> Identifiers:
        """Under a `DropInvalid` policy, invalid droppable identifiers go and the event stays."""
        policy = (info.context or {}).get(DROP_INVALID)
        if not isinstance(policy, DropInvalid) or not isinstance(data, dict):
            return handler(data)
        try:
            return handler(data)
        except ValidationError as exc:
            refused = exc
        invalid = {str(error["loc"][0]) for error in refused.errors() if error["loc"]}
        droppable = {kind.value for kind in policy.kinds}
        if not invalid or not invalid <= droppable:
            raise refused
        kept = handler({name: value for name, value in data.items() if name not in invalid})
        if not kept.pairs():
            raise refused
        policy.dropped.extend(
            Adjustment(field=f"identifiers.{name}", reason=f"invalid_{name}")
            for name in sorted(invalid)
        )
        return kept

    @model_validator(mode="after")
    def _at_least_one(self) -> Identifiers:
        if not self.pairs():
            raise PydanticCustomError(
                "no_identifier", "at least one identifier is required to attribute the event"
            )
        return self

    def pairs(self) -> list[tuple[IdentifierKind, str]]:
        """The identifiers present, strongest first."""
        return [
            (kind, value)
            for kind, name in _KINDS_STRONGEST_FIRST
            if (value := getattr(self, name)) is not None
        ]

    def strongest(self) -> tuple[IdentifierKind, str]:
        """The identifier that best names the person, used as the Kafka key."""
        return self.pairs()[0]

    def partition_key(self) -> bytes:
        """Kafka key: `kind:value` of the strongest identifier."""
        kind, value = self.strongest()
        return f"{kind.value}:{value}".encode()


def whatsapp_identifiers(wa_id: str | None, user_id: str | None = None) -> Identifiers | None:
    """The customer's WhatsApp identifiers: the wa_id (the phone number with its country code,
    digits only), and the business-scoped user id Meta adds. Where the wa_id is in a form the
    country has since dropped, the phone is the number as dialled today, so the customer's
    SMS, store and web identities meet it; the wa_id stays as sent: replies go to it. None when
    Meta named nobody."""
    if not (wa_id or user_id):
        return None
    phone = _whatsapp_phone(wa_id) if wa_id else None
    return Identifiers(whatsapp_id=wa_id or None, phone=phone, whatsapp_user_id=user_id or None)


def _whatsapp_phone(wa_id: str) -> str | None:
    digits = wa_id.lstrip("+")
    for candidate in (digits, *_dialled_today(digits)):
        try:
            return normalise_phone("+" + candidate)
        except ValueError:
            continue
    return None


_MEXICAN_MOBILE = re.compile(r"521(\d{10})")
"""+52 1 and ten digits: Mexico dropped the mobile '1' in 2019; WhatsApp ids still carry it."""
_BRAZILIAN_MOBILE_OF_EIGHT = re.compile(r"55(\d{2})([6-9]\d{7})")
"""+55, an area code and eight digits from 6 to 9: a mobile from before Brazil added a ninth
digit (a leading 9), as older WhatsApp accounts keep it."""


def _dialled_today(digits: str) -> list[str]:
    if mexican := _MEXICAN_MOBILE.fullmatch(digits):
        return ["52" + mexican[1]]
    if brazilian := _BRAZILIAN_MOBILE_OF_EIGHT.fullmatch(digits):
        return [f"55{brazilian[1]}9{brazilian[2]}"]
    return []
