"""An agent at the desk, in a real browser (Debian's chromium through Playwright), on the real
stack: Kafka, MongoDB, the customer-profile service, the WhatsApp and SMS channel services, the
desk, and Twilio stood in for by a local server speaking its Messages API.

The agent signs in, finds the customer by a phone typed as a person types it, sees the order, the
dropped call and the chat of three channels in one timeline, watches a WhatsApp message arrive
live, replies by SMS (a double click sends it once), and sees the reply and its delivery status
appear. The customer page is saved as `docs/agent-desk.png`. An agent whose sign-in ran out is
told so when sending, and keeps what they wrote.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, async_playwright, expect
from pydantic import SecretStr
from pydantic_extra_types.currency_code import ISO4217

from agent_desk import app as desk_app
from agent_desk import channel_services
from agent_desk.auth import hash_password
from agent_desk.channel_services import ChannelServices
from agent_desk.testing import (
    AGENT,
    PASSWORD,
    DeskStack,
    behind_service,
    chromium,
    csrf_of,
    desk_stack,
    opened_command,
    signed_in,
)
from hilo.contract import (
    CallHappened,
    CallStatus,
    Campaign,
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
    PageViewed,
    SalesChannel,
    new_interaction,
)
from hilo.offers.model import (
    OfferRecord,
    price_key,
    promotion_key,
)
from hilo.outbound import INTERRUPTED
from hilo.settings import HiloSettings
from hilo.testkit.offers import offer_record, percent_off, price_schedule, publish_offer_records
from hilo.testkit.probes import read_topic
from hilo.topics import Topic, topic_name

COLLEAGUE = "bo.agent"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "agent-desk.png"
WAITING_SCREENSHOT = SCREENSHOT.with_name("agent-desk-reply-waiting.png")
NOT_RUNNING_SCREENSHOT = SCREENSHOT.with_name("agent-desk-service-not-running.png")
QUEUE_SCREENSHOT = SCREENSHOT.with_name("agent-desk-queue.png")
NOTES_SCREENSHOT = SCREENSHOT.with_name("agent-desk-notes.png")
PHONE = "+34612345678"
REPLY = "Sorry the call dropped! Your shoes are ready at BCN-01."
EMAIL_SUBJECT = "Your invoice for order WEB-7731"
SAMPLE = Path(__file__).resolve().parents[1] / "services/channel-whatsapp/tests/samples"


def spring_offers() -> list[OfferRecord]:
    """The shoes' list price, and a promotion for everyone on the web and in stores that
    started after the customer's order."""
    now = datetime.now(UTC)
    price = price_schedule("SKU-RED-42", ("59.90", now - timedelta(days=30), 1))
    spring = percent_off(
        "spring-10",
        "Spring: 10% off running shoes",
        "SKU-RED-42",
        10,
        channels=["web", "store"],
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=14),
    )
    return [
        offer_record(price_key("SKU-RED-42", "EUR"), 1, price=price),
        offer_record(promotion_key("spring-10"), 2, promotion=spring),
    ]


def history() -> list[Interaction]:
    """What the customer did before the agent looks: a click-and-collect order on the web shop,
    a call that dropped, an SMS."""
    now = datetime.now(UTC)
    order = OrderPlaced(
        order_id="WEB-7731",
        sold_via=SalesChannel.ONLINE,
        fulfilment=Fulfilment.STORE_PICKUP,
        store_id="BCN-01",
        items=[LineItem(sku="SKU-RED-42", name="Red running shoes", quantity=1)],
        total=Money(amount=Decimal("59.90"), currency=ISO4217("EUR")),
    )
    call = CallHappened(
        direction=Direction.INBOUND,
        status=CallStatus.DROPPED,
        provider_call_id="CA-1",
        duration_seconds=42,
    )
    return [
        new_interaction(
            channel="web",
            instance="test",
            provider_event_id="order",
            identifiers=Identifiers(email="ana.garcia@example.com", phone=PHONE),
            payload=order,
            occurred_at=now - timedelta(hours=5),
        ),
        new_interaction(
            channel="voice",
            instance="test",
            provider_event_id="call",
            identifiers=Identifiers(phone=PHONE),
            payload=call,
            occurred_at=now - timedelta(minutes=12),
        ),
    ]


def goodwill_refund() -> Interaction:
    """The web shop paid 10 EUR back on the order, after the call, for the wait."""
    refund = OrderRefunded(
        order_id="WEB-7731",
        refunded_via=SalesChannel.ONLINE,
        amount=Money(amount=Decimal("10.00"), currency=ISO4217("EUR")),
    )
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id="refund",
        identifiers=Identifiers(email="ana.garcia@example.com"),
        payload=refund,
        occurred_at=datetime.now(UTC) - timedelta(minutes=5),
    )


