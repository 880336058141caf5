"""The desk's rules and bookkeeping, without infrastructure: reply policy, status folding,
search readings, passwords, the sign-in throttle, where a sign-in may lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from agent_desk.app import _display_name, _local, _when, desk_templates, waiting_for_review
from agent_desk.auth import Agents, SignInThrottle, hash_password
from agent_desk.policy import ReplyOption, default_channel, refusal, reply_options, too_long
from agent_desk.replies import Thread, last_contact, reply_command, thread_of, written_from
from agent_desk.search import Match, as_address, find_customers, readings
from agent_desk.timeline import attach_statuses, row
from hilo.contract import normalise_phone
from hilo.contract.outbound import OutboundMessage
from hilo.outbound import CHECK_FIRST, UNCONFIRMED

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)
WINDOWS = {"whatsapp": WINDOW, "messenger": WINDOW, "instagram": WINDOW}


def profile(**view: Any) -> dict[str, Any]:
    return {
        "customer_id": "c1",
        "identifiers": [
            {"kind": "email", "value": "ana@example.com"},
            {"kind": "phone", "value": "+34612345678"},
        ],
        "view": view,
    }


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def why(
    p: dict[str, Any], channel: str, *, template: bool = False, purpose: str = "service"
) -> str | None:
    option = next(o for o in reply_options(p, ["whatsapp", "sms", "email"]) if o.channel == channel)
    return refusal(p, option, template=template, purpose=purpose, now=NOW, windows=WINDOWS)


def test_channels_are_offered_where_the_customer_has_an_address() -> None:
    options = reply_options(profile(), ["whatsapp", "sms", "email", "messenger"])

    assert [(o.channel, o.address) for o in options] == [
        ("whatsapp", "+34612345678"),
        ("sms", "+34612345678"),
        ("email", "ana@example.com"),
    ]


def test_a_whatsapp_user_known_by_their_user_id_is_answered_there_not_at_another_phone() -> None:
    """A user with a username writes with their business-scoped id only; the phone the profile
    holds (from a call, a receipt) may be a landline or someone else's."""
    p = profile()
    p["identifiers"].append({"kind": "whatsapp_user_id", "value": "ES.1502576394655843"})

    [whatsapp] = [o for o in reply_options(p, ["whatsapp"]) if o.channel == "whatsapp"]

    assert (whatsapp.address_kind, whatsapp.address) == ("whatsapp_user_id", "ES.1502576394655843")


def test_a_whatsapp_reply_goes_to_the_id_the_customer_last_wrote_from_of_either_kind() -> None:
    """The kind was fixed first (a WhatsApp id before a user id), then its latest address: a
    customer whose latest message came by their user id alone was answered at an older
    WhatsApp id the profile held (two accounts merged into one profile: another person)."""
    p = profile()
    p["identifiers"] += [
        {"kind": "whatsapp_id", "value": "34600000001"},
        {"kind": "whatsapp_user_id", "value": "ES.ABCDEF123456"},
    ]
    latest = {"whatsapp": {"whatsapp_user_id": "ES.ABCDEF123456"}}
    by_number = {"whatsapp": {"whatsapp_id": "34600000001", "phone": "+34600000001"}}

    [by_user_id] = reply_options(p, ["whatsapp"], written_from=latest)
    [older] = reply_options(p, ["whatsapp"], written_from=by_number)

    assert (by_user_id.address_kind, by_user_id.address) == ("whatsapp_user_id", "ES.ABCDEF123456")
    assert (older.address_kind, older.address) == ("whatsapp_id", "34600000001")


def test_the_reply_goes_where_the_customer_last_wrote_in_the_open_conversation() -> None:
    p = profile(
        last_inbound={"email": at(1), "whatsapp": at(3), "sms": at(50)},
        conversation={"channels": ["voice", "whatsapp"]},
    )

    assert default_channel(p, reply_options(p, ["sms", "whatsapp", "email"])) == "whatsapp"
    assert default_channel(profile(), reply_options(profile(), ["sms", "email"])) == "sms"


