"""Rule: whatever arrives, every channel answers 2xx or 4xx, and a 4xx publishes nothing.

Property-based (hypothesis), through each channel's real app and the real broker: for every POST
route, random bytes, random JSON and forms, mutated copies of valid provider samples (signed as
the provider signs them, so they get past the signature check) and random headers, non-ASCII
signatures included. A 4xx must be JSON and must not echo the samples' personal data.

`HILO_FUZZ_EXAMPLES` sets the examples per route (small by default; `make fuzz` runs 2000); the
totals per route are printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx
import hypothesis
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import SecretStr

from channel_email.app import create_app as email_app
from channel_email.settings import EmailSettings
from channel_sms.app import create_app as sms_app
from channel_sms.settings import SmsSettings
from channel_social.app import create_app as social_app
from channel_social.settings import SocialSettings
from channel_store.app import create_app as store_app
from channel_store.settings import StoreSettings
from channel_voice.app import create_app as voice_app
from channel_voice.settings import VoiceSettings
from channel_web.app import create_app as web_app
from channel_web.settings import WebSettings
from channel_whatsapp.app import create_app as whatsapp_app
from channel_whatsapp.settings import WhatsAppSettings
from hilo.channel import Channel
from hilo.contract import Interaction
from hilo.settings import HiloSettings
from hilo.testkit.signing import meta_signed, twilio_signed
from hilo.testkit.standins.mailgun import AcceptedEmail, event_body
from hilo.topics import ensure_topics
from hilo.webhook import hmac_sha256
from hilo_devkit.channel_contract import channel_client

EXAMPLES = int(os.environ.get("HILO_FUZZ_EXAMPLES", "50"))
ROOT = Path(__file__).resolve().parents[1]
SECRET, KEY, PUBLIC = "fuzz-secret", "fuzz-key", "https://hooks.example.com"

PERSONAL = (
    "ana.garcia@example.com",
    "+34612345678",
    "612 34 56 78",
    "Ana García",
    "Where is my order",
    "Does it come in another color",
)
"""Personal data in the samples: a 4xx may name a field, never repeat one of these."""

# --- provider samples (valid; mutated by the strategies below) ---------------------------------

WEB_SAMPLES: dict[str, dict[str, Any]] = {
    "/v1/identify": {
        "userId": "u-1",
        "messageId": "m-identify",
        "traits": {"email": "ana.garcia@example.com", "phone": "+34 612 34 56 78", "age": 40},
        "context": {"traits": {"name": "Ana García"}, "device": {"id": "ios-1"}},
        "timestamp": "2026-11-20T10:00:00Z",
        "sentAt": "2026-11-20T10:00:01Z",
    },
    "/v1/track": {
        "anonymousId": "anon-1",
        "event": "Order Completed",
        "messageId": "m-order",
        "properties": {
            "order_id": "O-1",
            "total": 27.5,
            "currency": "EUR",
            "fulfilment": "store_pickup",
            "store_id": "BCN-01",
            "products": [{"sku": "S-1", "price": 19, "quantity": 1}],
        },
    },
    "/v1/page": {
        "anonymousId": "anon-1",
        "name": "Home",
        "properties": {"url": "https://shop.example.com/?utm_campaign=spring", "title": "Shop"},
        "context": {"campaign": {"name": "spring", "source": "newsletter", "medium": "email"}},
    },
    "/v1/screen": {"userId": "u-1", "name": "Cart", "context": {"app": {"name": "Shop"}}},
    "/v1/alias": {"userId": "u-1", "previousId": "anon-1"},
    "/v1/group": {"userId": "u-1", "groupId": "g-1", "traits": {"plan": "gold"}},
    "/v1/batch": {
        "batch": [
            {
                "type": "track",
                "userId": "u-1",
                "event": "Product Added",
                "properties": {"sku": "S"},
            },
            {"type": "identify", "userId": "u-1", "traits": {"email": "ana.garcia@example.com"}},
        ],
        "context": {"device": {"id": "d-1"}},
        "sentAt": "2026-11-20T10:00:01Z",
    },
}
WHATSAPP_SAMPLES = [
    json.loads((ROOT / "services/channel-whatsapp/tests/samples" / name).read_text())
    for name in ("text_message.json", "media_location_interactive.json", "statuses.json")
]
SOCIAL_SAMPLE: dict[str, Any] = {
    "object": "page",
    "entry": [
        {
            "id": "1065",
            "time": 1583173667623,
            "messaging": [
                {
                    "sender": {"id": "2417"},
                    "recipient": {"id": "1065"},
                    "timestamp": 1583173666767,
                    "message": {"mid": "m_1", "text": "Where is my order?"},
                },
                {
                    "sender": {"id": "2417"},
                    "recipient": {"id": "1065"},
                    "timestamp": 1583173667002,
                    "postback": {"mid": "m_pb", "title": "Track", "payload": "TRACK"},
                },
            ],
        }
    ],
}
SMS_SAMPLES: dict[str, list[tuple[str, str]]] = {
    "/webhooks/twilio/sms": [
        ("MessageSid", "SM1f0e"),
        ("From", "+34612345678"),
        ("To", "+14155552671"),
        ("Body", "Where is my order?"),
        ("NumMedia", "1"),
        ("MediaContentType0", "image/jpeg"),
        ("MediaUrl0", "https://api.twilio.com/Media/ME1"),
    ],
    "/webhooks/twilio/sms/status": [
        ("MessageSid", "SM99"),
        ("From", "+14155552671"),
        ("To", "+34612345678"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ],
}
VOICE_STATUS: list[tuple[str, str]] = [
    ("CallSid", "CA5e"),
    ("CallStatus", "completed"),
    ("Direction", "inbound"),
    ("From", "+34612345678"),
    ("To", "+14155552671"),
    ("CallDuration", "42"),
    ("Timestamp", "Mon, 23 Nov 2026 18:04:12 +0000"),
]
VOICE_OUTCOME: dict[str, Any] = {
    "call_id": "CA5e",
    "customer": {"phone": "+34 612 34 56 78", "email": "ana.garcia@example.com"},
    "direction": "inbound",
    "status": "dropped",
    "started_at": "2026-11-23T18:03:30+00:00",
    "duration_seconds": 42,
    "transcript": "Where is my order?",
    "continues_conversation": "c-1",
}
RECEIPT: dict[str, Any] = {
    "store_id": "BCN-01",
    "receipt_id": "R-1",
    "occurred_at": "2026-11-23T18:30:00+01:00",
    "currency": "EUR",
    "lines": [{"sku": "S-1", "name": "Shoes", "quantity": 1, "unit_price": "59.90"}],
    "total": "59.90",
    "customer": {"loyalty_id": "LOY-1", "phone": "+34 612 34 56 78"},
}
RETURN: dict[str, Any] = {
    "store_id": "BCN-01",
    "return_id": "RET-1",
    "occurred_at": "2026-11-24T10:00:00+01:00",
    "currency": "EUR",
    "order_id": "BCN-01:R-1",
    "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "59.90"}],
    "refund_total": "59.90",
    "customer": {"loyalty_id": "LOY-1"},
}
VISIT: dict[str, Any] = {
    "visit_id": "V-1",
    "store_id": "BCN-01",
    "occurred_at": "2026-11-23T18:10:00+01:00",
    "method": "qr_code",
    "customer": {"email": "ana.garcia@example.com"},
}
CSV_HEADER = (
    "store_id,till_id,receipt_id,occurred_at,currency,sku,name,quantity,unit_price,"
    "receipt_total,tax,discount,payment_method,loyalty_id,customer_id,email,phone,pickup_order_id"
)
CSV_ROWS = [
    "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,64.85,,,card,LOY-1,,,,",
    "BCN-01,T1,R1,2026-11-23T10:00:00+01:00,EUR,SKU-2,Socks,1,4.95,64.85,,,card,LOY-1,,,,",
    "BCN-01,T2,R2,2026-11-23T11:00:00+01:00,EUR,SKU-1,Shoe,1,59.90,59.90,,,cash,,,"
    "ana.garcia@example.com,+34 612 34 56 78,",
]
MAIL = (ROOT / "services/channel-email/tests/samples/reply_with_attachment.eml").read_bytes()
PLAIN_MAIL = (
    "From: Ana García <ana.garcia@example.com>\r\nSubject: Order\r\n"
    "Message-ID: <plain-1@mail.example.com>\r\nDate: Mon, 23 Nov 2026 18:00:00 +0100\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nWhere is my order?\r\n"
).encode()
MIME_HEADERS = [
    b"Content-Type: text/plain; charset=x-unknown-foo",
    b"Content-Type: text/html; charset=utf-16",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Subject: =?x-unknown?q?hola?= =?utf-8?b?////?=",
    b"From: =?utf-8?q?=FF?= <\xff@example.com>",
    b"From: ana@@example",
    b"Date: Mon, 31 Feb 0001 99:99:99 +9999",
    b"Message-ID: <" + b"x" * 600 + b">",
    b"References: <a@b> <" + "é".encode() * 300 + b">",
    b'Content-Disposition: attachment; filename="' + b"\xe9" * 700 + b'"',
]

# --- strategies ---------------------------------------------------------------------------------

MAILGUN_SENT = AcceptedEmail(
    "<20261205101500.1.A1B2@mg.shop.example>",
    "mg.shop.example",
    (
        ("to", "ana.garcia@example.com"),
        ("subject", "Where is my order"),
        ("v:hilo-command-id", "c-1"),
    ),
)
MAILGUN_EVENTS = ["delivered", "opened", "failed", "unsubscribed", "complained", "clicked"]
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
"""Any code point, lone surrogates included (JSON escapes them as `\\ud800`)."""
FORM_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
HEADER_TEXT = st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]))
INTERESTING: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    10**30,
    1.5,
    1e308,
    "__1e999__",
    "",
    " ",
    "é",
    "\ud800",
    "x" * 5_000,
    "€" * 2_000,
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-11-23T10:00:00",
    "99999999999999999999",
    "yesterday",
    "+34 000",
    "(+34) 612-345-678",
    "12345",
    "ana@@example",
    [],
    {},
    [1, "a", None],
    {"a": {"b": [{}]}},
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def draw_value(data: st.DataObject) -> Any:
    if data.draw(st.booleans()):
        return data.draw(st.sampled_from(INTERESTING))
    return data.draw(JSON_VALUES)


Place = tuple[str | int, ...]


def node_paths(value: Any, path: Place = ()) -> list[Place]:
    """Every place in a JSON document, the document itself included."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    return [path, *(p for key, child in children for p in node_paths(child, (*path, key)))]


