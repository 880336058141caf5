"""How journey entries read on the desk: the timeline rows, with each outbound message's delivery
status attached to it by the provider's message id.

Providers report what became of a message in separate events (`message_status`: sent,
delivered, read, failed); an agent wants to see them on the message. A failed send that never
reached the provider is reported under `FAILURE_PREFIX` and its command id, and shows on the
reply that was waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent_desk.policy import channel_name
from hilo.contract.outbound import FAILURE_PREFIX
from hilo.outbound import CHECK_FIRST

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
TYPE_NAMES = {
    "message": "Message",
    "message_status": "Delivery",
    "page_view": "Page view",
    "product_view": "Product view",
    "cart": "Cart",
    "order": "Order",
    "refund": "Refund",
    "call": "Call",
    "store_visit": "Store visit",
    "survey_answer": "Survey",
    "consent": "Consent",
    "identify": "Identified",
    "conversation_done": "Done",
    "custom": "Event",
}


def type_name(kind: str) -> str:
    return TYPE_NAMES.get(kind, kind)


def provider_id(entry: Mapping[str, Any]) -> str | None:
    payload = entry.get("payload") or {}
    value = payload.get("provider_message_id")
    return str(value) if value else None


def row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One timeline row: the entry plus what the template needs to show it."""
    payload = entry.get("payload") or {}
    occurred = entry["occurred_at"]
    at = datetime.fromisoformat(occurred) if isinstance(occurred, str) else occurred
    # In UTC whatever offset the channel kept (an email's Date header, a till's receipt): rows
    # from the API and from the live feed are then ordered and shown alike.
    at = at.astimezone(UTC)
    pid = provider_id(entry)
    reply_failure = pid is not None and pid.startswith(FAILURE_PREFIX)
    return {
        **entry,
        "at": at,
        "channel_name": channel_name(str(entry["channel"])),
        "type_name": type_name(str(entry["type"])),
        "direction": payload.get("direction"),
        "marketing": payload.get("purpose") == "marketing",
        "text": payload.get("text") or payload.get("transcript"),
        "provider_id": pid,
        "reply_failure": reply_failure,
        # The provider's later word on a reply reported "perhaps not sent": a row of its own.
        "after_report": reply_failure and payload.get("status") in ("sent", "delivered", "read"),
        "status": None,
        "status_error": None,
        "perhaps_sent": CHECK_FIRST in str(payload.get("error") or ""),
    }


def attach_statuses(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `entries` (newest first), each status folded into the message it is about when
    that message is among them; other statuses stay rows of their own."""
    rows = [row(entry) for entry in entries]
    messages = {r["provider_id"]: r for r in rows if r["type"] == "message" and r["provider_id"]}
    shown = []
    for current in rows:
        target = (
            messages.get(current["provider_id"]) if current["type"] == "message_status" else None
        )
        if target is None:
            shown.append(current)
            continue
        status = str((current.get("payload") or {}).get("status"))
        if STATUS_RANK.get(status, 0) >= STATUS_RANK.get(target["status"] or "", 0):
            target["status"] = status
            target["status_error"] = (current.get("payload") or {}).get("error")
    return shown