def test_whatsapp_text_only_inside_the_window_and_templates_always() -> None:
    inside = profile(last_inbound={"whatsapp": at(23)})
    outside = profile(last_inbound={"whatsapp": at(25)})

    assert why(inside, "whatsapp") is None
    assert why(outside, "whatsapp") == (
        "Outside WhatsApp's 24-hour window: the customer last wrote 25 hours ago. "
        "Only an approved template can be sent."
    )
    assert why(profile(), "whatsapp") is not None
    assert why(outside, "whatsapp", template=True) is None


def test_messenger_and_instagram_replies_only_inside_metas_window() -> None:
    """Meta refuses a page's reply after its window ("outside of allowed window"): the agent
    reads why before sending (before, after the box was cleared), and no template helps."""

    def why_on(
        channel: str, kind: str, hours_ago: float | None, **windows: timedelta
    ) -> str | None:
        p = profile(last_inbound={} if hours_ago is None else {channel: at(hours_ago)})
        p["identifiers"].append({"kind": kind, "value": "scoped-1"})
        [option] = reply_options(p, [channel])
        return refusal(
            p, option, template=True, purpose="service", now=NOW, windows={**WINDOWS, **windows}
        )

    assert why_on("messenger", "messenger_psid", 23) is None
    assert why_on("messenger", "messenger_psid", 25) == (
        "Outside Messenger's 24-hour window: the customer last wrote 25 hours ago. "
        "Meta refuses replies after it: reach them on another channel."
    )
    assert why_on("instagram", "instagram_sid", None) == (
        "Outside Instagram's 24-hour window: the customer never wrote on Instagram. "
        "Meta refuses replies after it: reach them on another channel."
    )
    assert why_on("messenger", "messenger_psid", 100, messenger=timedelta(days=7)) is None
    marketing = profile(
        last_inbound={"messenger": at(100)},
        consent=[{"purpose": "marketing", "channel": None, "granted": True, "at": at(200)}],
    )
    marketing["identifiers"].append({"kind": "messenger_psid", "value": "scoped-1"})
    [option] = reply_options(marketing, ["messenger"])
    seven_days = {**WINDOWS, "messenger": timedelta(days=7)}
    assert refusal(
        marketing, option, template=False, purpose="marketing", now=NOW, windows=seven_days
    ), "HUMAN_AGENT is for service replies: marketing keeps the 24-hour window"


@pytest.mark.parametrize(
    ("channel", "text", "refused"),
    [
        ("sms", "a" * 1_600, False),
        ("sms", "a" * 1_601, True),
        ("messenger", "a" * 2_001, True),
        ("instagram", "é" * 500, False),
        ("instagram", "é" * 501, True),
        ("whatsapp", "a" * 4_096, False),
        ("email", "a" * 100_000, False),
    ],
)
def test_a_text_longer_than_the_provider_takes_is_refused_before_it_goes(
    channel: str, text: str, refused: bool
) -> None:
    assert (too_long(channel, text) is not None) is refused


def test_the_agent_reads_how_long_the_text_is_and_what_the_channel_takes() -> None:
    assert too_long("sms", "a" * 1_700) == (
        "Too long for SMS: 1,700 characters, and it takes 1,600. Shorten it, or send it in parts."
    )


def test_an_opt_out_blocks_its_channel_until_the_customer_opts_in_again() -> None:
    stop = {"purpose": "contact", "channel": "sms", "granted": False, "at": at(5)}
    start = {"purpose": "contact", "channel": "sms", "granted": True, "at": at(1)}

    assert why(profile(consent=[stop]), "sms") == (
        "The customer opted out of SMS on 02 Dec 2026: nothing more can be sent there."
    )
    assert why(profile(consent=[stop]), "email") is None
    assert why(profile(consent=[stop, start]), "sms") is None


def test_marketing_needs_consent_for_that_channel_or_every_channel() -> None:
    everywhere = {"purpose": "marketing", "channel": None, "granted": True, "at": at(5)}
    email_off = {"purpose": "marketing", "channel": "email", "granted": False, "at": at(1)}

    assert why(profile(), "sms", purpose="marketing") == (
        "The customer has not consented to marketing on SMS."
    )
    assert why(profile(consent=[everywhere]), "sms", purpose="marketing") is None
    assert why(profile(consent=[everywhere, email_off]), "email", purpose="marketing") is not None