def mutated(data: st.DataObject, document: Any) -> Any:
    """`document` with one change at a place drawn uniformly: replaced, removed or added to."""
    path = data.draw(st.sampled_from(node_paths(document)))
    action = data.draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    return changed(data, document, path, action)


def changed(data: st.DataObject, value: Any, path: Place, action: str) -> Any:
    if not path:
        return added(data, value) if action == "add" else draw_value(data)
    key, rest = path[0], path[1:]
    drop = action == "drop" and not rest
    if isinstance(value, dict):
        if drop:
            return {name: item for name, item in value.items() if name != key}
        return {**value, key: changed(data, value[key], rest, action)}
    index = int(key)
    inner = [] if drop else [changed(data, value[index], rest, action)]
    return [*value[:index], *inner, *value[index + 1 :]]


def added(data: st.DataObject, value: Any) -> Any:
    """A new member of an object or list; anything else is replaced."""
    if isinstance(value, dict):
        return {**value, data.draw(ANY_TEXT): draw_value(data)}
    if isinstance(value, list):
        return [*value, draw_value(data)] if data.draw(st.booleans()) else value * 3
    return draw_value(data)


def json_body(data: st.DataObject, samples: Sequence[Any]) -> bytes:
    """Mostly samples with up to 3 changes, sometimes random JSON or bytes."""
    shape = data.draw(st.sampled_from(["sample", "sample", "sample", "json", "bytes"]))
    if shape == "bytes":
        return data.draw(st.binary(max_size=300))
    document = data.draw(JSON_VALUES) if shape == "json" else data.draw(st.sampled_from(samples))
    for _ in range(data.draw(st.integers(0, 3)) if shape == "sample" else 0):
        document = mutated(data, document)
    return json.dumps(document).encode().replace(b'"__1e999__"', b"1e999")


