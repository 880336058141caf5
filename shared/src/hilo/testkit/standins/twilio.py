"""A local stand-in of Twilio's Messages API, for tests and local runs.

It answers `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` as Twilio does: HTTP Basic with
the account SID and auth token (anything else gets 401 with Twilio's error JSON, code 20003
`Authenticate`); a urlencoded form with `To`, `From` or `MessagingServiceSid`, `Body` and an
optional `StatusCallback`; 400 with Twilio's error JSON (`{"code", "message", "more_info",
"status"}`) and its codes for a missing or invalid `To` (21604, 21211), no sender (21603), no body
(21602), a body over 1,600 characters (21617) and an unsubscribed recipient (21610); 201 with the
message resource, its `sid` being `SM` and 32 hex digits, for a message accepted.

Every accepted message is kept, so a test can assert what the customer received; a test can
script failures (the next N calls answer 500, 503 or 429; a recipient refused with a Twilio code;
a recipient whose handset is unreachable). After accepting a message with a `StatusCallback`, it
posts the delivery statuses there as Twilio does (`sent`, then `delivered`, or `undelivered` with
`ErrorCode` 30003 for an unreachable recipient), signed with `X-Twilio-Signature` over that URL
with the auth token. A test that made the service's client with `status_callbacks=False` moves a
message on itself with `progress`, which returns the callback's form (the test posts it, or does
not: a status callback Twilio lost).

It also keeps Twilio's message log: `GET /2010-04-01/Accounts/{AccountSid}/Messages.json` lists
every message, newest first, as Twilio does (a message sent with its status as it stands, its
`date_sent` once sent, its `date_updated` at its last change; filters `To`, `From` and the
day-granular `DateSent>`, which lists sent messages only, `PageSize`, `next_page_uri` to
follow), and
`GET .../Messages/{Sid}/Media.json` an MMS's media.
A test makes a customer's SMS arrive with `receive`, which keeps it in the log and returns the
webhook's form as Twilio posts it (the test posts it, or does not: a webhook Twilio lost). Its
call log likewise: `GET .../Calls.json` (filters `To`, `From`, the day-granular `StartTime>`;
`end_time` and `duration` empty but for completed calls, as Twilio leaves them),
newest first, of the calls a test made with `call`, which returns the final status callback.

Standalone (`python -m hilo.testkit.standins.twilio --port 8099`), `GET /_standin/messages`
lists what was accepted, `POST /_standin/failures` (`{"count": N, "status": 500}`) scripts
failures and `POST /_standin/refusals` (`{"to": "+34...", "code": 21610}`) refuses a recipient,
from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hilo.providers.twilio import signed_headers
from hilo.testkit.serving import free_port
from hilo.testkit.standins.base import StandIn
from hilo.webhook import secrets_match

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "standin-auth-token-0123456789abcdef"  # noqa: S105 - the stand-in's own
API_VERSION = "2010-04-01"
SERVICE_NUMBER = "+15005550006"
"""The sender a Messaging Service picks (Twilio's magic test number)."""
MAX_BODY = 1_600
UNREACHABLE = 30003
"""The `ErrorCode` of an undelivered message: "Unreachable destination handset"."""

ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    20503: (503, "Service Unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
"""Twilio error codes: the HTTP status and the message Twilio answers with."""
_CODE_OF_STATUS = {429: 20429, 500: 20500, 503: 20503}
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True)
class AcceptedSms:
    """One message Twilio queued, as it was posted."""

    sid: str
    to: str
    body: str
    from_: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    created: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status_callback": self.status_callback,
        }


@dataclass
class _Progress:
    """Where a message sent stands, as its resource in the log says."""

    status: str
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None


@dataclass(frozen=True)
class InboundSms:
    """One message a customer sent to a Twilio number, as Twilio keeps it in its log."""

    sid: str
    from_: str
    to: str
    body: str
    date_sent: datetime
    media: tuple[tuple[str, str], ...] = ()
    """(media SID, content type) of each attachment."""


