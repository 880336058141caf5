"""The desk against the real stack: Kafka, MongoDB, the customer-profile service (in-process,
on a real port), the desk on a real port; read as a browser reads it (HTML, SSE)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from pydantic_extra_types.currency_code import ISO4217
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from agent_desk import app as desk_app
from agent_desk.app import LINK_REFUSED, PROFILES_DOWN
from agent_desk.auth import SignedOut
from agent_desk.pending import PendingReplies
from agent_desk.profiles import ProfileApi
from agent_desk.testing import (
    AGENT,
    PASSWORD,
    csrf_of,
    desk_settings,
    opened_command,
    running_desk,
    signed_in,
)
from customer_profile.domain.profile import RECENT_ORDERS
from customer_profile.testing import API_KEY, RunningProfileService, running_profile_service
from hilo.contract import (
    CallHappened,
    CallStatus,
    ConsentChanged,
    DeliveryStatus,
    Direction,
    Fulfilment,
    Identified,
    Identifiers,
    Interaction,
    LineItem,
    MessageExchanged,
    MessageStatusChanged,
    Money,
    OrderPlaced,
    OrderRefunded,
    Payload,
    SalesChannel,
    new_interaction,
)
from hilo.contract.outbound import OutboundCommand
from hilo.offers.model import (
    Conditions,
    price_key,
    promotion_key,
)
from hilo.request_size import MAX_REQUEST_BYTES
from hilo.sealing import SubjectKeys
from hilo.settings import HiloSettings
from hilo.testkit.offers import offer_record, percent_off, price_schedule, publish_offer_records
from hilo.testkit.probes import eventually, read_topic
from hilo.testkit.serving import free_port, served
from hilo.topics import Topic, topic_name

PHONE = "+34612345678"


def message(n: int, channel: str, text: str, *, ago: timedelta, **ids: str) -> Interaction:
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=f"msg-{channel}-{n}",
        identifiers=Identifiers.model_validate(ids or {"phone": PHONE}),
        payload=MessageExchanged(
            direction=Direction.INBOUND, text=text, provider_message_id=f"{channel}-{n}"
        ),
        occurred_at=datetime.now(UTC) - ago,
    )


def pickup_order() -> Interaction:
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id="order-1",
        identifiers=Identifiers(email="Ana@Example.com", phone=PHONE),
        payload=OrderPlaced(
            order_id="WEB-7731",
            sold_via=SalesChannel.ONLINE,
            fulfilment=Fulfilment.STORE_PICKUP,
            store_id="BCN-01",
            items=[LineItem(sku="SKU-1", name="Red shoes", quantity=1)],
            total=Money(amount=Decimal("59.90"), currency=ISO4217("EUR")),
            coupons=["FLYER-7"],
        ),
        occurred_at=datetime.now(UTC) - timedelta(hours=3),
    )


def dropped_call() -> Interaction:
    return new_interaction(
        channel="voice",
        instance="test",
        provider_event_id="call-1",
        identifiers=Identifiers(phone=PHONE),
        payload=CallHappened(
            direction=Direction.INBOUND, status=CallStatus.DROPPED, provider_call_id="CA1"
        ),
        occurred_at=datetime.now(UTC) - timedelta(minutes=20),
    )


async def customer_who_wrote(svc: RunningProfileService) -> str:
    """A customer with one WhatsApp message five minutes ago: their id."""
    await svc.publish([message(1, "whatsapp", "Hola", ago=timedelta(minutes=5))])
    await svc.wait_for_entries(1)
    return await svc.customer_of("phone", PHONE)


@dataclass
class Stack:
    profile: RunningProfileService
    profile_url: str
    desk_url: str


@asynccontextmanager
async def stack(settings: HiloSettings) -> AsyncIterator[Stack]:
    async with (
        running_profile_service(settings) as profile,
        served(profile.service.app, lifespan="off") as profile_url,
        running_desk(desk_settings(settings, profile_url, API_KEY)) as desk_url,
    ):
        yield Stack(profile, profile_url, desk_url)


@pytest.fixture
async def running(settings: HiloSettings, topics: list[str]) -> AsyncIterator[Stack]:
    async with stack(settings) as running:
        yield running


async def test_nothing_is_readable_without_signing_in_and_forms_need_their_token(
    running: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=running.desk_url) as anonymous:
        page = await anonymous.get("/", headers={"Accept": "text/html"})
        customer = await anonymous.get("/customers/anyone", headers={"Accept": "text/html"})
        stream = await anonymous.get("/customers/anyone/live")
        reply = await anonymous.post("/customers/anyone/replies", json={"channel": "sms"})
        described = [await anonymous.get(path) for path in ("/openapi.json", "/docs", "/redoc")]
        metrics = await anonymous.get("/metrics")
        form = await anonymous.get("/login")
        no_token = await anonymous.post("/login", data={"agent": "ana.agent", "password": "x"})
        # A form's files are written to disk before its token is checked: bounded first.
        upload = await anonymous.post(
            "/login",
            data={"agent": "ana.agent"},
            files={"password": ("big.bin", b"x" * (MAX_REQUEST_BYTES + 1))},
        )
        wrong = await anonymous.post(
            "/login",
            data={"agent": "ana.agent", "password": "wrong", "csrf": csrf_of(form.text)},
        )
        # A form sent from a page whose session expired: after signing in, its POST-only path
        # would be a 405 page; the queue is where the agent lands.
        expired_form = await anonymous.post(
            "/customers/anyone/notes", data={"text": "x"}, headers={"Accept": "text/html"}
        )

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/"
    assert expired_form.status_code == 303
    assert expired_form.headers["location"] == "/login?next=/"
    assert customer.status_code == 303
    assert stream.status_code == 401
    assert reply.status_code == 401
    assert [d.status_code for d in described] == [404, 404, 404]
    assert metrics.status_code == 200, "operations scrape it: counters, no personal data"
    assert no_token.status_code == 403
    assert upload.status_code == 413
    assert wrong.status_code == 401
    assert "Unknown agent or wrong password" in wrong.text

    async with signed_in(running.desk_url) as client:
        inbox = await client.get("/")
        cookie = next(c for c in client.cookies.jar if c.name == "hilo_desk")
        forged = await client.post(
            "/customers/anyone/replies", json={"channel": "sms"}, headers={"X-CSRF-Token": "x"}
        )
        forged_search = await client.post("/search", data={"q": "ana@example.com", "csrf": "x"})
        searched = await client.post(
            "/search", data={"q": "nobody@example.com", "csrf": csrf_of(inbox.text)}
        )
        await client.post("/logout", data={"csrf": csrf_of(inbox.text)})
        after = await client.get("/")

    assert inbox.status_code == 200
    assert "Open conversations" in inbox.text
    # A shop terminal's next user is not offered earlier customers' phones and emails.
    [search_box] = re.findall(r'<input name="q"[^>]*>', inbox.text)
    assert 'autocomplete="off"' in search_box
    assert cookie.has_nonstandard_attr("httponly")
    # A shop terminal's browser closed signs its agent out (the 12 h are checked by the desk).
    assert (cookie.expires, cookie.discard) == (None, True), "a cookie that outlives the browser"
    assert forged.status_code == 403
    assert forged_search.status_code == 403
    assert searched.status_code == 200
    assert "No customer has" in searched.text
    assert after.status_code == 303


async def test_a_person_reads_a_refusal_as_a_page_and_signs_out_from_a_stale_tab(
    running: Stack,
) -> None:
    """An erased customer's link, an expired form or a search too long: the agent reads a page
    of the desk saying so, not JSON. Signing out from a tab rendered before the last sign-in
    still signs the terminal out."""
    async with signed_in(running.desk_url) as client:
        stale = await client.get("/")
        gone = await client.get("/customers/0000000000000000000000000000dead")
        expired = await client.post("/search", data={"q": "ana@example.com", "csrf": "old"})
        too_long = await client.post("/search", data={"q": "x" * 301, "csrf": csrf_of(stale.text)})
        script = await client.get(
            "/customers/0000000000000000000000000000dead/panels",
            headers={"Accept": "application/json"},
        )
        form = await client.get("/login")  # signing in again, in another tab
        data = {"agent": AGENT, "password": PASSWORD, "csrf": csrf_of(form.text)}
        assert (await client.post("/login", data=data)).status_code == 303
        out = await client.post("/logout", data={"csrf": csrf_of(stale.text)})
        after = await client.get("/")

    for page, status in ((gone, 404), (expired, 403), (too_long, 422)):
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert 'role="alert"' in page.text
        assert 'action="/logout"' in page.text, "the page still offers to sign out"
    assert "no customer with this id" in gone.text
    assert "the form expired; reload the page" in expired.text
    assert script.json() == {"detail": "no customer with this id"}, "scripts still get JSON"
    assert out.status_code == 303
    assert after.status_code == 303, "signed out"


async def test_a_status_rendered_with_the_page_is_one_the_live_feed_cannot_step_back_from(
    running: Stack,
) -> None:
    """The page's script folds statuses by rank, as the desk does: it reads the rendered one
    from the chip, so a late "sent" cannot turn a "failed" back (desk.js `setStatus`)."""
    svc = running.profile
    sent = MessageExchanged(
        direction=Direction.OUTBOUND, text="Your shoes are ready", provider_message_id="wa-7"
    )
    reply = event("reply-7", "whatsapp", Identifiers(phone=PHONE), sent, ago=timedelta(minutes=2))
    not_delivered = MessageStatusChanged(
        provider_message_id="wa-7", status=DeliveryStatus.FAILED, error="131047"
    )
    failed = event(
        "status-7", "whatsapp", Identifiers(phone=PHONE), not_delivered, ago=timedelta(minutes=1)
    )
    await svc.publish([reply, failed])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")

    assert 'data-status data-value="failed" data-error="131047"' in page.text


async def test_pages_with_personal_data_are_never_cached_nor_framed(running: Stack) -> None:
    """A shop terminal: after signing out, Back or the cache must not show the customer."""
    ana = await customer_who_wrote(running.profile)
    async with signed_in(running.desk_url) as client:
        pages = [
            await client.get(path)
            for path in ("/", f"/customers/{ana}", f"/customers/{ana}/panels", "/search?q=Hola")
        ]
        script = await client.get("/static/desk.js")

    for page in pages:
        assert page.status_code == 200, page.url
        assert page.headers["cache-control"] == "no-store", page.url
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200
    assert script.headers.get("cache-control") != "no-store", "its own assets may be cached"


async def test_an_error_page_carries_the_same_headers(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette answers an unexpected error outside ordinary middleware: the desk's headers
    must still be on it."""

    async def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ProfileApi, "open_conversations", broken)
    async with signed_in(running.desk_url) as browser:
        page = await browser.get("/")

    assert page.status_code == 500
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_an_agent_finds_a_customer_sees_every_channel_live_and_replies(
    running: Stack, settings: HiloSettings
) -> None:
    svc = running.profile
    await svc.publish(
        [
            pickup_order(),
            dropped_call(),
            message(1, "whatsapp", "Hola, my call dropped", ago=timedelta(minutes=10)),
        ]
    )
    await svc.wait_for_entries(3)
    async with signed_in(running.desk_url) as client:
        found = await client.get("/search", params={"q": "0034 612 34 56 78"})
        by_email = await client.get("/search", params={"q": " ANA@example.COM "})
        by_order = await client.get("/search", params={"q": "WEB-7731"})
        page = await client.get(found.headers["location"])
        inbox = await client.get("/")

        customer_path = found.headers["location"]
        assert by_email.headers["location"] == customer_path
        assert by_order.headers["location"] == customer_path
        assert page.status_code == 200
        shown_on_the_page = (
            "Click &amp; collect at BCN-01",
            '<span class="code" title="Code presented">FLYER-7</span>',
            "Hola, my call dropped",
            "dropped",
        )
        for shown in shown_on_the_page:
            assert shown in page.text
        assert "Started on <strong>Phone</strong>" in page.text
        assert "continued on <strong>WhatsApp</strong>" in page.text
        assert customer_path in inbox.text
        after = data_attribute(page.text, "after")

        live = message(2, "whatsapp", "Are you there?", ago=timedelta(0))
        async with client.stream("GET", f"{customer_path}/live", params={"after": after}) as stream:
            await svc.publish([live])
            event_id, data = await next_entry(stream)
        assert data["id"] == live.id
        assert "Are you there?" in str(data["html"])

        later = message(3, "whatsapp", "Hello?", ago=timedelta(0))
        await svc.publish([later])
        async with client.stream(
            "GET", f"{customer_path}/live", headers={"Last-Event-ID": event_id}
        ) as resumed:
            _, missed = await next_entry(resumed)
        assert missed["id"] == later.id, "the reconnect resent an entry or skipped one"

        reply = await client.post(
            f"{customer_path}/replies",
            json={"channel": "sms", "text": "Sorry about the call, your order is ready."},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )
    assert reply.status_code == 202, reply.text
    command = await published_command(settings)
    assert command.id == reply.json()["command_id"]
    assert command.channel == "sms"
    assert command.identifiers.phone == PHONE
    assert command.payload.text == "Sorry about the call, your order is ready."
    assert command.conversation is not None
    profile = await svc.get(f"/v1/customers/{command.customer_id}")
    assert command.conversation.id in profile["view"]["conversation"]["conversation_ids"]


