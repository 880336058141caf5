"""Un-merge through the running service: undo a merge, split identifiers off, with Kafka failing.

Two instances consume while the split runs on one of them, and events of both people keep
arriving: what each profile holds at the end is compared with what it held before the merge.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from customer_profile.domain.profile import derive_view
from customer_profile.service import derivation
from customer_profile.service.ports import StoredProfile
from customer_profile.service.splits import Requester
from customer_profile.testing import (
    T0,
    FaultPoint,
    InjectedFault,
    RunningProfileService,
    assert_published_records_match_their_schemas,
    clear_faults,
    inject_fault,
    interaction,
    interleave,
    running_profile_service,
    share_partitions,
)
from hilo.contract import Interaction, interaction_id
from hilo.kafka import PublishFailed, read_to_end
from hilo.settings import HiloSettings
from hilo.testkit.probes import eventually
from hilo.topics import Topic, ensure_topics, topic_name

ANA, BO = "ana@example.com", "+34612345678"
WINDOW = timedelta(hours=24)
AUDIT = {"by": "agent-7", "reason": "two people share the web account"}


async def test_a_split_restores_both_profiles_as_before_the_merge_with_two_instances(
    settings: HiloSettings,
) -> None:
    settings = settings.model_copy(update={"topic_partitions": 6})
    await ensure_topics(settings)
    async with (
        running_profile_service(settings, batch_max_records=20) as one,
        running_profile_service(settings, batch_max_records=20) as two,
    ):
        await eventually(lambda: share_partitions((one, two), 6), until=bool, timeout=60)
        await _publish_and_settle(
            one,
            [
                interaction("ana-1", minutes=1, kind="order", email=ANA),
                interaction("ana-2", minutes=2, kind="message", email=ANA),
            ],
        )
        await _publish_and_settle(
            one,
            [
                interaction("bo-1", minutes=3, kind="order", phone=BO),
                interaction("bo-2", minutes=4, kind="call", phone=BO),
            ],
        )
        ana, bo = await one.customer_of("email", ANA), await one.customer_of("phone", BO)
        before = {who: await _state(one, who) for who in (ana, bo)}

        link = interaction("link", minutes=5, kind="identify", email=ANA, phone=BO)
        await _publish_and_settle(one, [link])
        assert await one.customer_of("phone", BO) == ana, "a verified event merged them"
        await _publish_and_settle(
            one,
            [
                interaction("bo-3", minutes=6, kind="message", phone=BO, loyalty_id="LOY-BO"),
                interaction("ana-3", minutes=7, email=ANA),
            ],
        )

        during = [
            interaction("bo-4", minutes=8, phone=BO),
            interaction("ana-4", minutes=9, email=ANA),
        ]
        response, _ = await asyncio.gather(
            two.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT}),
            one.publish(during),
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] in {"applied", "done"}
        await one.wait_for_entries(9)
        await eventually(lambda: _split_status(one, ana), until=lambda s: s == ["done"], timeout=30)

        assert await one.customer_of("email", ANA) == ana
        assert await one.customer_of("phone", BO) == bo
        assert await one.customer_of("loyalty_id", "LOY-BO") == bo, "learned after the merge"
        after = {who: await _state(one, who) for who in (ana, bo)}
        assert after[ana]["identifiers"] == before[ana]["identifiers"]
        assert after[bo]["identifiers"] == sorted([*before[bo]["identifiers"], "loyalty_id:LOY-BO"])
        for who in (ana, bo):
            assert after[who]["orders"] == before[who]["orders"], "orders exactly as before"
            assert after[who]["merged_from"] == []
        assert after[ana]["journey"] == sorted(
            [*before[ana]["journey"], link.id, *_ids("ana-3", "ana-4")]
        )
        assert after[bo]["journey"] == sorted([*before[bo]["journey"], *_ids("bo-3", "bo-4")])
        assert after[bo]["event_count"] == 4
        assert after[ana]["event_count"] == 5

        splits = await one.get(f"/v1/customers/{bo}/splits")
        assert [(s["by"], s["reason"], s["kept"]) for s in splits] == [
            (AUDIT["by"], AUDIT["reason"], ana)
        ]
        assert splits[0]["outcome"]["ambiguous_entries"] == []
        await _assert_corrections_published(settings, ana, bo)


async def test_an_event_resolved_against_the_merged_profile_during_the_split_lands_with_its_owner(
    profile_service: RunningProfileService,
) -> None:
    """The race the settle sweep exists for, made to happen: the batch read the identifiers'
    owner (the merged profile), then the split moved them, then the batch stored its entry."""
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    late = interaction("late", minutes=9, phone=BO)
    store = svc.service.store
    insert = store.insert_entries
    answers: list[Any] = []

    async def split_first(entries: list[Any]) -> set[str]:
        if any(entry.id == late.id for entry in entries) and not answers:
            body = {"merge": bo, **AUDIT}
            answers.append(await svc.http.post(f"/v1/customers/{ana}/split", json=body))
        return await insert(entries)

    store.insert_entries = split_first  # type: ignore[method-assign]
    await _publish_and_settle(svc, [late])
    assert answers[0].status_code == 200, answers[0].text
    stored = await store.journey.find_one({"_id": late.id})
    assert stored is not None
    assert stored["customer_id"] == ana, "the race happened"

    await eventually(lambda: _split_status(svc, ana), until=lambda s: s == ["done"], timeout=30)
    assert (await store.journey.find_one({"_id": late.id}) or {})["customer_id"] == bo
    assert (await svc.get(f"/v1/customers/{bo}"))["view"]["event_count"] == 2
    assert (await svc.get(f"/v1/customers/{ana}"))["view"]["event_count"] == 2


async def test_confirming_profiles_kept_apart_merges_them_after_one_moved_into_another(
    profile_service: RunningProfileService,
) -> None:
    """Ana and Bo were split and kept apart; Ana's profile was then merged into an older one,
    Dee's, which took her kept-apart mark. A person confirming Ana and Bo are one merges Bo
    into Dee's profile, not into a new request."""
    svc = profile_service
    await _publish_and_settle(svc, [interaction("dee", minutes=0, customer_id="C-1")])
    dee = await svc.customer_of("customer_id", "C-1")
    ana, bo = await _merged_pair(svc)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert split.status_code == 200, split.text
    await _publish_and_settle(svc, [interaction(4, minutes=4, email=ANA, phone=BO)])
    [request] = await svc.get("/v1/merge-requests")
    await _publish_and_settle(svc, [interaction(5, minutes=5, email=ANA, customer_id="C-1")])
    assert await svc.customer_of("email", ANA) == dee

    decision = {"by": "agent-9", "reason": "one person after all"}
    settled = await svc.settled_count()
    confirmed = await svc.http.post(f"/v1/merge-requests/{request['id']}/confirm", json=decision)
    assert confirmed.status_code == 200, confirmed.text
    await svc.wait_for_entries(settled + 1)  # the confirmation, an event of its own

    assert await svc.customer_of("phone", BO) == dee
    assert await svc.get("/v1/merge-requests") == [], "the confirmation asked again"


