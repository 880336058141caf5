"""Translating Segment calls (no infrastructure): what the spec's less common shapes mean."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from channel_web.segment import Call
from channel_web.translate import translate
from hilo.contract import (
    ConsentChanged,
    CustomEvent,
    OrderPlaced,
    PageViewed,
    SurveyAnswered,
)

RECEIVED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def call(**fields: Any) -> Call:
    return Call.model_validate({"messageId": "m1", **fields})


def order_completed(**properties: Any) -> Call:
    """Ana's `Order Completed` with these properties."""
    return call(type="track", userId="u-ana", event="Order Completed", properties=properties)


def test_a_group_calls_traits_are_the_groups_not_the_users_identifiers() -> None:
    """Segment's group spec reserves `email` and `phone` for the company."""
    grouped = call(
        type="group",
        userId="u-ana",
        groupId="g1",
        traits={"email": "billing@initech.com", "phone": "+1 415 555 0100", "name": "Initech"},
        context={"traits": {"email": "ana@example.com"}},
    )

    published = translate(grouped, RECEIVED, "t")

    assert published.identifiers.customer_id == "u-ana"
    assert published.identifiers.email == "ana@example.com", "the user's own, from the context"
    assert published.identifiers.phone is None


@pytest.mark.parametrize("quantity", [2.9, 1.5, 0, -1, "two", 100_001, "1e99999999"])
def test_an_order_with_a_quantity_no_till_could_charge_is_kept_as_custom_saying_so(
    quantity: object,
) -> None:
    """`1e99999999` passes as a whole number: turning it into an integer held the event loop
    for hours (1e600000 took 8 s), so a ~100-byte call froze channel-web."""
    order = order_completed(
        order_id="W-1",
        total=10,
        currency="EUR",
        products=[{"sku": "S", "price": 5, "quantity": quantity}],
    )

    published = translate(order, RECEIVED, "t")

    assert isinstance(published.payload, CustomEvent)
    assert [(a.field, a.reason) for a in published.adjustments] == [("payload", "not_typed")]


@pytest.mark.parametrize(("quantity", "expected"), [(None, 1), (2, 2), (3.0, 3), ("4", 4)])
def test_a_whole_quantity_is_taken_as_sent(quantity: object, expected: int) -> None:
    product: dict[str, Any] = {"sku": "S", "price": 5}
    if quantity is not None:
        product["quantity"] = quantity
    order = order_completed(order_id="W-1", total=10, currency="EUR", products=[product])

    payload = translate(order, RECEIVED, "t").payload

    assert isinstance(payload, OrderPlaced)
    assert payload.items[0].quantity == expected


def test_a_call_forwarded_with_segments_corrected_timestamp_is_not_corrected_again() -> None:
    """Device 3 h ahead: Segment computed `timestamp` 11:51 from `originalTimestamp` 14:50 and
    `sentAt` 14:59; correcting 11:51 again with `sentAt` would give 08:52."""

    def sent_at_14_59(**times: str) -> datetime:
        banner = call(
            type="track",
            userId="u-ana",
            event="Viewed Banner",
            sentAt="2026-12-01T14:59:00Z",
            **times,
        )
        return translate(banner, RECEIVED, "t").occurred_at

    forwarded = sent_at_14_59(
        timestamp="2026-12-01T11:51:00Z", originalTimestamp="2026-12-01T14:50:00Z"
    )
    from_the_device = sent_at_14_59(timestamp="2026-12-01T14:50:00Z")

    assert forwarded == datetime(2026, 12, 1, 11, 51, tzinfo=UTC)
    assert from_the_device == datetime(2026, 12, 1, 11, 51, tzinfo=UTC)


@pytest.mark.parametrize(
    ("coupon", "expected"),
    [("SPRING10", ["SPRING10"]), (" SPRING10 ", ["SPRING10"]), (["A1", "", "B2"], ["A1", "B2"])],
)
def test_an_orders_coupon_and_shipping_are_kept(coupon: object, expected: list[str]) -> None:
    """The spec's `coupon` ties the sale to the campaign that brought it; `shipping` is part of
    the total (both were dropped before)."""
    order = order_completed(
        order_id="W-1",
        total=14.95,
        shipping=4.95,
        coupon=coupon,
        currency="EUR",
        products=[{"sku": "S", "price": 10}],
    )

    payload = translate(order, RECEIVED, "t").payload

    assert isinstance(payload, OrderPlaced)
    assert payload.coupons == expected
    assert payload.shipping is not None
    assert (str(payload.shipping.amount), payload.shipping.currency) == ("4.95", "EUR")