async def test_replies_that_break_a_provider_rule_are_refused_with_the_reason(
    running: Stack,
) -> None:
    svc = running.profile
    stale = message(1, "whatsapp", "Old question", ago=timedelta(hours=30), phone="+34699000111")
    opted_out = new_interaction(
        channel="sms",
        instance="test",
        provider_event_id="stop-1",
        identifiers=Identifiers(phone="+34699000111"),
        payload=ConsentChanged(purpose="contact", granted=False, channel="sms"),
        occurred_at=datetime.now(UTC) - timedelta(hours=1),
    )
    await svc.publish([stale, opted_out])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("phone", "+34699000111")
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        headers = {"X-CSRF-Token": csrf_of(page.text)}
        whatsapp = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "whatsapp", "text": "Hi again"},
            headers=headers,
        )
        sms = await client.post(
            f"/customers/{customer}/replies", json={"channel": "sms", "text": "Hi"}, headers=headers
        )
        email = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "email", "text": "Hi"},
            headers=headers,
        )
        template = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "whatsapp", "template_name": "order_update"},
            headers=headers,
        )
        sms_template = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "sms", "template_name": "order_update"},
            headers=headers,
        )
        text_and_template = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "whatsapp", "template_name": "order_update", "text": "It ships"},
            headers=headers,
        )
        long_sms = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "sms", "text": "x" * 1_601},
            headers=headers,
        )
        # A one-letter language is no template's: Template refused it outside any check (500).
        short_language = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "whatsapp", "template_name": "order_update", "template_language": "e"},
            headers=headers,
        )

    assert whatsapp.status_code == 409
    assert whatsapp.json()["error"] == (
        "Outside WhatsApp's 24-hour window: the customer last wrote 30 hours ago. "
        "Only an approved template can be sent."
    )
    assert sms.status_code == 409
    assert sms.json()["error"].startswith("The customer opted out of SMS on ")
    assert email.status_code == 409
    assert email.json()["error"] == "The customer cannot be reached on Email."
    assert template.status_code == 202
    assert sms_template.status_code == 422, "the template's name would be sent as the text"
    assert sms_template.json()["error"] == (
        "Templates are WhatsApp's: on SMS, write the message instead."
    )
    assert text_and_template.status_code == 422, "WhatsApp would send the template, not the text"
    assert text_and_template.json()["error"].startswith("Send either the message or the template")
    assert long_sms.status_code == 422, "Twilio would refuse it after the box was cleared"
    assert long_sms.json()["error"].startswith("Too long for SMS: 1,601 characters")
    assert short_language.status_code == 422
    assert short_language.json() == {"error": "The reply is not complete."}


