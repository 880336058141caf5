"""A local stand-in of the WhatsApp Cloud API's messages endpoint, for tests and local runs.

It answers `POST /{version}/{phone-number-id}/messages` as Meta does:

- `Authorization: Bearer <access token>`; a wrong or missing token gets 401 with Graph's
  `{"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type":
  "OAuthException", "code": 190, "fbtrace_id": ...}}`; a phone number ID it does not know, 400
  code 100 subcode 33;
- a JSON body with `messaging_product: whatsapp`, `to` (a number) or `recipient` (a
  business-scoped user id, `US.13491208655302741918`; `to` wins when both are given), `type`
  `text` (`text.body`) or
  `template` (`template.name`, `template.language.code`), optionally `context.message_id`; a
  missing or malformed field gets 400 code 100 (`(#100) ...`, details in `error_data`), a
  recipient a test refused gets 400 with its code (131026 Message Undeliverable by default);
- accepted: `{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages":
  [{"id": "wamid...."}]}` (`user_id` instead of `wa_id` when sent to one), the id shaped like
  Meta's (base64 of the recipient and a hex id); its statuses name the recipient as it was
  addressed (`recipient_id`, or `recipient_user_id`).

The 24-hour customer-service window is enforced as the real API enforces it: free text to a
customer who has not written within 24 hours (as far as the stand-in was told, with
`customer_wrote`) is accepted, then reported by a `failed` status webhook carrying error 131047
"Re-engagement message". Templates are always delivered.

Status webhooks (`sent`, `delivered`, `read`, `failed`) go to the channel's webhook URL in Meta's
notification shape, signed `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with the app
secret>` as Meta signs, echoing the message's `biz_opaque_callback_data`. Every accepted message
is kept (what the customer received); a test can script failures: the next N calls answer 500
(or 503, 429, or 400: the pair rate limit) with Graph's transient error body; or a late answer
(`answer_late`): the message is accepted, the answer held.

Standalone (`python -m hilo.testkit.standins.whatsapp --port 8098 --webhook-url ...`):
`GET /_standin/messages` lists what was accepted, `POST /_standin/failures` (`{"count": N,
"status": 500}`) scripts failures, `POST /_standin/customers/{wa_id}` (`{"at": ISO time}`,
default now) says a customer wrote, and `POST /_standin/statuses` (`{"message_id", "status"}`)
sends a status webhook; with `--report-statuses` every message delivered is reported `sent`,
then `delivered`, without being asked (as `make run` uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from pydantic_core import from_json, to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hilo.providers.meta import signed_headers
from hilo.testkit.serving import free_port
from hilo.testkit.standins.base import StandIn
from hilo.testkit.standins.graph import GraphError
from hilo.webhook import secrets_match

ACCESS_TOKEN = "EAAstandin0123456789abcdefWhatsApp"  # noqa: S105 - the stand-in's own
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE_NUMBER = "15550783881"
BUSINESS_ACCOUNT_ID = "102290129340398"
WINDOW: Final = timedelta(hours=24)
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

RE_ENGAGEMENT = 131047
UNDELIVERABLE = 131026
NOT_ALLOWED = 131030
REFUSALS: Final = {
    UNDELIVERABLE: (
        "Message Undeliverable",
        "Unable to deliver message. Reasons can include: the recipient phone number is not a "
        "WhatsApp phone number, the recipient has not accepted the new Terms of Service, or "
        "uses an old WhatsApp version.",
    ),
    NOT_ALLOWED: (
        "Recipient phone number not in allowed list",
        "Recipient phone number not in allowed list: Add recipient phone number to recipient "
        "list and try again.",
    ),
}
"""Codes a test may refuse a recipient with: title, details (Meta's wording)."""
STATUS_ERRORS: Final = {
    RE_ENGAGEMENT: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
    ),
    **REFUSALS,
}
_TRANSIENT: Final = {
    500: (1, "An unknown error has occurred.", None),
    503: (2, "(#2) Service temporarily unavailable", None),
    429: (130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    400: (
        131056,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
}
"""Scripted failures by HTTP status: 400 is the pair rate limit, which Graph answers with 400."""
_MEDIA_TYPES: Final = ("image", "audio", "video", "document", "sticker")
_MESSAGE_TYPES: Final = frozenset(
    ("text", "template", *_MEDIA_TYPES, "location", "contacts", "interactive", "reaction")
)


def invalid(message: str, details: str | None = None) -> GraphError:
    """Graph's 400 for a bad parameter: code 100, `(#100) ...`."""
    return GraphError(400, 100, f"(#100) {message}", error_data=_error_data(details or message))


def _error_data(details: str | None) -> dict[str, str] | None:
    """The Cloud API's `error_data` of an error: its details."""
    return None if details is None else {"messaging_product": "whatsapp", "details": details}


@dataclass(frozen=True)
class AcceptedMessage:
    """One message the API accepted: its wamid, the customer's wa_id (or the business-scoped
    user id it was sent to, `recipient`), the request as sent."""

    id: str
    wa_id: str
    request: dict[str, Any]
    failed_with: int | None = None
    """The error its `failed` status reports (131047 outside the window); None: delivered."""

    @property
    def to_user_id(self) -> bool:
        """Sent to a business-scoped user id (`recipient`), not to a number (`to`)."""
        return not self.request.get("to")

    @property
    def text(self) -> str | None:
        text = self.request.get("text")
        return text.get("body") if isinstance(text, dict) else None

    @property
    def reply_to(self) -> str | None:
        context = self.request.get("context")
        return context.get("message_id") if isinstance(context, dict) else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "wa_id": self.wa_id,
            "request": self.request,
            "failed_with": self.failed_with,
        }


@dataclass(frozen=True)
class Delivery:
    """A status webhook sent to the channel, and the HTTP status the channel answered."""

    message_id: str
    status: str
    answered: int


class WhatsAppStandIn(StandIn):
    """The Cloud API's messages endpoint on 127.0.0.1 (see the module docstring); `with` runs
    it in a thread of its own."""

    def __init__(
        self,
        access_token: str = ACCESS_TOKEN,
        phone_number_id: str = PHONE_NUMBER_ID,
        *,
        app_secret: str | None = None,
        webhook_url: str | None = None,
        always_in_window: bool = False,
        report_statuses: bool = False,
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        self.always_in_window = always_in_window
        self.report_statuses = report_statuses
        """Send `sent` then `delivered` for every message delivered, as Meta does (`make run`);
        off, a test sends the statuses it wants with `send_status`."""
        self.accepted: list[AcceptedMessage] = []
        self.deliveries: list[Delivery] = []
        self.calls = 0
        """Requests to the messages endpoint, whatever they were answered."""
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._late: list[float] = []
        self._refused: dict[str, int] = {}
        self._last_wrote: dict[str, datetime] = {}
        app = Starlette(
            routes=[
                Route("/{version}/{phone_number_id}/messages", self._messages, methods=["POST"]),
                Route("/_standin/messages", self._list, methods=["GET"]),
                Route("/_standin/failures", self._script, methods=["POST"]),
                Route("/_standin/customers/{wa_id}", self._wrote, methods=["POST"]),
                Route("/_standin/statuses", self._post_status, methods=["POST"]),
            ]
        )
        super().__init__(app, name="whatsapp-standin")

    @property
    def graph_url(self) -> str:
        """What the channel's `HILO_WHATSAPP_GRAPH_URL` is set to."""
        return self.url

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` calls answer `status` (500, 503, 429, or 400 for the pair rate
        limit, code 131056) with Graph's error body."""
        with self._lock:
            self._failures.extend([status] * count)

    def answer_late(self, seconds: float) -> None:
        """The next message accepted is answered only after `seconds`: a sender stopped in the
        meantime never learns its wamid, though the message goes out."""
        with self._lock:
            self._late.append(seconds)

    def refuse(self, wa_id: str, code: int = UNDELIVERABLE) -> None:
        """Answer 400 with `code` (131026, 131030) to every message sent to `wa_id`."""
        if code not in REFUSALS:
            raise ValueError(f"no refusal {code} is modelled; known: {sorted(REFUSALS)}")
        with self._lock:
            self._refused[wa_id] = code

    def customer_wrote(self, wa_id: str, at: datetime | None = None) -> None:
        """The customer `wa_id` sent the business a message at `at` (now): the window opens."""
        with self._lock:
            self._last_wrote[wa_id] = at or datetime.now(UTC)

    def in_window(self, wa_id: str) -> bool:
        """Whether free text to `wa_id` would be delivered now."""
        with self._lock:
            last = self._last_wrote.get(wa_id)
        return self.always_in_window or (last is not None and datetime.now(UTC) - last < WINDOW)

    def received(self, wa_id: str) -> list[AcceptedMessage]:
        """What was accepted for `wa_id`, in order."""
        with self._lock:
            return [message for message in self.accepted if message.wa_id == wa_id]

    async def send_status(self, message_id: str, status: str) -> int:
        """Send the channel the status webhook of an accepted message (as Meta would, signed);
        the channel's HTTP status is returned."""
        message = self._message(message_id)
        errors = None
        if status == "failed":
            errors = [_status_error(message.failed_with or UNDELIVERABLE)]
        return await self._deliver(message, status, errors)

    async def _messages(self, request: Request) -> Response:
        with self._lock:
            self.calls += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            code, text, details = _TRANSIENT.get(failure, _TRANSIENT[500])
            error = GraphError(failure, code, text, error_data=_error_data(details), transient=True)
            return error.response()
        try:
            self._authorise(request)
            message = self._accept(request.path_params, await request.body())
        except GraphError as exc:
            return exc.response()
        with self._lock:
            late = self._late.pop(0) if self._late else 0.0
        await asyncio.sleep(late)
        if message.failed_with is not None:
            self._later(self._fail(message))
        elif self.report_statuses and self.webhook_url and self.app_secret:
            self._later(self._report(message))
        content: dict[str, Any] = {"id": message.id}
        if message.request["type"] == "template":
            content["message_status"] = "accepted"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [_contact(message)],
                "messages": [content],
            }
        )

    def _authorise(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets_match(self.access_token, token.strip()):
            raise GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def _accept(self, path: dict[str, Any], raw: bytes) -> AcceptedMessage:
        """Check the request as Graph does, and keep the message; `GraphError` otherwise."""
        if path["phone_number_id"] != self.phone_number_id:
            raise GraphError(
                400,
                100,
                f"Unsupported post request. Object with ID '{path['phone_number_id']}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this "
                "operation.",
                subcode=33,
            )
        body = _json_object(raw)
        wa_id = _addressee(body)
        _check_content(body)
        with self._lock:
            refused = self._refused.get(wa_id)
        if refused is not None:
            title, details = REFUSALS[refused]
            raise GraphError(400, refused, f"(#{refused}) {title}", error_data=_error_data(details))
        outside = body["type"] != "template" and not self.in_window(wa_id)
        message = AcceptedMessage(_wamid(wa_id), wa_id, body, RE_ENGAGEMENT if outside else None)
        with self._lock:
            self.accepted.append(message)
        return message

    def _message(self, message_id: str) -> AcceptedMessage:
        with self._lock:
            for message in self.accepted:
                if message.id == message_id:
                    return message
        raise KeyError(f"no message {message_id} was accepted")

    async def _fail(self, message: AcceptedMessage) -> None:
        await asyncio.sleep(0.05)
        if self.webhook_url and self.app_secret:
            await self._deliver(message, "failed", [_status_error(message.failed_with or 0)])

    async def _report(self, message: AcceptedMessage) -> None:
        """`sent`, then `delivered`: what Meta reports of a message that reached the phone."""
        for status in ("sent", "delivered"):
            await asyncio.sleep(0.05)
            try:
                await self._deliver(message, status, None)
            except httpx.HTTPError:
                return

    async def _deliver(
        self, message: AcceptedMessage, status: str, errors: list[dict[str, Any]] | None
    ) -> int:
        if not (self.webhook_url and self.app_secret):
            raise RuntimeError("the stand-in was given no webhook_url and app_secret")
        body = to_json(self._notification(message, status, errors))
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                self.webhook_url, content=body, headers=signed_headers(body, self.app_secret)
            )
        with self._lock:
            self.deliveries.append(Delivery(message.id, status, response.status_code))
        return response.status_code

    def _notification(
        self, message: AcceptedMessage, status: str, errors: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """Meta's `messages` notification carrying one status of `message`."""
        entry: dict[str, Any] = {
            "id": message.id,
            "status": status,
            "timestamp": str(int(time.time())),
            ("recipient_user_id" if message.to_user_id else "recipient_id"): message.wa_id,
        }
        if (echoed := message.request.get("biz_opaque_callback_data")) is not None:
            entry["biz_opaque_callback_data"] = echoed
        if errors:
            entry["errors"] = errors
        elif status in {"sent", "delivered"}:
            category = "utility" if message.request["type"] == "template" else "service"
            entry["conversation"] = {
                "id": secrets.token_hex(16),
                "origin": {"type": category},
            }
            entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": category}
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_PHONE_NUMBER,
                "phone_number_id": self.phone_number_id,
            },
            "statuses": [entry],
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": BUSINESS_ACCOUNT_ID, "changes": [{"value": value, "field": "messages"}]}
            ],
        }

    async def _list(self, _request: Request) -> Response:
        with self._lock:
            return JSONResponse([message.as_json() for message in self.accepted])

    async def _script(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        self.fail_next(int(order.get("count", 1)), int(order.get("status", 500)))
        return JSONResponse({"scripted": True})

    async def _wrote(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        at = datetime.fromisoformat(order["at"]) if order.get("at") else None
        self.customer_wrote(request.path_params["wa_id"], at)
        return JSONResponse({"in_window": self.in_window(request.path_params["wa_id"])})

    async def _post_status(self, request: Request) -> Response:
        order = from_json(await request.body())
        try:
            answered = await self.send_status(str(order["message_id"]), str(order["status"]))
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"channel_answered": answered})


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = from_json(raw)
    except ValueError:
        raise invalid("Invalid parameter", "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("Invalid parameter", "Request body must be a JSON object")
    if body.get("messaging_product") != "whatsapp":
        raise invalid("The parameter messaging_product is required.")
    return body


def _contact(message: AcceptedMessage) -> dict[str, str]:
    """The answer's `contacts` entry: the input, and the wa_id or user id it reached."""
    if message.to_user_id:
        return {"input": message.wa_id, "user_id": message.wa_id}
    return {"input": message.request["to"], "wa_id": message.wa_id}


_BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}")


def _addressee(body: dict[str, Any]) -> str:
    """Whom the message goes to: `to`, a number (its wa_id), which wins over `recipient`, a
    business-scoped user id (`US.13491208655302741918`)."""
    if body.get("to") is not None:
        return _wa_id(body)
    recipient = body.get("recipient")
    if recipient is None:
        raise invalid("The parameter to is required.")
    if not (isinstance(recipient, str) and _BSUID.fullmatch(recipient)):
        raise invalid("Invalid parameter", "Invalid parameter: recipient is not a user id")
    return recipient


def _wa_id(body: dict[str, Any]) -> str:
    """The recipient's wa_id: `to` without `+`, spaces, dashes or brackets, 8 to 15 digits."""
    to = body.get("to")
    if not isinstance(to, str) or not to:
        raise invalid("The parameter to is required.")
    digits = to.translate({ord(c): None for c in "+ -()"})
    if not (digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 15):
        raise invalid("Invalid parameter", "Invalid parameter: to is not a phone number")
    return digits


def _check_content(body: dict[str, Any]) -> None:
    kind = body.setdefault("type", "text")
    if kind not in _MESSAGE_TYPES:
        raise invalid("Invalid parameter", f"Unsupported message type: {kind}")
    if kind == "text":
        text = body.get("text")
        content = text.get("body") if isinstance(text, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise invalid("Param text['body'] is required.")
        if len(content) > 4_096:
            raise invalid("Param text['body'] must be at most 4096 characters long.")
    elif kind == "template":
        template = body.get("template")
        if not isinstance(template, dict) or not template.get("name"):
            raise invalid("Param template['name'] is required.")
        language = template.get("language")
        if not isinstance(language, dict) or not language.get("code"):
            raise invalid("Param template['language']['code'] is required.")
    context = body.get("context")
    if context is not None and not (isinstance(context, dict) and context.get("message_id")):
        raise invalid("Param context['message_id'] is required.")


def _status_error(code: int) -> dict[str, Any]:
    title, details = STATUS_ERRORS.get(code, ("Unknown error", "Unknown error"))
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": ERROR_CODES_URL,
    }


def _wamid(wa_id: str) -> str:
    """An id shaped like Meta's: `wamid.` + base64 of the wa_id and a 20-hex-digit id."""
    digits = wa_id.encode()
    key = secrets.token_hex(10).upper().encode()
    raw = b"\x1c\x18" + bytes([len(digits)]) + digits + b"\x15\x02\x00\x12\x18"
    return "wamid." + base64.b64encode(raw + bytes([len(key)]) + key + b"\x00").decode()


def run(
    port: int,
    *,
    access_token: str = ACCESS_TOKEN,
    phone_number_id: str = PHONE_NUMBER_ID,
    app_secret: str | None = None,
    webhook_url: str | None = None,
    always_in_window: bool = False,
    report_statuses: bool = False,
) -> None:
    """Serve in the foreground until interrupted."""
    WhatsAppStandIn(
        access_token,
        phone_number_id,
        app_secret=app_secret,
        webhook_url=webhook_url,
        always_in_window=always_in_window,
        report_statuses=report_statuses,
    ).serve_forever(port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local stand-in of the WhatsApp Cloud API.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--access-token", default=ACCESS_TOKEN)
    parser.add_argument("--phone-number-id", default=PHONE_NUMBER_ID)
    parser.add_argument("--app-secret", help="signs the status webhooks")
    parser.add_argument("--webhook-url", help="the channel's /webhooks/whatsapp")
    parser.add_argument(
        "--always-in-window",
        action="store_true",
        help="deliver free text to everyone (no 131047 outside the 24-hour window)",
    )
    parser.add_argument(
        "--report-statuses",
        action="store_true",
        help="send `sent` and `delivered` status webhooks for every message delivered",
    )
    args = parser.parse_args(argv)
    port = args.port or free_port()
    print(f"WhatsApp Cloud API stand-in on http://127.0.0.1:{port}", file=sys.stderr)  # noqa: T201
    run(
        port,
        access_token=args.access_token,
        phone_number_id=args.phone_number_id,
        app_secret=args.app_secret,
        webhook_url=args.webhook_url,
        always_in_window=args.always_in_window,
        report_statuses=args.report_statuses,
    )


if __name__ == "__main__":
    main()
