"""A local stand-in of Meta's Send API for Messenger and Instagram, for tests and local runs.

It answers `POST /{version}/{account}/messages` as Graph does:

- the access token as `Authorization: Bearer <token>` (or the `access_token` query parameter):
  the Page token sends Messenger messages, the Instagram token Instagram ones; any other gets 401
  `{"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type":
  "OAuthException", "code": 190, "fbtrace_id": ...}}`; an `{account}` other than `me` or the
  token's own Page/account ID gets 400 code 100 subcode 33;
- a JSON body `{"recipient": {"id"}, "messaging_type", "message": {"text"}}`, `messaging_type`
  `RESPONSE`, `UPDATE` or `MESSAGE_TAG` with a `tag`; a missing or malformed field gets 400
  code 100 (`(#100) ...`);
- a recipient who never wrote to the Page/account gets 400 code 100 subcode 2018001 `No matching
  user found`; one a test refused, its error (551 `This person isn't available right now` by
  default);
- the messaging window as Meta enforces it: untagged messages reach a customer within 24 hours
  of their last message, `HUMAN_AGENT` ones within 7 days; later, 400 code 10 (`This message is
  sent outside of allowed window`, subcode 2018278 on Messenger, 2534022 on Instagram). The
  stand-in plays an app that has the Human Agent feature;
- accepted: `{"recipient_id", "message_id"}`, the id shaped like Meta's (`m_...` on Messenger,
  base64 `aWdf...` on Instagram).

Every accepted message is kept (what the customer received); a test can script failures (the
next N calls answer 500, 503 or 429 with Graph's transient error body) and say when a customer
last wrote (`customer_wrote`). It sends the channel what Meta sends after a message, signed
`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with the app secret>`: the echo
(`message_echoes`, with the `metadata` the sender gave) and the receipts (`message_deliveries`
on Messenger, `messaging_seen` reads naming the message on Instagram).

In a test, `async with standin.serving() as url:` serves it in the test's event loop. Standalone
(`python -m hilo.testkit.standins.meta_send --port 8099 --webhook-url ...`): `GET
/_standin/messages` lists what was accepted, `POST /_standin/failures` (`{"count": N, "status":
500}`) scripts failures, `POST /_standin/customers/{channel}/{id}` (`{"at": ISO time}`, default
now) says a customer wrote, `POST /_standin/receipts` (`{"message_id", "status"}`) sends a receipt
webhook; `--always-in-window` knows every recipient and delivers to all, `--report-events` sends
the echo and delivery of every message unasked (as `make run` would use it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import sys
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

PAGE_ACCESS_TOKEN = "EAAstandin0123456789abcdefMessengerPage"  # noqa: S105 - the stand-in's own
INSTAGRAM_ACCESS_TOKEN = "EAAstandin0123456789abcdefInstagram"  # noqa: S105 - the stand-in's own
PAGE_ID = "106540352242922"
INSTAGRAM_ACCOUNT_ID = "17841405822304914"
APP_ID = 1517776481860111
STANDARD_WINDOW: Final = timedelta(hours=24)
HUMAN_AGENT_WINDOW: Final = timedelta(days=7)
MESSAGING_TYPES: Final = frozenset({"RESPONSE", "UPDATE", "MESSAGE_TAG"})
TAGS: Final = {
    "messenger": frozenset(
        {"HUMAN_AGENT", "ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE"}
    ),
    "instagram": frozenset({"HUMAN_AGENT"}),
}
TEXT_LIMITS: Final = {"messenger": 2_000, "instagram": 1_000}
OUTSIDE_WINDOW_SUBCODES: Final = {"messenger": 2018278, "instagram": 2534022}
NO_MATCHING_USER = 2018001
UNAVAILABLE = 551
REFUSALS: Final = {
    UNAVAILABLE: (1545041, "This person isn't available right now."),
    200: (
        2018028,
        "Cannot message users who are not admins, developers or testers of the app "
        "until pages_messaging permission is reviewed and the app is live.",
    ),
}
"""Codes a test may refuse a recipient with: subcode, message (Meta's wording)."""
_TRANSIENT: Final = {
    500: (1, "An unknown error has occurred."),
    503: (2, "(#2) Service temporarily unavailable"),
    429: (613, "(#613) Calls to this api have exceeded the rate limit."),
}


def invalid(message: str, subcode: int | None = None) -> GraphError:
    """Graph's 400 for a bad parameter: code 100, `(#100) ...`."""
    return GraphError(400, 100, f"(#100) {message}", subcode=subcode)


@dataclass(frozen=True)
class AcceptedMessage:
    """One message the API accepted: its id, channel, the customer's scoped id, the request."""

    id: str
    channel: str
    recipient: str
    request: dict[str, Any]

    @property
    def text(self) -> str | None:
        message = self.request.get("message")
        return message.get("text") if isinstance(message, dict) else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "recipient": self.recipient,
            "request": self.request,
        }