async def test_a_reply_goes_to_the_address_the_customer_last_wrote_from(
    running: Stack, settings: HiloSettings
) -> None:
    """Ana holds two emails once her profiles merged; she last wrote from the second: the reply
    box offers it, and the reply goes there, not to the first in alphabetical order."""
    svc = running.profile
    await svc.publish([message(1, "email", "From work", ago=timedelta(hours=2), email="a@ex.com")])
    await svc.wait_for_entries(1)
    await svc.publish([message(2, "email", "From home", ago=timedelta(hours=1), email="z@ex.com")])
    await svc.wait_for_entries(2)
    await svc.publish([signed_in_on_web(3, "a@ex.com")])
    await svc.wait_for_entries(3)
    await svc.publish([signed_in_on_web(4, "z@ex.com")])
    await svc.wait_for_entries(4)
    customer = await svc.customer_of("email", "z@ex.com")
    assert await svc.customer_of("email", "a@ex.com") == customer, "one person by now"
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        reply = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "email", "text": "Thanks, noted"},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )

    assert reply.status_code == 202, reply.text
    assert "Email · z@ex.com" in page.text
    command = await published_command(settings)
    assert command.identifiers.email == "z@ex.com"


async def test_a_reply_the_key_store_cannot_seal_is_a_503_saying_so_and_nothing_is_sent(
    running: Stack, settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealing the command reads the key store (MongoDB): with it away, the reply was a bare
    500 ("Refused (500)" on the page), where notes and done marks say to try again."""
    svc = running.profile
    await svc.publish([message(1, "whatsapp", "Where is my order?", ago=timedelta(minutes=5))])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("phone", PHONE)

    async def away(*_args: object) -> dict[str, bytes]:
        raise ServerSelectionTimeoutError("no servers found")

    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        monkeypatch.setattr(SubjectKeys, "get_or_create", away)
        reply = await client.post(
            f"/customers/{customer}/replies",
            json={"channel": "sms", "text": "On its way."},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )
        monkeypatch.undo()

    assert reply.status_code == 503, reply.text
    assert reply.json() == {"error": "The desk's database is not answering: try again in a moment."}
    assert (
        await read_topic(
            settings.kafka_bootstrap_servers,
            topic_name(Topic.OUTBOUND, settings),
            expected=0,
            timeout=2,
        )
        == []
    )


async def test_a_reply_retried_with_its_id_is_the_same_command(
    running: Stack, settings: HiloSettings
) -> None:
    """The page sends its id for the reply again when the agent retries (the first answer was
    lost, or Kafka confirmed too late): the channel sends each command id once."""
    svc = running.profile
    await svc.publish([message(1, "whatsapp", "Where is my order?", ago=timedelta(minutes=5))])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("phone", PHONE)
    reply = {"channel": "sms", "text": "On its way.", "command_id": str(uuid.uuid4())}
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        headers = {"X-CSRF-Token": csrf_of(page.text)}
        first = await client.post(f"/customers/{customer}/replies", json=reply, headers=headers)
        again = await client.post(f"/customers/{customer}/replies", json=reply, headers=headers)
        bad = await client.post(
            f"/customers/{customer}/replies", json={**reply, "command_id": "1"}, headers=headers
        )

    assert first.status_code == again.status_code == 202, first.text
    assert first.json() == again.json()
    assert first.json()["command_id"] != reply["command_id"], "made with agent and customer"
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND, settings), expected=2
    )
    opened = [await opened_command(settings, record.value) for record in records]
    assert {command.id for command in opened} == {first.json()["command_id"]}
    assert bad.status_code == 422


async def test_an_email_reply_goes_with_the_agents_subject_or_re_the_customers(
    running: Stack, settings: HiloSettings
) -> None:
    """Ana's email asked about her refund. The agent's reply answers `Re:` it unless the agent
    writes a subject; a subject of two lines (a header injected) goes on one, and one longer
    than a mail holds is refused saying why."""
    svc = running.profile
    asked = new_interaction(
        channel="email",
        instance="test",
        provider_event_id="mail-refund-1",
        identifiers=Identifiers(email="ana@example.com"),
        payload=MessageExchanged(
            direction=Direction.INBOUND,
            text="Where is my refund?",
            subject="Refund for order 1001",
            provider_message_id="<refund-1@mail.example.com>",
        ),
        occurred_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    await svc.publish([asked])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("email", "ana@example.com")
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        headers = {"X-CSRF-Token": csrf_of(page.text)}

        async def reply(**body: str) -> httpx.Response:
            return await client.post(
                f"/customers/{customer}/replies",
                json={"channel": "email", "text": "It went out today.", **body},
                headers=headers,
            )

        answered = await reply()
        titled = await reply(subject="  Your refund is on its way  ")
        injected = await reply(subject="Hi\r\nBcc: everyone@example.com")
        too_long = await reply(subject="s" * 999)

    assert (answered.status_code, titled.status_code, injected.status_code) == (202,) * 3
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND, settings), expected=3
    )
    subjects = {
        command.id: command.payload.subject
        for command in [await opened_command(settings, record.value) for record in records]
    }
    assert subjects == {
        answered.json()["command_id"]: "Re: Refund for order 1001",
        titled.json()["command_id"]: "Your refund is on its way",
        injected.json()["command_id"]: "Hi Bcc: everyone@example.com",
    }
    assert too_long.status_code == 422
    assert too_long.json()["error"] == "A subject holds at most 998 characters: shorten it."


async def next_entry(stream: httpx.Response) -> tuple[str, dict[str, object]]:
    """The next `entry` event of an SSE stream (within 15 s): its id and data."""
    event = await next_event(stream.aiter_lines(), {"entry"})
    return event["id"], json.loads(event["data"])


async def next_event(lines: AsyncIterator[str], kinds: set[str]) -> dict[str, str]:
    """The next event of one of `kinds` on an SSE stream's lines (within 15 s), as its fields;
    a `resync` fails the test (the page would have reloaded)."""
    event: dict[str, str] = {}
    async with asyncio.timeout(15):
        async for line in lines:
            if line == "":
                assert event.get("event") != "resync" or "resync" in kinds, "the page reloads"
                if event.get("event") in kinds:
                    return event
                event = {}
                continue
            field, _, value = line.partition(": ")
            event[field] = value
    raise AssertionError(f"the stream ended without a {kinds} event")


def data_attribute(html: str, name: str) -> str:
    """The value of the page's `data-<name>` (the live cursor, the ids it was rendered with);
    the test fails when the page has none."""
    found = re.search(rf'data-{name}="([^"]+)"', html)
    assert found, f"the page has no data-{name}"
    return found.group(1)


async def published_command(settings: HiloSettings) -> OutboundCommand:
    (record,) = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND, settings), expected=1
    )
    assert "+34612345678" not in (record.value or b"").decode()
    return await opened_command(settings, record.value)


async def test_a_long_journey_pages_filters_by_channel_and_marks_late_entries(
    running: Stack,
) -> None:
    svc = running.profile
    chatter = [
        message(n, "whatsapp" if n % 2 else "email", f"note {n}", ago=timedelta(minutes=60 - n))
        for n in range(60)
    ]
    await svc.publish(chatter)
    await svc.wait_for_entries(60)
    late = message(99, "sms", "sent from a plane", ago=timedelta(minutes=90))
    await svc.publish([late])
    await svc.wait_for_entries(61)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        first = await client.get(f"/customers/{customer}")
        older = re.search(r'href="([^"]+cursor=[^"]+)" rel="next"', first.text)
        assert older
        second = await client.get(older.group(1).replace("&amp;", "&"))
        whatsapp = await client.get(f"/customers/{customer}", params={"channel": "whatsapp"})
        odd = await client.get(f"/customers/{customer}", params={"type": "message&cursor=x"})

    ids = re.compile(r'<li class="entry[^"]*" id="e-([^"]+)"')
    assert len(ids.findall(first.text)) == 50
    assert len(ids.findall(second.text)) == 11
    assert set(ids.findall(first.text)).isdisjoint(ids.findall(second.text))
    assert "note 59" in first.text
    assert "sent from a plane" in second.text
    assert 'class="late"' in second.text
    assert 'rel="next"' not in second.text
    assert "data-live=" not in second.text, "an older page is not live"
    assert set(re.findall(r'data-channel="([a-z]+)"', whatsapp.text)) == {"whatsapp"}
    assert len(ids.findall(whatsapp.text)) == 30
    assert 'data-filters="&type=message%26cursor%3Dx"' in odd.text, "a filter stays one value"


async def test_a_channel_added_since_can_be_filtered_on_like_the_built_in_ones(
    running: Stack,
) -> None:
    """A channel team's new service (here `viber`) shows in the filters of its customers."""
    svc = running.profile
    await svc.publish(
        [
            message(1, "viber", "hola por viber", ago=timedelta(minutes=3)),
            message(2, "whatsapp", "hola por whatsapp", ago=timedelta(minutes=2)),
        ]
    )
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        viber = await client.get(f"/customers/{customer}", params={"channel": "viber"})

    assert 'name="channel" value="viber"' in page.text
    assert 'name="channel" value="whatsapp"' in page.text, "the built-in ones stay"
    assert set(re.findall(r'data-channel="([a-z]+)"', viber.text)) == {"viber"}
    assert 'name="channel" value="viber" checked' in viber.text


async def test_a_page_showing_only_messages_still_shows_what_became_of_them(
    running: Stack,
) -> None:
    """The status of a reply (here: not delivered) shows on it with the "Message" filter on,
    after a reload as it did live."""
    svc = running.profile
    sent = MessageExchanged(
        direction=Direction.OUTBOUND, text="Your shoes are ready", provider_message_id="wa-9"
    )
    reply = event("reply-1", "whatsapp", Identifiers(phone=PHONE), sent, ago=timedelta(minutes=2))
    not_delivered = MessageStatusChanged(
        provider_message_id="wa-9", status=DeliveryStatus.FAILED, error="131047"
    )
    failed = event(
        "status-1", "whatsapp", Identifiers(phone=PHONE), not_delivered, ago=timedelta(minutes=1)
    )
    await svc.publish([reply, failed])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}", params={"type": "message"})

    assert page.status_code == 200
    assert 'class="status s-failed"' in page.text