def entry(n: int, kind: str, **payload: Any) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "occurred_at": at(n),
        "channel": "sms",
        "type": kind,
        "summary": kind,
        "payload": {"kind": kind, **payload},
    }


def test_statuses_fold_into_their_message_and_the_furthest_one_wins() -> None:
    rows = attach_statuses(
        [
            entry(1, "message_status", provider_message_id="SM1", status="read"),
            entry(2, "message_status", provider_message_id="SM1", status="delivered"),
            entry(3, "message", provider_message_id="SM1", direction="outbound", text="Hi"),
            entry(4, "message_status", provider_message_id="SM-elsewhere", status="failed"),
        ]
    )

    assert [(r["id"], r["status"]) for r in rows] == [("e3", "read"), ("e4", None)]


@pytest.mark.parametrize(
    ("typed", "kinds"),
    [
        (" Ana@Example.COM ", ["email"]),
        ("0034 612 34 56 78", ["phone", "whatsapp_id", "loyalty_id", "order", "customer_id"]),
        ("(612) 345-678", ["phone", "whatsapp_id", "loyalty_id", "order", "customer_id"]),
        ("WEB-7731", ["loyalty_id", "order", "customer_id"]),
        (
            "US.13491208655302741918",
            ["whatsapp_user_id", "loyalty_id", "order", "customer_id"],
        ),
    ],
)
def test_search_reads_what_a_person_types(typed: str, kinds: list[str]) -> None:
    assert readings(typed) == kinds


def test_only_configured_agents_sign_in_with_their_own_password() -> None:
    agents = Agents([SecretStr(f"ana:{hash_password('s3cret-words')}")])

    assert agents.verify("ana", "s3cret-words")
    assert not agents.verify("ana", "wrong")
    assert not agents.verify("bo", "s3cret-words")
    with pytest.raises(ValueError, match="agent-id"):
        Agents([SecretStr("ana:plaintext")])
    assert agents.ids == {"ana"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_stops_guessing_per_agent_and_per_address_for_five_minutes() -> None:
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    for n in range(20):
        assert not throttle.blocked("ana", f"10.0.{n}.1")
        throttle.failed("ana", f"10.0.{n}.1")  # twenty addresses, one agent

    assert throttle.blocked("ana", "10.0.0.99")
    assert not throttle.blocked("bo", "10.0.0.99")
    clock.now += 301
    assert not throttle.blocked("ana", "10.0.0.99")

    for n in range(5):
        throttle.failed(f"agent-{n}", "10.0.0.7")  # one address, five agents
    assert throttle.blocked("bo", "10.0.0.7")
    assert not throttle.blocked("bo", "10.0.0.8")


def test_one_address_cannot_lock_an_agent_out_of_her_own() -> None:
    """Five wrong passwords for ana from an attacker's address block that address, not ana."""
    throttle = SignInThrottle(clock=Clock())
    for _ in range(5):
        throttle.failed("ana", "203.0.113.66")

    assert throttle.blocked("ana", "203.0.113.66")
    assert not throttle.blocked("ana", "10.0.0.1")


def test_signing_in_clears_the_agents_count_but_not_the_addresss() -> None:
    throttle = SignInThrottle(clock=Clock())
    for _ in range(4):
        throttle.failed("ana", "10.0.0.1")
    throttle.succeeded("ana", "10.0.0.1")
    throttle.failed("ana", "10.0.0.2")

    assert not throttle.blocked("ana", "10.0.0.2")
    throttle.failed("bo", "10.0.0.1")
    assert throttle.blocked("carla", "10.0.0.1")


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/customers/c1?channel=sms", "/customers/c1?channel=sms"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/customers/c1\r\nSet-Cookie: x=1", "/"),
    ],
)
def test_a_sign_in_only_leads_to_a_path_on_the_desk(asked: str, sent_to: str) -> None:
    assert _local(asked) == sent_to