async def test_identifiers_split_off_again_after_they_came_back_are_a_new_split(
    profile_service: RunningProfileService,
) -> None:
    """Bo's phone was split off Ana's profile; a person then confirmed them one after all, and
    later splits the phone off again: that is done again, not answered with the first split."""
    svc = profile_service
    profile = await _ana_with_bos_phone(svc)
    ana, phone = profile.customer_id, {"identifiers": [{"kind": "phone", "value": BO}], **AUDIT}
    first = await svc.http.post(f"/v1/customers/{ana}/split", json=phone)
    assert first.status_code == 200, first.text
    await _publish_and_settle(svc, [interaction(3, minutes=3, email=ANA, phone=BO)])
    [request] = await svc.get("/v1/merge-requests")
    settled = await svc.settled_count()
    decision = {"by": "agent-9", "reason": "one person after all"}
    confirmed = await svc.http.post(f"/v1/merge-requests/{request['id']}/confirm", json=decision)
    assert confirmed.status_code == 200, confirmed.text
    await svc.wait_for_entries(settled + 1)
    assert await svc.customer_of("phone", BO) == ana

    second = await svc.http.post(f"/v1/customers/{ana}/split", json=phone)

    assert second.status_code == 200, second.text
    assert second.json()["split_id"] != first.json()["split_id"]
    assert await svc.customer_of("phone", BO) == second.json()["restored"] != ana


