"""Inbound email through Mailgun, SendGrid and raw MIME, against the real broker."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from channel_email import mime
from channel_email.app import create_app
from channel_email.mailgun import MAILGUN_TOKENS
from channel_email.settings import EmailSettings
from channel_email.testing import API_KEY, SIGNING_KEY, email_settings_for
from channel_email.translate import mail_reference
from hilo.contract import conversation_id, interaction_id
from hilo.mongo import MongoDocument
from hilo.settings import HiloSettings
from hilo.testkit.contract_check import published_interactions
from hilo.testkit.probes import eventually
from hilo.webhook import hmac_sha256
from hilo_devkit.channel_contract import (
    ProviderRequest,
    assert_channel_contract,
    assert_spooled_while_kafka_is_down,
    channel_client,
    send,
)

ANA = "ana.garcia@example.com"
REPLY = (Path(__file__).parent / "samples" / "reply_with_attachment.eml").read_bytes()
FIRST_MAIL_HEADERS = (
    '[["Received", "by mxa.mailgun.org"], ["Date", "Mon, 23 Nov 2026 18:00:00 +0100"], '
    '["Message-Id", "<CAF=first-1@mail.example.com>"], ["From", "Ana <ana.garcia@example.com>"]]'
)


def mail_event(settings: HiloSettings, message_id: str, sender: str = ANA) -> str:
    """The event id of a mail: its Message-ID with its sender, keyed with the pepper."""
    return interaction_id("email", mail_reference(settings.pepper, sender, message_id))


def mailgun_fields(
    token: str | None = None, timestamp: int | None = None, key: str = SIGNING_KEY
) -> list[tuple[str, str]]:
    """A route's forward() as Mailgun posts it, signed over timestamp + token."""
    token = token or uuid.uuid4().hex
    stamp = str(timestamp or int(time.time()))
    return [
        ("recipient", "support@shop.example.com"),
        ("sender", "ana.garcia@example.com"),
        ("from", "Ana García <ana.garcia@example.com>"),
        ("subject", "Where is my order ORD-1001?"),
        ("body-plain", "Hi, where is my order?\n\n> quoted older text"),
        ("stripped-text", "Hi, where is my order?"),
        ("body-html", "<p>Hi, where is my order?</p>"),
        ("Message-Id", "<CAF=first-1@mail.example.com>"),
        ("message-headers", FIRST_MAIL_HEADERS),
        ("attachment-count", "0"),
        ("timestamp", stamp),
        ("token", token),
        ("signature", hmac_sha256(key, (stamp + token).encode()).hex()),
    ]