def refund_abroad() -> Interaction:
    """A store in London paid 8 GBP back on the euro order: no rate to take it off with."""
    refund = OrderRefunded(
        order_id="WEB-7731",
        refunded_via=SalesChannel.STORE,
        store_id="LON-02",
        amount=Money(amount=Decimal("8.00"), currency=ISO4217("GBP")),
    )
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id="return:LON-02:RET-3",
        identifiers=Identifiers(email="ana.garcia@example.com"),
        payload=refund,
        occurred_at=datetime.now(UTC) - timedelta(minutes=4),
    )


def newsletter_click() -> Interaction:
    """Before all that, the customer followed the spring newsletter's link (Mailgun's click)."""
    link = PageViewed(
        url="https://shop.example/spring?utm_campaign=spring",
        path="/spring",
        campaign=Campaign(name="spring", source="newsletter", medium="email"),
    )
    return new_interaction(
        channel="email",
        instance="test",
        provider_event_id="click",
        identifiers=Identifiers(email="ana.garcia@example.com"),
        payload=link,
        occurred_at=datetime.now(UTC) - timedelta(hours=6),
    )


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium())
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        yield await context.new_page()
        await browser.close()


async def test_an_agent_follows_the_customer_live_and_answers_by_sms(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    await publish_offer_records(settings, spring_offers())
    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await stack.profile.publish([goodwill_refund(), refund_abroad(), newsletter_click()])
        await stack.profile.wait_for_entries(5)
        await sign_in_and_find(page, stack.desk_url)
        await expect(page.locator("#came-from")).to_contain_text(
            "Campaign spring (newsletter / email) on Email"
        )
        orders = page.locator("#orders")
        await expect(orders).to_contain_text("lifetime value 49.90 EUR")
        await expect(orders.locator(".refunded")).to_have_text(
            ["10.00 EUR refunded", "8.00 GBP refunded in another currency, not taken off"]
        )
        await watch_whatsapp_arrive(page, stack)
        await page.get_by_role("button", name="Take it").click()
        await expect(page.locator("#handling")).to_contain_text("Handled by you")
        await reply_by_sms(page)
        await expect(page.locator("#handling")).to_contain_text("Answered")
        offers = page.locator("#offers")
        await expect(offers).to_contain_text("Spring: 10% off running shoes")
        await expect(offers).to_contain_text("59.90 EUR 53.91 EUR")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
    (sms,) = stack.twilio.accepted
    assert sms.to == PHONE
    assert sms.body == REPLY


def others_writing() -> list[Interaction]:
    """Cy's email waits 40 minutes; Bo's chat was answered by email."""
    now = datetime.now(UTC)

    def message(event: str, email: str, direction: Direction, minutes_ago: float) -> Interaction:
        return new_interaction(
            channel="web" if direction == Direction.INBOUND else "email",
            instance="test",
            provider_event_id=event,
            identifiers=Identifiers(email=email),
            payload=MessageExchanged(
                direction=direction, text=f"{event} text", provider_message_id=event
            ),
            occurred_at=now - timedelta(minutes=minutes_ago),
        )

    return [
        message("cy-asks", "cy@example.com", Direction.INBOUND, 40),
        message("bo-asks", "bo@example.com", Direction.INBOUND, 30),
        message("bo-answered", "bo@example.com", Direction.OUTBOUND, 20),
    ]


async def test_an_agent_works_the_queue_takes_a_customer_and_answers_them_on_another_channel(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who waits longest comes first (past the 30-minute target, in red), and one who writes
    while the queue is open joins it; taking a conversation keeps the reply being written; an
    SMS answers the dropped call, and the queue follows; a thank-you is marked done."""
    monkeypatch.setattr(desk_app, "INBOX_REFRESH_SECONDS", 0.5)
    async with desk_stack(settings, desk_first_reply_minutes=30) as stack:
        await stack.profile.publish([*history(), *others_writing()])
        await stack.profile.wait_for_entries(5)
        await sign_in(page, stack.desk_url)
        await page.get_by_role("link", name="Waiting for a reply").click()
        rows = page.locator("#inbox tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("cy@example.com 40 min · overdue nobody")
        await expect(rows.nth(0).locator(".wait")).to_have_class("wait overdue")
        await expect(rows.nth(1)).to_contain_text("ana.garcia@example.com 12 min")
        await expect(rows.nth(1).locator(".wait")).to_have_class("wait")
        await page.screenshot(path=str(QUEUE_SCREENSHOT))
        await page.get_by_role("searchbox", name="Find a customer").fill("typing")
        await stack.profile.publish([others_writing_now()])
        await expect(rows).to_have_count(3)
        await expect(rows.nth(2)).to_contain_text("dee@example.com under a minute")
        await expect(page.get_by_role("searchbox", name="Find a customer")).to_have_value("typing")
        await rows.nth(1).get_by_role("link").click()
        handling = page.locator("#handling")
        await expect(handling).to_contain_text("Waiting for a reply for 12 min")
        await expect(handling).to_contain_text("Nobody handles it yet")
        await page.get_by_label("Channel").select_option("sms")
        await page.get_by_role("textbox", name="Message").fill(REPLY)
        await page.evaluate("window.notReloaded = true")
        await page.get_by_role("button", name="Take it").click()
        await expect(page.locator("#handling")).to_contain_text("Handled by you")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(REPLY)
        assert await page.evaluate("window.notReloaded") is True
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator("#reply-result")).to_have_text("Queued on SMS.")
        await expect(page.locator("#handling")).to_contain_text(
            "Answered: nobody is waiting for a reply.", timeout=20_000
        )
        await page.goto(f"{stack.desk_url}/?show=mine")
        await expect(rows).to_have_count(1)
        await expect(rows.nth(0)).to_contain_text("answered")
        await page.get_by_role("link", name="Waiting for a reply").click()
        await expect(rows).to_have_count(2)
        await rows.nth(0).get_by_role("link").click()
        await page.get_by_role("button", name="Mark as done").click()
        await expect(page.locator("#handling")).to_contain_text("Marked done by you")
        mark = page.locator("#timeline li").filter(has_text="Marked done by")
        await expect(mark).to_have_count(1, timeout=20_000)  # the journey's entry, live
        await expect(mark).to_contain_text("Desk")
        await page.get_by_role("link", name="Inbox").click()
        await page.get_by_role("link", name="Waiting for a reply").click()
        await expect(rows).to_have_count(1)
        await expect(rows.nth(0)).to_contain_text("dee@example.com")


async def test_the_queue_keeps_the_agents_place_and_says_when_it_stops_updating(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyboard user on a row keeps it when the queue moves (it was replaced every 15 s, the
    focus thrown back to the top of the page); a queue the desk cannot read again says since
    when it is not updated, and why, instead of going stale without a word."""
    monkeypatch.setattr(desk_app, "INBOX_REFRESH_SECONDS", 0.5)
    async with desk_stack(settings, desk_first_reply_minutes=30) as stack:
        await stack.profile.publish(others_writing())
        await stack.profile.wait_for_entries(3)
        await sign_in(page, stack.desk_url)
        await page.get_by_role("link", name="Waiting for a reply").click()
        rows = page.locator("#inbox tbody tr")
        await expect(rows).to_have_count(1)
        cy = rows.nth(0).get_by_role("link")
        await cy.focus()
        await stack.profile.publish([others_writing_now()])
        await expect(rows).to_have_count(2)
        await expect(cy).to_be_focused()
        await expect(rows.nth(0).locator(".wait")).to_have_text("40 min · overdue")

        state = page.locator("#inbox-state")
        await expect(state).to_be_hidden()
        waiting = re.compile(r".*/\?show=waiting$")
        await page.route(waiting, lambda route: route.fulfill(status=503, body="away"))
        await expect(state).to_contain_text("the desk is not answering")
        await expect(state).to_contain_text("Not updated since")
        await page.unroute(waiting)
        await expect(state).to_be_hidden()
        await page.context.clear_cookies()
        await expect(state).to_contain_text("your sign-in ended. Reload to sign in again.")
        await expect(rows).to_have_count(2)


async def test_the_reply_box_follows_the_customer_to_another_channel(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """Ana wrote on WhatsApp, then texts: the box says SMS, where Send goes (it stayed on
    WhatsApp: the channels offered and their warnings had not changed, only the default)."""
    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await watch_whatsapp_arrive(page, stack)
        text = new_interaction(
            channel="sms",
            instance="test",
            provider_event_id="sms-after-whatsapp",
            identifiers=Identifiers(phone=PHONE),
            payload=MessageExchanged(
                direction=Direction.INBOUND, text="Texting now", provider_message_id="sms-9"
            ),
            occurred_at=datetime.now(UTC),
        )
        await stack.profile.publish([text])
        await expect(page.locator("#timeline")).to_contain_text("Texting now")
        await expect(page.get_by_label("Channel")).to_have_value("sms", timeout=10_000)


async def test_an_open_customer_page_shows_a_colleague_taking_the_conversation(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana has Cy's page open; Bo takes Cy from his own desk. Ana's page says so without a
    reload, and her draft stays."""
    monkeypatch.setattr(desk_app, "PANELS_REFRESH_SECONDS", 0.5)
    monkeypatch.setattr(ChannelServices, "watch", asleep)  # no services event refreshes them
    async with on_cys_page(settings, page) as (stack, cy):
        await expect(page.locator("#handling")).to_contain_text("Nobody handles it yet")
        await page.get_by_role("textbox", name="Message").fill(REPLY)
        await page.evaluate("window.notReloaded = true")
        await page.wait_for_function("window.hiloLive && window.hiloLive.connected")
        await page.wait_for_timeout(1_000)  # the refresh the stream's opening makes is done
        taken = await colleague_posts(stack, f"/customers/{cy}/handling", action="take", shown="")
        assert taken.status_code == 200, taken.text

        await expect(page.locator("#handling")).to_contain_text(f"Handled by {COLLEAGUE}")
        await expect(page.get_by_role("button", name="Take over")).to_be_visible()
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(REPLY)
        assert await page.evaluate("window.notReloaded") is True


async def test_agents_leave_each_other_notes_on_the_customer_page(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana notes something about Cy while her reply waits in the box; Bo's note appears on her
    open page; she deletes her own. Nothing reloads, and the draft stays."""
    monkeypatch.setattr(desk_app, "PANELS_REFRESH_SECONDS", 0.5)
    async with on_cys_page(settings, page) as (stack, cy):
        notes = page.locator("#notes-list")
        await expect(notes).to_contain_text("No notes yet.")
        await page.get_by_role("textbox", name="Message").fill(REPLY)
        await page.evaluate("window.notReloaded = true")
        await page.get_by_role("textbox", name="Note").fill("Prefers a call after 6 pm.")
        await page.get_by_role("button", name="Add note").click()
        await expect(notes.locator("li")).to_have_count(1)
        await expect(notes).to_contain_text("Prefers a call after 6 pm.")
        await expect(notes).to_contain_text("You, ")
        await expect(page.get_by_role("textbox", name="Note")).to_have_value("")
        noted = await colleague_posts(
            stack, f"/customers/{cy}/notes", text="Her parcel left the warehouse late."
        )
        assert noted.status_code == 200, noted.text
        await expect(notes.locator("li")).to_have_count(2)
        await expect(notes.locator("li").nth(0)).to_contain_text(f"{COLLEAGUE}, ")
        await page.locator("#notes").screenshot(path=str(NOTES_SCREENSHOT))
        await notes.locator("li").nth(1).get_by_role("button", name="Delete").click()
        await expect(notes.locator("li")).to_have_count(1)
        await expect(notes).not_to_contain_text("Prefers a call")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(REPLY)
        assert await page.evaluate("window.notReloaded") is True


@asynccontextmanager
async def on_cys_page(settings: HiloSettings, page: Page) -> AsyncIterator[tuple[DeskStack, str]]:
    """A desk Ana and her colleague Bo sign in to, with Ana's browser on Cy's page."""
    agents = [SecretStr(f"{name}:{hash_password(PASSWORD)}") for name in (AGENT, COLLEAGUE)]
    async with desk_stack(settings, desk_agents=agents) as stack:
        await stack.profile.publish(others_writing())
        await stack.profile.wait_for_entries(3)
        cy = await stack.profile.customer_of("email", "cy@example.com")
        await sign_in(page, stack.desk_url)
        await page.goto(f"{stack.desk_url}/customers/{cy}")
        yield stack, cy


async def colleague_posts(stack: DeskStack, path: str, **form: str) -> httpx.Response:
    """What Bo's page script posts from his own desk (a form of Cy's page)."""
    async with signed_in(stack.desk_url, COLLEAGUE, PASSWORD) as bo:
        page = (await bo.get(path.rsplit("/", 1)[0])).text
        return await bo.post(
            path, data={**form, "csrf": csrf_of(page)}, headers={"X-Requested-With": "fetch"}
        )


async def asleep(_services: ChannelServices) -> None:
    """A channel services watch that never tells of a change."""
    await asyncio.Event().wait()


def others_writing_now() -> Interaction:
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id="dee-asks",
        identifiers=Identifiers(email="dee@example.com"),
        payload=MessageExchanged(
            direction=Direction.INBOUND, text="dee-asks text", provider_message_id="dee-asks"
        ),
        occurred_at=datetime.now(UTC),
    )


async def sign_in(page: Page, desk_url: str) -> None:
    await page.goto(desk_url)
    await expect(page).to_have_url(f"{desk_url}/login?next=/")
    await page.get_by_label("Agent").fill(AGENT)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Open conversations")).to_be_visible()


async def sign_in_and_find(page: Page, desk_url: str) -> None:
    await sign_in(page, desk_url)
    await page.get_by_role("searchbox", name="Find a customer").fill("0034 612 34 56 78")
    await page.get_by_role("button", name="Find").click()
    # What was typed stays out of the history and the title names nobody (a shared terminal).
    await expect(page).to_have_url(re.compile(r"/customers/[0-9a-f]+$"))
    await expect(page).to_have_title("Customer · Hilo desk")
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("Order WEB-7731 placed")
    await expect(timeline).to_contain_text("Inbound call dropped after 42s")
    await expect(page.locator("#orders")).to_contain_text("Click & collect at BCN-01")
    await expect(page.locator("#live-state")).to_have_text("live")


async def reply_by_email(page: Page) -> None:
    """Queue a reply by email from the open customer page, with a subject: the box for it is
    there for an email only."""
    subject = page.get_by_role("textbox", name="Subject")
    await page.get_by_label("Channel").select_option("sms")
    await expect(subject).to_be_hidden()
    await page.get_by_label("Channel").select_option("email")
    await subject.fill(EMAIL_SUBJECT)
    await page.get_by_role("textbox", name="Message").fill("Your invoice is attached.")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#reply-result")).to_have_text("Queued on Email.")
    await expect(subject).to_have_value("")


async def watch_whatsapp_arrive(page: Page, stack: DeskStack) -> None:
    await stack.whatsapp_from(PHONE, "Hi! My call dropped, can I pick the shoes up today?")
    profile = stack.profile
    arrived = page.locator("#timeline .entry.type-message.inbound").first
    await expect(arrived).to_contain_text("can I pick the shoes up today?", timeout=10_000)
    await expect(arrived).to_contain_text("WhatsApp")
    assert await page.evaluate("window.hiloLive.received") >= 1
    conversation = page.locator("#conversation")
    await expect(conversation).to_contain_text("Started on Phone")
    await expect(conversation).to_contain_text("continued on WhatsApp")
    await expect(page.get_by_label("Channel")).to_have_value("whatsapp")
    view = await profile.get(f"/v1/customers/{await profile.customer_of('phone', PHONE)}")
    assert view["view"]["conversation"]["channels"] == ["voice", "whatsapp"]


async def reply_by_sms(page: Page) -> None:
    await page.get_by_label("Channel").select_option("sms")
    await page.get_by_role("textbox", name="Message").fill(REPLY)
    # Left from an earlier template reply: on SMS only the text goes; once sent, the whole reply
    # is cleared, so the next WhatsApp text is not sent as this template again.
    await page.locator("#template-box").evaluate("box => { box.open = true; }")
    await page.get_by_label("Template name").fill("order_update")
    await page.get_by_role("button", name="Send").dblclick()  # still one SMS (asserted after)
    await expect(page.locator("#reply-result")).to_have_text("Queued on SMS.")
    await expect(page.get_by_label("Template name")).to_have_value("")
    await expect(page.locator("#template-box")).not_to_have_attribute("open", "")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    reply = page.locator("#timeline .entry.outbound", has_text="Your shoes are ready")
    await expect(reply).to_have_count(1)
    await expect(reply.locator("[data-status]")).to_have_text("delivered", timeout=20_000)
    await expect(reply).not_to_have_class("pending")


async def test_a_reply_the_provider_refuses_shows_the_providers_reason(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    async with desk_stack(settings) as stack:
        stack.twilio.refuse(PHONE, code=21610)
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await page.get_by_label("Channel").select_option("sms")
        await page.get_by_role("textbox", name="Message").fill("Are you still there?")
        await page.get_by_role("button", name="Send").click()
        reply = page.locator("#timeline .entry", has_text="Are you still there?")
        await expect(reply.locator("[data-status]")).to_have_text(
            "failed: 21610: Attempt to send to unsubscribed recipient", timeout=20_000
        )
        await page.reload()
        await expect(page.locator("#timeline")).to_contain_text(
            "Reply not sent: 21610: Attempt to send to unsubscribed recipient"
        )
    assert stack.twilio.accepted == []


async def test_a_reply_its_channel_service_does_not_take_stays_on_the_page_and_says_it_waits(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """channel-email runs here but is behind: it has joined its group on `outbound` and takes
    nothing. The reply by email is queued and not sent. A reload still shows it sending, and
    once it has waited `HILO_DESK_REPLY_WAITING_SECONDS` the page says it is not confirmed yet,
    and why."""
    async with (
        behind_service(settings, "email"),
        desk_stack(settings, desk_reply_waiting_seconds=3) as stack,
    ):
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await reply_by_email(page)
        await page.reload()
        pending = page.locator("#timeline .entry.pending")
        await expect(pending).to_have_count(1)
        await expect(pending.locator(".badge")).to_have_text("Email")
        await expect(pending).to_contain_text("Reply queued on Email")
        await expect(pending.locator("[data-status]")).to_have_text(
            "not confirmed yet", timeout=15_000
        )
        await expect(pending.locator(".waiting-note")).to_be_visible()
        await expect(pending.locator(".waiting-note")).to_contain_text(
            "The Email channel has not recorded this reply yet"
        )
        await pending.screenshot(path=str(WAITING_SCREENSHOT))


async def test_a_channel_whose_service_is_not_running_says_so_before_and_after_the_reply(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No channel-email runs at all, as in a deployment that left it out or while it is down:
    Kafka has no member in its group. The reply box says so when Email is picked; the reply is
    queued all the same and shows at once why it waits, also after a reload."""
    monkeypatch.setattr(channel_services, "EVERY_SECONDS", 0.3)
    told = asyncio.Event()
    refresh = ChannelServices.refresh

    async def refresh_and_tell(services: ChannelServices) -> None:
        await refresh(services)
        if "email" in services.stopped:
            told.set()

    monkeypatch.setattr(ChannelServices, "refresh", refresh_and_tell)
    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await asyncio.wait_for(told.wait(), 30)  # the page shows what the desk knows when drawn
        await sign_in_and_find(page, stack.desk_url)
        await page.get_by_label("Channel").select_option("email")
        await expect(page.locator("#reply-warning")).to_have_text(
            "No Email channel service is running right now: a reply is kept and goes out once "
            "one starts."
        )
        await reply_by_email(page)
        for reloaded in (False, True):
            if reloaded:
                await page.reload()
            pending = page.locator("#timeline .entry.pending")
            await expect(pending).to_have_count(1)
            await expect(pending.locator("[data-status]")).to_have_text("service not running")
            await expect(pending.locator(".waiting-note")).to_be_visible()
            await expect(pending.locator(".waiting-note")).to_contain_text(
                "No Email channel service is running: this reply is kept"
            )
        await pending.screenshot(path=str(NOT_RUNNING_SCREENSHOT))

        # The service starts while the page is open: the row and the reply box follow, unreloaded.
        async with behind_service(settings, "email"):
            await expect(pending.locator("[data-status]")).to_have_text(
                re.compile("^(sending|not confirmed yet)$"), timeout=20_000
            )
            await page.get_by_label("Channel").select_option("email")
            await expect(page.locator("#reply-warning")).to_be_hidden(timeout=10_000)
        assert await page.evaluate("window.hiloLive.connected"), "the page was not reloaded"


async def test_a_reply_reported_perhaps_not_sent_then_delivered_says_so_live(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """channel-email was stopped while Mailgun answered: the reply is reported "perhaps not
    sent" on its report's id, which the queued row carries. Mailgun's later `delivered` comes on
    that id too (`channel_email.events`): the open page shows it as a row of its own, where
    the status fold on the queued row used to drop it."""
    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await reply_by_email(page)
        (command,) = await read_topic(
            settings.kafka_bootstrap_servers, topic_name(Topic.OUTBOUND, settings), expected=1
        )
        assert (await opened_command(settings, command.value)).payload.subject == EMAIL_SUBJECT
        queued = page.locator("#timeline .entry.pending")
        report = await queued.get_attribute("data-provider-id")
        assert report is not None
        assert report.startswith("hilo-outbound:")

        await stack.profile.publish([email_status(report, "failed", INTERRUPTED)])
        await expect(queued.locator("[data-status]")).to_contain_text("failed")
        await stack.profile.publish([email_status(report, "delivered")])

        await expect(page.locator("#timeline")).to_contain_text(
            "Reply sent after all: Email reports it delivered.", timeout=15_000
        )


def email_status(report: str, status: str, error: str | None = None) -> Interaction:
    """What channel-email records of a reply it reported not confirmed, and Mailgun's later
    word on it."""
    return new_interaction(
        channel="email",
        instance="test",
        provider_event_id=f"{report}:{status}",
        identifiers=Identifiers(email="ana.garcia@example.com"),
        payload=MessageStatusChanged(
            provider_message_id=report, status=DeliveryStatus(status), error=error
        ),
        occurred_at=datetime.now(UTC),
    )


async def test_a_page_open_when_the_sign_in_expires_says_so_and_keeps_the_text(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    async with desk_stack(settings, session_hours=10 / 3600) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await page.get_by_label("Channel").select_option("sms")
        await page.get_by_role("textbox", name="Message").fill("Are you still there?")
        await expect(page.locator("#live-state")).to_have_text(
            "signed out: reload to sign in again", timeout=20_000
        )
        await page.get_by_role("button", name="Send").click()

        result = page.locator("#reply-result")
        await expect(result).to_contain_text("Your sign-in has expired")
        await expect(result).to_have_class("error")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(
            "Are you still there?"
        )
        await expect(page.get_by_role("button", name="Send")).to_be_enabled()
        await expect(page.locator("#timeline .entry.pending")).to_have_count(0)
    assert stack.twilio.accepted == []


async def test_a_page_open_when_its_customer_is_merged_says_so_and_keeps_the_text(
    settings: HiloSettings, topics: list[str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana's work email was known first; she signs in with it from her phone while an agent has
    her phone's profile open: the page stops following it, says why, and keeps the reply."""
    monkeypatch.setattr(desk_app, "IDENTITY_CHECK_SECONDS", 0.5)
    work = Identifiers(email="ana@work.example")
    async with desk_stack(settings) as stack:
        await stack.profile.publish([identified("work", work, hours_ago=30)])
        await stack.profile.wait_for_entries(1)
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(3)
        await sign_in_and_find(page, stack.desk_url)
        await page.get_by_role("textbox", name="Message").fill("Your shoes are ready")

        both = Identifiers(email="ana@work.example", phone=PHONE)
        await stack.profile.publish([identified("signed-in", both, hours_ago=0)])

        await expect(page.locator("#live-state")).to_have_text(
            "this customer was merged or split: reload to see their journey as it is now",
            timeout=20_000,
        )
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(
            "Your shoes are ready"
        )
        await page.reload()
        await expect(page.locator("#timeline")).to_contain_text("Order WEB-7731 placed")
        await expect(page.locator("#live-state")).to_have_text("live")


def identified(event: str, identifiers: Identifiers, *, hours_ago: float) -> Interaction:
    """The customer signs in on the web shop with these identifiers."""
    return new_interaction(
        channel="web",
        instance="test",
        provider_event_id=event,
        identifiers=identifiers,
        payload=Identified(traits={}),
        occurred_at=datetime.now(UTC) - timedelta(hours=hours_ago),
    )


async def test_a_reply_whose_answer_was_lost_is_sent_once_when_the_agent_retries(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """The desk queued the reply but its answer never reached the page (a dropped connection):
    the agent presses Send again, and the customer still gets one SMS."""
    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)

        async def answer_lost(route: Route) -> None:
            await route.fetch()  # the desk has it and queues it
            await route.abort("connectionreset")

        await page.route("**/replies", answer_lost, times=1)
        await page.get_by_label("Channel").select_option("sms")
        await page.get_by_role("textbox", name="Message").fill(REPLY)
        await page.get_by_role("button", name="Send").click()
        result = page.locator("#reply-result")
        await expect(result).to_have_text("The desk did not answer. Try again.")
        await page.get_by_role("button", name="Send").click()
        await expect(result).to_have_text("Queued on SMS.")
        reply = page.locator("#timeline .entry.outbound", has_text="Your shoes are ready")
        await expect(reply.locator("[data-status]")).to_have_text("delivered", timeout=20_000)
        await expect(reply).to_have_count(1)
        # A later reply goes after the retry on the customer's partition: once it is sent, the
        # channel has handled the retry too.
        await page.get_by_role("textbox", name="Message").fill("See you soon.")
        await page.get_by_role("button", name="Send").click()
        later = page.locator("#timeline .entry.outbound", has_text="See you soon.")
        await expect(later.locator("[data-status]")).to_have_text("delivered", timeout=20_000)
    assert [sms.body for sms in stack.twilio.accepted] == [REPLY, "See you soon."]


async def test_the_panels_follow_a_customer_the_desk_cannot_reply_to(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """A loyalty-card-only customer has no channel to reply on (no reply box): their orders
    panel still follows the journey live."""
    card = Identifiers(loyalty_id="LOY-000981")
    async with desk_stack(settings) as stack:
        await stack.profile.publish([store_order("R-1", card, minutes_ago=60)])
        await stack.profile.wait_for_entries(1)
        customer = await stack.profile.customer_of("loyalty_id", "LOY-000981")
        await sign_in(page, stack.desk_url)
        await page.goto(f"{stack.desk_url}/customers/{customer}")
        await expect(page.locator("#live-state")).to_have_text("live")
        await expect(page.locator("#reply-form")).to_have_count(0)
        await expect(page.locator("#orders")).to_contain_text("BCN-01:R-1")

        await stack.profile.publish([store_order("R-2", card, minutes_ago=0)])

        await expect(page.locator("#timeline")).to_contain_text("BCN-01:R-2", timeout=10_000)
        await expect(page.locator("#orders")).to_contain_text("BCN-01:R-2", timeout=10_000)


def store_order(receipt: str, customer: Identifiers, *, minutes_ago: float) -> Interaction:
    """A till receipt in store BCN-01 for the customer's loyalty card."""
    return new_interaction(
        channel="store",
        instance="test",
        provider_event_id=f"receipt:{receipt}",
        identifiers=customer,
        payload=OrderPlaced(
            order_id=f"BCN-01:{receipt}",
            sold_via=SalesChannel.STORE,
            fulfilment=Fulfilment.IN_STORE,
            store_id="BCN-01",
            items=[LineItem(sku="SOCK-3", name="Socks", quantity=1)],
            total=Money(amount=Decimal("4.95"), currency=ISO4217("EUR")),
        ),
        occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


@pytest.mark.parametrize("writing", ["Message", "Template name", "Note"])
async def test_a_resync_while_a_reply_is_being_written_keeps_it(
    settings: HiloSettings, topics: list[str], page: Page, writing: str
) -> None:
    """The desk restarted (or another instance answered the stream): the page cannot resume
    and would reload, but not over a reply or a note being written."""

    async def from_another_desk(route: Route) -> None:
        # The stream of a desk since gone: its position names another epoch, and the browser
        # reconnects with it (Last-Event-ID) after the `retry` asked for.
        body = "retry: 3000\nid: another-epoch:1\nevent: tick\ndata: {}\n\n"
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await page.route(re.compile(r".*/live\?.*"), from_another_desk, times=1)
        await sign_in(page, stack.desk_url)
        await page.get_by_role("searchbox", name="Find a customer").fill(PHONE)
        await page.get_by_role("button", name="Find").click()
        await page.locator("#template-box").evaluate("box => { box.open = true; }")
        await page.get_by_role("textbox", name=writing, exact=True).fill("order_ready")
        await expect(page.locator("#live-state")).to_have_text(
            "not live: reload once your reply is sent", timeout=20_000
        )
        await expect(page.get_by_role("textbox", name=writing, exact=True)).to_have_value(
            "order_ready"
        )


async def test_template_parameters_go_one_per_line_commas_and_all(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """A price ("59,90 €") and an address ("Calle Mayor, 5") are one parameter each."""
    sent: list[Any] = []

    async def keep(route: Route) -> None:
        sent.append(route.request.post_data_json)
        await route.continue_()

    async with desk_stack(settings) as stack:
        await stack.profile.publish(history())
        await stack.profile.wait_for_entries(2)
        await sign_in_and_find(page, stack.desk_url)
        await page.route("**/replies", keep)
        await page.get_by_label("Channel").select_option("sms")
        await page.locator("#template-box").evaluate("box => { box.open = true; }")
        await page.get_by_label("Template name").fill("order_ready")
        await page.get_by_label("Parameters (one per line)").fill("59,90 €\nCalle Mayor, 5\n")
        await page.get_by_role("textbox", name="Message").fill("Ready")
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator("#reply-result")).to_have_text("Queued on SMS.")

    assert [body["template_parameters"] for body in sent] == [["59,90 €", "Calle Mayor, 5"]]


async def test_the_reply_box_follows_the_number_the_customer_writes_from_now(
    settings: HiloSettings, topics: list[str], page: Page
) -> None:
    """Ana has two phones on her loyalty card; she texted from the first when the page opened,
    then texts from the second: the box says the reply goes to the second, as Send does."""
    card, first, second = "LOY-000777", "+34611000001", "+34611000002"

    def sms_from(number: str, event: str, minutes_ago: float) -> Interaction:
        return new_interaction(
            channel="sms",
            instance="test",
            provider_event_id=event,
            identifiers=Identifiers(phone=number),
            payload=MessageExchanged(
                direction=Direction.INBOUND, text=f"Hola desde {event}", provider_message_id=event
            ),
            occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        )

    async with desk_stack(settings) as stack:
        await stack.profile.publish(
            [store_order("R-7", Identifiers(loyalty_id=card, phone=first), minutes_ago=90)]
        )
        await stack.profile.wait_for_entries(1)
        await stack.profile.publish([sms_from(first, "sms-1", minutes_ago=30)])
        await stack.profile.wait_for_entries(2)
        customer = await stack.profile.customer_of("loyalty_id", card)
        await sign_in(page, stack.desk_url)
        await page.goto(f"{stack.desk_url}/customers/{customer}")
        channel = page.get_by_label("Channel")
        await expect(channel.locator("option[value=sms]")).to_have_text(f"SMS · {first}")

        await stack.profile.publish(
            [store_order("R-8", Identifiers(loyalty_id=card, phone=second), minutes_ago=5)]
        )
        await stack.profile.wait_for_entries(3)
        await stack.profile.publish([sms_from(second, "sms-2", minutes_ago=0)])
        await expect(page.locator("#timeline")).to_contain_text("Hola desde sms-2")
        await expect(channel.locator("option[value=sms]")).to_have_text(
            f"SMS · {second}", timeout=10_000
        )
        await expect(channel).to_have_value("sms")