async def test_asking_another_customer_to_undo_a_merge_already_undone_is_refused(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert split.status_code == 200, split.text
    await _publish_and_settle(svc, [interaction("xu", minutes=5, email="xu@example.com")])
    xu = await svc.customer_of("email", "xu@example.com")

    retried = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    elsewhere = await svc.http.post(f"/v1/customers/{xu}/split", json={"merge": bo, **AUDIT})

    assert retried.status_code == 200, "a retry of the same split answers it again"
    assert retried.json()["split_id"] == split.json()["split_id"]
    assert elsewhere.status_code == 409, elsewhere.text
    assert f"was not merged into {xu}" in elsewhere.json()["detail"]


async def test_profiles_a_person_split_are_merged_again_only_when_a_person_confirms(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert split.status_code == 200, split.text

    await _publish_and_settle(svc, [interaction(4, minutes=4, email=ANA, phone=BO)])
    assert await svc.customer_of("phone", BO) == bo, "a verified event does not undo a split"
    requests = await svc.get("/v1/merge-requests")
    assert [(r["reason"], sorted(r["customer_ids"])) for r in requests] == [
        ("kept_apart", sorted([ana, bo]))
    ]

    decision = {"by": "agent-9", "reason": "they are one person after all"}
    confirmed = await svc.http.post(
        f"/v1/merge-requests/{requests[0]['id']}/confirm", json=decision
    )
    assert confirmed.status_code == 200, confirmed.text
    await svc.wait_for_entries(5)
    assert await svc.customer_of("phone", BO) == ana
    # What analytics read of it all matches the published schemas: a merge, a split, a request
    # and its confirmation, snapshots and aliases, the journey.
    counts = await assert_published_records_match_their_schemas(svc.service.settings)
    assert counts["identity.merges"] >= 3
    assert counts["identity.merge_requests"] >= 2
    assert counts["profiles"] >= 3
    assert counts["journey"] >= 5


async def test_an_export_holds_no_identifier_of_the_person_a_split_told_apart(
    profile_service: RunningProfileService,
) -> None:
    """After the split, an event carrying both people's identifiers opens a merge request that
    names both: Ana's export shows the request, but not Bo's phone nor Bo's profile."""
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert split.status_code == 200, split.text
    told = interaction(5, minutes=5, kind="identify", email=ANA)
    told = told.model_copy(
        update={"payload": told.payload.model_copy(update={"traits": {"mobile": BO}})}
    )
    await _publish_and_settle(svc, [interaction(4, minutes=4, email=ANA, phone=BO), told])

    export = await svc.get(f"/v1/customers/{ana}/export")

    [request] = [c for c in export["conflicts"] if c["reason"] == "kept_apart"]
    assert request["customer_ids"] == [ana]
    assert request["keys"] == [f"email:{ANA}"]
    assert BO not in json.dumps(export), "Bo's phone, in the conflict, the journey or a trait"
    assert bo not in json.dumps(export["conflicts"])
    # The split is Ana's record too (an erasure deletes it): who split, when and why, without
    # Bo's side of it.
    [kept_apart] = export["splits"]
    assert kept_apart["side"] == "kept"
    assert (kept_apart["by"], kept_apart["reason"]) == (AUDIT["by"], AUDIT["reason"])
    assert bo not in json.dumps(export["splits"])
    [both] = [e for e in export["journey"] if e["id"] == interaction(4, email=ANA, phone=BO).id]
    assert both["identifiers"] == {"email": ANA}


async def test_a_split_whose_kept_profile_is_merged_away_meanwhile_completes(
    profile_service: RunningProfileService,
) -> None:
    """While the split saves Ana's view, an event merges Ana into Xu (the older profile). The split
    saves Ana's view all the same and ends (the save used to report Ana as lost on every attempt,
    and the split failed); downstream reads Ana as merged into Xu."""
    svc = profile_service
    await _publish_and_settle(svc, [interaction("xu", minutes=0, loyalty_id="LOY-XU")])
    ana, bo = await _merged_pair(svc)
    xu = await svc.customer_of("loyalty_id", "LOY-XU")

    async def merge_ana_into_xu() -> None:
        link = interaction("link-xu", minutes=5, email=ANA, loyalty_id="LOY-XU")
        await _publish_and_settle(svc, [link])

    interleave(svc.service.store, "save_views", merge_ana_into_xu)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})

    assert split.status_code == 200, split.text
    assert await svc.customer_of("email", ANA) == xu, "Ana was merged into Xu during the split"
    await eventually(lambda: _split_status(svc, ana), until=lambda s: s == ["done"], timeout=30)
    assert await svc.customer_of("phone", BO) == bo
    journey = await svc.get(f"/v1/customers/{xu}/journey?limit=100")
    assert sorted(e["id"] for e in journey["entries"]) == _ids("xu", 1, 3, "link-xu")
    profile = await svc.get(f"/v1/customers/{xu}")
    assert profile["view"]["event_count"] == 4, "Xu's view holds Ana's events"
    assert (await svc.get(f"/v1/customers/{bo}"))["view"]["event_count"] == 1
    settings = svc.service.settings
    records = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.PROFILES, settings)
    )
    last = {record.key: record.value for record in records}
    assert json.loads(last[ana.encode()] or b"{}") == {"customer_id": ana, "merged_into": xu}