async def test_a_page_resumes_after_other_customers_entries_without_reloading(
    running: Stack,
) -> None:
    svc = running.profile
    customer = await customer_who_wrote(svc)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        after = data_attribute(page.text, "after")
        rendered_at = int(after.split(":")[1])
        busy = [
            message(n, "sms", "someone else", ago=timedelta(0), phone=f"+3469900{n:04}")
            for n in range(5)
        ]
        async with client.stream(
            "GET", f"/customers/{customer}/live", params={"after": after}
        ) as stream:
            lines = stream.aiter_lines()
            await svc.publish(busy)
            tick = await next_event(lines, {"tick"})
            while int(tick["id"].split(":")[1]) < rendered_at + len(busy):
                tick = await next_event(lines, {"tick"})

        ours = message(2, "whatsapp", "Still there?", ago=timedelta(0))
        await svc.publish([ours])
        async with client.stream(
            "GET", f"/customers/{customer}/live", headers={"Last-Event-ID": tick["id"]}
        ) as resumed:
            _, data = await next_entry(resumed)

    assert data["id"] == ours.id


def signed_in_on_web(n: int, email: str) -> Interaction:
    """The customer signs in on the web shop with their email, from the phone they wrote from:
    the two profiles are one person's, and merge (the one seen first survives)."""
    both = Identifiers(email=email, phone=PHONE)
    return event(f"sign-in-{n}", "web", both, Identified(traits={}), ago=timedelta(minutes=1))


