"""Structured logging (structlog, JSON by default) that never writes personal data raw.

`mask_personal_data` runs on every event: fields that hold personal data by name (email, phone,
name, text, loyalty_id, ...; any case) are masked whatever their content, and any other value is
scanned for email addresses, phone numbers and identifier keys (`phone:+34...`, percent-encoded
too, as in a URL). A masked email keeps its first letter and domain, a phone its country code and
last two digits: enough to tell two customers apart in a log, not enough to contact anyone.

Libraries that log whole URLs or documents (httpx, PyMongo's command log) are kept at WARNING
whatever the level: what they would print is the search an agent typed, or a stored journey.
"""

from __future__ import annotations

import logging
import re
import sys
import textwrap
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

import structlog
from bson.errors import BSONError
from pydantic import ValidationError
from pymongo.errors import BulkWriteError, OperationFailure

from hilo.contract.identifiers import IdentifierKind
from hilo.settings import HiloSettings

PERSONAL_FIELDS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "address",
        "text",
        "body",
        "message_text",
        "transcript",
        "summary",
        "comment",
        "subject",
        "caption",
        "traits",
        "from",
        "from_",
        "to",
        "sender",
        "recipient",
        "wa_id",
        "value",
        "email_address",
        "phone_number",
        "customer_name",
    }
    | {kind.value for kind in IdentifierKind if kind is not IdentifierKind.CUSTOMER_ID}
)
"""Keys whose values are masked whatever they hold; compared in lower case. Every kind of
identifier but Hilo's own customer id is one, a kind added later too."""
_EMAIL = re.compile(r"[\w.+-]{1,64}@([\w-]+)((?:\.[\w-]+)+)")
"""An address's local part is at most 64 characters (RFC 5321): bounded so, the search costs
as much per character of a long value, where an unbounded one took time growing with the
square of a run's length (a 40,000-character value held a log line for 5 s)."""
_PHONE = re.compile(r"(?<![\w:.+-])\+?\d(?:[ ().-]{0,2}\d){8,14}(?![\w:])")
"""Nine to fifteen digits, optionally grouped: phone-shaped, while dates, times, ids and
addresses (too few digits, or glued to letters and colons) are left alone."""
_SCHEMED_PHONE = re.compile(
    r"\b(whatsapp|tel|sms|callto|fax):(\+?\d(?:[ ().-]{0,2}\d){8,14})(?![\w:])", re.IGNORECASE
)
"""A number behind a URI scheme (`tel:+34…`, Twilio's `whatsapp:+34…`), which `_PHONE` leaves
alone for the colon before it."""
_IDENTIFIER_KEY = re.compile(
    rf"\b({'|'.join(k.value for k in IdentifierKind if k is not IdentifierKind.CUSTOMER_ID)})"
    r":([^\s'\"(){}\[\],;]+)",
    re.IGNORECASE,
)
"""An identifier's key (`kind:value`), as stored and as a database error quotes it: every kind
but Hilo's own customer id is personal."""
SAFE_FIELDS = frozenset({"timestamp", "level", "logger", "service"})
VERBOSE_LIBRARIES = ("httpx", "httpcore", "pymongo")
"""Loggers that print request URLs (a customer search) or whole documents at INFO or DEBUG."""


def mask_email(match: re.Match[str]) -> str:
    local = match.group(0).split("@", 1)[0]
    return f"{local[:1]}***@{match.group(1)[:1]}***{match.group(2)}"


def mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    prefix = "+" + digits[:2] if match.group(0).startswith("+") else ""
    return f"{prefix}***{digits[-2:]}"


def mask_identifier_key(match: re.Match[str]) -> str:
    kind, value = match.group(1), match.group(2)
    if kind.lower() == "email" and _EMAIL.fullmatch(value):
        return f"{kind}:{_EMAIL.sub(mask_email, value)}"
    if kind.lower() == "phone" and _PHONE.fullmatch(value):
        return f"{kind}:{_PHONE.sub(mask_phone, value)}"
    return f"{kind}:[redacted]"


def _mask_schemed_phone(match: re.Match[str]) -> str:
    return f"{match.group(1)}:{_PHONE.sub(mask_phone, match.group(2))}"


def _mask_plain(value: str) -> str:
    value = _IDENTIFIER_KEY.sub(mask_identifier_key, value)
    value = _SCHEMED_PHONE.sub(_mask_schemed_phone, value)
    return _PHONE.sub(mask_phone, _EMAIL.sub(mask_email, value))


def _url_decoded(value: str) -> str:
    """Percent- and form-decoded, twice-encoded values included."""
    for _ in range(3):
        if "%" not in value:
            break
        value = unquote_plus(value)
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def mask_text(value: str) -> str:
    """Mask the personal data a free string may contain. A string holding URL-encoded personal
    data is logged decoded and masked (control characters escaped, so a decoded newline cannot
    forge a log line); any other string keeps its encoding."""
    masked = _mask_plain(value)
    if "%" not in value:
        return masked
    decoded = _url_decoded(value)
    if (hidden := _mask_plain(decoded)) == decoded:
        return masked
    return _CONTROL.sub(lambda char: f"\\x{ord(char.group(0)):02x}", hidden)