def test_an_order_without_a_coupon_or_shipping_serialises_as_before() -> None:
    """Readers built before the fields existed refuse unknown ones: absent, not null or []."""
    order = order_completed(order_id="W-1", total=10, coupon="", products=[{"sku": "S"}])

    payload = translate(order, RECEIVED, "t").payload.model_dump(mode="json")

    assert not {"coupons", "shipping", "receipt_id", "till_id"} & payload.keys()


@pytest.mark.parametrize(
    ("extra", "noted"),
    [
        ({"shipping": "free"}, "payload.shipping"),
        ({"shipping": -1}, "payload.shipping"),
        ({"shipping": "NaN"}, "payload.shipping"),
        ({"coupon": [True, {"code": "X"}, "A1"]}, "payload.coupons"),
        ({"coupon": "C" * 101}, "payload.coupons"),
        ({"coupon": [f"C{n}" for n in range(21)]}, "payload.coupons"),
    ],
)
def test_an_unreadable_shipping_or_code_is_left_out_and_noted_not_the_order(
    extra: dict[str, Any], noted: str
) -> None:
    """Before these fields were read, such an order was kept whole: it must not become a
    `custom` event (no purchase) because of an optional field."""
    order = order_completed(order_id="W-1", total=10, products=[{"sku": "S"}], **extra)

    published = translate(order, RECEIVED, "t")

    assert isinstance(published.payload, OrderPlaced)
    assert [(a.field, a.reason) for a in published.adjustments] == [(noted, "unreadable")]


def test_a_survey_response_id_longer_than_the_contract_takes_keeps_the_answer() -> None:
    """The id only tells one answer from another: a digest does that as well as the id."""

    def answer(response_id: str) -> Call:
        properties = {"survey_id": "q4", "metric": "nps", "score": 9, "response_id": response_id}
        return call(type="track", userId="u-ana", event="Survey Answered", properties=properties)

    long_id = "r" * 300
    published = [translate(answer(r), RECEIVED, "t").payload for r in (long_id, long_id, "r-1")]

    assert all(isinstance(p, SurveyAnswered) for p in published), "never lost to custom"
    ids = [p.response_id for p in published if isinstance(p, SurveyAnswered)]
    assert ids[0] == ids[1] != ids[2] == "r-1"
    assert str(ids[0]).startswith("sha256:")


def consent(**properties: Any) -> Call:
    return call(type="track", userId="u-ana", event="Consent Changed", properties=properties)


def test_a_server_sides_consent_change_is_the_customers_consent() -> None:
    """The shop's preference centre, told from its server: the journey's consent, which
    promotions and every channel's sends follow."""
    withdrawn = translate(
        consent(purpose=" Marketing ", granted=False, channel="Email", source="preference_centre"),
        RECEIVED,
        "t",
        trust="verified",
    )
    granted = translate(consent(purpose="marketing", granted=True), RECEIVED, "t", "verified")

    assert withdrawn.payload == ConsentChanged(
        purpose="marketing", granted=False, channel="email", source="preference_centre"
    )
    assert granted.payload == ConsentChanged(
        purpose="marketing", granted=True, channel=None, source="web"
    )


@pytest.mark.parametrize(
    ("trust", "properties"),
    [
        ("unverified", {"purpose": "marketing", "granted": True}),
        ("verified", {"purpose": "marketing", "granted": "false"}),
        ("verified", {"granted": True}),
        ("verified", {"purpose": "marketing", "granted": False, "channel": "newsletter"}),
        ("verified", {"purpose": "contact", "granted": True, "channel": "sms"}),
    ],
)
def test_a_consent_change_anyone_could_send_or_nobody_can_read_stays_custom(
    trust: str, properties: dict[str, Any]
) -> None:
    """From the public key anyone could grant marketing in Ana's name; a `granted` of "false"
    is not read as yes, nor a change of no purpose as one; a channel Hilo does not know would
    match nothing (a withdrawal lost); a contact grant is the channel's own (an SMS START)."""
    published = translate(consent(**properties), RECEIVED, "t", trust)  # type: ignore[arg-type]

    assert isinstance(published.payload, CustomEvent)