async def test_splitting_off_a_phone_that_came_with_the_sign_up_leaves_the_customer_hers(
    profile_service: RunningProfileService,
) -> None:
    """Ana's very first event brought her email and a mistyped phone (Bo's). Splitting the phone
    off moves it and what only it explains (Bo's SMS), never Ana's email nor her journey."""
    svc = profile_service
    await _publish_and_settle(
        svc,
        [
            interaction("signup", minutes=1, email=ANA, phone=BO),
            interaction("order", minutes=2, email=ANA),
            interaction("web", minutes=3, email=ANA, device_id="d-1"),
            interaction("bo-sms", minutes=4, phone=BO),
        ],
    )
    ana = await svc.customer_of("email", ANA)

    split = await svc.http.post(
        f"/v1/customers/{ana}/split",
        json={"identifiers": [{"kind": "phone", "value": BO}], **AUDIT},
    )

    assert split.status_code == 200, split.text
    assert await svc.customer_of("email", ANA) == ana
    bo = await svc.customer_of("phone", BO)
    assert bo != ana
    kept = await _state(svc, ana)
    assert sorted(kept["identifiers"]) == ["device_id:d-1", f"email:{ANA}"]
    assert kept["journey"] == _ids("signup", "order", "web")
    assert (await _state(svc, bo))["journey"] == _ids("bo-sms")
    assert split.json()["outcome"]["ambiguous_entries"] == _ids("signup")


async def _ana_with_bos_phone(svc: RunningProfileService) -> StoredProfile:
    """Ana's profile, holding her email and, from an event linking them, Bo's phone."""
    await _publish_and_settle(
        svc,
        [
            interaction(1, minutes=1, email=ANA),
            interaction(2, minutes=2, email=ANA, phone=BO),
        ],
    )
    profile = await svc.service.store.get(await svc.customer_of("email", ANA))
    assert profile is not None
    return profile


async def test_a_split_asked_for_just_before_its_customer_is_erased_is_dropped(
    profile_service: RunningProfileService,
) -> None:
    """The customer is erased between the split's request reading their profile and recording
    the split: the request answers 404, and neither the split (which names their identifiers)
    nor a profile for it stays behind; the sweep finds nothing left to do."""
    svc = profile_service
    store = svc.service.store
    profile = await _ana_with_bos_phone(svc)
    ana = profile.customer_id

    async def erase_ana() -> None:
        await svc.service.privacy.erase(profile)

    interleave(store, "record_split", erase_ana)
    typed = {"kind": "phone", "value": BO}
    split = await svc.http.post(
        f"/v1/customers/{ana}/split", json={"identifiers": [typed], **AUDIT}
    )

    assert split.status_code == 404, split.text
    assert await store.profiles.count_documents({}) == 0
    assert await store.splits_involving([ana]) == []
    assert await store.unfinished_splits() == []
    assert await svc.service.splits.finish_unfinished() == 0