def form_params(data: st.DataObject, sample: list[tuple[str, str]]) -> list[tuple[str, str]]:
    params = list(sample)
    for _ in range(data.draw(st.integers(0, 4))):
        action = data.draw(st.sampled_from(["value", "value", "drop", "add"]))
        index = data.draw(st.integers(0, max(len(params) - 1, 0)))
        if action == "add" or not params:
            params.append((data.draw(FORM_TEXT), data.draw(FORM_TEXT)))
        elif action == "drop":
            params.pop(index)
        else:
            choice = data.draw(st.sampled_from([v for v in INTERESTING if isinstance(v, str)]))
            value = choice if data.draw(st.booleans()) else data.draw(FORM_TEXT)
            params[index] = (params[index][0], value.replace("\ud800", "?"))
    return params


def mime_body(data: st.DataObject) -> bytes:
    """A sample mail with header lines swapped in and bytes inserted or cut."""
    mail = data.draw(st.sampled_from([MAIL, PLAIN_MAIL]))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(mail)))
        action = data.draw(st.sampled_from(["header", "header", "insert", "cut"]))
        if action == "header":
            mail = data.draw(st.sampled_from(MIME_HEADERS)) + b"\r\n" + mail
        elif action == "insert":
            mail = mail[:at] + data.draw(st.binary(max_size=60)) + mail[at:]
        else:
            mail = mail[:at] + mail[at + data.draw(st.integers(1, 200)) :]
    return mail