def test_a_reply_to_the_longest_subject_a_mail_holds_still_fits_one() -> None:
    """A "Re: " on a 998-character subject would make a command the contract refuses (a 500)."""

    def inbound(subject: str) -> dict[str, Any]:
        payload = {"direction": "inbound", "provider_message_id": "<m1@x>", "subject": subject}
        return {"type": "message", "payload": payload}

    thread, answer = thread_of([inbound("s" * 998)]), thread_of([inbound("RE: " + "s" * 996)])

    assert thread.subject == "Re: " + "s" * 994
    assert answer.subject == "RE: " + "s" * 994
    for subject in (thread.subject, answer.subject):
        assert OutboundMessage(text="Hi", subject=subject).subject == subject


def test_a_reply_to_a_subject_that_came_with_line_breaks_answers_it_on_one_line() -> None:
    """A mail's subject may come decoded with line breaks (an encoded `=0D=0A`): a reply `Re:`
    it would make a command the contract refuses (a 500 for every reply to that customer)."""
    payload = {
        "direction": "inbound",
        "provider_message_id": "<m1@x>",
        "subject": "Refund\r\nBcc: everyone@example.com\u2028\tplease",
    }

    thread = thread_of([{"type": "message", "payload": payload}])

    assert thread.subject == "Re: Refund Bcc: everyone@example.com please"
    assert OutboundMessage(text="Hi", subject=thread.subject).subject == thread.subject


def test_an_email_reply_references_the_thread_it_answers_not_the_customers_others() -> None:
    """A customer writing about a refund and, apart, about an invoice address: the reply to the
    refund names the refund's thread from its first message on (off the page here), and none
    of the invoice's messages, or their mail clients would merge the two."""

    def inbound(message_id: str, thread: str) -> dict[str, Any]:
        payload = {"direction": "inbound", "provider_message_id": message_id, "subject": "x"}
        return {"type": "message", "payload": payload, "conversation": {"thread": thread}}

    newest_first = [
        inbound("r3@x", "r1@x"),
        inbound("i2@x", "i1@x"),
        inbound("r2@x", "r1@x"),
        inbound("i1@x", "i1@x"),
    ]

    thread = thread_of(newest_first)

    assert (thread.reply_to, thread.references) == ("r3@x", ("r1@x", "r2@x"))
    assert thread_of(newest_first[1:]).references == ("i1@x",)


def test_a_reply_names_no_message_id_the_email_channel_had_to_cut() -> None:
    """channel-email cuts a Message-ID past 500 characters (and the thread's root past 1,000)
    and notes it: the cut id names no message, so `In-Reply-To` or `References` holding it would
    not thread the reply in the customer's mail client. Whole ids are still named."""
    cut_id = [{"field": "payload.provider_message_id", "reason": "truncated"}]
    cut_root = [{"field": "conversation.thread", "reason": "truncated"}]

    def inbound(message_id: str, cut: list[dict[str, str]]) -> dict[str, Any]:
        payload = {"direction": "inbound", "provider_message_id": message_id, "subject": "x"}
        return {
            "type": "message",
            "payload": payload,
            "conversation": {"thread": "root@x"},
            "adjustments": cut,
        }

    latest_cut = thread_of([inbound("x" * 500, cut_id), inbound("m1@x", [])])
    root_cut = thread_of([inbound("m2@x", cut_root), inbound("y" * 500, cut_id)])

    assert (latest_cut.reply_to, latest_cut.references) == (None, ("root@x", "m1@x"))
    assert (root_cut.reply_to, root_cut.references) == ("m2@x", ())


def test_a_row_is_placed_by_its_instant_in_utc_whatever_offset_its_entry_kept() -> None:
    """Live rows (from `journey`) and rendered ones (from the API) are ordered by comparing
    their `data-occurred`: both must say the instant alike."""
    from_email = row(
        {
            "id": "e1",
            "occurred_at": "2026-03-01T10:00:00+02:00",
            "channel": "email",
            "type": "message",
            "payload": {"kind": "message", "direction": "inbound", "text": "Hola"},
        }
    )

    assert from_email["at"].isoformat() == "2026-03-01T08:00:00+00:00"