SPLIT_FAULTS = [
    FaultPoint("store", "unmerge", "after"),
    FaultPoint("store", "hand_over", "after"),
    FaultPoint("store", "save_views", "after"),
    FaultPoint("publisher", "publish_records", "before"),
    FaultPoint("publisher", "publish_records", "after"),
    FaultPoint("store", "split_completed", "before"),
]


@pytest.mark.parametrize("point", SPLIT_FAULTS, ids=lambda p: p.name)
async def test_a_split_interrupted_at_any_step_is_completed_exactly_once(
    settings: HiloSettings, topics: list[str], point: FaultPoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crashed request is not coming back: the sweep need not leave it time to finish.
    monkeypatch.setattr("customer_profile.service.splits.LEFT_TO_ITS_REQUEST", timedelta(0))
    async with running_profile_service(settings, erasure_retry_seconds=3600) as svc:
        ana, bo = await _merged_pair(svc)
        await _publish_and_settle(svc, [interaction(4, minutes=4, phone=BO)])  # moves back
        splits = svc.service.splits
        target = svc.service.store if point.target == "store" else splits._publisher
        inject_fault(target, point)
        with pytest.raises(InjectedFault):
            await splits.undo_merge(ana, bo, Requester(**AUDIT))
        clear_faults(target, point.method)
        assert await _split_status(svc, ana) == ["pending"]

        await asyncio.sleep(1.1)  # the settle time of the test settings
        assert await splits.finish_unfinished() == 0
        assert await _split_status(svc, ana) == ["done"]
        assert await svc.customer_of("phone", BO) == bo
        for who, ids in ((ana, _ids(1, 3)), (bo, _ids(2, 4))):
            journey = await svc.get(f"/v1/customers/{who}/journey")
            assert sorted(e["id"] for e in journey["entries"]) == ids
            profile = await svc.get(f"/v1/customers/{who}")
            assert profile["view"]["event_count"] == len(ids), "each entry counted once"
            assert profile["merged_from"] == []
        records = await read_to_end(
            settings.kafka_bootstrap_servers, topic_name(Topic.JOURNEY, settings)
        )
        corrected = {json.loads(r.value)["id"] for r in records if r.key == bo.encode()}
        assert set(_ids(4)) <= corrected, "the moved entry is published under Bo, retry or not"


async def test_identifiers_that_are_someone_elses_split_off_into_a_new_profile(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    await _publish_and_settle(
        svc,
        [
            interaction(1, minutes=1, kind="order", email=ANA),
            interaction(2, minutes=2, kind="identify", email=ANA, phone=BO),
            interaction(3, minutes=3, kind="call", phone=BO),
            interaction(4, minutes=4, kind="message", phone=BO, device_id="d-2"),
        ],
    )
    ana = await svc.customer_of("email", ANA)
    typed = {"kind": "phone", "value": "+34 612 34 56 78"}  # as a person types it

    response = await svc.http.post(
        f"/v1/customers/{ana}/split", json={"identifiers": [typed], **AUDIT}
    )
    again = await svc.http.post(
        f"/v1/customers/{ana}/split", json={"identifiers": [typed], **AUDIT}
    )

    assert response.status_code == 200, response.text
    split = response.json()
    assert again.json()["split_id"] == split["split_id"], "a retried request is the same split"
    other = await svc.customer_of("phone", BO)
    assert other == split["restored"] != ana
    assert await svc.customer_of("device_id", "d-2") == other
    journey = await svc.get(f"/v1/customers/{other}/journey")
    assert sorted(e["id"] for e in journey["entries"]) == _ids(3, 4)
    assert split["outcome"]["ambiguous_entries"] == _ids(2), "the linking event is for a person"
    kept = await svc.get(f"/v1/customers/{ana}")
    assert [i["value"] for i in kept["identifiers"]] == [ANA]
    assert kept["view"]["event_count"] == 2


async def test_a_split_that_kafka_refuses_is_pending_and_completes_by_itself(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    splits = svc.service.splits
    real = splits._publisher
    splits._publisher = _Refusing(real)  # type: ignore[assignment]

    pending = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert pending.status_code == 202, pending.text
    assert pending.json()["status"] == "pending"
    splits._publisher = real
    await eventually(lambda: _split_status(svc, ana), until=lambda s: s == ["done"], timeout=30)
    assert await svc.customer_of("phone", BO) == bo
    assert (await svc.get(f"/v1/customers/{bo}"))["view"]["event_count"] == 1


async def test_a_split_that_does_not_fit_the_customer_is_refused_with_the_reason(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await _publish_and_settle(svc, [interaction(1, email=ANA), interaction(2, phone=BO)])
    ana = await svc.customer_of("email", ANA)
    bo = await svc.customer_of("phone", BO)

    def split(customer: str, body: Mapping[str, Any]) -> Any:
        return svc.http.post(f"/v1/customers/{customer}/split", json={**body, **AUDIT})

    not_merged = await split(ana, {"merge": bo})
    not_theirs = await split(ana, {"identifiers": [{"kind": "phone", "value": BO}]})
    everything = await split(ana, {"identifiers": [{"kind": "email", "value": ANA}]})
    both = await split(ana, {"merge": bo, "identifiers": [{"kind": "phone", "value": BO}]})
    unknown = await split("nobody", {"merge": bo})
    anonymous = await svc.http.post(
        f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT}, headers={"X-API-Key": ""}
    )

    assert (not_merged.status_code, not_theirs.status_code, everything.status_code) == (409,) * 3
    assert "not merged" in not_merged.json()["detail"]
    assert not_theirs.json()["detail"] == "this customer holds no such identifier (phone)"
    assert BO not in not_theirs.text, "the identifier is not echoed"
    assert (both.status_code, unknown.status_code, anonymous.status_code) == (422, 404, 401)


class _Refusing:
    """Kafka refusing every write, as `KafkaPublisher` reports it."""

    def __init__(self, real: object) -> None:
        self.real = real

    async def publish_records(self, *_args: object, **_kwargs: object) -> None:
        raise PublishFailed("broker unavailable (injected)")


async def test_a_split_keeps_the_checkpoint_where_the_settings_say(
    settings: HiloSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`HILO_CHECKPOINT_BEHIND_HOURS` at 10 minutes, checkpoints from 10 entries on: a split
    derives Ana's 40-minute journey from the beginning and keeps its checkpoint 10 minutes
    behind her last entry, as the consumer would (it used the hour's default: none at all)."""
    monkeypatch.setattr(derivation, "CHECKPOINT_AFTER", 10)
    async with running_profile_service(settings, checkpoint_behind_hours=1 / 6) as svc:
        ana, bo = await _merged_pair(svc)
        await _publish_and_settle(
            svc, [interaction(f"ana-{n}", minutes=n, email=ANA) for n in range(4, 44)]
        )
        response = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
        assert response.status_code == 200, response.text
        await eventually(lambda: _split_status(svc, ana), until=lambda s: s == ["done"], timeout=30)

        [kept] = (await svc.service.store.load([ana])).values()
        assert kept.checkpoint is not None, "a checkpoint 10 minutes back, not an hour"
        assert kept.checkpoint.at == T0 + timedelta(minutes=33)
        assert kept.view == derive_view(await svc.service.store.entries(kept.aliases), WINDOW)


async def _merged_pair(svc: RunningProfileService) -> tuple[str, str]:
    """Ana (events 1), Bo (2), merged by a verified event carrying both (3): (Ana, Bo)."""
    await _publish_and_settle(svc, [interaction(1, minutes=1, email=ANA)])
    await _publish_and_settle(svc, [interaction(2, minutes=2, phone=BO)])
    await _publish_and_settle(svc, [interaction(3, minutes=3, email=ANA, phone=BO)])
    ana = await svc.customer_of("email", ANA)
    merged_from: list[str] = (await svc.get(f"/v1/customers/{ana}"))["merged_from"]
    assert len(merged_from) == 1
    return ana, merged_from[0]


async def _publish_and_settle(svc: RunningProfileService, events: list[Interaction]) -> None:
    settled = await svc.settled_count()
    await svc.publish(events)
    await svc.wait_for_entries(settled + len(events))


async def _state(svc: RunningProfileService, customer: str) -> dict[str, Any]:
    profile = await svc.get(f"/v1/customers/{customer}")
    journey = await svc.get(f"/v1/customers/{customer}/journey?limit=100")
    return {
        "identifiers": [f"{i['kind']}:{i['value']}" for i in profile["identifiers"]],
        "orders": profile["view"]["orders"],
        "event_count": profile["view"]["event_count"],
        "merged_from": profile["merged_from"],
        "journey": sorted(e["id"] for e in journey["entries"]),
    }


async def _split_status(svc: RunningProfileService, customer: str) -> list[str]:
    return [s["status"] for s in await svc.get(f"/v1/customers/{customer}/splits")]


def _ids(*names: int | str) -> list[str]:
    return sorted(interaction_id("web", f"evt-{name}") for name in names)


async def _assert_corrections_published(settings: HiloSettings, ana: str, bo: str) -> None:
    """Downstream learns of the split: a record on `identity.merges`, Bo's own snapshot last on
    `profiles`, and Bo's entries again on `journey` under Bo's id."""
    servers = settings.kafka_bootstrap_servers
    merges = [
        json.loads(r.value)
        for r in await read_to_end(servers, topic_name(Topic.IDENTITY_MERGES, settings))
    ]
    assert [(m["type"], m["survivor"]) for m in merges if m["type"] == "merge"] == [("merge", ana)]
    splits = {m["split_id"]: (m["kept"], m["restored"]) for m in merges if m["type"] == "split"}
    assert list(splits.values()) == [(ana, bo)], "at least once, one split id"
    last: dict[str, dict[str, Any]] = {}
    for record in await read_to_end(servers, topic_name(Topic.PROFILES, settings)):
        last[record.key.decode()] = json.loads(record.value)
    assert last[bo]["customer_id"] == bo
    assert "merged_into" not in last[bo]
    assert f"phone:{BO}" in last[bo]["identifiers"]
    assert f"phone:{BO}" not in last[ana]["identifiers"]
    journey = await read_to_end(servers, topic_name(Topic.JOURNEY, settings))
    [split_id] = splits
    moved = {
        json.loads(r.value)["id"]: dict(r.headers)["ce_id"].decode()
        for r in journey
        if r.key == bo.encode()
    }
    assert set(_ids("bo-3")) <= set(moved)
    # A new event about each entry: a reader dropping repeated CloudEvents ids keeps it.
    assert {moved[entry] for entry in _ids("bo-3")} == {
        f"{entry}:split:{split_id}" for entry in _ids("bo-3")
    }


async def test_the_merging_event_delivered_again_after_a_split_asks_nobody_to_merge_them(
    profile_service: RunningProfileService,
) -> None:
    """The event that merged Ana and Bo is in the journey already: delivered again (a replay
    of the dead-letter topic, a consumer group reset) after a person split them, it is a
    duplicate and changes nothing. It was resolved again first, met the split's mark, and
    asked agents to merge them again: a request for what a person had just undone."""
    svc = profile_service
    ana, bo = await _merged_pair(svc)
    split = await svc.http.post(f"/v1/customers/{ana}/split", json={"merge": bo, **AUDIT})
    assert split.status_code == 200, split.text
    settled, duplicates = await svc.settled_count(), _duplicates()

    await svc.publish([interaction(3, minutes=3, email=ANA, phone=BO)])
    await eventually(_duplicates_async, until=lambda n: n > duplicates, timeout=60)

    assert await svc.settled_count() == settled, "the merging event is a duplicate"
    assert await svc.get("/v1/merge-requests") == []


def _duplicates() -> float:
    return REGISTRY.get_sample_value("hilo_profile_events_total", {"outcome": "duplicate"}) or 0.0


async def _duplicates_async() -> float:
    return _duplicates()