def random_headers(data: st.DataObject) -> list[tuple[bytes, bytes]]:
    names = [
        "content-type",
        "content-length",
        "x-hub-signature-256",
        "x-twilio-signature",
        "x-api-key",
        "authorization",
        "x-anything",
    ]
    chosen = data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    shapes = st.sampled_from(["", "", "sha256=", "Basic "])
    return [
        (name.encode(), (data.draw(shapes) + data.draw(HEADER_TEXT)).encode()) for name in chosen
    ]


def with_auth(data: st.DataObject, good: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Usually the right credentials; sometimes random (often non-ASCII) headers instead."""
    return good if data.draw(st.integers(0, 4)) else random_headers(data)


def basic(user: str, password: str = "") -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def header_pairs(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers.items()]


@dataclass(frozen=True)
class FuzzRequest:
    route: str
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


# --- one builder per channel: any request its provider (or an attacker) could send --------------


def web_request(data: st.DataObject) -> FuzzRequest:
    route = data.draw(st.sampled_from(sorted(WEB_SAMPLES)))
    body = json_body(data, [WEB_SAMPLES[route]])
    auth = [(b"authorization", basic(SECRET)), (b"content-type", b"application/json")]
    return FuzzRequest(route, body, with_auth(data, auth))


def meta_request(route: str, samples: Sequence[Any]) -> Callable[[st.DataObject], FuzzRequest]:
    def build(data: st.DataObject) -> FuzzRequest:
        body = json_body(data, samples)
        return FuzzRequest(route, body, with_auth(data, header_pairs(meta_signed(body, SECRET))))

    return build


def twilio_request(route: str, sample: list[tuple[str, str]]) -> FuzzRequest:
    """Signed over the public URL and the form, as Twilio signs."""
    return FuzzRequest(
        route,
        urlencode(sample).encode(),
        header_pairs(twilio_signed(PUBLIC + route, sample, SECRET)),
    )


def sms_request(data: st.DataObject) -> FuzzRequest:
    route = data.draw(st.sampled_from(sorted(SMS_SAMPLES)))
    signed = twilio_request(route, form_params(data, SMS_SAMPLES[route]))
    return FuzzRequest(route, signed.body, with_auth(data, signed.headers))


def voice_request(data: st.DataObject) -> FuzzRequest:
    if data.draw(st.booleans()):
        signed = twilio_request("/webhooks/twilio/voice/status", form_params(data, VOICE_STATUS))
        return FuzzRequest(signed.route, signed.body, with_auth(data, signed.headers))
    auth = [(b"x-api-key", KEY.encode()), (b"content-type", b"application/json")]
    return FuzzRequest("/v1/calls", json_body(data, [VOICE_OUTCOME]), with_auth(data, auth))


def store_request(data: st.DataObject) -> FuzzRequest:
    routes = ["/v1/receipts", "/v1/returns", "/v1/visits", "/v1/receipts/upload"]
    route = data.draw(st.sampled_from(routes))
    auth = with_auth(data, [(b"x-api-key", KEY.encode())])
    if route != "/v1/receipts/upload":
        sample = {"/v1/receipts": RECEIPT, "/v1/returns": RETURN}.get(route, VISIT)
        return FuzzRequest(route, json_body(data, [sample]), auth)
    rows = [row.split(",") for row in CSV_ROWS]
    for _ in range(data.draw(st.integers(0, 4))):
        row = data.draw(st.sampled_from(rows))
        cell = data.draw(st.integers(0, len(row) - 1))
        long_cell = "n" * data.draw(st.sampled_from([131_073, 300]))
        row[cell] = data.draw(st.sampled_from([long_cell, '"a,b"', '"', "\r", "x\ny"]) | FORM_TEXT)
    text = "\n".join([CSV_HEADER, *(",".join(row) for row in rows)])
    body = text.encode() if data.draw(st.integers(0, 5)) else data.draw(st.binary(max_size=200))
    return FuzzRequest(route, body, auth)


def email_request(data: st.DataObject) -> FuzzRequest:
    route = data.draw(
        st.sampled_from(
            [
                "/webhooks/mailgun",
                "/webhooks/mailgun/events",
                "/webhooks/sendgrid",
                "/v1/messages/mime",
            ]
        )
    )
    if route == "/webhooks/mailgun/events":
        return mailgun_event_request(data)
    mail = mime_body(data)
    if route == "/v1/messages/mime":
        return FuzzRequest(route, mail, with_auth(data, [(b"x-api-key", KEY.encode())]))
    if route == "/webhooks/sendgrid":
        fields = {"email": mail.decode("utf-8", "replace"), "to": "support@shop.example.com"}
        body, content_type = multipart(data, fields)
        auth = [(b"authorization", basic("sendgrid", KEY)), (b"content-type", content_type)]
        return FuzzRequest(route, body, with_auth(data, auth))
    return mailgun_request(data, mail)


def mailgun_request(data: st.DataObject, mail: bytes) -> FuzzRequest:
    """A route's forward(), parsed fields or raw MIME, signed over its own timestamp and token."""
    fields = dict(
        form_params(
            data,
            [
                ("from", "Ana García <ana.garcia@example.com>"),
                ("subject", "Order"),
                ("stripped-text", "Where is my order?"),
                ("Message-Id", "<f-1@mail.example.com>"),
                ("message-headers", '[["Date", "Mon, 23 Nov 2026 18:00:00 +0100"]]'),
                ("timestamp", str(int(time.time()))),
                ("token", uuid.uuid4().hex),
            ],
        )
    )
    if data.draw(st.booleans()):
        fields["body-mime"] = mail.decode("utf-8", "replace")
    stamp, token = fields.get("timestamp", ""), fields.get("token", "")
    fields["signature"] = hmac_sha256(SECRET, (stamp + token).encode()).hex()
    body, content_type = multipart(data, fields)
    return FuzzRequest(
        "/webhooks/mailgun", body, with_auth(data, [(b"content-type", content_type)])
    )


def mailgun_event_request(data: st.DataObject) -> FuzzRequest:
    """An event webhook whose `event-data` is changed after signing: Mailgun signs the
    timestamp and token, so the changed event still passes the signature check."""
    outcome = data.draw(st.sampled_from(MAILGUN_EVENTS))
    body: Any = event_body(MAILGUN_SENT, outcome, SECRET)
    for _ in range(data.draw(st.integers(0, 3))):
        body = {**body, "event-data": mutated(data, body["event-data"])}
    if not data.draw(st.integers(0, 9)):
        body = mutated(data, body)
    content = json.dumps(body).encode().replace(b'"__1e999__"', b"1e999")
    return FuzzRequest(
        "/webhooks/mailgun/events",
        content,
        with_auth(data, [(b"content-type", b"application/json")]),
    )


def multipart(data: st.DataObject, fields: dict[str, str]) -> tuple[bytes, bytes]:
    """The form urlencoded or as multipart/form-data (attachments included), as providers do."""
    if data.draw(st.booleans()):
        return urlencode(fields).encode(), b"application/x-www-form-urlencoded"
    files = {"attachment-1": ("photo.jpg", data.draw(st.binary(max_size=200)), "image/jpeg")}
    request = httpx.Request("POST", "http://x", data=fields, files=files)
    return request.read(), request.headers["content-type"].encode()


# --- running them -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one route was sent and answered, for the run's summary."""

    tried: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


class ChannelUnderFuzz:
    """A channel app on an event loop of its own (hypothesis drives it synchronously), with its
    publishes counted on the way to the real broker."""

    def __init__(self, app: FastAPI, settings: HiloSettings) -> None:
        self._app = app
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._stack = AsyncExitStack()
        self.published = 0

    def __enter__(self) -> ChannelUnderFuzz:
        self._loop.run_until_complete(ensure_topics(self._settings))
        self._client = self._loop.run_until_complete(
            self._stack.enter_async_context(channel_client(self._app))
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.run_until_complete(self._stack.aclose())
        self._loop.close()

    def count_publishes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        channel: Channel = self._app.state.channel
        publish = channel.publish

        async def counted(interactions: Sequence[Interaction], *, ignored: int = 0) -> None:
            await publish(interactions, ignored=ignored)
            self.published += len(interactions)

        monkeypatch.setattr(channel, "publish", counted)

    def send(self, request: FuzzRequest) -> tuple[httpx.Response, int]:
        """The answer, and how many events Kafka acknowledged while producing it."""
        before = self.published
        response = self._loop.run_until_complete(
            self._client.post(request.route, content=request.body, headers=request.headers)
        )
        return response, self.published - before


def assert_never_5xx_and_nothing_published_on_4xx(
    request: FuzzRequest, response: httpx.Response, published: int
) -> None:
    where = f"{request.route} answered {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code < 400:
        return
    assert published == 0, f"{where} yet published {published}"
    assert response.headers["content-type"].startswith("application/json"), where
    answer = response.json()
    assert "detail" in answer or "rejected" in answer, where
    messages = json.dumps(
        answer.get("detail") or [problem["errors"] for problem in answer["rejected"]]
    ).lower()
    assert not [value for value in PERSONAL if value.lower() in messages], (
        f"{where} repeats personal data"
    )


def fuzz(
    channel: ChannelUnderFuzz,
    build: Callable[[st.DataObject], FuzzRequest],
    routes: int,
    tallies: dict[str, Tally],
) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES * routes,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def answers_every_input(data: st.DataObject) -> None:
        request = build(data)
        tally = tallies.setdefault(request.route, Tally())
        tally.tried += 1
        try:
            response, published = channel.send(request)
        except Exception:
            tally.statuses["5xx"] += 1  # the test transport raises what a server answers 500
            raise
        tally.statuses[f"{response.status_code // 100}xx"] += 1
        assert_never_5xx_and_nothing_published_on_4xx(request, response, published)

    answers_every_input()


def channel_settings(settings: HiloSettings, cls: type[HiloSettings]) -> Any:
    secrets = {
        name: SecretStr(SECRET)
        for name in (
            "whatsapp_app_secret",
            "whatsapp_verify_token",
            "twilio_auth_token",
            "mailgun_signing_key",
            "meta_app_secret",
            "meta_verify_token",
        )
    }
    keys = {
        name: [SecretStr(KEY)] for name in ("email_api_keys", "store_api_keys", "voice_api_keys")
    }
    return cls.model_validate(
        {
            **settings.model_dump(),
            **secrets,
            **keys,
            "web_write_keys": [SecretStr(SECRET)],
            "public_base_url": PUBLIC,
            "max_body_bytes": 1_000_000,
        }
    )


class ChannelSpec(NamedTuple):
    create_app: Callable[[Any], FastAPI]
    settings: type[HiloSettings]
    request: Callable[[st.DataObject], FuzzRequest]
    routes: int


CHANNELS = {
    "web": ChannelSpec(web_app, WebSettings, web_request, len(WEB_SAMPLES)),
    "whatsapp": ChannelSpec(
        whatsapp_app, WhatsAppSettings, meta_request("/webhooks/whatsapp", WHATSAPP_SAMPLES), 1
    ),
    "sms": ChannelSpec(sms_app, SmsSettings, sms_request, 2),
    "email": ChannelSpec(email_app, EmailSettings, email_request, 4),
    "store": ChannelSpec(store_app, StoreSettings, store_request, 3),
    "voice": ChannelSpec(voice_app, VoiceSettings, voice_request, 2),
    "social": ChannelSpec(
        social_app, SocialSettings, meta_request("/webhooks/social", [SOCIAL_SAMPLE]), 1
    ),
}


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_channel_answers_any_input_with_2xx_or_4xx_and_publishes_nothing_on_4xx(
    name: str,
    settings: HiloSettings,
    monkeypatch: pytest.MonkeyPatch,
    fuzz_totals: dict[str, dict[str, Any]],
) -> None:
    spec = CHANNELS[name]
    app = spec.create_app(channel_settings(settings, spec.settings))
    tallies: dict[str, Tally] = {}
    with ChannelUnderFuzz(app, settings) as channel:
        channel.count_publishes(monkeypatch)
        try:
            fuzz(channel, spec.request, spec.routes, tallies)
        finally:
            for route, tally in tallies.items():
                fuzz_totals[f"{name} {route}"] = {"tried": tally.tried, **tally.statuses}


@pytest.mark.parametrize("name", sorted(CHANNELS))
async def test_every_channel_lets_go_of_a_body_that_stops_coming(
    name: str, settings: HiloSettings, topics: list[str]
) -> None:
    """Every POST route answers 408 a body that stops half-way, within `body_read_seconds`:
    signatures are checked on a whole body, so anyone could hold a connection and its buffer
    for good (channel-voice, -store, -sms, -whatsapp and -social had no deadline)."""
    spec = CHANNELS[name]
    configured = channel_settings(settings, spec.settings).model_copy(
        update={"body_read_seconds": 0.3}
    )
    app = spec.create_app(configured)
    paths = sorted(
        path.replace("{call_type}", "track")
        for path, operations in app.openapi()["paths"].items()
        if "post" in operations
    )
    auth = {"X-API-Key": KEY, "Authorization": basic(SECRET).decode()}
    never = asyncio.Event()

    async def stalled() -> Any:
        yield b"{"
        await never.wait()

    answers = {}
    async with channel_client(app) as client:
        for path in paths:
            answer = await asyncio.wait_for(
                client.post(path, content=stalled(), headers=auth), timeout=10
            )
            answers[path] = answer.status_code

    assert paths
    # SendGrid's Inbound Parse is refused before its body without its own credentials.
    refused_first = {"/webhooks/sendgrid": 401}
    assert answers == {path: refused_first.get(path, 408) for path in paths}