class _Profiles:
    """The profile API's lookups, knowing one customer by one phone (normalised as it does,
    in the deployment's region)."""

    def __init__(self, region: str | None = None) -> None:
        self.region = region

    async def lookup(self, kind: str, value: str) -> str | None:
        try:
            number = normalise_phone(value, self.region)
        except ValueError:
            return None
        return "c1" if (kind, number) == ("phone", "+34612345678") else None

    async def by_order(self, order_id: str) -> str | None:
        return None

    async def profile(self, customer_id: str) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize("region", [None, "ES", "US", "GB", "AU", "JP"])
@pytest.mark.parametrize("typed_as", ["34 612 34 56 78", "0034 612 34 56 78"])
async def test_a_number_typed_with_its_country_code_but_no_plus_finds_its_customer(
    region: str | None, typed_as: str
) -> None:
    """With no region configured the profile API refuses it; with one, it reads it as a
    national number, and `00` means abroad only where people dial abroad so (not in the US,
    011, Australia, 0011, or Japan, 010): either way the agent typed an international number."""
    profiles = _Profiles(region)

    found = await find_customers(profiles, typed_as, region)  # type: ignore[arg-type]

    assert found == [Match("c1", "phone")]


class _Abroad(_Profiles):
    """Knows a customer in Egypt whose number is a US number's digits behind a "+"."""

    asked: list[str]

    async def lookup(self, kind: str, value: str) -> str | None:
        self.asked = [*getattr(self, "asked", []), value]
        return "egypt" if (kind, value) == ("phone", "+2034176848") else None


async def test_a_valid_national_number_that_finds_nobody_is_not_read_as_another_countrys() -> None:
    """`(203) 417-6848` in a US deployment is a US number: that it finds nobody must not open
    the Egyptian customer whose number is the same digits after a "+"."""
    profiles = _Abroad("US")

    found = await find_customers(profiles, "(203) 417-6848", "US")  # type: ignore[arg-type]

    assert found == []
    assert "+2034176848" not in profiles.asked


@pytest.mark.parametrize(
    "pasted",
    ["whatsapp:+34612345678", "tel:+34 612 34 56 78", "+34\u00a0612\u2011345\u2011678"],
)
async def test_a_number_pasted_with_its_scheme_or_typographic_dashes_finds_its_customer(
    pasted: str,
) -> None:
    found = await find_customers(_Profiles(), pasted)  # type: ignore[arg-type]

    assert found == [Match("c1", "phone")]


class _Receipts(_Profiles):
    """Knows one receipt of a store called TEL."""

    async def by_order(self, order_id: str) -> str | None:
        return "c-tel" if order_id == "TEL:004217" else None


async def test_a_receipt_of_a_store_whose_id_looks_like_a_scheme_is_searched_whole() -> None:
    found = await find_customers(_Receipts(), " TEL:004217 ")  # type: ignore[arg-type]

    assert found == [Match("c-tel", "order")]


def test_a_pasted_whatsapp_user_id_is_read_as_one() -> None:
    assert readings("whatsapp:US.13491208655302741918")[0] == "whatsapp_user_id"
    assert as_address("whatsapp:US.13491208655302741918") == "US.13491208655302741918"


@pytest.mark.parametrize(
    ("open_now", "unanswered", "purpose", "continues"),
    [
        (True, False, "service", True),
        (False, False, "service", False),
        (False, True, "service", True),
        (False, True, "marketing", False),
        (True, False, "marketing", False),
    ],
)
def test_a_reply_continues_the_conversation_only_while_it_is_open_or_unanswered(
    open_now: bool, unanswered: bool, purpose: Literal["service", "marketing"], continues: bool
) -> None:
    """A conversation closed weeks ago keeps its ids on the view: a reply now is a new one,
    unless the customer is still in the queue for its answer: the agent's reply answers it,
    linked. A marketing message answers nobody and is no part of a conversation, open or not."""
    p = profile(conversation={"conversation_ids": ["conv-voice-1"]})
    p["conversation_open"] = open_now
    [sms] = reply_options(p, ["sms"])

    command = reply_command(
        p,
        sms,
        text="Hi",
        template=None,
        purpose=purpose,
        agent="ana",
        thread=Thread(),
        unanswered=unanswered,
    )

    assert command.conversation is not None
    if continues:
        assert (command.conversation.id, command.conversation.continues) == ("conv-voice-1",) * 2
    else:
        assert command.conversation.continues is None
        assert command.conversation.id != "conv-voice-1"