@dataclass(frozen=True)
class Delivery:
    """A webhook sent to the channel (`echo`, `delivered`, `read`) and the channel's answer."""

    message_id: str
    event: str
    answered: int


class MetaSendStandIn(StandIn):
    """The Send API of one Page and one Instagram account (see the module docstring)."""

    def __init__(
        self,
        *,
        page_access_token: str = PAGE_ACCESS_TOKEN,
        instagram_access_token: str = INSTAGRAM_ACCESS_TOKEN,
        app_secret: str | None = None,
        webhook_url: str | None = None,
        always_in_window: bool = False,
        report_events: bool = False,
    ) -> None:
        self.accounts = {
            page_access_token: ("messenger", PAGE_ID),
            instagram_access_token: ("instagram", INSTAGRAM_ACCOUNT_ID),
        }
        self.page_access_token = page_access_token
        self.instagram_access_token = instagram_access_token
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        self.always_in_window = always_in_window
        self.report_events = report_events
        """Send the echo, then (Messenger) the delivery, of every message accepted, as Meta does
        to a Page subscribed to `message_echoes` and `message_deliveries`; off, a test sends
        what it wants with `send_echo` and `send_receipt`."""
        self.accepted: list[AcceptedMessage] = []
        self.deliveries: list[Delivery] = []
        self.calls = 0
        """Requests to the messages endpoint, whatever they were answered."""
        self._failures: list[int] = []
        self._taken_then_failing: list[int] = []
        self._refused: dict[tuple[str, str], int] = {}
        self._last_wrote: dict[tuple[str, str], datetime] = {}
        app = Starlette(
            routes=[
                Route("/{version}/{account}/messages", self._messages, methods=["POST"]),
                Route("/_standin/messages", self._list, methods=["GET"]),
                Route("/_standin/failures", self._script, methods=["POST"]),
                Route("/_standin/customers/{channel}/{scoped_id}", self._wrote, methods=["POST"]),
                Route("/_standin/receipts", self._post_receipt, methods=["POST"]),
            ]
        )
        super().__init__(app, name="meta-send-standin")

    @property
    def graph_url(self) -> str:
        """What the channel's `HILO_META_GRAPH_URL` (and `HILO_INSTAGRAM_GRAPH_URL`) is set to."""
        return self.url

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` calls answer `status` (500, 503 or 429) with Graph's error body."""
        self._failures.extend([status] * count)

    def take_then_fail(self, status: int = 500) -> None:
        """The next call's message is taken (the customer gets it, its echo can be sent), and
        the call answers `status` all the same: Graph failing after it took the message."""
        self._taken_then_failing.append(status)

    def refuse(self, channel: str, scoped_id: str, code: int = UNAVAILABLE) -> None:
        """Answer 400 with `code` (551, 200) to every message to `scoped_id` on `channel`."""
        if code not in REFUSALS:
            raise ValueError(f"no refusal {code} is modelled; known: {sorted(REFUSALS)}")
        self._refused[channel, scoped_id] = code

    def customer_wrote(self, channel: str, scoped_id: str, at: datetime | None = None) -> None:
        """The customer `scoped_id` (a PSID or IGSID) wrote to the Page or account at `at`
        (now): they are known, and the messaging window opens."""
        self._last_wrote[channel, scoped_id] = at or datetime.now(UTC)

    def received(self, scoped_id: str) -> list[AcceptedMessage]:
        """What was accepted for `scoped_id`, in order."""
        return [message for message in self.accepted if message.recipient == scoped_id]

    async def send_echo(self, message_id: str) -> int:
        """Send the channel the echo of an accepted message (`message_echoes`), as Meta does
        when the Page or account sends one; the channel's HTTP status is returned."""
        message = self._message(message_id)
        echo: dict[str, Any] = {"mid": message.id, "is_echo": True, "text": message.text}
        if message.channel == "messenger":
            echo["app_id"] = APP_ID
            metadata = message.request["message"].get("metadata")
            if metadata:
                echo["metadata"] = metadata
        event = {"sender": self._own(message), "recipient": {"id": message.recipient}}
        return await self._deliver(message, "echo", {**event, "message": echo})

    async def send_receipt(self, message_id: str, status: str) -> int:
        """Send the channel that an accepted message was `delivered` (Messenger) or `read`
        (Instagram names the message read; Messenger only a watermark)."""
        message = self._message(message_id)
        now = int(time.time() * 1000)
        event: dict[str, Any] = {
            "sender": {"id": message.recipient},
            "recipient": self._own(message),
        }
        if status == "delivered" and message.channel == "messenger":
            event["delivery"] = {"mids": [message.id], "watermark": now}
        elif status == "read":
            read = {"watermark": now} if message.channel == "messenger" else {"mid": message.id}
            event["read"] = read
        else:
            raise ValueError(f"Meta sends no {status} receipt on {message.channel}")
        return await self._deliver(message, status, event)

    async def _messages(self, request: Request) -> Response:
        self.calls += 1
        if self._failures:
            status = self._failures.pop(0)
            code, text = _TRANSIENT.get(status, _TRANSIENT[500])
            return GraphError(status, code, text, transient=True).response()
        try:
            channel, own_id = self._authorise(request)
            _check_account(request.path_params["account"], own_id)
            message = self._accept(channel, await request.body())
        except GraphError as exc:
            return exc.response()
        if self._taken_then_failing:
            status = self._taken_then_failing.pop(0)
            code, text = _TRANSIENT.get(status, _TRANSIENT[500])
            return GraphError(status, code, text, transient=True).response()
        if self.report_events and self.webhook_url and self.app_secret:
            self._later(self._report(message))
        return JSONResponse({"recipient_id": message.recipient, "message_id": message.id})

    def _authorise(self, request: Request) -> tuple[str, str]:
        """The channel and the Page/account ID the request's access token sends for."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.query_params.get("access_token", "")
        for known, account in self.accounts.items():
            if secrets_match(known, token.strip()):
                return account
        raise GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def _accept(self, channel: str, raw: bytes) -> AcceptedMessage:
        """Check the request as Graph does, and keep the message; `GraphError` otherwise."""
        body = _json_object(raw)
        recipient = _recipient(body)
        tag = _messaging(channel, body)
        _check_text(channel, body)
        self._check_recipient(channel, recipient, tag)
        message = AcceptedMessage(_message_id(channel, recipient), channel, recipient, body)
        self.accepted.append(message)
        return message

    def _check_recipient(self, channel: str, recipient: str, tag: str | None) -> None:
        refused = self._refused.get((channel, recipient))
        if refused is not None:
            subcode, text = REFUSALS[refused]
            raise GraphError(400, refused, f"(#{refused}) {text}", subcode=subcode)
        if self.always_in_window:
            return
        last = self._last_wrote.get((channel, recipient))
        if last is None:
            raise invalid("No matching user found", NO_MATCHING_USER)
        if tag not in {None, "HUMAN_AGENT"}:
            return  # the other tags are for updates at any time (their content is not checked)
        window = HUMAN_AGENT_WINDOW if tag == "HUMAN_AGENT" else STANDARD_WINDOW
        if datetime.now(UTC) - last >= window:
            text = "This message is sent outside of allowed window."
            if channel == "messenger":
                text += (
                    " Learn more about the new policy here: "
                    "https://developers.facebook.com/docs/messenger-platform/policy-overview"
                )
            raise GraphError(400, 10, f"(#10) {text}", subcode=OUTSIDE_WINDOW_SUBCODES[channel])

    def _message(self, message_id: str) -> AcceptedMessage:
        for message in self.accepted:
            if message.id == message_id:
                return message
        raise KeyError(f"no message {message_id} was accepted")

    def _own(self, message: AcceptedMessage) -> dict[str, str]:
        return {"id": PAGE_ID if message.channel == "messenger" else INSTAGRAM_ACCOUNT_ID}

    async def _deliver(self, message: AcceptedMessage, kind: str, event: dict[str, Any]) -> int:
        """POST one messaging event to the channel in Meta's notification shape, signed."""
        if not (self.webhook_url and self.app_secret):
            raise RuntimeError("the stand-in was given no webhook_url and app_secret")
        now = int(time.time() * 1000)
        notification = {
            "object": "page" if message.channel == "messenger" else "instagram",
            "entry": [
                {
                    "id": self._own(message)["id"],
                    "time": now,
                    "messaging": [{**event, "timestamp": now}],
                }
            ],
        }
        body = to_json(notification)
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                self.webhook_url, content=body, headers=signed_headers(body, self.app_secret)
            )
        self.deliveries.append(Delivery(message.id, kind, response.status_code))
        return response.status_code

    async def _report(self, message: AcceptedMessage) -> None:
        await asyncio.sleep(0.05)
        try:
            await self.send_echo(message.id)
            if message.channel == "messenger":
                await self.send_receipt(message.id, "delivered")
        except httpx.HTTPError:
            return

    async def _list(self, _request: Request) -> Response:
        return JSONResponse([message.as_json() for message in self.accepted])

    async def _script(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        self.fail_next(int(order.get("count", 1)), int(order.get("status", 500)))
        return JSONResponse({"scripted": True})

    async def _wrote(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        at = datetime.fromisoformat(order["at"]) if order.get("at") else None
        channel, scoped_id = request.path_params["channel"], request.path_params["scoped_id"]
        if channel not in TAGS:
            return JSONResponse({"error": f"no channel {channel}"}, status_code=404)
        self.customer_wrote(channel, scoped_id, at)
        return JSONResponse({"known": True})

    async def _post_receipt(self, request: Request) -> Response:
        order = from_json(await request.body())
        try:
            answered = await self.send_receipt(str(order["message_id"]), str(order["status"]))
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"channel_answered": answered})


def _check_account(account: str, own_id: str) -> None:
    """The path names `me` or the token's own Page/account; Graph knows no other here."""
    if account not in {"me", own_id}:
        raise GraphError(
            400,
            100,
            f"Unsupported post request. Object with ID '{account}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
            subcode=33,
            kind="GraphMethodException",
        )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = from_json(raw)
    except ValueError:
        raise invalid("Invalid parameter") from None
    if not isinstance(body, dict):
        raise invalid("Invalid parameter")
    return body


def _recipient(body: dict[str, Any]) -> str:
    recipient = body.get("recipient")
    scoped_id = recipient.get("id") if isinstance(recipient, dict) else None
    if not recipient:
        raise invalid("The parameter recipient is required")
    if not (isinstance(scoped_id, str) and scoped_id.isascii() and scoped_id.isdigit()):
        raise invalid("Invalid user id", NO_MATCHING_USER)
    return scoped_id


def _messaging(channel: str, body: dict[str, Any]) -> str | None:
    """The message tag, after checking `messaging_type` and `tag` as the Send API does."""
    kind = body.get("messaging_type", "RESPONSE" if channel == "instagram" else None)
    if not isinstance(kind, str) or kind not in MESSAGING_TYPES:
        raise invalid(
            f"param messaging_type must be one of {{{', '.join(sorted(MESSAGING_TYPES))}}}"
        )
    tag = body.get("tag")
    if kind != "MESSAGE_TAG":
        return None
    if not isinstance(tag, str) or tag not in TAGS[channel]:
        raise invalid(f"Param tag must be one of {{{', '.join(sorted(TAGS[channel]))}}}")
    return str(tag)


def _check_text(channel: str, body: dict[str, Any]) -> None:
    message = body.get("message")
    if not isinstance(message, dict):
        raise invalid("Must send either message or sender action")
    text = message.get("text")
    if "attachment" in message and text is None:
        return
    if not isinstance(text, str) or not text:
        raise invalid("The parameter message[text] is required")
    limit = TEXT_LIMITS[channel]
    size = len(text.encode()) if channel == "instagram" else len(text)
    if size > limit:
        raise invalid(f"Length of param message[text] must be less than or equal to {limit}")


def _message_id(channel: str, recipient: str) -> str:
    """An id shaped like Meta's: `m_` and 86 URL-safe characters on Messenger; on Instagram,
    base64 of `ig_message_item:1:IGMessageThread:...` (which starts `aWdf`)."""
    if channel == "messenger":
        return "m_" + secrets.token_urlsafe(66)[:86]
    item = f"ig_message_item:1:IGMessageThread:{INSTAGRAM_ACCOUNT_ID}:{recipient}:"
    item += str(secrets.randbelow(10**18))
    return base64.b64encode(item.encode()).decode().rstrip("=")


def run(
    port: int,
    *,
    page_access_token: str = PAGE_ACCESS_TOKEN,
    instagram_access_token: str = INSTAGRAM_ACCESS_TOKEN,
    app_secret: str | None = None,
    webhook_url: str | None = None,
    always_in_window: bool = False,
    report_events: bool = False,
) -> None:
    """Serve in the foreground until interrupted."""
    MetaSendStandIn(
        page_access_token=page_access_token,
        instagram_access_token=instagram_access_token,
        app_secret=app_secret,
        webhook_url=webhook_url,
        always_in_window=always_in_window,
        report_events=report_events,
    ).serve_forever(port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local stand-in of Meta's Send API.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--page-access-token", default=PAGE_ACCESS_TOKEN)
    parser.add_argument("--instagram-access-token", default=INSTAGRAM_ACCESS_TOKEN)
    parser.add_argument("--app-secret", help="signs the webhooks sent to the channel")
    parser.add_argument("--webhook-url", help="the channel's /webhooks/social")
    parser.add_argument(
        "--always-in-window",
        action="store_true",
        help="know every recipient and deliver to all (no window, no unknown user)",
    )
    parser.add_argument(
        "--report-events",
        action="store_true",
        help="send the echo and (Messenger) the delivery of every message accepted",
    )
    args = parser.parse_args(argv)
    port = args.port or free_port()
    print(f"Meta Send API stand-in on http://127.0.0.1:{port}", file=sys.stderr)  # noqa: T201
    run(
        port,
        page_access_token=args.page_access_token,
        instagram_access_token=args.instagram_access_token,
        app_secret=args.app_secret,
        webhook_url=args.webhook_url,
        always_in_window=args.always_in_window,
        report_events=args.report_events,
    )


if __name__ == "__main__":
    main()