def test_a_consent_change_of_a_browser_alone_stays_custom_and_a_long_source_is_cut() -> None:
    """On an anonymous visitor a consent would travel with their history to whoever a browser
    later claims to be."""
    anonymous = call(
        type="track",
        anonymousId="anon-1",
        event="Consent Changed",
        properties={"purpose": "marketing", "granted": True},
    )
    by_email = call(
        type="track",
        anonymousId="anon-1",
        event="Consent Changed",
        context={"traits": {"email": "ana@example.com"}},
        properties={"purpose": "contact", "granted": False, "source": "s" * 500},
    )

    kept = translate(anonymous, RECEIVED, "t", "verified")
    withdrawn = translate(by_email, RECEIVED, "t", "verified")

    assert isinstance(kept.payload, CustomEvent)
    assert [(a.field, a.reason) for a in kept.adjustments] == [("payload", "not_typed")]
    assert isinstance(withdrawn.payload, ConsentChanged)
    assert (withdrawn.payload.purpose, withdrawn.payload.granted) == ("contact", False)
    assert withdrawn.payload.source == "s" * 200


def test_a_consent_change_naming_only_an_invalid_email_is_a_browsers_and_stays_custom() -> None:
    """The invalid email is dropped from the event, which then names the browser alone: the
    check looked at whether an email was there, not whether it was kept."""
    typo = call(
        type="track",
        anonymousId="anon-1",
        event="Consent Changed",
        context={"traits": {"email": "not an email"}},
        properties={"purpose": "marketing", "granted": True},
    )

    kept = translate(typo, RECEIVED, "t", "verified")

    assert isinstance(kept.payload, CustomEvent)
    assert [(a.field, a.reason) for a in kept.adjustments] == [
        ("identifiers.email", "invalid_email"),
        ("payload", "not_typed"),
    ]


def test_a_boolean_user_id_is_refused_not_read_as_customer_1() -> None:
    """`userId: isLoggedIn` made every signed-in visitor of a site one customer, "1"."""
    for odd in (True, False, 42.5):
        with pytest.raises(ValidationError, match="userId"):
            call(type="track", userId=odd, event="Viewed")

    for whole in (42, 42.0, "42"):
        viewed = call(type="track", userId=whole, event="Viewed")
        assert translate(viewed, RECEIVED, "t").identifiers.customer_id == "42"


def test_a_whole_number_no_float_holds_is_left_out_of_the_properties() -> None:
    """Past ~1.8e308 neither MongoDB's 8 bytes nor a float hold it: the contract refuses it,
    which refused the whole call for one property."""
    tracked = translate(
        call(type="track", anonymousId="a1", event="Odd", properties={"huge": 10**400, "n": 1}),
        RECEIVED,
        "t",
    )

    assert isinstance(tracked.payload, CustomEvent)
    assert tracked.payload.properties == {"n": 1}


@pytest.mark.parametrize(("device", "kept"), [(12345, "12345"), (True, None), ({"a": 1}, None)])
def test_a_device_id_that_is_no_string_is_read_or_dropped_never_refusing_the_call(
    device: object, kept: str | None
) -> None:
    published = translate(
        call(type="track", anonymousId="a1", event="Viewed", context={"device": {"id": device}}),
        RECEIVED,
        "t",
    )

    assert published.identifiers.device_id == kept
    dropped = [(a.field, a.reason) for a in published.adjustments]
    assert dropped == ([] if kept else [("identifiers.device_id", "invalid_device_id")])


def test_a_group_with_as_many_traits_as_an_event_holds_is_kept_with_its_id() -> None:
    """The group's id came on top of 200 traits, one past what a custom event holds: the call
    was refused. A trait named `group_id` does not replace the call's."""
    traits = {f"trait_{n}": n for n in range(250)} | {"group_id": "someone-else"}

    published = translate(
        call(type="group", userId="u-ana", groupId="g1", traits=traits), RECEIVED, "t"
    )

    assert isinstance(published.payload, CustomEvent)
    assert len(published.payload.properties) == 200
    assert published.payload.properties["group_id"] == "g1"


LANDING = "https://shop.example/spring?utm_source=newsletter&utm_medium=email&utm_campaign=spring"


def landing(**context: Any) -> PageViewed:
    """Ana's page view with this context; its payload."""
    page = call(type="page", anonymousId="a1", context=context)
    payload = translate(page, RECEIVED, "t").payload
    assert isinstance(payload, PageViewed)
    return payload


def campaign_of(**context: Any) -> dict[str, Any] | None:
    campaign = landing(**context).campaign
    return None if campaign is None else campaign.model_dump(exclude_none=True)