def test_a_channel_not_written_on_is_answered_at_the_number_the_customer_uses_now() -> None:
    """After a merge the profile holds two numbers: an SMS answering a WhatsApp message or a
    call goes to the number the customer wrote or called from, not the first one held."""
    p = profile()
    p["identifiers"] += [
        {"kind": "phone", "value": "+34699999999"},
        {"kind": "whatsapp_id", "value": "34612345678"},
        {"kind": "whatsapp_id", "value": "34699999999"},
    ]
    whatsapp_message = [
        {
            "type": "message",
            "channel": "whatsapp",
            "payload": {"direction": "inbound"},
            "identifiers": {"whatsapp_id": "34699999999", "phone": "+34699999999"},
        }
    ]
    dropped_call = [
        {
            "type": "call",
            "channel": "voice",
            "payload": {"direction": "inbound"},
            "identifiers": {"phone": "+34699999999"},
        },
        {
            "type": "message",
            "channel": "sms",
            "payload": {"direction": "outbound"},
            "identifiers": {"phone": "+34612345678"},
        },
    ]

    for entries in (whatsapp_message, dropped_call):
        options = reply_options(
            p, ["whatsapp", "sms"], written_from(entries), last_contact(entries)
        )
        addresses = {o.channel: o.address for o in options}
        assert addresses == {"whatsapp": "34699999999", "sms": "+34699999999"}, entries


@pytest.mark.parametrize(("channel", "kept"), [("email", True), ("whatsapp", False)])
def test_only_an_email_reply_names_the_threads_earlier_messages(channel: str, kept: bool) -> None:
    """Email threads by `References`; elsewhere the earlier provider ids (a WhatsApp wamid holds
    the customer's number) would only travel for nothing."""
    option = ReplyOption(channel, "email", "ana@example.com", None)
    thread = Thread("m-2", ("m-0", "m-1"), "Re: order")

    command = reply_command(
        profile(), option, text="Hi", template=None, purpose="service", agent="ana", thread=thread
    )

    assert command.payload.references == (["m-0", "m-1"] if kept else [])
    assert command.payload.reply_to_provider_message_id == "m-2"


@pytest.mark.parametrize(
    ("channel", "purpose", "subject", "sent"),
    [
        ("email", "service", None, "Re: order"),
        ("email", "service", "Your refund", "Your refund"),
        ("email", "marketing", "Spring sale", "Spring sale"),
        ("email", "marketing", None, None),
        ("sms", "service", "Your refund", None),
    ],
)
def test_an_email_goes_with_the_agents_subject_else_re_the_customers(
    channel: str, purpose: Literal["service", "marketing"], subject: str | None, sent: str | None
) -> None:
    """Left empty, an email answers `Re:` the customer's (a promotion takes the channel's
    default subject); only an email has one."""
    option = ReplyOption(channel, "email", "ana@example.com", None)

    command = reply_command(
        profile(),
        option,
        text="Hi",
        template=None,
        purpose=purpose,
        agent="ana",
        thread=Thread("m-2", ("m-0",), "Re: order"),
        subject=subject,
    )

    assert command.payload.subject == sent


@pytest.mark.parametrize("channel", ["email", "whatsapp"])
def test_a_marketing_message_is_sent_outside_the_customers_thread(channel: str) -> None:
    """A promotion is no answer to the customer's question: no `Re:` of its subject, no
    `In-Reply-To` or `References` filing it under their mail, no WhatsApp quote of it."""
    option = ReplyOption(channel, "email", "ana@example.com", None)
    thread = Thread("m-2", ("m-0", "m-1"), "Re: order")

    command = reply_command(
        profile(),
        option,
        text="-20%",
        template=None,
        purpose="marketing",
        agent="ana",
        thread=thread,
    )

    assert command.payload.reply_to_provider_message_id is None
    assert command.payload.references == []
    assert command.payload.subject is None


