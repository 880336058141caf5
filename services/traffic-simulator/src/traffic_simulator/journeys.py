"""One person's journey as the requests each provider would send, in event-time order.

Browse anonymously and fill a cart on the web, sign in, ask on WhatsApp, call (some calls drop
and the agent notes that the WhatsApp chat continues), write an email, some ask on Messenger and
are called back, pay in the store with a loyalty card, and thank the shop by SMS. Some also add
the promoted product to the web cart and buy it in store at the quoted prices, or are charged an
old price at a till (`traffic_simulator.offers`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from hilo.contract import conversation_id
from hilo.providers.meta import signed_headers as meta_headers
from hilo.providers.twilio import signed_headers as twilio_headers
from traffic_simulator.offers import (
    CURRENCY,
    PROMOTION_RECEIPT_MINUTE,
    STALE_RECEIPT_MINUTE,
    WEB_CART_MINUTE,
    Charge,
    OfferPlan,
)
from traffic_simulator.people import Person
from traffic_simulator.settings import SimulatorSettings

BUSINESS_PHONE = "+14155552671"
WHATSAPP_NUMBER_ID = "106540352242922"
PAGE_ID = "104560109012345"


@dataclass(frozen=True)
class Step:
    """One provider request; `events` is how many journey entries it makes."""

    channel: str
    url: str
    body: bytes
    headers: dict[str, str]
    events: int = 1


CAMPAIGNS = (
    "utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "utm_source=instagram&utm_medium=social&utm_campaign=spring",
    "",
)
"""Where the simulated people come from, in turn: the spring newsletter, an Instagram post of
the same campaign, or straight to the shop (journey-analytics' `campaigns`)."""


SPRING_AD = {
    "source_url": "https://fb.me/spring-ad",
    "source_id": "120212345678901234",
    "source_type": "ad",
    "headline": "Spring sale",
    "ctwa_clid": "simulated-click",
}
"""The click-to-WhatsApp ad those who came to the shop straight found the chat through."""


def from_ad(person: Person) -> dict[str, str] | None:
    """The ad's referral on the first WhatsApp message of those no link brought to the shop."""
    return SPRING_AD if not _campaign_query(person) else None


def landing_url(person: Person) -> str:
    """The home page as the person reached it: tagged with a campaign for two in three."""
    query = _campaign_query(person)
    return "https://shop.example.com/" + (f"?{query}" if query else "")


def _campaign_query(person: Person) -> str:
    """The person's turn in `CAMPAIGNS`: the link that brought them, or "" for none."""
    return CAMPAIGNS[person.number % len(CAMPAIGNS)]


def journey(
    person: Person, settings: SimulatorSettings, start: datetime, offers: OfferPlan | None = None
) -> list[Step]:
    """The person's requests; `offers` adds the offers journeys' lines at the prices it holds."""
    build = _Builder(person, settings, start)
    offers = offers or OfferPlan()
    steps = [
        build.web("page", 0, {"name": "Home", "properties": {"url": landing_url(person)}}),
        build.web("track", 1, {"event": "Product Viewed", "properties": build.product()}),
        build.web("track", 2, {"event": "Product Added", "properties": build.cart_line()}),
        build.web(
            "identify",
            3,
            {
                "traits": {
                    "email": person.email,
                    "first_name": person.first_name,
                    "last_name": person.last_name,
                }
            },
        ),
    ]
    if offers.web_cart is not None:
        steps.append(
            build.web(
                "track",
                WEB_CART_MINUTE,
                {"event": "Product Added", "properties": build.charged_line(offers.web_cart)},
            )
        )
    steps += [
        build.whatsapp(60, f"Hola! Is the {person.product[1]} available in 42?", from_ad(person)),
        build.twilio_call(120),
    ]
    if person.drops_a_call:
        steps.append(
            build.call_outcome(build.call_sid(120), 121, "dropped", build.whatsapp_conversation())
        )
    steps.append(build.csat(130, "voice", score=3 + person.number % 3))
    steps.append(build.email(180, "Pick-up in store", "Can I pick it up in Barcelona tomorrow?"))
    if person.uses_messenger:
        steps.append(build.messenger(240, "Do you also sell rain covers?"))
        steps.append(
            build.call_outcome(
                f"CC-{build.event_id('250')}", 250, "completed", build.messenger_conversation()
            )
        )
    steps.append(build.receipt(24 * 60))
    if offers.store_receipt is not None:
        steps.append(build.receipt(PROMOTION_RECEIPT_MINUTE, "promotion", offers.store_receipt))
    if offers.stale_receipt is not None:
        steps.append(build.receipt(STALE_RECEIPT_MINUTE, "stale", offers.stale_receipt))
    if person.returns_the_product:
        steps.append(build.store_return(36 * 60))
    steps.append(build.sms("Thanks, great service!"))
    return steps


class _Builder:
    def __init__(self, person: Person, settings: SimulatorSettings, start: datetime) -> None:
        self.person = person
        self.settings = settings
        self.start = start

    def at(self, minutes: int) -> datetime:
        return self.start + timedelta(minutes=minutes)

    def event_id(self, name: str) -> str:
        return f"sim-{self.person.loyalty_id}-{name}"

    def product(self) -> dict[str, Any]:
        sku, name, price = self.person.product
        return {
            "product_id": sku,
            "sku": sku,
            "name": name,
            "price": float(price),
            "currency": "EUR",
        }

    def cart_line(self) -> dict[str, Any]:
        return {**self.product(), "cart_id": f"cart-{self.person.loyalty_id}", "quantity": 1}

    def charged_line(self, charge: Charge) -> dict[str, Any]:
        """A cart line at the price the offers service quoted (Segment sends numbers)."""
        return {
            "product_id": charge.sku,
            "sku": charge.sku,
            "name": charge.name,
            "price": float(charge.unit_price),
            "currency": CURRENCY,
            "cart_id": f"cart-{self.person.loyalty_id}",
            "quantity": 1,
        }

    def csat(self, minutes: int, about: str, score: int) -> Step:
        """The site's satisfaction survey after a contact (`Survey Answered`, channel-web)."""
        properties = {"survey_id": "after-contact", "metric": "csat", "score": score}
        return self.web(
            "track",
            minutes,
            {"event": "Survey Answered", "properties": {**properties, "about_channel": about}},
        )

    def web(self, call: str, minutes: int, document: dict[str, Any]) -> Step:
        key = self.settings.web_write_key.get_secret_value()
        body = {
            "anonymousId": self.person.anonymous_id,
            "messageId": self.event_id(f"web-{minutes}"),
            "timestamp": self.at(minutes).isoformat(),
            **document,
        }
        return Step(
            "web",
            f"{self.settings.web_url}/v1/{call}",
            json.dumps(body).encode(),
            {
                "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
                "Content-Type": "application/json",
            },
        )

    def whatsapp_conversation(self) -> str:
        return conversation_id(
            "whatsapp", f"{WHATSAPP_NUMBER_ID}:{self.person.wa_id}", self._conversation_key
        )

    def whatsapp(self, minutes: int, text: str, referral: dict[str, str] | None = None) -> Step:
        message: dict[str, Any] = {
            "from": self.person.wa_id,
            "id": f"wamid.{self.event_id(str(minutes))}",
            "timestamp": str(int(self.at(minutes).timestamp())),
            "type": "text",
            "text": {"body": text},
        }
        if referral is not None:
            message["referral"] = referral
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": BUSINESS_PHONE.lstrip("+"),
                "phone_number_id": WHATSAPP_NUMBER_ID,
            },
            "contacts": [{"profile": {"name": self.person.first_name}, "wa_id": self.person.wa_id}],
            "messages": [message],
        }
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": value}]}],
            }
        ).encode()
        secret = self.settings.whatsapp_app_secret.get_secret_value()
        return Step(
            "whatsapp",
            f"{self.settings.whatsapp_url}/webhooks/whatsapp",
            body,
            meta_headers(body, secret),
        )

    def _twilio(
        self, channel: str, base: str, public: str | None, path: str, params: list[tuple[str, str]]
    ) -> Step:
        token = self.settings.twilio_auth_token.get_secret_value()
        headers = twilio_headers((public or base) + path, params, token)
        return Step(channel, base + path, urlencode(params).encode(), headers)

    def call_sid(self, minutes: int) -> str:
        return f"CA{self.event_id(str(minutes))}"

    def twilio_call(self, minutes: int) -> Step:
        params = [
            ("CallSid", self.call_sid(minutes)),
            ("CallStatus", "completed"),
            ("Direction", "inbound"),
            ("From", self.person.phone),
            ("To", BUSINESS_PHONE),
            ("CallDuration", "184"),
            ("Timestamp", format_datetime(self.at(minutes))),
        ]
        return self._twilio(
            "voice",
            self.settings.voice_url,
            self.settings.voice_public_url,
            "/webhooks/twilio/voice/status",
            params,
        )

    def call_outcome(self, call_id: str, minutes: int, status: str, continues: str) -> Step:
        """The agent's wrap-up. A call back after Messenger knows both the phone and the PSID."""
        messenger = continues == self.messenger_conversation()
        customer: dict[str, str] = {"phone": self.person.phone}
        if messenger:
            customer["messenger_psid"] = self.person.messenger_psid
        document = {
            "call_id": call_id,
            "customer": customer,
            "direction": "outbound" if messenger else "inbound",
            "status": status,
            "started_at": self.at(minutes).isoformat(),
            "duration_seconds": 95,
            "agent_id": "agent-7",
            "disposition": "order_question",
            "summary": "Line dropped; continued on WhatsApp"
            if status == "dropped"
            else "Called back about the Messenger question",
            "continues_conversation": continues,
        }
        return Step(
            "voice",
            f"{self.settings.voice_url}/v1/calls",
            json.dumps(document).encode(),
            {
                "X-API-Key": self.settings.voice_api_key.get_secret_value(),
                "Content-Type": "application/json",
            },
        )

    def email(self, minutes: int, subject: str, text: str) -> Step:
        mail = (
            f"From: {self.person.first_name} <{self.person.email}>\r\n"
            f"To: support@shop.example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{self.event_id(str(minutes))}@mail.example.com>\r\n"
            f"Date: {format_datetime(self.at(minutes))}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{text}\r\n"
        ).encode()
        return Step(
            "email",
            f"{self.settings.email_url}/v1/messages/mime",
            mail,
            {
                "X-API-Key": self.settings.email_api_key.get_secret_value(),
                "Content-Type": "message/rfc822",
            },
        )

    def messenger_conversation(self) -> str:
        return conversation_id(
            "messenger", f"{PAGE_ID}:{self.person.messenger_psid}", self._conversation_key
        )

    @property
    def _conversation_key(self) -> bytes:
        return self.settings.subject_pepper.get_secret_value().encode()

    def messenger(self, minutes: int, text: str) -> Step:
        timestamp = int(self.at(minutes).timestamp() * 1000)
        body = json.dumps(
            {
                "object": "page",
                "entry": [
                    {
                        "id": PAGE_ID,
                        "time": timestamp,
                        "messaging": [
                            {
                                "sender": {"id": self.person.messenger_psid},
                                "recipient": {"id": PAGE_ID},
                                "timestamp": timestamp,
                                "message": {
                                    "mid": f"m_{self.event_id(str(minutes))}",
                                    "text": text,
                                },
                            }
                        ],
                    }
                ],
            }
        ).encode()
        secret = self.settings.meta_app_secret.get_secret_value()
        return Step(
            "social",
            f"{self.settings.social_url}/webhooks/social",
            body,
            meta_headers(body, secret),
        )

    def receipt(self, minutes: int, name: str = "", charge: Charge | None = None) -> Step:
        """The person's product, or `charge`'s line (a receipt of its own, `receipt-<name>`)."""
        if charge is None:
            sku, product, price = self.person.product
        else:
            sku, product, price = charge.sku, charge.name, str(charge.unit_price)
        document = {
            "store_id": "BCN-01",
            "till_id": "T2",
            "receipt_id": self.event_id(f"receipt-{name}" if name else "receipt"),
            "occurred_at": self.at(minutes).isoformat(),
            "currency": "EUR",
            "lines": [{"sku": sku, "name": product, "quantity": 1, "unit_price": price}],
            "total": price,
            "payment_method": "card",
            "customer": self.till_customer(),
        }
        return self._till("/v1/receipts", document)

    def store_return(self, minutes: int) -> Step:
        """The person's product, bought on the Barcelona receipt, brought back to Girona."""
        sku, product, price = self.person.product
        document = {
            "store_id": "GRO-01",
            "return_id": self.event_id("return"),
            "occurred_at": self.at(minutes).isoformat(),
            "currency": "EUR",
            "order_id": f"BCN-01:{self.event_id('receipt')}",
            "lines": [{"sku": sku, "name": product, "quantity": 1, "unit_price": price}],
            "refund_total": price,
            "reason": "changed their mind",
            "customer": self.till_customer(),
        }
        return self._till("/v1/returns", document)

    def till_customer(self) -> dict[str, str]:
        return {
            "loyalty_id": self.person.loyalty_id,
            "phone": self.person.phone,
            "email": self.person.email,
        }

    def _till(self, path: str, document: dict[str, Any]) -> Step:
        return Step(
            "store",
            f"{self.settings.store_url}{path}",
            json.dumps(document).encode(),
            {
                "X-API-Key": self.settings.store_api_key.get_secret_value(),
                "Content-Type": "application/json",
            },
        )

    def sms(self, text: str) -> Step:
        params = [
            ("MessageSid", f"SM{self.event_id('sms')}"),
            ("From", self.person.phone),
            ("To", BUSINESS_PHONE),
            ("Body", text),
            ("NumMedia", "0"),
        ]
        return self._twilio(
            "sms",
            self.settings.sms_url,
            self.settings.sms_public_url,
            "/webhooks/twilio/sms",
            params,
        )


def chats(person: Person, settings: SimulatorSettings) -> dict[str, str]:
    """The conversation ids the simulated contact centre names, by channel: the ids the channels
    give this person's WhatsApp (and Messenger) chats when they share the simulator's pepper."""
    build = _Builder(person, settings, datetime.now(UTC))
    named = {"whatsapp": build.whatsapp_conversation()}
    if person.uses_messenger:
        named["messenger"] = build.messenger_conversation()
    return named


def journey_start(person: Person, now: datetime | None = None) -> datetime:
    """Each person's story starts on a different day of the last two weeks."""
    now = now or datetime.now(UTC)
    return (now - timedelta(days=2 + person.number % 12, hours=person.number % 7)).replace(
        microsecond=0
    )