def test_a_landings_campaign_is_read_from_the_context_or_else_from_its_url() -> None:
    told = {"name": " spring ", "source": "newsletter", "medium": "email", "term": "shoes"}
    spring = {"name": "spring", "source": "newsletter", "medium": "email"}

    assert campaign_of(campaign=told, page={"url": "https://x.example/?utm_campaign=x"}) == spring
    assert campaign_of(page={"url": LANDING}) == spring, "the term stays in the URL alone"
    assert campaign_of(campaign={"medium": "email"}, page={"url": LANDING}) == spring, (
        "a context naming neither name nor source takes them from the URL"
    )
    assert campaign_of(page={"url": LANDING + "&utm_campaign=summer"}) == {
        **spring,
        "name": "summer",
    }, "a repeated parameter's last value, as analytics.js reads it"


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/spring",
        "https://shop.example/?utm_medium=email",
        "https://shop.example/?utm_campaign=&utm_source=%20",
        "http://[x/?utm_campaign=spring",
        "https://shop.example]/?utm_campaign=spring",
        "http://a\uff03b/?utm_campaign=spring",
    ],
)
def test_a_page_naming_no_campaign_or_unreadably_has_none_and_serialises_as_before(
    url: str,
) -> None:
    payload = landing(page={"url": url})

    assert payload.campaign is None
    assert payload.url == url, "an unreadable URL is kept as the text it is"
    assert "campaign" not in payload.model_dump(mode="json")


@pytest.mark.parametrize("told", ["spring", ["spring"], 7, None])
def test_a_context_campaign_that_is_no_object_is_ignored_not_refused(told: object) -> None:
    assert campaign_of(campaign=told, page={"url": LANDING}) == {
        "name": "spring",
        "source": "newsletter",
        "medium": "email",
    }


@pytest.mark.parametrize(
    "source",
    ["ana%40example.com", "ana%2540example.com", "+34 612 34 56 78", "+34612345678"],
)
def test_a_campaign_holding_an_address_or_a_number_is_left_out_saying_so(source: str) -> None:
    """Marketers sometimes tag a link with its recipient: the campaign is published in the
    clear, so it goes, where the sealed URL keeps it; the page view stays."""
    url = LANDING.replace("newsletter", source.replace("+", "%2B").replace(" ", "%20"))
    page = call(type="page", anonymousId="a1", context={"page": {"url": url}})

    published = translate(page, RECEIVED, "t")

    assert isinstance(published.payload, PageViewed)
    assert published.payload.campaign is None
    assert published.payload.url == url
    assert [(a.field, a.reason) for a in published.adjustments] == [
        ("payload.campaign", "looks_personal")
    ]


def test_a_long_campaign_holding_an_address_is_noted_as_left_out_not_as_cut() -> None:
    told = {"name": "s" * 250, "source": "ana@example.com"}
    page = call(type="page", anonymousId="a1", context={"campaign": told})

    published = translate(page, RECEIVED, "t")

    assert [(a.field, a.reason) for a in published.adjustments] == [
        ("payload.campaign", "looks_personal")
    ]


def test_a_campaign_name_longer_than_the_contract_takes_is_cut_saying_so() -> None:
    page = call(type="page", anonymousId="a1", context={"campaign": {"name": "s" * 250}})

    published = translate(page, RECEIVED, "t")

    assert isinstance(published.payload, PageViewed)
    assert published.payload.campaign is not None
    assert published.payload.campaign.name == "s" * 200
    assert [a.field for a in published.adjustments] == ["payload.campaign.name"]


@pytest.mark.parametrize(
    ("score", "read"), [(4, 4), (4.0, 4), (" 4", 4), (True, None), (4.7, None)]
)
def test_a_survey_score_is_read_as_the_whole_number_it_is_or_not_at_all(
    score: object, read: int | None
) -> None:
    """`int()` read `true` as 1, the worst CSAT, and cut 4.7 to 4."""
    properties = {"survey_id": "q4", "metric": "csat", "score": score}
    answered = call(type="track", userId="u-ana", event="Survey Answered", properties=properties)

    payload = translate(answered, RECEIVED, "t").payload

    assert (payload.score if isinstance(payload, SurveyAnswered) else None) == read


def test_trait_names_lose_nul_and_values_with_no_json_number_are_dropped() -> None:
    """MongoDB refuses a key holding NUL: the event was published, then dead-lettered, its
    identify's linking lost. NaN and `1e400` (infinity) were published as `null`."""
    traits = {"email": "ana@example.com", "plan\x00": "gold", "ratio": float("nan"), "big": 1e400}
    identified = call(type="identify", userId="u-ana", traits=traits)

    published = translate(identified, RECEIVED, "t")

    assert published.payload.model_dump()["traits"] == {"email": "ana@example.com", "plan": "gold"}