def test_a_time_past_the_calendar_in_utc_is_shown_as_given_not_a_failed_page() -> None:
    """A promotion stored "for ever" before the offers service refused such dates."""
    assert _when("9999-12-31T23:59:59-01:00") == "9999-12-31T23:59:59-01:00"
    assert _when("2026-12-02T13:00:00+01:00") == "02 Dec 2026 12:00:00 UTC"


def _panels(view: dict[str, Any], offers: list[dict[str, Any]] | None = None) -> str:
    template = desk_templates().get_template("panels.html")
    return template.render(
        profile={"customer_id": "c1", "conversation_open": False},
        view=view,
        offers=offers or [],
        warnings={},
        default_channel=None,
        reply_labels=[],
    )


def test_money_shows_each_currencys_decimals() -> None:
    """Channels send decimals as the shop wrote them: 12.5 KWD is 12.500, 1500.0 JPY is 1500."""
    html = _panels(
        {
            "cart": {
                "items": [],
                "total": {"amount": "12.5", "currency": "KWD"},
                "channel": "web",
                "updated_at": "2026-12-01T10:00:00+00:00",
            },
            "orders": [
                {
                    "order_id": "JP-1",
                    "status": "placed",
                    "fulfilment": "delivery",
                    "channel": "web",
                    "total": {"amount": "1500.0", "currency": "JPY"},
                    "last_update": "2026-12-01T10:00:00+00:00",
                }
            ],
            "order_count": 1,
            "lifetime_value": {"JPY": "1500.0", "KWD": "13.75"},
        }
    )

    assert "12.500 KWD" in html
    assert "<td>1500 JPY</td>" in html
    assert "lifetime value 1500 JPY, 13.750 KWD" in html


def test_survey_scores_say_their_metric_and_offers_their_channels_by_name() -> None:
    html = _panels(
        {
            "surveys": {
                "csat": {"survey_id": "post-chat", "score": 5, "channel": "whatsapp", "at": None},
                "nps": {"survey_id": "quarterly", "score": 5, "channel": "email", "at": None},
            }
        },
        offers=[
            {
                "name": "Phone deal",
                "every_channel": False,
                "open_on": ["whatsapp", "sms", "voice"],
                "valid_until": None,
                "example": [],
                "example_list_total": "60",
                "example_total": "54",
                "currency": "EUR",
            }
        ],
    )

    assert "CSAT <strong>5</strong>/5 (post-chat) on WhatsApp" in html
    assert "NPS <strong>5</strong>/10 (quarterly) on Email" in html
    assert "(WhatsApp, SMS, Phone, until" in html
    assert "<s>60.00 EUR</s> <strong>54.00 EUR</strong>" in html


def test_a_page_is_headed_by_what_a_person_recognises_never_a_cookie_id() -> None:
    browsing = {"kind": "anonymous_id", "value": "7f3c9e1a-anon"}
    email = {"kind": "email", "value": "ana@example.com"}

    assert _display_name({"customer_id": "c1", "identifiers": [browsing, email]}) == email["value"]
    assert _display_name({"customer_id": "c1", "identifiers": [browsing]}) == "Anonymous visitor"
    blank = {"view": {"traits": {"name": {"value": " "}, "first_name": {"value": ""}}}}
    assert _display_name({"customer_id": "c1", "identifiers": [email], **blank}) == email["value"]


