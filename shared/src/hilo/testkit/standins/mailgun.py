"""A local stand-in of Mailgun's messages API, for tests and local runs.

It answers `POST /v3/{domain}/messages` as Mailgun does: HTTP Basic `api:<API key>` (a wrong or
missing key gets 401 with the plain-text body `Forbidden`); a form, urlencoded or multipart,
whose `h:` fields are the message's headers and `v:` fields its user variables; 404
`{"message": "Domain not found: ..."}` for a domain it does not send for; 400 `{"message": ...}`
for a missing `from`, `to` or body; and `{"id": "<...@domain>", "message": "Queued. Thank you."}`
for a message accepted. Every accepted message is kept, so a test can assert what the customer
received; a test can script failures (the next N calls answer 500; a recipient refused as an
invalid address).

With a `webhook_url` and the domain's webhook signing key, it posts Mailgun's event webhooks
there after accepting a message, as Mailgun does: `delivered`, or a permanent `failed` (SMTP 550)
for a recipient scripted to bounce. A test posts the others (`opened`, `unsubscribed`,
`complained`, a temporary `failed`) with `post_event`, or builds one with `event_body`. Every
event is JSON, `{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`,
signed as Mailgun signs: hex HMAC-SHA256 of timestamp + token; the message's `v:` fields come
back as `user-variables`.

Standalone (`python -m hilo.testkit.standins.mailgun --port 8099`, with `--webhook-url` and
`--signing-key` to post events), `GET /_standin/messages`
lists what was accepted and `POST /_standin/failures` (`{"count": N, "status": 500}`) scripts
failures from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import secrets
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hilo.testkit.serving import free_port
from hilo.testkit.standins.base import StandIn
from hilo.webhook import hmac_sha256, secrets_match

API_KEY = "key-standin-0123456789abcdef"
DOMAIN = "mg.shop.example"
INVALID_ADDRESS = "'to' parameter is not a valid address. please check documentation"
NO_BODY = "Need at least one of 'text' or 'html' parameters specified"
SIGNING_KEY = "key-standin-webhook-signing"
BOUNCE = "5.1.1 The email account that you tried to reach does not exist."


@dataclass(frozen=True)
class AcceptedEmail:
    """One message Mailgun queued: its Message-Id (with brackets, as answered) and form."""

    message_id: str
    domain: str
    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of a form field (`to`, `subject`, `h:In-Reply-To`, ...)."""
        return next((value for key, value in self.fields if key == name), None)

    @property
    def headers(self) -> dict[str, str]:
        """The custom headers the message was given (`h:` fields), by header name."""
        return {key[2:]: value for key, value in self.fields if key.startswith("h:")}

    @property
    def variables(self) -> dict[str, str]:
        """The user variables (`v:` fields) Mailgun's events about it carry back."""
        return {key[2:]: value for key, value in self.fields if key.startswith("v:")}

    def as_json(self) -> dict[str, Any]:
        return {"id": self.message_id, "domain": self.domain, "fields": list(self.fields)}


@dataclass(frozen=True)
class EventReport:
    """One event webhook posted, and how the channel answered it."""

    message_id: str
    event: str
    answered: int
    """The HTTP status of the answer; 0 when the webhook URL could not be reached."""


