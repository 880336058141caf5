"""Translating Messenger and Instagram events (no infrastructure): what docs/channels.md
promises of reactions, quick replies and deleted messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from channel_social.settings import SocialSettings
from channel_social.translate import STORY_REPLY, translate
from channel_social.webhook import Notification
from hilo.contract import MessageExchanged, interaction_id

PAGE, PSID = "106", "2456"
KEY = b"pepper"


def notification(*events: dict[str, Any]) -> Notification:
    messaging = [{"sender": {"id": PSID}, "recipient": {"id": PAGE}, **e} for e in events]
    return Notification.model_validate(
        {"object": "page", "entry": [{"id": PAGE, "time": 1700000000000, "messaging": messaging}]}
    )


def test_a_reaction_is_recorded_as_a_reply_to_the_message_it_reacts_to() -> None:
    reacted = {
        "timestamp": 1700000000100,
        "reaction": {"mid": "m_out_1", "action": "react", "reaction": "love", "emoji": "❤"},
    }
    removed = {
        "timestamp": 1700000000200,
        "reaction": {"mid": "m_out_1", "action": "unreact", "reaction": "love"},
    }

    interactions, ignored = translate(notification(reacted, removed), "t", KEY)

    [reaction] = interactions
    assert isinstance(reaction.payload, MessageExchanged)
    assert reaction.payload.interactive_reply == "reaction: ❤"
    assert reaction.payload.reply_to_provider_message_id == "m_out_1"
    assert ignored == 1, "taking a reaction back is not recorded"


def test_a_quick_reply_is_kept_and_a_deleted_message_is_not_recorded() -> None:
    quick = {
        "timestamp": 1700000000300,
        "message": {"mid": "m_q", "text": "Yes", "quick_reply": {"payload": "CONFIRM"}},
    }
    deleted = {"timestamp": 1700000000400, "message": {"mid": "m_del", "is_deleted": True}}

    interactions, ignored = translate(notification(quick, deleted), "t", KEY)

    [reply] = interactions
    assert isinstance(reply.payload, MessageExchanged)
    assert reply.id == interaction_id("messenger", "m_q")
    assert reply.payload.text == "Yes"
    assert "CONFIRM" in (reply.payload.interactive_reply or "")
    assert ignored == 1


def test_a_chat_plugin_guest_named_by_user_ref_is_ignored_not_refusing_the_others() -> None:
    """Meta names a guest of the chat plugin by `user_ref`, without `id`: the notification was
    refused 422 whole, and Meta sent it again and again, with the good events beside it."""
    text = {"timestamp": 1700000000500, "message": {"mid": "m_t", "text": "Hi"}}
    guest = {
        "sender": {"user_ref": "ref-77"},
        "timestamp": 1700000000600,
        "postback": {"title": "Get Started", "payload": "START"},
    }

    interactions, ignored = translate(notification(text, guest), "t", KEY)

    assert [i.id for i in interactions] == [interaction_id("messenger", "m_t")]
    assert ignored == 1


def test_a_shared_location_keeps_its_coordinates_and_a_story_reply_its_story() -> None:
    """Messenger sends a location as an attachment with `payload.coordinates` (`lat`, `long`)
    and its name as the attachment's `title`; Instagram names the story a message answers in
    `reply_to.story`."""
    location = {
        "timestamp": 1700000000500,
        "message": {
            "mid": "m_loc",
            "attachments": [
                {
                    "type": "location",
                    "title": "Pinned Location",
                    "url": "https://l.facebook.com/l.php?u=https%3A%2F%2Fwww.bing.com%2Fmaps",
                    "payload": {"coordinates": {"lat": 40.4169, "long": -3.7035}},
                }
            ],
        },
    }
    story_reply = {
        "timestamp": 1700000000600,
        "message": {
            "mid": "m_story",
            "text": "Is this in stock?",
            "reply_to": {"story": {"id": "17900", "url": "https://lookaside.fbsbx.com/s/1"}},
        },
    }

    off_the_globe = json.loads(json.dumps(location).replace("40.4169", "91.5"))
    off_the_globe["message"]["mid"] = "m_loc_2"

    interactions, _ = translate(notification(location, story_reply, off_the_globe), "t", KEY)

    shared, answered, odd = (i.payload for i in interactions)
    assert isinstance(shared, MessageExchanged)
    assert isinstance(answered, MessageExchanged)
    [place] = shared.attachments
    assert (place.kind, place.latitude, place.longitude) == ("location", 40.4169, -3.7035)
    assert place.caption == "Pinned Location"
    assert answered.text == "Is this in stock?"
    [story] = answered.attachments
    assert (story.kind, story.provider_media_id, str(story.url)) == (
        "other",
        "17900",
        "https://lookaside.fbsbx.com/s/1",
    )
    assert story.caption == STORY_REPLY
    assert isinstance(odd, MessageExchanged)
    assert (odd.attachments[0].kind, odd.attachments[0].latitude) == ("location", None)


def campaign_of(
    event: dict[str, Any], refs: tuple[str, ...] = ("spring-*",), instagram: bool = False
) -> dict[str, Any] | None:
    document = notification({"timestamp": 1700000000100, **event})
    if instagram:
        document = Notification.model_validate(
            {**document.model_dump(by_alias=True), "object": "instagram"}
        )
    [interaction], _ = translate(document, "t", KEY, refs)
    assert isinstance(interaction.payload, MessageExchanged)
    campaign = interaction.payload.campaign
    return None if campaign is None else campaign.model_dump(exclude_none=True)


AD = {"source": "ADS", "type": "OPEN_THREAD", "ad_id": "6045246247433"}


def test_a_conversation_from_an_ad_carries_the_ad_as_its_campaign() -> None:
    """Meta puts `referral` on the first message (or Get Started tap) of a conversation a
    click-to-Messenger or click-to-Instagram ad opened: named by its title, else its id."""
    titled = {**AD, "ref": "uid_8f3a9c21e0", "ads_context_data": {"ad_title": "Spring sale"}}
    handle = {**AD, "ads_context_data": {"ad_title": "DM @luma.shop for 20% off"}}

    assert campaign_of({"message": {"mid": "m1", "text": "Hi", "referral": titled}}) == {
        "name": "Spring sale",
        "source": "facebook",
        "medium": "ad",
    }, "an ad is never named by its ref, which anyone can set"
    assert campaign_of({"postback": {"title": "Get Started", "referral": handle}}) == {
        "name": "6045246247433",
        "source": "facebook",
        "medium": "ad",
    }, "a title holding an address gives way to the ad's id"
    assert campaign_of(
        {"message": {"mid": "m2", "text": "Hi", "referral": AD}}, instagram=True
    ) == {
        "name": "6045246247433",
        "source": "instagram",
        "medium": "ad",
    }


def test_a_link_names_a_campaign_only_by_a_ref_the_deployment_listed() -> None:
    """A flyer's QR code to `m.me/<page>?ref=spring-flyer`; anyone can make a link with a ref
    of their own, a customer's token too: unlisted, it names nothing."""
    listed = {"ref": "spring-flyer", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    unlisted = {"ref": "uid_8f3a9c21e0", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    plugin = {"source": "CUSTOMER_CHAT_PLUGIN", "type": "OPEN_THREAD"}

    assert campaign_of({"postback": {"title": "Get Started", "referral": listed}}) == {
        "name": "spring-flyer",
        "source": "facebook",
        "medium": "link",
    }
    assert campaign_of({"message": {"mid": "m1", "text": "Hi", "referral": unlisted}}) is None
    assert campaign_of({"message": {"mid": "m2", "text": "Hi", "referral": plugin}}) is None
    assert campaign_of({"message": {"mid": "m3", "text": "Hi", "referral": "spring"}}) is None


def test_a_listed_ref_matches_exactly_and_a_prefix_only_where_it_ends_in_a_star() -> None:
    def named(ref: str, refs: tuple[str, ...]) -> bool:
        link = {"ref": ref, "source": "SHORTLINK", "type": "OPEN_THREAD"}
        return (
            campaign_of({"message": {"mid": ref, "text": "Hi", "referral": link}}, refs) is not None
        )

    assert named("spring-flyer", ("spring-flyer",))
    assert not named("spring-flyer-2", ("spring-flyer",))
    assert named("store-qr-bcn", ("spring-flyer", "store-qr-*"))


def test_a_catch_all_ref_prefix_is_refused_at_start() -> None:
    base = {"meta_app_secret": "s", "meta_verify_token": "t", "environment": "test"}
    for refs in ("*", "sp*,spring-flyer"):
        with pytest.raises(ValidationError, match="at least 3 characters"):
            SocialSettings.model_validate({**base, "social_campaign_refs": refs})
    listed = SocialSettings.model_validate({**base, "social_campaign_refs": "a-flyer, spr*,"})
    assert listed.social_campaign_refs == ["a-flyer", "spr*"]


def test_the_pages_own_echo_carries_no_campaign() -> None:
    echo = {"mid": "m1", "text": "Welcome!", "is_echo": True, "referral": AD}

    assert campaign_of({"message": echo}) is None


@pytest.mark.parametrize(
    ("metadata", "recorded_as", "purpose"),
    [
        ("hilo-marketing:cmd-1", "outbound:cmd-1", "marketing"),
        ("hilo:cmd-2", "outbound:cmd-2", "service"),
        (None, "m_echo", None),
    ],
)
def test_the_echo_of_a_message_hilo_sent_says_why_it_was_sent(
    metadata: str | None, recorded_as: str, purpose: str | None
) -> None:
    """Recorded instead of the sender's own record (a reply Graph took but answered with an
    error), the echo must not make a promotion an answer to the customer."""
    echo = {"mid": "m_echo", "text": "20% off", "is_echo": True, "metadata": metadata}
    event = {"sender": {"id": PAGE}, "recipient": {"id": PSID}, "message": echo}
    page = Notification.model_validate(
        {"object": "page", "entry": [{"id": PAGE, "time": 1700000000000, "messaging": [event]}]}
    )

    [interaction], _ = translate(page, "t", KEY)

    assert interaction.id == interaction_id("messenger", recorded_as)
    assert isinstance(interaction.payload, MessageExchanged)
    assert interaction.payload.direction == "outbound"
    assert interaction.payload.purpose == purpose


def test_postbacks_without_any_time_are_events_of_their_own() -> None:
    """Neither the event nor its entry has a time: every postback of the customer was
    `postback:<psid>:None`, and all but the first were dropped as duplicates. Meta's retry of
    one is still the same event."""
    untimed = [
        {"postback": {"title": "Get Started", "payload": "GS"}},
        {"postback": {"title": "Track my order", "payload": "TRACK"}},
    ]
    document = {
        "object": "page",
        "entry": [
            {
                "id": PAGE,
                "messaging": [
                    {"sender": {"id": PSID}, "recipient": {"id": PAGE}, **e} for e in untimed
                ],
            }
        ],
    }

    first, _ = translate(Notification.model_validate(document), "t", KEY)
    again, _ = translate(Notification.model_validate(document), "t", KEY)

    assert len({event.id for event in first}) == 2
    assert [event.id for event in again] == [event.id for event in first]