def event(
    event_id: str, channel: str, identifiers: Identifiers, payload: Payload, *, ago: timedelta
) -> Interaction:
    """An interaction that happened `ago` before now."""
    return new_interaction(
        channel=channel,
        instance="test",
        provider_event_id=event_id,
        identifiers=identifiers,
        payload=payload,
        occurred_at=datetime.now(UTC) - ago,
    )


async def two_customers(svc: RunningProfileService) -> tuple[str, str]:
    """Ana wrote an email first, then (not yet known as Ana) a WhatsApp message: their ids."""
    await svc.publish([message(1, "email", "Hi, it is Ana", ago=timedelta(minutes=10), email=ANA)])
    await svc.wait_for_entries(1)
    await svc.publish([message(2, "whatsapp", "Hola", ago=timedelta(minutes=5))])
    await svc.wait_for_entries(2)
    return await svc.customer_of("email", ANA), await svc.customer_of("phone", PHONE)


ANA = "ana@example.com"


async def test_an_open_page_stops_and_says_so_when_its_customer_is_merged_into_another(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entries that follow are recorded under the survivor: the page would sit "live" and
    frozen. It stops, says why, and a reload shows the journey of both."""
    monkeypatch.setattr(desk_app, "IDENTITY_CHECK_SECONDS", 0.5)
    svc = running.profile
    ana, whatsapp = await two_customers(svc)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{whatsapp}")
        after = data_attribute(page.text, "after")
        async with client.stream(
            "GET", f"/customers/{whatsapp}/live", params={"after": after}, timeout=20
        ) as stream:
            await svc.publish([signed_in_on_web(3, ANA)])
            changed = await next_event(stream.aiter_lines(), {"identity-changed", "entry"})
        again = await client.get(f"/customers/{whatsapp}", follow_redirects=True)
        filtered = await client.get(
            f"/customers/{whatsapp}", params=[("channel", "whatsapp"), ("cursor", "x")]
        )

    assert changed["event"] == "identity-changed"
    assert filtered.headers["location"] == f"/customers/{ana}?channel=whatsapp", "filters kept"
    assert "Hola" in again.text
    assert "Hi, it is Ana" in again.text, "the reloaded page shows the survivor's journey"
    assert (await svc.customer_of("phone", PHONE)) == ana


async def test_a_page_reconnecting_after_its_customer_was_merged_away_is_told_at_once(
    running: Stack,
) -> None:
    """The merge happened while the browser was reconnecting: the stream opens on the ids the
    page was rendered with, and says at once that they are no longer one customer's."""
    svc = running.profile
    _, whatsapp = await two_customers(svc)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{whatsapp}")
        after = data_attribute(page.text, "after")
        ids = data_attribute(page.text, "ids")
        assert ids == whatsapp
        await svc.publish([signed_in_on_web(3, ANA)])
        await svc.wait_for_entries(3)
        async with client.stream(
            "GET",
            f"/customers/{whatsapp}/live",
            params={"after": after, "ids": ids},
        ) as stream:
            first = await next_event(stream.aiter_lines(), {"identity-changed", "entry", "tick"})

    assert first["event"] == "identity-changed"


async def test_a_page_goes_on_when_a_profile_is_merged_into_its_customer(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana's anonymous browsing joins her at sign-in: more of the same person, so the page keeps
    following her, and what comes next arrives as ever."""
    monkeypatch.setattr(desk_app, "IDENTITY_CHECK_SECONDS", 0.5)
    svc = running.profile
    ana = await customer_who_wrote(svc)
    anonymous = Identifiers(anonymous_id="anon-77")
    browsing = event("browse-1", "web", anonymous, Identified(traits={}), ago=timedelta(minutes=3))
    await svc.publish([browsing])
    await svc.wait_for_entries(2)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{ana}")
        after = data_attribute(page.text, "after")
        ids = data_attribute(page.text, "ids")
        async with client.stream(
            "GET",
            f"/customers/{ana}/live",
            params={"after": after, "ids": ids},
            timeout=20,
        ) as stream:
            known = Identifiers(anonymous_id="anon-77", phone=PHONE)
            sign_in = event("sign-in-anon", "web", known, Identified(traits={}), ago=timedelta(0))
            await svc.publish([sign_in])
            await svc.wait_for_entries(3)
            await asyncio.sleep(1)  # past the identity check, which must let the page go on
            later = message(5, "whatsapp", "Still me", ago=timedelta(0))
            await svc.publish([later])
            lines = stream.aiter_lines()
            seen = [await next_event(lines, {"identity-changed", "entry"}) for _ in range(2)]

    assert [event["event"] for event in seen] == ["entry", "entry"]
    assert json.loads(seen[-1]["data"])["id"] == later.id


async def test_an_open_page_shows_nobody_elses_entries_once_a_merge_is_undone(
    running: Stack,
) -> None:
    """After the split the WhatsApp profile is someone else's again: its entries, the ones
    handed back and the new ones, must not reach the page of the customer it was split from."""
    svc = running.profile
    ana, whatsapp = await two_customers(svc)
    await svc.publish([signed_in_on_web(3, ANA)])
    await svc.wait_for_entries(3)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{ana}")
        after = data_attribute(page.text, "after")
        async with client.stream(
            "GET", f"/customers/{ana}/live", params={"after": after}
        ) as stream:
            split = await svc.http.post(
                f"/v1/customers/{ana}/split",
                json={"merge": whatsapp, "by": "agent-7", "reason": "not the same person"},
            )
            assert split.status_code in (200, 202), split.text
            await svc.publish([message(4, "whatsapp", "Someone else here", ago=timedelta(0))])
            first = await next_event(stream.aiter_lines(), {"identity-changed", "entry"})

    assert first["event"] == "identity-changed", f"the page was sent {first.get('data')}"


async def test_a_profile_service_outage_is_answered_503_not_as_a_page_of_nothing(
    settings: HiloSettings, topics: list[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    async with (
        running_desk(desk_settings(settings, nobody, API_KEY)) as desk_url,
        signed_in(desk_url) as browser,
    ):
        inbox = await browser.get("/")
        panels = await browser.get("/customers/c1/panels")
        script = {"Accept": "*/*", "X-CSRF-Token": csrf_of(inbox.text)}
        reply = await browser.post(
            "/customers/c1/replies", json={"channel": "sms", "text": "Hi"}, headers=script
        )
        stream = await browser.get("/customers/c1/live", headers={"Accept": "text/event-stream"})
        async with browser.stream(
            "GET", "/customers/c1/live", params={"ids": "c1"}, headers={"Last-Event-ID": "x:0"}
        ) as reconnected:
            # A page open before the outage reconnects and goes on with the ids it was
            # rendered with, as an open stream does: no reload onto an error page.
            resumed = (reconnected.status_code, reconnected.headers["content-type"])

    assert resumed[0] == 200
    assert resumed[1].startswith("text/event-stream")
    assert inbox.status_code == 503
    assert inbox.headers["content-type"].startswith("text/html")
    assert PROFILES_DOWN in inbox.text
    assert panels.status_code == 503
    assert 'id="panels"' not in panels.text
    assert reply.status_code == 503
    assert reply.json() == {"error": PROFILES_DOWN}
    assert stream.status_code == 503
    assert stream.json() == {"error": PROFILES_DOWN}


async def test_an_edited_timeline_link_is_answered_400_saying_so_not_as_an_outage(
    running: Stack,
) -> None:
    svc = running.profile
    customer = await customer_who_wrote(svc)
    async with signed_in(running.desk_url) as browser:
        page = await browser.get(f"/customers/{customer}", params={"cursor": "edited"})

    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert LINK_REFUSED in page.text
    assert "cursor is not one this API returned" in page.text
    assert PROFILES_DOWN not in page.text


async def test_removing_an_agent_ends_their_sessions(
    running: Stack, settings: HiloSettings
) -> None:
    both = {AGENT: PASSWORD, "bo.agent": "bo's own long password"}
    before = desk_settings(settings, running.profile_url, API_KEY, agents=both)
    after = desk_settings(settings, running.profile_url, API_KEY)
    async with running_desk(before) as old_desk, running_desk(after) as new_desk:
        async with signed_in(old_desk, "bo.agent", both["bo.agent"]) as bo:
            removed = session_cookie(bo)
            still = await bo.get("/")
        async with signed_in(old_desk) as ana:
            kept = session_cookie(ana)
        async with httpx.AsyncClient(headers={"Accept": "text/html"}) as browser:
            gone = await browser.get(f"{new_desk}/", headers={"Cookie": f"hilo_desk={removed}"})
            stays = await browser.get(f"{new_desk}/", headers={"Cookie": f"hilo_desk={kept}"})

    assert still.status_code == 200
    assert gone.status_code == 303
    assert gone.headers["location"] == "/login?next=/"
    assert stays.status_code == 200


async def test_the_sixth_wrong_password_in_five_minutes_is_refused_unchecked(
    running: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=running.desk_url) as guesser:
        token = csrf_of((await guesser.get("/login")).text)
        tries = [
            await guesser.post(
                "/login", data={"agent": AGENT, "password": f"guess {n}", "csrf": token}
            )
            for n in range(6)
        ]
        right = await guesser.post(
            "/login", data={"agent": AGENT, "password": PASSWORD, "csrf": token}
        )

    assert [t.status_code for t in tries] == [401] * 5 + [429]
    assert "Too many failed sign-ins" in tries[-1].text
    assert tries[-1].headers["retry-after"] == "300"
    assert right.status_code == 429, "not even the right password, until the five minutes pass"


async def test_guesses_sent_all_at_once_are_checked_no_more_than_five_times(
    running: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=running.desk_url, timeout=60) as guesser:
        token = csrf_of((await guesser.get("/login")).text)
        tries = await asyncio.gather(
            *(
                guesser.post(
                    "/login", data={"agent": AGENT, "password": f"guess {n}", "csrf": token}
                )
                for n in range(12)
            )
        )

    statuses = sorted(t.status_code for t in tries)
    assert statuses == [401] * 5 + [429] * 7


async def test_colleagues_signing_in_at_once_from_one_address_are_all_let_in(
    running: Stack, settings: HiloSettings
) -> None:
    """Behind one office address, six right passwords at once are not six failures."""
    team = {f"agent-{n}": f"agent {n}'s own long password" for n in range(6)}
    office = desk_settings(settings, running.profile_url, API_KEY, agents=team)

    async def sign_in_as(desk_url: str, agent: str) -> int:
        async with httpx.AsyncClient(base_url=desk_url, timeout=60) as browser:
            token = csrf_of((await browser.get("/login")).text)
            answer = await browser.post(
                "/login", data={"agent": agent, "password": team[agent], "csrf": token}
            )
            return answer.status_code

    async with running_desk(office) as desk_url:
        statuses = await asyncio.gather(*(sign_in_as(desk_url, agent) for agent in team))

    assert statuses == [303] * 6


async def test_a_reply_after_the_session_expired_is_refused(
    running: Stack, settings: HiloSettings
) -> None:
    one_second = desk_settings(settings, running.profile_url, API_KEY, desk_session_hours=1 / 3600)
    async with running_desk(one_second) as desk_url, signed_in(desk_url) as browser:
        cookie = session_cookie(browser)
        token = csrf_of((await browser.get("/login")).text)
        await asyncio.sleep(2.2)
        async with httpx.AsyncClient(base_url=desk_url) as page_script:
            reply = await page_script.post(
                "/customers/c1/replies",
                json={"channel": "sms", "text": "Hi"},
                headers={"X-CSRF-Token": token, "Cookie": f"hilo_desk={cookie}"},
            )

    assert reply.status_code == 401
    assert reply.json() == {"detail": "sign in first"}


async def test_a_live_page_stops_streaming_when_its_session_expires(
    running: Stack, settings: HiloSettings
) -> None:
    svc = running.profile
    customer = await customer_who_wrote(svc)
    eight_seconds = desk_settings(
        settings, running.profile_url, API_KEY, desk_session_hours=8 / 3600
    )
    async with running_desk(eight_seconds) as desk_url, signed_in(desk_url) as browser:
        page = await browser.get(f"/customers/{customer}")
        after = data_attribute(page.text, "after")
        async with browser.stream(
            "GET", f"/customers/{customer}/live", params={"after": after}, timeout=15
        ) as stream:
            async with asyncio.timeout(15):
                lines = [line async for line in stream.aiter_lines()]
        again = await browser.get(
            f"/customers/{customer}/live", headers={"Accept": "text/event-stream"}
        )

    assert stream.status_code == 200
    assert lines[0] == "retry: 1000"
    assert lines[-3:] == ["event: signed-out", "data: {}", ""]
    assert again.status_code == 401


async def test_signing_out_ends_the_session_everywhere_its_cookie_was_copied(
    running: Stack,
) -> None:
    """A shop terminal: another tab's open live page, or a copy of the cookie, must not outlive
    the agent signing out."""
    customer = await customer_who_wrote(running.profile)
    async with signed_in(running.desk_url) as browser:
        page = await browser.get(f"/customers/{customer}")
        after = data_attribute(page.text, "after")
        copied = httpx.AsyncClient(
            base_url=running.desk_url,
            headers={"Accept": "text/html"},
            cookies={"hilo_desk": session_cookie(browser)},
        )
        async with (
            copied,
            copied.stream(
                "GET", f"/customers/{customer}/live", params={"after": after}, timeout=30
            ) as stream,
        ):
            before = await browser.get("/")
            await browser.post("/logout", data={"csrf": csrf_of(before.text)})
            async with asyncio.timeout(20):
                lines = [line async for line in stream.aiter_lines()]
            again = await copied.get("/")

    assert stream.status_code == 200
    assert lines[-3:] == ["event: signed-out", "data: {}", ""], "the open page stopped"
    assert again.status_code == 303, "the copied cookie no longer signs anyone in"


async def test_with_its_database_away_an_agent_still_reads_and_signs_out(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a session was signed out elsewhere is unknown then: reading goes on, and signing
    out still signs this browser out."""

    async def away(*_args: object) -> None:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(SignedOut, "includes", away)
    monkeypatch.setattr(SignedOut, "record", away)
    async with signed_in(running.desk_url) as browser:
        inbox = await browser.get("/")
        out = await browser.post("/logout", data={"csrf": csrf_of(inbox.text)})
        after = await browser.get("/")

    assert inbox.status_code == 200
    assert out.status_code == 303
    assert after.status_code == 303, "signed out"


async def test_a_customer_page_is_shown_while_the_pending_replies_do_not_answer(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's own lookups in the desk's database wait a second; the pending replies waited
    for the driver (7 s a page with MongoDB away). A lookup that never answers stands for it."""
    svc = running.profile
    await svc.publish([message(1, "whatsapp", "Where is my order?", ago=timedelta(minutes=5))])
    await svc.wait_for_entries(1)
    customer = await svc.customer_of("phone", PHONE)

    async def never(*_args: object) -> list[object]:
        await asyncio.Event().wait()
        return []

    monkeypatch.setattr(PendingReplies, "of", never)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}", timeout=20)

    assert page.status_code == 200


def session_cookie(client: httpx.AsyncClient) -> str:
    """The signed session cookie, to present it again as a copied cookie would be."""
    value = next(c.value for c in client.cookies.jar if c.name == "hilo_desk")
    assert value
    return value


async def test_the_customer_page_shows_the_offers_the_customer_qualifies_for(
    running: Stack, settings: HiloSettings
) -> None:
    now = datetime.now(UTC)
    price = price_schedule("SKU-RED-42", ("60.00", now - timedelta(days=1), 1))
    gold = percent_off(
        "gold-10",
        "Gold members: 10% off shoes",
        "SKU-RED-42",
        10,
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=1),
        conditions=Conditions(loyalty_tiers=["gold"]),
    )
    subscribers = percent_off(
        "news-5",
        "Subscribers: 5% off shoes",
        "SKU-RED-42",
        5,
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=1),
        conditions=Conditions(marketing_consent=True),
    )
    await publish_offer_records(
        settings,
        [
            offer_record(price_key("SKU-RED-42", "EUR"), 1, price=price),
            offer_record(promotion_key("gold-10"), 2, promotion=gold),
            offer_record(promotion_key("news-5"), 3, promotion=subscribers),
        ],
    )
    svc = running.profile
    await eventually(lambda: _offers_read(svc, 3))
    member = new_interaction(
        channel="web",
        instance="test",
        provider_event_id="identify-gold",
        identifiers=Identifiers(phone=PHONE),
        payload=Identified(traits={"loyalty_tier": "gold"}),
        occurred_at=now - timedelta(hours=1),
    )
    by_email_only = new_interaction(
        channel="web",
        instance="test",
        provider_event_id="consent-email",
        identifiers=Identifiers(phone=PHONE),
        payload=ConsentChanged(purpose="marketing", granted=True, channel="email"),
        occurred_at=now - timedelta(minutes=50),
    )
    await svc.publish([member, by_email_only])
    await svc.wait_for_entries(2)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        svc.service.app.state.api.offers = lambda: None  # as while the topic is being read
        unknown = await client.get(f"/customers/{customer}")

    offers = page.text[page.text.index('id="offers"') :]
    assert "Gold members: 10% off shoes</strong> (every channel" in offers
    assert "<s>60.00 EUR</s> <strong>54.00 EUR</strong>" in offers
    assert "Subscribers: 5% off shoes</strong> (Email, until" in offers, "not every channel"
    assert unknown.status_code == 200
    assert "Not known right now" in unknown.text[unknown.text.index('id="offers"') :]


async def _offers_read(svc: RunningProfileService, version: int) -> bool:
    return svc.service.offers.book.version >= version


async def test_a_frequent_buyer_shows_the_latest_orders_and_how_many_there_are(
    running: Stack,
) -> None:
    placed = [
        pickup_order().model_copy(
            update={
                "id": f"order-{n}",
                "payload": pickup_order().payload.model_copy(update={"order_id": f"WEB-{n}"}),
                "occurred_at": datetime.now(UTC) - timedelta(hours=3, minutes=-n),
            }
        )
        for n in range(RECENT_ORDERS + 3)
    ]
    svc = running.profile
    await svc.publish(placed)
    await svc.wait_for_entries(len(placed))
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")

    orders = page.text[page.text.index('id="orders"') : page.text.index('id="offers"')]
    assert f"The latest {RECENT_ORDERS} of {RECENT_ORDERS + 3} orders" in orders
    assert f"WEB-{RECENT_ORDERS + 2}" in orders, "the latest is shown"
    assert "WEB-0<" not in orders, "the oldest three are only in the journey"
    assert f"lifetime value {59.90 * (RECENT_ORDERS + 3):.2f} EUR" in orders


async def test_an_order_partly_returned_in_other_stores_shows_what_was_paid_back(
    running: Stack,
) -> None:
    returned = new_interaction(
        channel="store",
        instance="test",
        provider_event_id="return:BCN-02:RET-1",
        identifiers=Identifiers(phone=PHONE),
        payload=OrderRefunded(
            order_id="WEB-7731",
            refunded_via=SalesChannel.STORE,
            store_id="BCN-02",
            items=[LineItem(sku="SKU-1", name="Red shoes", quantity=1)],
            amount=Money(amount=Decimal("20.00"), currency=ISO4217("EUR")),
        ),
        occurred_at=datetime.now(UTC) - timedelta(hours=1),
    )
    abroad = new_interaction(
        channel="store",
        instance="test",
        provider_event_id="return:NYC-01:RET-9",
        identifiers=Identifiers(phone=PHONE),
        payload=OrderRefunded(
            order_id="WEB-7731",
            refunded_via=SalesChannel.STORE,
            store_id="NYC-01",
            amount=Money(amount=Decimal("15.00"), currency=ISO4217("USD")),
        ),
        occurred_at=datetime.now(UTC) - timedelta(minutes=30),
    )
    svc = running.profile
    await svc.publish([pickup_order(), returned, abroad])
    await svc.wait_for_entries(3)
    customer = await svc.customer_of("phone", PHONE)
    async with signed_in(running.desk_url) as client:
        page = await client.get(f"/customers/{customer}")
        orders_only = await client.get(f"/customers/{customer}", params={"type": "order"})
        calls_only = await client.get(f"/customers/{customer}", params={"type": "call"})

    refund_row = "Refund on order WEB-7731"
    assert refund_row in orders_only.text, "a filter to orders shows what was paid back"
    assert refund_row not in calls_only.text
    orders = page.text[page.text.index('id="orders"') : page.text.index('id="offers"')]
    assert "lifetime value 39.90 EUR" in orders, "dollars are not taken off euros"
    assert "20.00 EUR refunded, 1 item(s) returned" in orders
    assert "15.00 USD refunded in another currency, not taken off" in orders, (
        "a refund in another currency is shown on its order, not left unsaid"
    )
    assert "Refund on order WEB-7731: 20.00 EUR, 1 item(s) returned, in store BCN-02" in page.text


async def test_with_kafka_away_the_desk_starts_shows_journeys_and_refuses_replies_saying_why(
    settings: HiloSettings, topics: list[str]
) -> None:
    """The journey comes from the profile API, not from Kafka: a desk (re)started during a
    Kafka outage serves it, stays ready (degraded), and a reply is refused with the reason."""
    away = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    async with (
        running_profile_service(settings) as profile,
        served(profile.service.app, lifespan="off") as profile_url,
    ):
        customer = await customer_who_wrote(profile)
        async with (
            running_desk(desk_settings(away, profile_url, API_KEY)) as desk_url,
            signed_in(desk_url) as client,
        ):
            page = await client.get(f"/customers/{customer}")
            reply = await client.post(
                f"/customers/{customer}/replies",
                json={"channel": "sms", "text": "On its way."},
                headers={"X-CSRF-Token": csrf_of(page.text)},
            )
            ready = await client.get("/health/ready")

    assert page.status_code == 200
    assert "Hola" in page.text
    assert reply.status_code == 503
    assert "Kafka is not answering" in reply.json()["error"]
    assert "Send it again unchanged" in reply.json()["error"], "not: it was not queued"
    assert ready.status_code == 200
    assert ready.json() == {"status": "degraded", "checks": {"keys": "ok", "kafka": "failing"}}
