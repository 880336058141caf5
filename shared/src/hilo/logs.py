"""Structured logging (structlog, JSON by default) that never writes personal data raw.

`mask_personal_data` runs on every event: fields that hold personal data by name (email, phone,
name, text, ...) are masked whatever their content, and any other string value is scanned for
email addresses and phone numbers. A masked email keeps its first letter and domain, a phone
its country code and last two digits: enough to tell two customers apart in a log, not enough to
contact anyone.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from hilo.settings import HiloSettings

PERSONAL_FIELDS = frozenset(
    {
        "email",
        "phone",
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
        "from_",
        "to",
        "sender",
        "recipient",
        "wa_id",
        "whatsapp_id",
        "value",
    }
)
_EMAIL = re.compile(r"[\w.+-]+@([\w-]+)((?:\.[\w-]+)+)")
_PHONE = re.compile(r"(?<![\w:.+-])\+?\d(?:[ ().-]{0,2}\d){8,14}(?![\w:])")
"""Nine to fifteen digits, optionally grouped: phone-shaped, while dates, times, ids and
addresses (too few digits, or glued to letters and colons) are left alone."""
SAFE_FIELDS = frozenset({"timestamp", "level", "logger", "service"})


def mask_email(match: re.Match[str]) -> str:
    local = match.group(0).split("@", 1)[0]
    return f"{local[:1]}***@{match.group(1)[:1]}***{match.group(2)}"


def mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    prefix = "+" + digits[:2] if match.group(0).startswith("+") else ""
    return f"{prefix}***{digits[-2:]}"


def mask_text(value: str) -> str:
    """Mask the personal data a free string may contain."""
    return _PHONE.sub(mask_phone, _EMAIL.sub(mask_email, value))


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
    if isinstance(value, list | tuple | set):
        return [mask_value(item) for item in value]
    return "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {
            key: mask_value(item) if key in PERSONAL_FIELDS else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask personal data in every field of the event."""
    for key, value in list(event_dict.items()):
        if key in SAFE_FIELDS:
            continue
        event_dict[key] = mask_value(value) if key in PERSONAL_FIELDS else _scrub(value)
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
        structlog.processors.format_exc_info,
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
    structlog.contextvars.bind_contextvars(service=settings.service_name)