def test_decided_merge_requests_no_longer_wait_for_review_but_conflicts_to_split_do() -> None:
    conflicts = [
        {"id": "r1", "reason": "unverified_merge", "status": "pending"},
        {"id": "r2", "reason": "unverified_merge", "status": "confirmed"},
        {"id": "r3", "reason": "kept_apart", "status": "rejected"},
        {"id": "c4", "reason": "concurrent_merge", "kind": "loyalty_id"},
        {"id": "c5", "reason": "unique_identifier", "kind": "loyalty_id"},
    ]

    assert [c["id"] for c in waiting_for_review(conflicts)] == ["r1", "c4", "c5"]


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (UNCONFIRMED, "Reply perhaps not sent: not confirmed"),
        ("the provider answered 502: it may have been sent; " + CHECK_FIRST, "Reply perhaps not"),
        ("(#551) This person isn't available right now.", "Reply not sent: (#551)"),
    ],
)
def test_a_reply_that_may_have_gone_out_is_not_shown_as_not_sent(error: str, shown: str) -> None:
    """The agent is told to look at the conversation first: "Reply not sent" would say the
    opposite, and they would send it again."""
    failure = {
        "id": "e1",
        "type": "message_status",
        "channel": "messenger",
        "occurred_at": "2026-12-02T12:00:00+00:00",
        "payload": {
            "provider_message_id": "hilo-outbound:c1",
            "status": "failed",
            "error": error,
        },
    }

    html = desk_templates().get_template("entry.html").render(r=row(failure))

    assert shown in html


def test_a_reply_reported_perhaps_not_sent_that_the_provider_delivered_says_it_went_out() -> None:
    """channel-email puts Mailgun's later outcome of such a reply on its report's id."""
    delivered: dict[str, Any] = {
        "id": "e2",
        "type": "message_status",
        "channel": "email",
        "occurred_at": "2026-12-02T12:01:00+00:00",
        "payload": {"provider_message_id": "hilo-outbound:c1", "status": "delivered"},
    }

    html = desk_templates().get_template("entry.html").render(r=row(delivered))

    assert "Reply sent after all: Email reports it delivered." in html
    assert "not sent" not in html
    assert row(delivered)["after_report"], "the live page places it as a row of its own"
    bounced = {**delivered, "payload": {**delivered["payload"], "status": "failed"}}
    assert not row(bounced)["after_report"], "a failure folds into the reply's row as before"


def test_a_reply_reported_perhaps_not_sent_that_twilio_then_reports_sent_says_it_went_out() -> None:
    """An SMS's last status is often `sent` (no delivery receipt from the carrier): WhatsApp's
    and SMS's statuses of such a reply land on its report too."""
    sent: dict[str, Any] = {
        "id": "e3",
        "type": "message_status",
        "channel": "sms",
        "occurred_at": "2026-12-02T12:01:00+00:00",
        "payload": {"provider_message_id": "hilo-outbound:c1", "status": "sent"},
    }

    html = desk_templates().get_template("entry.html").render(r=row(sent))

    assert "Reply sent after all: SMS reports it sent." in html
    assert row(sent)["after_report"]


def test_the_campaign_a_customer_came_from_says_who_told_it() -> None:
    told = {"channel": "whatsapp", "at": "2026-12-01T10:00:00+00:00"}
    ad = _panels({"last_campaign": {"name": "Spring", "source": "meta", "medium": "ad", **told}})
    browser = _panels(
        {"last_campaign": {"name": "<b>VIP</b>", **told, "channel": "web", "unverified": True}}
    )
    source_alone = _panels({"last_campaign": {"source": "instagram", **told}})

    assert "Campaign <strong>Spring</strong> (meta / ad) on WhatsApp, 01 Dec 2026" in ad
    assert "as a browser told it" not in ad
    assert "Campaign <strong>&lt;b&gt;VIP&lt;/b&gt;</strong> on Web" in browser
    assert "as a browser told it" in browser
    assert "A campaign (instagram) on WhatsApp" in source_alone
    assert 'id="came-from"' not in _panels({})


def test_a_reply_retried_after_a_merge_has_the_command_id_of_its_first_attempt() -> None:
    """The page asked for customer A; A was merged into B before the retry, which resolved to
    B's profile: the command id changed with it and the channel sent the reply twice."""
    before, after = profile(), profile()
    after["customer_id"] = "cus-survivor"
    [sms] = reply_options(before, ["sms"])

    def attempt(p: dict[str, Any], page_customer: str) -> str:
        return reply_command(
            p,
            sms,
            text="Hi",
            template=None,
            purpose="service",
            agent="ana",
            thread=Thread(),
            page_id="page-1",
            page_customer=page_customer,
        ).id

    first = attempt(before, before["customer_id"])
    assert attempt(after, before["customer_id"]) == first
    assert attempt(after, "cus-survivor") != first, "another customer's page: another id"