@dataclass(frozen=True)
class Call:
    """One call Twilio connected (or tried to), as its call log keeps it once it ended."""

    sid: str
    from_: str
    to: str
    direction: str
    status: str
    start_time: datetime
    duration: int
    parent_call_sid: str | None = None

    @property
    def ended(self) -> datetime:
        return self.start_time + timedelta(seconds=self.duration)

    @property
    def completed(self) -> bool:
        """Twilio gives `end_time` and `duration` to completed calls only."""
        return self.status == "completed"


@dataclass(frozen=True)
class StatusReport:
    """One status callback posted, and how the channel answered it."""

    sid: str
    status: str
    answered: int
    """The HTTP status of the answer; 0 when the callback URL could not be reached."""


@dataclass
class _Script:
    failures: list[int] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)


class TwilioStandIn(StandIn):
    """Twilio's Messages API on 127.0.0.1 (see the module docstring); `with` runs it in a
    thread of its own."""

    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        status_callbacks: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.status_callbacks = status_callbacks
        self.accepted: list[AcceptedSms] = []
        self._progress: dict[str, _Progress] = {}
        self.received: list[InboundSms] = []
        self.calls_made: list[Call] = []
        self.reports: list[StatusReport] = []
        self.calls = 0
        """Requests to the Messages API, whatever they were answered."""
        self.pages_read = 0
        """Pages of the message and call logs answered."""
        self._lock = threading.RLock()
        self._script = _Script()
        app = Starlette(
            routes=[
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json",
                    self._create,
                    methods=["POST"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json",
                    self._message_log,
                    methods=["GET"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}/Media.json",
                    self._media_list,
                    methods=["GET"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Calls.json",
                    self._call_log,
                    methods=["GET"],
                ),
                Route("/_standin/messages", self._list, methods=["GET"]),
                Route("/_standin/failures", self._script_failures, methods=["POST"]),
                Route("/_standin/refusals", self._script_refusal, methods=["POST"]),
            ]
        )
        super().__init__(app, name="twilio-standin")

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` calls answer `status` (500, 503 or 429: a Twilio outage)."""
        with self._lock:
            self._script.failures.extend([status] * count)

    def refuse(self, to: str, code: int = 21610) -> None:
        """Refuse every message to `to` with Twilio's error `code` (21610: they sent STOP)."""
        with self._lock:
            self._script.refusals[to] = code

    def unreachable(self, to: str) -> None:
        """Accept messages to `to`, then report them `undelivered` (ErrorCode 30003)."""
        with self._lock:
            self._script.unreachable.add(to)

    def receive(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        media: tuple[str, ...] = (),
        date_sent: datetime | None = None,
    ) -> list[tuple[str, str]]:
        """A customer's SMS (an MMS with `media` content types) reaches the number `to`: kept
        in the message log, and the webhook's form returned as Twilio would post it."""
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        sms = InboundSms(
            sid=sid,
            from_=from_,
            to=to,
            body=body,
            date_sent=(date_sent or datetime.now(UTC)).replace(microsecond=0),
            media=tuple(("ME" + uuid.uuid4().hex, kind) for kind in media),
        )
        with self._lock:
            self.received.append(sms)
        params = [
            ("ToCountry", "US"),
            ("SmsMessageSid", sid),
            ("NumMedia", str(len(media))),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", to),
            ("NumSegments", "1"),
            ("MessageSid", sid),
            ("AccountSid", self.account_sid),
            ("From", from_),
            ("ApiVersion", API_VERSION),
        ]
        for n, (media_sid, kind) in enumerate(sms.media):
            params += [
                (f"MediaContentType{n}", kind),
                (f"MediaUrl{n}", self._media_url(sms, media_sid)),
            ]
        return params

    def call(
        self,
        from_: str,
        to: str,
        *,
        status: str = "completed",
        direction: str = "inbound",
        duration: int = 60,
        ended_at: datetime | None = None,
        parent_call_sid: str | None = None,
    ) -> list[tuple[str, str]]:
        """A call that ended (`status`: completed, busy, no-answer, failed, canceled): kept in
        the call log, and its final status callback's form returned as Twilio would post it."""
        ended = (ended_at or datetime.now(UTC)).replace(microsecond=0)
        call = Call(
            sid="CA" + uuid.uuid4().hex,
            from_=from_,
            to=to,
            direction=direction,
            status=status,
            start_time=ended - timedelta(seconds=duration),
            duration=duration,
            parent_call_sid=parent_call_sid,
        )
        with self._lock:
            self.calls_made.append(call)
        params = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", call.sid),
            ("CallStatus", status),
            ("Direction", direction),
            ("From", from_),
            ("To", to),
            ("Timestamp", format_datetime(call.ended)),
            ("SequenceNumber", "3"),
        ]
        if call.completed:  # Twilio sends the duration of completed calls only
            params += [("CallDuration", str(duration)), ("Duration", str(-(-duration // 60)))]
        return params + ([("ParentCallSid", parent_call_sid)] if parent_call_sid else [])

    async def _call_log(self, request: Request) -> Response:
        """Twilio's call list: newest first, filtered, one page at a time."""
        if not self._the_accounts(request):
            return _error(20003)
        query = request.query_params
        with self._lock:
            log = [self._call_resource(call) for call in self.calls_made]
        started = date.fromisoformat(query["StartTime>"]) if "StartTime>" in query else None
        chosen = [
            call
            for call in log
            if all(call[k.lower()] == query[k] for k in ("To", "From") if k in query)
            and (started is None or _day(call["start_time"]) >= started)
        ]
        chosen.sort(key=lambda c: _when(c["date_created"]), reverse=True)
        return self._page(query, "Calls", "calls", chosen)

    def _call_resource(self, call: Call) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": format_datetime(call.start_time),
            "date_updated": format_datetime(call.ended),
            "direction": call.direction,
            "duration": str(call.duration) if call.completed else None,
            "end_time": format_datetime(call.ended) if call.completed else None,
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "parent_call_sid": call.parent_call_sid,
            "phone_number_sid": "PN" + "0" * 32,
            "price": None,
            "price_unit": "USD",
            "sid": call.sid,
            "start_time": format_datetime(call.start_time),
            "status": call.status,
            "to": call.to,
            "to_formatted": call.to,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }

    def _page(
        self, query: Any, resource: str, key: str, chosen: list[dict[str, Any]]
    ) -> JSONResponse:
        """One page of a list, with the URI of the next as Twilio writes it."""
        with self._lock:
            self.pages_read += 1
        size = min(int(query.get("PageSize", 50)), 1_000)
        page = int(query.get("Page", 0))
        rest = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/{resource}.json"
        more = (page + 1) * size < len(chosen)
        next_query = urlencode({**rest, "Page": page + 1, "PageToken": f"PA{page + 1}"})
        return JSONResponse(
            {
                key: chosen[page * size : (page + 1) * size],
                "next_page_uri": f"{path}?{next_query}" if more else None,
                "page": page,
                "page_size": size,
                "uri": f"{path}?{urlencode(dict(query))}",
            }
        )

    def _media_url(self, sms: InboundSms, media_sid: str) -> str:
        """Where Twilio serves an attachment: its resource's URI without `.json`."""
        return f"{self.url}{self._uri(sms.sid)}/Media/{media_sid}"

    def _uri(self, sid: str) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"

    async def _message_log(self, request: Request) -> Response:
        """Twilio's message list: newest first, filtered, one page at a time."""
        if not self._the_accounts(request):
            return _error(20003)
        query = request.query_params
        with self._lock:
            log = [self._inbound_resource(sms) for sms in self.received]
            log += [self._resource(sms) for sms in self.accepted]
        since = date.fromisoformat(query["DateSent>"]) if "DateSent>" in query else None
        chosen = [
            message
            for message in log
            if all(message[k.lower()] == query[k] for k in ("To", "From") if k in query)
            and (since is None or (message["date_sent"] and _day(message["date_sent"]) >= since))
        ]
        chosen.sort(key=lambda m: _when(m["date_sent"] or m["date_created"]), reverse=True)
        return self._page(query, "Messages", "messages", chosen)

    def _inbound_resource(self, sms: InboundSms) -> dict[str, Any]:
        sent = format_datetime(sms.date_sent)
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": sent,
            "date_sent": sent,
            "date_updated": sent,
            "direction": "inbound",
            "error_code": None,
            "error_message": None,
            "from": sms.from_,
            "messaging_service_sid": None,
            "num_media": str(len(sms.media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sms.sid,
            "status": "received",
            "subresource_uris": {"media": f"{self._uri(sms.sid)}/Media.json"},
            "to": sms.to,
            "uri": f"{self._uri(sms.sid)}.json",
        }

    async def _media_list(self, request: Request) -> Response:
        if not self._the_accounts(request):
            return _error(20003)
        with self._lock:
            found = [sms for sms in self.received if sms.sid == request.path_params["sid"]]
        if not found:
            return JSONResponse({"code": 20404, "message": "not found", "status": 404}, 404)
        sms = found[0]
        return JSONResponse(
            {
                "media_list": [
                    {
                        "account_sid": self.account_sid,
                        "content_type": kind,
                        "parent_sid": sms.sid,
                        "sid": media_sid,
                        "uri": f"{self._uri(sms.sid)}/Media/{media_sid}.json",
                    }
                    for media_sid, kind in sms.media
                ],
                "next_page_uri": None,
                "page": 0,
            }
        )

    async def _create(self, request: Request) -> Response:
        with self._lock:
            self.calls += 1
            failure = self._script.failures.pop(0) if self._script.failures else None
        if failure is not None:
            return _error(_CODE_OF_STATUS.get(failure, 20500), status=failure)
        if not self._the_accounts(request):
            return _error(20003)
        body = (await request.body()).decode(errors="replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        code = self._refusal(form)
        if code is not None:
            return _error(code, to=form.get("To", ""))
        sms = AcceptedSms(
            sid="SM" + uuid.uuid4().hex,
            to=form["To"],
            body=form["Body"],
            from_=form.get("From") or None,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            status_callback=form.get("StatusCallback") or None,
        )
        with self._lock:
            self.accepted.append(sms)
        report = (
            BackgroundTask(self._report, sms)
            if self.status_callbacks and sms.status_callback
            else None
        )
        return JSONResponse(self._resource(sms), status_code=201, background=report)

    def _the_accounts(self, request: Request) -> bool:
        """A request for this account's resources, with its credentials."""
        return request.path_params["account_sid"] == self.account_sid and self._authorised(
            request.headers.get("authorization")
        )

    def _authorised(self, header: str | None) -> bool:
        """HTTP Basic with the account SID and its auth token."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid and secrets_match(self.auth_token, password)

    def _refusal(self, form: dict[str, str]) -> int | None:
        """The Twilio error code this form is refused with; None when Twilio would queue it."""
        to = form.get("To", "")
        if not to:
            return 21604
        if not _E164.fullmatch(to):
            return 21211
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return 21603
        if not form.get("Body"):
            return 21602
        if len(form["Body"]) > MAX_BODY:
            return 21617
        with self._lock:
            return self._script.refusals.get(to)

    def _resource(self, sms: AcceptedSms) -> dict[str, Any]:
        """The Message resource as it stands: as Twilio answers a create, a message through a
        Messaging Service without `From` has no sender yet (`from` null, status `accepted`)."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sms.sid}"
        with self._lock:
            progress = replace(self._progress_of(sms))
        sent = progress.date_sent
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": format_datetime(sms.created),
            "date_sent": format_datetime(sent) if sent else None,
            "date_updated": format_datetime(progress.date_updated),
            "direction": "outbound-api",
            "error_code": progress.error_code,
            "error_message": None,
            "from": sms.from_ or (SERVICE_NUMBER if sent else None),
            "messaging_service_sid": sms.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(sms.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": sms.sid,
            "status": progress.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": sms.to,
            "uri": f"{uri}.json",
        }

    def progress(
        self, sid: str, status: str, *, at: datetime | None = None
    ) -> list[tuple[str, str]]:
        """The message `sid` sent moves on to `status` (sent, delivered, undelivered with
        `ErrorCode` 30003, failed, read) in the log, now or `at`; its status callback's form
        returned as Twilio would post it."""
        now = (at or datetime.now(UTC)).replace(microsecond=0)
        with self._lock:
            sms = next(sms for sms in self.accepted if sms.sid == sid)
            progress = self._progress_of(sms)
            progress.status, progress.date_updated = status, now
            if progress.date_sent is None and status != "failed":
                progress.date_sent = sms.created  # Twilio sends within a moment of queueing
            if status == "undelivered":
                progress.error_code = UNREACHABLE
        return self._status_form(sms, status)

    async def _report(self, sms: AcceptedSms) -> None:
        """Post `sent`, then `delivered` (or `undelivered`), to the message's StatusCallback."""
        with self._lock:
            unreachable = sms.to in self._script.unreachable
        final = "undelivered" if unreachable else "delivered"
        async with httpx.AsyncClient(timeout=10) as client:
            for status in ("sent", final):
                await asyncio.sleep(0.05)
                answered = await self._post_status(client, sms, self.progress(sms.sid, status))
                with self._lock:
                    self.reports.append(StatusReport(sms.sid, status, answered))

    def _progress_of(self, sms: AcceptedSms) -> _Progress:
        """Where the message stands; queued (`accepted` through a Messaging Service) until it
        moved on."""
        return self._progress.setdefault(
            sms.sid,
            _Progress("queued" if sms.messaging_service_sid is None else "accepted", sms.created),
        )

    def _status_form(self, sms: AcceptedSms, status: str) -> list[tuple[str, str]]:
        params = [
            ("SmsSid", sms.sid),
            ("SmsStatus", status),
            ("MessageStatus", status),
            ("To", sms.to),
            ("MessageSid", sms.sid),
            ("AccountSid", self.account_sid),
            ("From", sms.from_ or SERVICE_NUMBER),
            ("ApiVersion", API_VERSION),
        ]
        if sms.messaging_service_sid:
            params.append(("MessagingServiceSid", sms.messaging_service_sid))
        if status == "undelivered":
            params.append(("ErrorCode", str(UNREACHABLE)))
        return params

    async def _post_status(
        self, client: httpx.AsyncClient, sms: AcceptedSms, params: list[tuple[str, str]]
    ) -> int:
        url = str(sms.status_callback)
        headers = signed_headers(url, params, self.auth_token)
        try:
            response = await client.post(url, data=dict(params), headers=headers)
        except httpx.HTTPError:
            return 0
        return response.status_code

    async def _list(self, _request: Request) -> Response:
        with self._lock:
            return JSONResponse([sms.as_json() for sms in self.accepted])

    async def _script_failures(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        self.fail_next(int(order.get("count", 1)), int(order.get("status", 500)))
        return JSONResponse({"scripted": True})

    async def _script_refusal(self, request: Request) -> Response:
        order = from_json(await request.body() or b"{}")
        self.refuse(str(order["to"]), int(order.get("code", 21610)))
        return JSONResponse({"scripted": True})


def _when(rfc2822: str) -> datetime:
    return parsedate_to_datetime(rfc2822)


def _day(rfc2822: str) -> date:
    return _when(rfc2822).astimezone(UTC).date()


def _error(code: int, *, status: int | None = None, to: str = "") -> JSONResponse:
    """Twilio's error body: `{"code", "message", "more_info", "status"}`."""
    default_status, message = ERRORS[code]
    status = status or default_status
    return JSONResponse(
        {
            "code": code,
            "message": message.format(to=to),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
        headers={"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None,
    )


def run(port: int, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
    """Serve in the foreground until interrupted."""
    TwilioStandIn(account_sid, auth_token).serve_forever(port)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local stand-in of Twilio's Messages API.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    args = parser.parse_args()
    port = args.port or free_port()
    print(f"Twilio stand-in on http://127.0.0.1:{port}", file=sys.stderr)  # noqa: T201
    run(port, args.account_sid, args.auth_token)


if __name__ == "__main__":
    main()
