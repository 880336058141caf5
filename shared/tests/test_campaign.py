"""Reading a campaign from what a channel was told and the URL, as analytics.js reads it."""

from __future__ import annotations

import pytest

from hilo.contract import Truncations
from hilo.contract.campaign import ad_campaign, campaign_from, utm_of

SPRING = "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=spring"


def read(told: object, url: object) -> tuple[dict[str, str] | None, list[tuple[str, str]]]:
    cut = Truncations()
    campaign = campaign_from(told, url, cut)
    found = None if campaign is None else campaign.model_dump(exclude_none=True)
    return found, [(a.field, a.reason) for a in cut.adjustments]


def test_what_was_told_wins_field_by_field_and_the_url_fills_the_rest() -> None:
    told = {"name": "summer", "source": None, "medium": " ", "term": "shoes"}

    assert read(told, SPRING) == (
        {"name": "summer", "source": "newsletter", "medium": "email"},
        [],
    )


def test_a_repeated_parameter_is_read_at_its_last_value_and_an_unreadable_url_names_none() -> None:
    assert utm_of(SPRING + "&utm_campaign=summer")["name"] == "summer"
    assert utm_of("http://[x/?utm_campaign=spring") == {}
    assert utm_of(None) == {}


@pytest.mark.parametrize(
    ("told", "noted"),
    [
        ({"name": "spring", "source": "ana@example.com"}, True),
        ({"name": "spring", "source": "ana%40example.com"}, True),
        ({"name": "call +34 612 34 56 78"}, True),
        ({"name": "+1 (612) 345-6789"}, True),
        ({"name": "%2B34612345678"}, True),
        ({"name": "12345678901", "source": "google"}, False),
        ({"name": "bf-2025.11.28-1200"}, False),
    ],
)
def test_an_address_or_an_international_number_leaves_the_campaign_out_an_ad_id_does_not(
    told: dict[str, str], noted: bool
) -> None:
    found, adjustments = read(told, None)

    assert (found is None) == noted
    assert adjustments == ([("payload.campaign", "looks_personal")] if noted else [])


def test_a_campaign_naming_neither_name_nor_source_is_none_and_a_long_name_is_cut() -> None:
    assert read({"medium": "email"}, None) == (None, [])
    found, adjustments = read({"name": "s" * 250}, None)
    assert found == {"name": "s" * 200}
    assert adjustments == [("payload.campaign.name", "truncated")]


def test_an_ads_first_name_that_names_nobody_is_taken_and_a_skipped_one_noted() -> None:
    cut = Truncations()

    ad = ad_campaign(["Follow @shop", None, " ", "6045246247433"], "meta", "ad", cut)
    nothing = ad_campaign(["DM @shop", {"nested": 1}], "meta", "ad", Truncations())

    assert ad is not None
    assert (ad.name, ad.source, ad.medium) == ("6045246247433", "meta", "ad")
    assert [(a.field, a.reason) for a in cut.adjustments] == [
        ("payload.campaign.name", "looks_personal")
    ]
    assert nothing is None, "a source alone would take the credit of a named campaign"


def test_a_number_written_with_a_plain_plus_in_the_url_is_caught() -> None:
    """A query's `+` is a space to analytics.js: `+34612345678` would be published as digits."""
    url = "https://shop.example/?utm_campaign=spring&utm_source=+34+612+34+56+78"

    assert read(None, url) == (None, [("payload.campaign", "looks_personal")])
    assert utm_of(url)["source"] == " 34 612 34 56 78"