def mailgun(fields: list[tuple[str, str]]) -> ProviderRequest:
    return ProviderRequest(
        "/webhooks/mailgun",
        urlencode(fields).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def multipart(
    fields: list[tuple[str, str]], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x", data=dict(fields), files=files)
    return request.read(), request.headers["content-type"]


def raw_mime(body: bytes) -> ProviderRequest:
    return ProviderRequest(
        "/v1/messages/mime", body, {"X-API-Key": API_KEY, "Content-Type": "message/rfc822"}
    )


@pytest.fixture
def email_settings(settings: HiloSettings) -> EmailSettings:
    return email_settings_for(settings, max_body_bytes=50_000)


@pytest.fixture
async def email(
    email_settings: EmailSettings, topics: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with channel_client(create_app(email_settings)) as client:
        yield client


async def test_raw_mime_honours_the_channel_contract_and_threads_replies(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    [event] = await assert_channel_contract(email, settings, [raw_mime(REPLY)])

    assert event["id"] == mail_event(settings, "CAF=reply-2@mail.example.com")
    assert event["identifiers"]["email"] == "ana.garcia@example.com"
    assert event["occurred_at"] == "2026-11-23T19:12:45+01:00"
    assert event["conversation"] == {
        "id": conversation_id("email", "CAF=first-1@mail.example.com"),
        "thread": "CAF=first-1@mail.example.com",
        "continues": None,
    }
    payload = event["payload"]
    assert payload["subject"] == "Re: Your order ORD-1001"
    assert payload["text"] == "Thanks!\nI will pick it up in the Barcelona store."
    assert payload["reply_to_provider_message_id"] == "support-reply-1@shop.example.com"
    assert payload["attachments"] == [
        {
            **payload["attachments"][0],
            "kind": "document",
            "filename": "invoice.pdf",
            "mime_type": "application/pdf",
            "size_bytes": 48,
        }
    ]


async def test_mailgun_forward_starts_the_thread_the_reply_continues(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    first = mailgun(mailgun_fields())

    assert (await send(email, first)).status_code == 200
    assert (
        await email.post("/v1/messages/mime", content=REPLY, headers=raw_mime(REPLY).headers)
    ).status_code == 200

    events = {e["id"]: e for e in await published_interactions(settings, 2)}
    started = events[mail_event(settings, "CAF=first-1@mail.example.com")]
    reply = events[mail_event(settings, "CAF=reply-2@mail.example.com")]
    assert started["conversation"]["id"] == reply["conversation"]["id"]
    assert started["payload"]["text"] == "Hi, where is my order?"
    assert started["occurred_at"] == "2026-11-23T18:00:00+01:00"


async def test_mailgun_multipart_attachments_and_raw_mime_routes(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body, content_type = multipart(
        [(k, v) for k, v in mailgun_fields() if k != "attachment-count"]
        + [("attachment-count", "1")],
        {"attachment-1": ("photo.jpg", b"\xff\xd8\xff" + b"0" * 997, "image/jpeg")},
    )
    with_file = await email.post(
        "/webhooks/mailgun", content=body, headers={"Content-Type": content_type}
    )
    mime_fields = [(k, v) for k, v in mailgun_fields() if k in ("timestamp", "token", "signature")]
    mime_route = mailgun([*mime_fields, ("body-mime", REPLY.decode())])
    # Mailgun posts `body-mime` only to a forward URL ending in `mime`: that path was a 404,
    # which Mailgun retried for 8 hours before the mail was lost.
    as_mime = await send(email, replace(mime_route, path="/webhooks/mailgun/mime"))

    assert with_file.status_code == 200
    assert as_mime.status_code == 200
    events = {e["id"]: e for e in await published_interactions(settings, 2)}
    photo = events[mail_event(settings, "CAF=first-1@mail.example.com")]["payload"]["attachments"]
    assert [(a["kind"], a["filename"], a["size_bytes"]) for a in photo] == [
        ("image", "photo.jpg", 1000)
    ]
    assert mail_event(settings, "CAF=reply-2@mail.example.com") in events


async def test_sendgrid_inbound_parse_with_raw_mime(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    body, content_type = multipart(
        [("email", REPLY.decode()), ("to", "support@shop.example.com"), ("SPF", "pass")], {}
    )
    basic = "Basic " + base64.b64encode(f"sendgrid:{API_KEY}".encode()).decode()

    accepted = await email.post(
        "/webhooks/sendgrid",
        content=body,
        headers={"Content-Type": content_type, "Authorization": basic},
    )
    no_auth = await email.post(
        "/webhooks/sendgrid", content=body, headers={"Content-Type": content_type}
    )

    assert accepted.status_code == 200
    assert no_auth.status_code == 401
    [event] = await published_interactions(settings, 1)
    assert event["id"] == mail_event(settings, "CAF=reply-2@mail.example.com")


LATIN1_MAIL = (
    "From: Ana <ana.garcia@example.com>\r\nTo: support@shop.example.com\r\n"
    "Message-ID: <{id}@mail.example.com>\r\nSubject: Pedido\r\n"
    "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Cami\xf3n roto, \xbfd\xf3nde est\xe1 mi pedido?\r\n"
)
"""An 8-bit ISO-8859-1 mail (as older mail programs send): its bytes are not UTF-8."""


async def test_a_raw_mail_in_a_form_field_is_read_in_its_own_charset(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Mailgun's `body-mime` (multipart or url-encoded) and SendGrid's `email` hold the mail's
    bytes; decoded as form text first, `Camión` came out as `CamiÃ³n` or `Cami�n`."""
    mails = [LATIN1_MAIL.format(id=f"latin-{n}").encode("latin-1") for n in range(3)]
    signed = [(k, v) for k, v in mailgun_fields() if k in ("timestamp", "token", "signature")]
    body, content_type = multipart(signed, {"body-mime": ("", mails[0], "message/rfc822")})
    as_multipart = await email.post(
        "/webhooks/mailgun", content=body, headers={"Content-Type": content_type}
    )
    other = [(k, v) for k, v in mailgun_fields() if k in ("timestamp", "token", "signature")]
    encoded = urlencode([*other, ("body-mime", mails[1])], encoding="latin-1").encode()
    as_urlencoded = await email.post(
        "/webhooks/mailgun",
        content=encoded,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body, content_type = multipart([], {"email": (None, mails[2], None)})  # type: ignore[dict-item]
    basic = "Basic " + base64.b64encode(f"sendgrid:{API_KEY}".encode()).decode()
    from_sendgrid = await email.post(
        "/webhooks/sendgrid",
        content=body,
        headers={"Content-Type": content_type, "Authorization": basic},
    )

    for answer in (as_multipart, as_urlencoded, from_sendgrid):
        assert answer.status_code == 200, answer.text
    texts = [e["payload"]["text"] for e in await published_interactions(settings, 3)]
    assert texts == ["Camión roto, ¿dónde está mi pedido?"] * 3


async def test_forged_and_stale_mailgun_posts_are_refused_and_a_replay_publishes_nothing(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    async def post(fields: list[tuple[str, str]]) -> httpx.Response:
        request = mailgun(fields)
        return await send(email, request)

    forged = await post(mailgun_fields(key="guessed-key"))
    stale = await post(mailgun_fields(timestamp=int(time.time()) - 10 * 3600))
    unsigned = await post([(k, v) for k, v in mailgun_fields() if k != "signature"])
    tampered = await post(
        [(k, str(int(v) + 1) if k == "timestamp" else v) for k, v in mailgun_fields()]
    )
    fields = mailgun_fields(token="once-only-token")
    first = await post(fields)
    replayed = await post(fields)

    assert (forged.status_code, stale.status_code, unsigned.status_code) == (403, 403, 401)
    assert tampered.status_code == 403
    assert first.status_code == 200
    # The answer Mailgun missed (its retry has the same token), not a refusal it would retry.
    assert (replayed.status_code, replayed.json()) == (200, first.json())
    assert len(await published_interactions(settings, 1)) == 1


async def test_a_captured_token_replayed_with_another_body_to_another_instance_publishes_nothing(
    email: httpx.AsyncClient,
    email_settings: EmailSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
) -> None:
    """Mailgun signs the timestamp and token, not the body: the token is what is published
    once, for every instance, so a forged mail under a captured signature goes nowhere."""
    fields = mailgun_fields(token="captured-token")
    forged = [
        (k, "Send the refund to my new account" if k == "stripped-text" else v) for k, v in fields
    ]
    first_request, forged_request = mailgun(fields), mailgun(forged)
    first = await send(email, first_request)

    async with channel_client(create_app(email_settings)) as other_instance:
        replayed = await send(other_instance, forged_request)

    assert first.status_code == 200
    assert (replayed.status_code, replayed.json()) == (200, first.json())
    assert len(await published_interactions(settings, 1)) == 1
    tokens = mongo_client[settings.mongodb_database][MAILGUN_TOKENS]
    assert [doc["_id"] async for doc in tokens.find({})] == ["captured-token"]


async def test_a_token_refused_for_good_keeps_its_refusal_for_any_body(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Mailgun never posts a 406 again: only a replayer would, and a valid body under the same
    signature is refused as the first one was."""
    fields = mailgun_fields(token="refused-token")
    no_sender = [(k, v) for k, v in fields if k not in {"sender", "from"}]
    refused, replayed = mailgun(no_sender), mailgun(fields)

    first = await send(email, refused)
    again = await send(email, replayed)

    assert first.status_code == 406
    assert (again.status_code, again.json()) == (406, first.json())
    assert await published_interactions(settings, 0) == []


async def test_mail_is_taken_whatever_window_the_tokens_index_was_made_with(
    email: httpx.AsyncClient,
    email_settings: EmailSettings,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
) -> None:
    """A window changed since the last deployment: MongoDB refuses a second index on `at`
    with other options; that must never refuse mail."""
    tokens = mongo_client[settings.mongodb_database][MAILGUN_TOKENS]
    await tokens.create_index("at", expireAfterSeconds=60)
    request = mailgun(mailgun_fields())

    response = await send(email, request)

    assert response.status_code == 200
    assert len(await published_interactions(settings, 1)) == 1
    index = (await tokens.index_information())["at_1"]
    assert index["expireAfterSeconds"] == email_settings.mailgun_max_age_seconds, "not applied"


async def test_a_token_being_published_is_a_503_and_one_left_by_a_dead_request_is_taken_over(
    email: httpx.AsyncClient,
    settings: HiloSettings,
    mongo_client: AsyncMongoClient[MongoDocument],
) -> None:
    tokens = mongo_client[settings.mongodb_database][MAILGUN_TOKENS]
    now = datetime.now(UTC)
    await tokens.insert_many(
        [
            {"_id": "in-flight", "at": now, "answer": None},
            {"_id": "left-behind", "at": now - timedelta(minutes=5), "answer": None},
        ]
    )

    async def post(token: str) -> httpx.Response:
        request = mailgun(mailgun_fields(token=token))
        return await send(email, request)

    busy, taken_over = await post("in-flight"), await post("left-behind")

    assert (busy.status_code, busy.json()["error"]) == (503, "in_flight")
    assert taken_over.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["id"] == taken_over.json()["event_id"]


async def test_a_mailgun_retry_hours_after_an_outage_is_taken(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Mailgun retries for 8 hours with the signature of its first attempt."""
    request = mailgun(mailgun_fields(timestamp=int(time.time()) - 4 * 3600 - 30 * 60))

    response = await send(email, request)

    assert response.status_code == 200
    [event] = await published_interactions(settings, 1)
    assert event["id"] == response.json()["event_id"]


async def test_malformed_mail_is_refused_naming_the_problem(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    no_sender = await email.post(
        "/v1/messages/mime",
        content=b"Subject: hi\r\nMessage-ID: <x@y>\r\n\r\nbody",
        headers={"X-API-Key": API_KEY},
    )
    bad_sender = await email.post(
        "/v1/messages/mime",
        content=b"From: ana@@example\r\nSubject: hi\r\nMessage-ID: <x@y>\r\n\r\nbody",
        headers={"X-API-Key": API_KEY},
    )
    no_key = await email.post("/v1/messages/mime", content=REPLY)
    broken_form = await email.post(
        "/webhooks/mailgun",
        content=b"--nope\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    too_big = await email.post(
        "/v1/messages/mime", content=REPLY + b"x" * 60_000, headers={"X-API-Key": API_KEY}
    )

    assert no_sender.status_code == 422
    assert no_sender.json()["detail"] == "the message has no From address"
    assert bad_sender.status_code == 422
    assert "ana@@example" not in bad_sender.text
    assert no_key.status_code == 401
    assert broken_form.status_code == 406, "never posted again: Mailgun retries all but 406"
    assert broken_form.json()["error"] == "invalid_body"
    assert too_big.status_code == 413
    assert await published_interactions(settings, 0) == []


async def test_mail_arriving_while_kafka_is_down_is_kept_then_published(
    email_settings: EmailSettings, tmp_path: Path
) -> None:
    """Kept in MongoDB and answered 200 (Mailgun never posts a delivery notification again, so
    the channel spools: `test_mailgun_events`), then published once Kafka is back."""
    events = await assert_spooled_while_kafka_is_down(
        create_app, email_settings, raw_mime(REPLY), tmp_path
    )

    assert {event["id"] for event in events} == {
        mail_event(email_settings, "CAF=reply-2@mail.example.com")
    }


async def test_a_part_in_an_unknown_charset_is_read_not_lost(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    mail = (
        b"From: Ana <ana@example.com>\r\n"
        b"Subject: =?x-unknown-foo?q?Hola?=\r\n"
        b"Message-ID: <unknown-charset-1@mail.example.com>\r\n"
        b"Content-Type: text/plain; charset=x-unknown-foo\r\n\r\n"
        b"Where is my order? Caf\xe9\r\n"
    )

    response = await email.post("/v1/messages/mime", content=mail, headers={"X-API-Key": API_KEY})

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["text"] == "Where is my order? Café"
    assert event["identifiers"]["email"] == "ana@example.com"


async def test_markup_the_html_parser_refuses_and_a_broken_file_name_are_read_not_refused(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Anyone can mail such a message: refusing it (or failing with 500, whose traceback held a
    piece of the body) would lose it after every provider retry. The body is the mail's own,
    not the text of a mail attached to it."""
    mail = (
        b"From: Ana <ana@example.com>\r\n"
        b"Message-ID: <broken-markup-1@mail.example.com>\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: old@example.com\r\nContent-Type: text/plain\r\n\r\nA forwarded mail\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n"
        b"<style>p {}</style><p>Where is my &amp; order?</p><![=x\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*\r\n\r\n%PDF\r\n"
        b"--b--\r\n"
    )

    response = await email.post("/v1/messages/mime", content=mail, headers={"X-API-Key": API_KEY})

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["text"] == "Where is my & order?\n<![=x"
    attachments = event["payload"]["attachments"]
    assert [a["mime_type"] for a in attachments] == ["message/rfc822", "application/pdf"]
    assert attachments[1].get("filename") is None


async def test_a_non_ascii_mailgun_signature_is_refused_as_a_mismatch(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    fields = [(k, "é" * 64 if k == "signature" else v) for k, v in mailgun_fields()]
    request = mailgun(fields)

    response = await email.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 403
    assert await published_interactions(settings, 0) == []


def mail_with_attachment(size: int) -> bytes:
    """A reply carrying an attachment of `size` bytes: over a MiB as raw MIME when size is."""
    attachment = base64.encodebytes(b"\x00" * size)
    return REPLY.replace(
        b"JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\n",
        attachment.replace(b"\n", b"\r\n"),
    )


async def test_raw_mail_over_a_mebibyte_in_one_form_field_is_taken_up_to_the_body_limit(
    email_settings: EmailSettings, topics: list[str], settings: HiloSettings
) -> None:
    large_mail = email_settings.model_copy(update={"max_body_bytes": 3_000_000})
    raw = mail_with_attachment(1_200_000)
    assert len(raw) > 1_048_576
    signed_fields = [
        (k, v) for k, v in mailgun_fields() if k in ("timestamp", "token", "signature")
    ]
    mailgun_body, mailgun_type = multipart([*signed_fields, ("body-mime", raw.decode())], {})
    sendgrid_body, sendgrid_type = multipart([("email", raw.decode())], {})
    too_large_body, too_large_type = multipart(
        [("email", mail_with_attachment(2_400_000).decode())], {}
    )
    basic = "Basic " + base64.b64encode(f"sendgrid:{API_KEY}".encode()).decode()

    async with channel_client(create_app(large_mail)) as client:
        via_mailgun = await client.post(
            "/webhooks/mailgun", content=mailgun_body, headers={"Content-Type": mailgun_type}
        )
        via_sendgrid = await client.post(
            "/webhooks/sendgrid",
            content=sendgrid_body,
            headers={"Content-Type": sendgrid_type, "Authorization": basic},
        )
        too_large = await client.post(
            "/webhooks/sendgrid",
            content=too_large_body,
            headers={"Content-Type": too_large_type, "Authorization": basic},
        )

    assert via_mailgun.status_code == 200, via_mailgun.text
    assert via_sendgrid.status_code == 200, via_sendgrid.text
    assert too_large.status_code == 413
    events = await published_interactions(settings, 2)
    assert {event["id"] for event in events} == {
        mail_event(settings, "CAF=reply-2@mail.example.com")
    }
    assert events[0]["payload"]["attachments"][0]["size_bytes"] == 1_200_000


async def test_headers_the_standard_parser_chokes_on_are_read_as_they_came(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    mail = (
        b"From: Ana <ana@example.com>\r\nSubject: Order\r\nMessage-ID: <>\r\n"
        b"In-Reply-To: <>\r\nReferences: <>\r\n\r\nWhere is my order?\r\n"
    )

    response = await email.post("/v1/messages/mime", content=mail, headers={"X-API-Key": API_KEY})

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["payload"]["text"] == "Where is my order?"
    assert event["payload"]["provider_message_id"].startswith("sha256:")


async def test_a_mail_longer_than_the_contract_holds_is_kept_truncated(
    email_settings: EmailSettings, topics: list[str], settings: HiloSettings
) -> None:
    mail = (
        b"From: Ana <ana@example.com>\r\nSubject: Order\r\n"
        b"Message-ID: <long-1@mail.example.com>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Where is it? " * 8_000
    )

    roomy = email_settings.model_copy(update={"max_body_bytes": 500_000})
    async with channel_client(create_app(roomy)) as client:
        response = await client.post(
            "/v1/messages/mime", content=mail, headers={"X-API-Key": API_KEY}
        )

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert len(event["payload"]["text"]) == 100_000
    assert event["payload"]["text"].startswith("Where is it? Where is it?")
    assert event["adjustments"] == [{"field": "payload.text", "reason": "truncated"}]


@pytest.mark.parametrize(
    ("message_headers", "status"),
    [("12345", 200), ('{"Date": "today"}', 200), ("[" * 10_000, 406), ('[["\\ud800", "x"]]', 406)],
)
async def test_mailgun_message_headers_of_any_shape_are_never_a_crash(
    email: httpx.AsyncClient, settings: HiloSettings, message_headers: str, status: int
) -> None:
    fields = [(k, message_headers if k == "message-headers" else v) for k, v in mailgun_fields()]
    request = mailgun(fields)

    response = await email.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == status, response.text
    assert len(await published_interactions(settings, 1 if status == 200 else 0)) == (
        1 if status == 200 else 0
    )


async def test_a_parsed_mail_without_a_message_id_or_with_a_comma_in_the_name_is_taken(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """Refused with 406, Mailgun would never post it again: the mail would be lost. Without a
    Message-Id it gets an id from its content (the same on every post), and the address is
    found past a display name whose comma was left unquoted."""
    headers = '[["Date", "Mon, 23 Nov 2026 18:00:00 +0100"]]'
    changed = {"from": "García, Ana <ana.garcia@example.com>", "message-headers": headers}

    now = int(time.time())
    for stamp in (now - 30, now):  # the same mail posted twice (two routes), each signed anew
        posted = mailgun_fields(timestamp=stamp)
        fields = [(k, changed.get(k, v)) for k, v in posted if k != "Message-Id"]
        request = mailgun(fields)
        response = await email.post(request.path, content=request.body, headers=request.headers)
        assert response.status_code == 200, response.text

    first, second = await published_interactions(settings, 2)
    assert first["identifiers"]["email"] == ANA
    assert first["id"] == second["id"], "one mail, one event id"


async def test_a_from_without_an_address_falls_back_to_the_envelope_sender(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    request = mailgun([(k, "Ana Garcia" if k == "from" else v) for k, v in mailgun_fields()])

    response = await email.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 200, response.text
    [event] = await published_interactions(settings, 1)
    assert event["identifiers"]["email"] == ANA


async def test_an_empty_mail_is_refused_with_406_so_mailgun_does_not_post_it_for_8_hours(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """No subject, no text, no attachment: nothing Hilo can record, now or on any retry."""
    empty = {"subject": "", "body-plain": "", "stripped-text": "", "body-html": ""}
    request = mailgun([(k, empty.get(k, v)) for k, v in mailgun_fields()])

    response = await email.post(request.path, content=request.body, headers=request.headers)

    assert response.status_code == 406, response.text
    assert "a message needs text" in response.text
    assert await published_interactions(settings, 0) == []


async def test_another_senders_mail_reusing_a_message_id_is_an_event_of_its_own(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """The sender's software chooses the Message-ID: a second sender's mail with the same one
    is recorded, not dropped as a duplicate of the first. (Before, both had one event id.)"""
    other = REPLY.replace(b"<Ana.Garcia@Example.com>", b"<bo@example.org>")
    assert other != REPLY

    for mail in (REPLY, other):
        answer = await email.post("/v1/messages/mime", content=mail, headers=raw_mime(mail).headers)
        assert answer.status_code == 200, answer.text

    events = await published_interactions(settings, 2)
    assert len({e["id"] for e in events}) == 2, "one event id: the profile keeps only the first"
    assert {(e["id"], e["identifiers"]["email"]) for e in events} == {
        (mail_event(settings, "CAF=reply-2@mail.example.com"), ANA),
        (mail_event(settings, "CAF=reply-2@mail.example.com", "bo@example.org"), "bo@example.org"),
    }


async def test_mime_parts_nested_a_thousand_deep_are_refused_not_a_crash(
    email_settings: EmailSettings, topics: list[str], settings: HiloSettings
) -> None:
    """Python's email parser recurses per nesting level: 67 KB of nested parts made it raise
    `RecursionError`, a 500 that every provider posts again for hours."""
    mail = b"From: ana@example.com\r\nMessage-ID: <nested-1@mail.example.com>\r\n"
    for level in range(1_000):
        mail += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
    mail += b"Content-Type: text/plain\r\n\r\nhi\r\n"

    roomy = email_settings.model_copy(update={"max_body_bytes": 500_000})
    async with channel_client(create_app(roomy)) as client:
        response = await client.post(
            "/v1/messages/mime", content=mail, headers={"X-API-Key": API_KEY}
        )

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "MIME parts nested too deep"
    assert await published_interactions(settings, 0) == []


def test_an_html_body_too_long_to_parse_has_its_tags_cut_out_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Megabytes of tags (anyone can mail them) would take the HTML parser seconds and hundreds
    of MB: past `MAX_HTML_PARSED` the body never reaches it, and still reads as text."""

    def no_parser(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a body this long went to the HTML parser")

    monkeypatch.setattr(mime, "BeautifulSoup", no_parser)
    html = "<head><title>t</title></head><p>Where is my order?</p>" + "<a href='x'></a>" * 20_000

    assert mime.html_to_text(html) == "Where is my order?"


async def test_bodies_past_the_instances_budget_are_refused_for_a_retry_before_being_read(
    email_settings: EmailSettings, topics: list[str]
) -> None:
    """Mailgun's signature is inside the form, so a body is read before anyone knows who sent
    it. One instance holds at most `HILO_BODIES_IN_FLIGHT_BYTES` of such bodies at once: past
    that, 503 (Mailgun posts it again), what the refused post held given back, and a body that
    finished gives its bytes back too."""
    settings = email_settings.model_copy(update={"bodies_in_flight_bytes": 60_000})
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 40_000
        await release.wait()
        yield b"y" * 5_000

    async def in_parts() -> AsyncIterator[bytes]:
        for part in (b"a" * 10_000, b"b" * 10_000, b"c" * 10_000):
            yield part

    async with channel_client(create_app(settings)) as email:
        first = asyncio.create_task(email.post(MAILGUN, content=slow(), headers=FORM))
        await eventually(bodies_held, until=lambda n: n == 40_000)
        refused = await email.post(MAILGUN, content=in_parts(), headers=FORM)
        while_held = await bodies_held()
        release.set()
        finished = await first
        after = await email.post(MAILGUN, content=in_parts(), headers=FORM)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"] == "busy"
    assert while_held == 40_000, "the 20,000 bytes the refused post had sent were given back"
    assert finished.status_code == 401, "the slow one was read whole, then found unsigned"
    assert after.status_code == 401, "its bytes were given back: the next one is read"
    assert await bodies_held() == 0


async def test_a_body_that_stops_coming_is_answered_408_and_holds_nothing(
    email_settings: EmailSettings, topics: list[str]
) -> None:
    """A caller that sends part of a body, then nothing, would hold the budget for good."""
    settings = email_settings.model_copy(update={"body_read_seconds": 0.5})
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * 20_000
        await never.wait()
        yield b""

    async with channel_client(create_app(settings)) as email:
        route = await email.post(MAILGUN, content=stalled(), headers=FORM)
        events = await email.post(MAILGUN + "/events", content=stalled(), headers=FORM)

    assert (route.status_code, route.json()["error"]) == (408, "slow_body")
    assert events.status_code == 408
    assert await bodies_held() == 0


def test_a_budget_smaller_than_one_mail_is_refused_at_start(email_settings: EmailSettings) -> None:
    with pytest.raises(ValidationError, match="at least HILO_MAX_BODY_BYTES"):
        EmailSettings.model_validate(
            {**email_settings.model_dump(), "bodies_in_flight_bytes": 10_000}
        )


MAILGUN = "/webhooks/mailgun"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def bodies_held() -> float:
    return REGISTRY.get_sample_value("hilo_channel_body_bytes_held", {"channel": "email"}) or 0


async def test_out_of_office_replies_and_bounces_are_acknowledged_unrecorded(
    email: httpx.AsyncClient, settings: HiloSettings
) -> None:
    """An auto-reply recorded read as the customer writing back, and opened the conversation
    again for an agent: a mail marked as automatic (RFC 3834 and older marks) is answered 200,
    counted ignored and not published, whichever route brings it; `Auto-Submitted: no` is a
    person's mail."""
    ignored_before = REGISTRY.get_sample_value(
        "hilo_channel_events_ignored_total", {"channel": "email"}
    )
    out_of_office = REPLY.replace(
        b"MIME-Version: 1.0", b"Auto-Submitted: auto-replied (vacation)\r\nMIME-Version: 1.0"
    )
    person = REPLY.replace(b"MIME-Version: 1.0", b"Auto-Submitted: no\r\nMIME-Version: 1.0")
    legacy = [
        (k, v.replace("]]", '], ["X-Autoreply", "yes"]]') if k == "message-headers" else v)
        for k, v in mailgun_fields()
    ]
    assert out_of_office != REPLY != person

    answers = [
        await email.post("/v1/messages/mime", content=mail, headers=raw_mime(mail).headers)
        for mail in (out_of_office, person)
    ]
    answers.append(await send(email, mailgun(legacy)))

    assert [answer.status_code for answer in answers] == [200] * 3
    assert answers[0].json() == {"ignored": "automatic", "header": "auto-submitted"}
    assert answers[2].json() == {"ignored": "automatic", "header": "x-autoreply"}
    [event] = await published_interactions(settings, 1)
    assert event["id"] == answers[1].json()["event_id"]
    assert (
        REGISTRY.get_sample_value("hilo_channel_events_ignored_total", {"channel": "email"})
        == (ignored_before or 0) + 2
    )