def event_body(
    message: AcceptedEmail,
    event: str,
    signing_key: str = SIGNING_KEY,
    *,
    token: str | None = None,
    timestamp: int | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Mailgun's event webhook about `message`, signed with `signing_key`; `details` are added
    to its `event-data` (`severity`, `reason`, `delivery-status`)."""
    stamp = str(timestamp or int(time.time()))
    token = token or secrets.token_hex(25)
    data = {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "log-level": "info" if event in ("delivered", "opened") else "warn",
        "recipient": message.get("to"),
        "recipient-domain": (message.get("to") or "").rpartition("@")[2],
        "envelope": {"sender": f"bounce@{message.domain}", "targets": message.get("to")},
        "message": {
            "headers": {
                "to": message.get("to"),
                "message-id": message.message_id.strip("<>"),
                "from": message.get("from"),
                "subject": message.get("subject"),
            },
            "size": 1_024,
        },
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "tags": [],
        "user-variables": message.variables or [],
        **details,
    }
    signature = hmac_sha256(signing_key, (stamp + token).encode()).hex()
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": data,
    }


def permanent_failure(message: str = BOUNCE) -> dict[str, Any]:
    """The details of a hard bounce: what Mailgun adds to a `failed` event."""
    return {
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {"code": 550, "message": message, "description": "", "attempt-no": 1},
    }


class MailgunStandIn(StandIn):
    """Mailgun's messages API on 127.0.0.1 (see the module docstring); `with` runs it in a
    thread of its own."""

    def __init__(
        self,
        api_key: str = API_KEY,
        domains: Iterable[str] = (DOMAIN,),
        *,
        webhook_url: str | None = None,
        signing_key: str = SIGNING_KEY,
    ) -> None:
        self.api_key = api_key
        self.domains = frozenset(domains)
        self.webhook_url = webhook_url
        """Where the domain's event webhooks go (delivered, failed, ...); None sends none."""
        self.signing_key = signing_key
        self.accepted: list[AcceptedEmail] = []
        self.reports: list[EventReport] = []
        self.calls = 0
        """Requests to the messages API, whatever they were answered."""
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._refused: dict[str, str] = {}
        self._bouncing: set[str] = set()
        self._sequence = itertools.count(1)
        app = Starlette(
            routes=[
                Route("/v3/{domain}/messages", self._messages, methods=["POST"]),
                Route("/_standin/messages", self._list, methods=["GET"]),
                Route("/_standin/failures", self._script, methods=["POST"]),
            ]
        )
        super().__init__(app, name="mailgun-standin")

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` calls answer `status` (a Mailgun outage), whatever they carry."""
        with self._lock:
            self._failures.extend([status] * count)

    def refuse(self, recipient: str, message: str = INVALID_ADDRESS) -> None:
        """Answer 400 with `message` to every message sent to `recipient`."""
        with self._lock:
            self._refused[recipient.lower()] = message

    def bounce(self, recipient: str) -> None:
        """Accept messages to `recipient`, then report them failed for good (a hard bounce)."""
        with self._lock:
            self._bouncing.add(recipient.lower())

    async def post_event(self, message: AcceptedEmail, event: str, **details: Any) -> int:
        """Post an event webhook about `message` to `webhook_url`; the answer's status (0 when
        it could not be reached)."""
        if self.webhook_url is None:
            raise RuntimeError("no webhook_url: the stand-in posts no events")
        body = event_body(message, event, self.signing_key, **details)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answered = (await client.post(self.webhook_url, json=body)).status_code
        except httpx.HTTPError:
            answered = 0
        with self._lock:
            self.reports.append(EventReport(message.message_id, event, answered))
        return answered

    async def _report(self, message: AcceptedEmail) -> None:
        """`delivered`, or a permanent `failed` for a bouncing recipient, as Mailgun posts it."""
        await asyncio.sleep(0.05)
        with self._lock:
            bouncing = (message.get("to") or "").lower() in self._bouncing
        if bouncing:
            await self.post_event(message, "failed", **permanent_failure())
        else:
            await self.post_event(message, "delivered")

    async def _messages(self, request: Request) -> Response:
        with self._lock:
            self.calls += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return JSONResponse({"message": "Internal Server Error"}, status_code=failure)
        if not self._authorised(request.headers.get("authorization")):
            return PlainTextResponse("Forbidden", status_code=401)
        domain = request.path_params["domain"]
        if domain not in self.domains:
            return _error(404, f"Domain not found: {domain}")
        fields = await _form(request)
        problem = self._problem(dict(fields))
        if problem:
            return _error(400, problem)
        accepted = AcceptedEmail(self._new_id(domain), domain, tuple(fields))
        with self._lock:
            self.accepted.append(accepted)
        if self.webhook_url is not None:
            self._later(self._report(accepted))
        return JSONResponse({"id": accepted.message_id, "message": "Queued. Thank you."})

    def _authorised(self, header: str | None) -> bool:
        """HTTP Basic with the user `api` and the account's API key."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, key = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == "api" and secrets_match(self.api_key, key)

    def _problem(self, fields: dict[str, str]) -> str | None:
        """What Mailgun would answer 400 about, in its own words; None when it would queue."""
        for required in ("from", "to"):
            if not fields.get(required):
                return f"'{required}' parameter is missing"
        recipient = fields["to"].strip().lower()
        if "@" not in recipient:
            return INVALID_ADDRESS
        if not (fields.get("text") or fields.get("html") or fields.get("template")):
            return NO_BODY
        with self._lock:
            return self._refused.get(recipient)

    def _new_id(self, domain: str) -> str:
        """A Message-Id shaped like Mailgun's: `<20261202101500.1.5F3A...@domain>`."""
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        return f"<{stamp}.{next(self._sequence)}.{secrets.token_hex(8).upper()}@{domain}>"

    async def _list(self, _request: Request) -> Response:
        with self._lock:
            return JSONResponse([message.as_json() for message in self.accepted])

    async def _script(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        self.fail_next(int(order.get("count", 1)), int(order.get("status", 500)))
        return JSONResponse({"scripted": True})


async def _form(request: Request) -> list[tuple[str, str]]:
    """The posted fields in order (urlencoded or multipart; uploaded files are not kept)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            return [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    body = (await request.body()).decode(errors="replace")
    return parse_qsl(body, keep_blank_values=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def run(
    port: int,
    api_key: str = API_KEY,
    domains: Iterable[str] = (DOMAIN,),
    *,
    webhook_url: str | None = None,
    signing_key: str = SIGNING_KEY,
) -> None:
    """Serve in the foreground until interrupted."""
    MailgunStandIn(
        api_key, domains, webhook_url=webhook_url, signing_key=signing_key
    ).serve_forever(port)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local stand-in of Mailgun's messages API.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--domain", action="append", help=f"repeatable; default {DOMAIN}")
    parser.add_argument(
        "--webhook-url",
        help="post event webhooks here, e.g. http://127.0.0.1:8084/webhooks/mailgun/events",
    )
    parser.add_argument("--signing-key", default=SIGNING_KEY, help="the webhook signing key")
    args = parser.parse_args()
    port = args.port or free_port()
    print(f"Mailgun stand-in on http://127.0.0.1:{port}", file=sys.stderr)  # noqa: T201
    run(
        port,
        args.api_key,
        args.domain or (DOMAIN,),
        webhook_url=args.webhook_url,
        signing_key=args.signing_key,
    )


if __name__ == "__main__":
    main()