ERROR_TEXT_CHARS = 300


def error_text(exc: BaseException) -> str:
    """`Type: message` for logs and dead-letter headers, cut short, without the personal data
    the message may quote: a database error quotes the document or key it refused, a
    validation error the input. Dead-letter headers outlive any erasure, so they get codes and
    field paths, not values."""
    name = type(exc).__name__
    if isinstance(exc, BulkWriteError):
        codes = sorted({str(error.get("code")) for error in exc.details.get("writeErrors", [])})
        text = f"{name}: code {exc.code}, write errors {', '.join(codes) or 'none'}"
    elif isinstance(exc, OperationFailure):
        text = f"{name}: code {exc.code}"
    elif isinstance(exc, BSONError):  # "cannot encode object: <the value>, of type ..."
        text = f"{name}: {str(exc).split(':', 1)[0]}"
    elif isinstance(exc, ValidationError):
        fields = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or '(root)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        text = f"{name}: {exc.title}: {fields}"
    else:
        text = f"{name}: {exc}"
    return mask_text(text)[:ERROR_TEXT_CHARS]


def exception_text(exc_info: Any) -> str:
    """A traceback as Python prints it, but each exception's own message as `error_text` gives
    it: a database error's message quotes the documents it refused (names, addresses, which
    `mask_text` alone would leave), a validation error its input. The frames are kept."""
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    return "".join(_traceback_parts(exc, set())) if isinstance(exc, BaseException) else ""


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _traceback_parts(exc: BaseException, seen: set[int]) -> list[str]:
    seen.add(id(exc))
    parts: list[str] = []
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        parts += [*_traceback_parts(exc.__cause__, seen), _CAUSE]
    elif (
        exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        parts += [*_traceback_parts(exc.__context__, seen), _CONTEXT]
    if exc.__traceback__ is not None:
        parts += ["Traceback (most recent call last):\n", *traceback.format_tb(exc.__traceback__)]
    parts.append(f"{error_text(exc)}\n")
    if isinstance(exc, BaseExceptionGroup):  # a task group's failures, each with its frames
        for number, inner in enumerate(exc.exceptions, 1):
            parts.append(f"+---------------- {number} ----------------\n")
            parts.append(textwrap.indent("".join(_traceback_parts(inner, seen)), "| "))
    return parts


def _mask_string(value: str) -> str:
    text = value.strip()
    if _EMAIL.fullmatch(text):
        return _EMAIL.sub(mask_email, text)
    if _PHONE.fullmatch(text):
        return _PHONE.sub(mask_phone, text)
    return f"[redacted {len(value)} chars]"


def mask_value(value: Any) -> Any:
    """Mask a value held under a personal-data key, keeping only its shape."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _mask_string(value)
    if isinstance(value, Mapping):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(item) for item in value]
    return "[redacted]"


def _is_personal(key: object) -> bool:
    return isinstance(key, str) and key.lower() in PERSONAL_FIELDS


def _scrub(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):  # keys too: a map keyed by address or number
        scrubbed: dict[Any, Any] = {}
        for key, item in value.items():
            masked = _unique(mask_text(key), scrubbed) if isinstance(key, str) else key
            scrubbed[masked] = mask_value(item) if _is_personal(key) else _scrub(item)
        return scrubbed
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item) for item in value]
    if isinstance(value, BaseException):
        return error_text(value)
    # Anything else would be rendered by its repr, unmasked: scan its text instead.
    return mask_text(str(value))


def _unique(key: str, taken: Mapping[Any, Any]) -> str:
    """Two keys may mask alike (`+34612345678`, `+34600000078`): the second gets a number, so
    no entry of the map is lost from the line."""
    unique, n = key, 1
    while unique in taken:
        n += 1
        unique = f"{key} #{n}"
    return unique


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask personal data in every field of the event."""
    for key, value in list(event_dict.items()):
        if key in SAFE_FIELDS:
            continue
        event_dict[key] = mask_value(value) if _is_personal(key) else _scrub(value)
    return event_dict


def drop_terminal_colours(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn attaches an ANSI-coloured copy of each message (`color_message`): noise in logs."""
    event_dict.pop("color_message", None)
    return event_dict


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        """The stream is always the current stdout."""


def configure_logging(settings: HiloSettings) -> None:
    """Route structlog and stdlib logging (aiokafka, uvicorn, FastStream) through one pipeline."""
    level = logging.getLevelName(settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.ExceptionRenderer(exception_text),
        mask_personal_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Below the level, a call stops at the first processor: nothing is masked or rendered.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared[:-1],
                structlog.stdlib.ExtraAdder(),
                drop_terminal_colours,
                mask_personal_data,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in VERBOSE_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.contextvars.bind_contextvars(service=settings.service_name)
