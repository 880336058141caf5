"""Merges, merge protection, weak identifiers and blocked values through the running service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from customer_profile.testing import RunningProfileService, attach_request, interaction, raw_records
from hilo.contract import Identified, Interaction, interaction_id
from hilo.kafka import PublishFailed, read_to_end
from hilo.settings import HiloSettings
from hilo.testkit.probes import read_topic
from hilo.topics import Topic, topic_name


async def test_a_three_way_chain_merges_into_the_oldest_profile(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    # One batch each, so "seen first" is not a tie of creation times broken by id.
    for n, identifier in enumerate(
        [{"email": "ana@example.com"}, {"phone": "+34612345678"}, {"loyalty_id": "LOY-1"}], 1
    ):
        await svc.publish([interaction(n, minutes=n - 1, **identifier)])
        await svc.wait_for_entries(n)
    first = await svc.customer_of("email", "ana@example.com")
    second = await svc.customer_of("phone", "+34612345678")
    third = await svc.customer_of("loyalty_id", "LOY-1")
    assert len({first, second, third}) == 3

    await svc.publish([interaction(4, minutes=3, email="ana@example.com", phone="+34612345678")])
    await svc.wait_for_entries(4)
    await svc.publish([interaction(5, minutes=4, phone="+34612345678", loyalty_id="LOY-1")])
    await svc.wait_for_entries(5)

    survivor = await svc.customer_of("loyalty_id", "LOY-1")
    assert survivor == first, "the profile seen first survives"
    profile = await svc.get(f"/v1/customers/{survivor}")
    assert sorted(profile["merged_from"]) == sorted([second, third])
    assert profile["view"]["event_count"] == 5
    for old in (second, third):
        assert (await svc.get(f"/v1/customers/{old}"))["customer_id"] == survivor
        journey = await svc.get(f"/v1/customers/{old}/journey")
        assert len(journey["entries"]) == 5
    merges = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.IDENTITY_MERGES, settings), expected=2
    )
    records = [json.loads(r.value) for r in merges]
    assert [(r["survivor"], r["absorbed"]) for r in records] == [
        (first, [second]),
        (first, [third]),
    ]
    assert all(r.key == first.encode() for r in merges)


async def test_two_loyalty_cards_are_not_merged_and_the_conflict_is_visible(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish(
        [
            interaction(1, loyalty_id="LOY-1", email="family@example.com"),
            interaction(2, minutes=1, loyalty_id="LOY-2", phone="+34699999001"),
        ]
    )
    await svc.wait_for_entries(2)

    await svc.publish([interaction(3, minutes=2, loyalty_id="LOY-2", email="family@example.com")])
    await svc.wait_for_entries(3)

    one = await svc.customer_of("loyalty_id", "LOY-1")
    two = await svc.customer_of("loyalty_id", "LOY-2")
    assert one != two
    assert await svc.customer_of("email", "family@example.com") == one
    journey_two = await svc.get(f"/v1/customers/{two}/journey")
    assert [e["id"] for e in journey_two["entries"]] == [
        interaction_id("web", "evt-2"),
        interaction_id("web", "evt-3"),
    ]
    conflicts = await svc.get(f"/v1/customers/{one}/conflicts")
    assert [(c["reason"], c["kind"], sorted(c["customer_ids"])) for c in conflicts] == [
        ("unique_identifier", "loyalty_id", sorted([one, two]))
    ]
    context = await svc.get(f"/v1/customers/{two}/context")
    assert context["open_conflicts"] == 1


async def test_a_shared_device_does_not_merge_two_known_customers(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish(
        [
            interaction(1, email="one@example.com", device_id="family-tablet"),
            interaction(2, minutes=1, email="two@example.com"),
        ]
    )
    await svc.wait_for_entries(2)

    await svc.publish(
        [interaction(3, minutes=2, email="two@example.com", device_id="family-tablet")]
    )
    await svc.wait_for_entries(3)

    one = await svc.customer_of("email", "one@example.com")
    two = await svc.customer_of("email", "two@example.com")
    assert one != two
    assert await svc.customer_of("device_id", "family-tablet") == one
    assert (await svc.get(f"/v1/customers/{two}"))["view"]["event_count"] == 2


async def test_an_unverified_identify_cannot_merge_two_known_customers(
    profile_service: RunningProfileService,
) -> None:
    """Identity poisoning: anyone holding the public web write key could join two people."""
    svc = profile_service
    for n, identifier in enumerate([{"email": "ana@example.com"}, {"phone": "+34612345678"}], 1):
        await svc.publish([interaction(n, minutes=n, **identifier)])
        await svc.wait_for_entries(n)
    ana = await svc.customer_of("email", "ana@example.com")
    other = await svc.customer_of("phone", "+34612345678")

    poisoned = interaction(3, minutes=3, email="ana@example.com", phone="+34612345678")
    await svc.publish([poisoned.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(3)

    assert await svc.customer_of("phone", "+34612345678") == other, "not merged"
    profile = await svc.get(f"/v1/customers/{ana}")
    assert profile["merged_from"] == []
    assert profile["view"]["event_count"] == 2, "the event went to its strongest identifier"
    conflicts = await svc.get(f"/v1/customers/{other}/conflicts")
    assert [(c["reason"], sorted(c["customer_ids"])) for c in conflicts] == [
        ("unverified_merge", sorted([ana, other]))
    ]

    await svc.publish([interaction(4, minutes=4, email="ana@example.com", phone="+34612345678")])
    await svc.wait_for_entries(4)
    assert await svc.customer_of("phone", "+34612345678") == ana, "a verified source merges"


async def test_an_agent_confirms_or_rejects_the_merge_an_unverified_source_asked_for(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    people = [
        {"email": "ana@example.com"},
        {"phone": "+34612345678"},
        {"email": "bo@example.com"},
        {"phone": "+34612345679"},
    ]
    for n, identifier in enumerate(people, 1):
        await svc.publish([interaction(n, minutes=n, **identifier)])
        await svc.wait_for_entries(n)
    asks = [
        interaction(5, minutes=5, email="ana@example.com", phone="+34612345678"),
        interaction(6, minutes=6, email="bo@example.com", phone="+34612345679"),
    ]
    await svc.publish([e.model_copy(update={"identity_trust": "unverified"}) for e in asks])
    await svc.wait_for_entries(6)
    ana, bo = [await svc.customer_of("email", f"{n}@example.com") for n in ("ana", "bo")]

    pending = await svc.get("/v1/merge-requests")
    assert [r["event_id"] for r in pending] == [asks[0].id, asks[1].id]
    assert all(r["status"] == "pending" for r in pending)
    confirm, reject = pending[0]["id"], pending[1]["id"]
    decision = {"by": "agent-7", "reason": "same person, checked by phone"}

    publish = svc.service.publisher.publish_interaction

    async def kafka_down(*_args: object, **_kwargs: object) -> None:
        raise PublishFailed("injected: Kafka did not confirm")

    svc.service.publisher.publish_interaction = kafka_down  # type: ignore[method-assign]
    refused = await svc.http.post(f"/v1/merge-requests/{confirm}/confirm", json=decision)
    svc.service.publisher.publish_interaction = publish  # type: ignore[method-assign]
    confirmed = await svc.http.post(f"/v1/merge-requests/{confirm}/confirm", json=decision)
    rejected = await svc.http.post(f"/v1/merge-requests/{reject}/reject", json=decision)
    retried = await svc.http.post(f"/v1/merge-requests/{confirm}/confirm", json=decision)
    again = await svc.http.post(f"/v1/merge-requests/{confirm}/reject", json=decision)
    unknown = await svc.http.post("/v1/merge-requests/nope/confirm", json=decision)
    anonymous = await svc.http.get("/v1/merge-requests", headers={"X-API-Key": ""})

    assert refused.status_code == 503, "Kafka down: ask again, not a server error"
    assert refused.headers["Retry-After"] == "5"
    assert (confirmed.status_code, rejected.status_code) == (200, 200)
    assert confirmed.json()["status"] == "confirmed"
    assert confirmed.json()["decision"]["by"] == "agent-7"
    assert rejected.json()["status"] == "rejected"
    assert retried.status_code == 200, "the same decision by the same person is a retry"
    assert (again.status_code, unknown.status_code, anonymous.status_code) == (409, 404, 401)
    assert await svc.get("/v1/merge-requests") == []

    await svc.wait_for_entries(7)  # the confirmation is an event of its own, in the journey
    assert await svc.customer_of("phone", "+34612345678") == ana
    assert await svc.customer_of("phone", "+34612345679") != bo
    journey = await svc.get(f"/v1/customers/{ana}/journey")
    audit = [e for e in journey["entries"] if e["channel"] == "agent"]
    assert [e["payload"]["properties"]["by"] for e in audit] == ["agent-7"]
    assert (await svc.get(f"/v1/customers/{ana}"))["view"]["event_count"] == 4

    # Kafka delivers the asking events again (a rebalance): the decisions stand, on Kafka too.
    unverified = [e.model_copy(update={"identity_trust": "unverified"}) for e in asks]
    await svc.service.pipeline.process(raw_records(unverified))
    assert await svc.get("/v1/merge-requests") == []

    feed = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    last = {r.key.decode(): json.loads(r.value)["type"] for r in feed}
    assert last == {confirm: "confirmed", reject: "rejected"}, "a redelivery reopens nothing"
    told = {(json.loads(r.value)["type"], r.key.decode()) for r in feed}
    assert told == {
        ("requested", confirm),
        ("requested", reject),
        ("confirmed", confirm),
        ("rejected", reject),
    }, "downstream (the agent desk) follows the queue on Kafka"
    assert all(b"example.com" not in r.value for r in feed), "ids only, no identifiers"


async def test_a_decision_whose_record_did_not_reach_kafka_is_announced_by_the_next_caller(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    for n, identifier in enumerate([{"email": "ana@example.com"}, {"phone": "+34612345678"}], 1):
        await svc.publish([interaction(n, minutes=n, **identifier)])
        await svc.wait_for_entries(n)
    ask = interaction(3, minutes=3, email="ana@example.com", phone="+34612345678")
    await svc.publish([ask.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(3)
    [pending] = await svc.get("/v1/merge-requests")
    publish = svc.service.publisher.publish

    async def record_lost(topic: Topic, *args: object, **kwargs: object) -> None:
        if topic == Topic.MERGE_REQUESTS:
            raise PublishFailed("injected: Kafka did not confirm the decision's record")
        await publish(topic, *args, **kwargs)  # type: ignore[arg-type]

    svc.service.publisher.publish = record_lost  # type: ignore[method-assign]
    stored_unannounced = await svc.http.post(
        f"/v1/merge-requests/{pending['id']}/reject", json={"by": "agent-7", "reason": "no"}
    )
    while_kafka_is_down = await svc.http.post(
        f"/v1/merge-requests/{pending['id']}/confirm", json={"by": "agent-9", "reason": "yes"}
    )
    svc.service.publisher.publish = publish  # type: ignore[method-assign]
    someone_else = await svc.http.post(
        f"/v1/merge-requests/{pending['id']}/confirm", json={"by": "agent-8", "reason": "yes"}
    )

    assert stored_unannounced.status_code == 503
    assert while_kafka_is_down.status_code == 409, "decided: asking again would not help"
    assert someone_else.status_code == 409
    feed = await read_to_end(
        settings.kafka_bootstrap_servers, topic_name(Topic.MERGE_REQUESTS, settings)
    )
    decisions = [json.loads(r.value) for r in feed if json.loads(r.value)["type"] != "requested"]
    assert [(d["type"], d["request_id"], d["by"]) for d in decisions] == [
        ("rejected", pending["id"], "agent-7")
    ]


async def _one_pending_request(svc: RunningProfileService, first: int) -> dict[str, Any]:
    """Two customers (one email, one phone) and the unverified event that asks to merge them."""
    email, phone = f"p{first}@example.com", f"+3461234{first:04}"
    await svc.publish([interaction(first, minutes=1, email=email)])
    await svc.publish([interaction(first + 1, minutes=2, phone=phone)])
    await svc.wait_for_entries(2)
    ask = interaction(first + 2, minutes=3, email=email, phone=phone)
    await svc.publish([ask.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(3)
    [pending] = await svc.get("/v1/merge-requests")
    return dict(pending)


@pytest.mark.parametrize("landed", [False, True], ids=["confirmation-lost", "answer-lost"])
async def test_a_rejection_after_a_confirmation_whose_answer_was_lost_stays_true(
    profile_service: RunningProfileService, landed: bool
) -> None:
    """Confirm is answered 503, the agent rejects instead. If the confirmation never reached
    Kafka, the rejection holds even when the event turns up later; if it reached Kafka and
    merged, the rejection is refused: a request that says rejected over merged profiles lies."""
    svc = profile_service
    request = await _one_pending_request(svc, 10)
    publish = svc.service.publisher.publish_interaction
    late: list[Interaction] = []

    async def answer_lost(interaction: Interaction) -> None:
        if landed:
            await publish(interaction)
        else:
            late.append(interaction)
        raise PublishFailed("injected: Kafka did not confirm")

    svc.service.publisher.publish_interaction = answer_lost  # type: ignore[method-assign]
    confirmed = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/confirm", json={"by": "agent-7", "reason": "same"}
    )
    svc.service.publisher.publish_interaction = publish  # type: ignore[method-assign]
    if landed:
        await svc.wait_for_entries(4)
    rejected = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/reject", json={"by": "agent-8", "reason": "two"}
    )
    if late:
        await publish(late[0])  # Kafka delivers the lost confirmation after all
        await svc.wait_for_entries(4)
    customers = await svc.service.store.canonical(request["customer_ids"])

    assert confirmed.status_code == 503
    if landed:
        assert rejected.status_code == 409
        assert "merged them" in rejected.json()["detail"]
        assert len(set(customers.values())) == 1
    else:
        assert rejected.status_code == 200
        assert len(set(customers.values())) == 2, "the late confirmation did not merge them"


async def test_confirming_again_after_a_split_does_not_merge_them_again(
    profile_service: RunningProfileService,
) -> None:
    """The agent's confirm is retried (a double click, a lost answer) after a colleague split
    the two: the retry announces the decision again and changes nothing else."""
    svc = profile_service
    request = await _one_pending_request(svc, 30)
    decision = {"by": "agent-7", "reason": "same person"}
    confirmed = await svc.http.post(f"/v1/merge-requests/{request['id']}/confirm", json=decision)
    assert confirmed.status_code == 200, confirmed.text
    await svc.wait_for_entries(4)
    merged = await svc.service.store.canonical(request["customer_ids"])
    [survivor] = set(merged.values())
    [absorbed] = set(request["customer_ids"]) - {survivor}
    split = await svc.http.post(
        f"/v1/customers/{survivor}/split",
        json={"merge": absorbed, "by": "agent-9", "reason": "two people after all"},
    )
    assert split.status_code == 200, split.text

    retried = await svc.http.post(f"/v1/merge-requests/{request['id']}/confirm", json=decision)
    await svc.publish([interaction(33, minutes=9, email="p30@example.com")])  # a later event
    await svc.wait_for_entries(5)

    assert retried.status_code == 200, retried.text
    customers = await svc.service.store.canonical(request["customer_ids"])
    assert len(set(customers.values())) == 2, "the retried confirmation undid the split"


@pytest.mark.parametrize("landed", [False, True], ids=["confirmation-lost", "answer-lost"])
async def test_rejecting_an_attach_request_whose_confirmation_may_land_is_refused(
    profile_service: RunningProfileService, landed: bool
) -> None:
    """Nothing keeps one profile apart from itself: after a confirmation answered 503, a
    rejection of a request to add a phone would say rejected over a phone added later."""
    svc = profile_service
    request = await attach_request(svc, 40, "zoe@example.com", "+34611220040")
    publish = svc.service.publisher.publish_interaction

    async def answer_lost(interaction: Interaction) -> None:
        if landed:
            await publish(interaction)
        raise PublishFailed("injected: Kafka did not confirm")

    svc.service.publisher.publish_interaction = answer_lost  # type: ignore[method-assign]
    confirmed = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/confirm", json={"by": "agent-7", "reason": "hers"}
    )
    svc.service.publisher.publish_interaction = publish  # type: ignore[method-assign]
    if landed:
        await svc.wait_for_entries(3)
    rejected = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/reject", json={"by": "agent-8", "reason": "not hers"}
    )

    assert confirmed.status_code == 503
    assert rejected.status_code == 409
    expected = "merged them" if landed else "may still add these identifiers"
    assert expected in rejected.json()["detail"]
    [still] = await svc.get("/v1/merge-requests")
    assert still["status"] == "pending"


async def test_a_rejection_judged_before_a_confirmation_was_sent_is_not_stored_after_it(
    profile_service: RunningProfileService,
) -> None:
    """Agent A's rejection reads the request; agent B's confirmation is sent (the request
    marked `confirming`) before A's decision is written: A's write must not land."""
    svc = profile_service
    request = await _one_pending_request(svc, 20)
    store = svc.service.store
    decide = store.decide_merge_request

    async def confirmation_sent_meanwhile(*args: Any, **kwargs: Any) -> bool:
        store.decide_merge_request = decide  # type: ignore[method-assign]
        assert await store.note_confirming(request["id"], "agent-b")
        return await decide(*args, **kwargs)

    store.decide_merge_request = confirmation_sent_meanwhile  # type: ignore[method-assign]
    rejected = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/reject", json={"by": "agent-a", "reason": "two"}
    )
    store.decide_merge_request = decide  # type: ignore[method-assign]

    assert rejected.status_code == 409
    assert "being sent" in rejected.json()["detail"]
    [still] = await svc.get("/v1/merge-requests")
    assert (still["status"], still["confirming"]["by"]) == ("pending", "agent-b")


async def test_an_unverified_source_cannot_add_a_strangers_phone_to_a_known_customer(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish([interaction(1, email="ana@example.com")])
    await svc.wait_for_entries(1)
    ana = await svc.customer_of("email", "ana@example.com")
    stranger = interaction(2, minutes=1, email="ana@example.com", phone="+34611223344")
    await svc.publish([stranger.model_copy(update={"identity_trust": "unverified"})])
    await svc.wait_for_entries(2)

    unknown = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "phone", "value": "+34611223344"}
    )
    assert unknown.status_code == 404, "the phone is not Ana's on a browser's word"
    [request] = await svc.get("/v1/merge-requests")
    assert (request["reason"], request["customer_ids"]) == ("unverified_attach", [ana])

    decision = {"by": "agent-7", "reason": "Ana confirmed her new number on the phone"}
    confirmed = await svc.http.post(f"/v1/merge-requests/{request['id']}/confirm", json=decision)
    assert confirmed.status_code == 200, confirmed.text
    await svc.wait_for_entries(3)
    assert await svc.customer_of("phone", "+34611223344") == ana


async def test_anonymous_browsing_joins_the_customer_when_they_identify(
    profile_service: RunningProfileService,
) -> None:
    svc = profile_service
    await svc.publish(
        [interaction(1, minutes=0, email="ana@example.com", channel="email", kind="message")]
    )
    # The known customer exists first: created in the same batch, the survivor would be the
    # smaller id (a tie), and this test is about the earlier profile absorbing the later one.
    await svc.wait_for_entries(1)
    await svc.publish([interaction(n, minutes=n, anonymous_id="anon-1") for n in range(2, 5)])
    await svc.wait_for_entries(4)
    known = await svc.customer_of("email", "ana@example.com")
    anonymous = await svc.customer_of("anonymous_id", "anon-1")
    assert known != anonymous

    await svc.publish(
        [interaction(5, minutes=5, anonymous_id="anon-1", email="ana@example.com", kind="identify")]
    )
    await svc.wait_for_entries(5)

    assert await svc.customer_of("anonymous_id", "anon-1") == known
    profile = await svc.get(f"/v1/customers/{known}")
    assert profile["view"]["event_count"] == 5
    assert profile["view"]["channels"]["web"]["count"] == 4


async def test_a_placeholder_email_never_glues_customers_together(
    profile_service: RunningProfileService, settings: HiloSettings
) -> None:
    svc = profile_service
    await svc.publish(
        [interaction(n, phone=f"+3461234560{n}", email="test@test.com") for n in range(1, 4)]
    )
    await svc.publish([interaction(9, customer_id="null", email="TEST@test.com")])
    await svc.wait_for_entries(3)

    customers = {await svc.customer_of("phone", f"+3461234560{n}") for n in range(1, 4)}
    assert len(customers) == 3
    lookup = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "test@test.com"}
    )
    assert lookup.status_code == 404
    dead = await read_topic(
        settings.kafka_bootstrap_servers, topic_name(Topic.INTERACTIONS_DLQ, settings), expected=1
    )
    assert [dict(r.headers)["hilo_error_reason"] for r in dead] == [b"no_usable_identifier"]


async def test_a_card_number_a_clerk_typed_adds_no_strangers_email_yet_its_sale_counts(
    profile_service: RunningProfileService,
) -> None:
    """At a till, someone says Ana's card number and gives their own email for the receipt:
    the clerk types both (`identity_trust: claimed`). The sale is Ana's, but the email is not
    hers on that word: it waits for a person. The till vouches for what happened, so a return
    it types is paid back off the order, as a scanned one is."""
    svc = profile_service
    await svc.publish([interaction(1, loyalty_id="LOY-ANA", email="ana@example.com")])
    await svc.wait_for_entries(1)
    ana = await svc.customer_of("loyalty_id", "LOY-ANA")
    typed = {"channel": "store", "identity_trust": "claimed"}
    sale = interaction(2, minutes=1, kind="order", loyalty_id="LOY-ANA", email="eve@example.com")
    back = interaction(3, minutes=2, kind="refund", loyalty_id="LOY-ANA")
    order_id = sale.payload.order_id  # type: ignore[union-attr]
    paid_back = back.payload.model_copy(update={"order_id": order_id, "items": []})
    await svc.publish(
        [sale.model_copy(update=typed), back.model_copy(update={**typed, "payload": paid_back})]
    )
    await svc.wait_for_entries(3)

    unknown = await svc.http.post(
        "/v1/customers/lookup", json={"kind": "email", "value": "eve@example.com"}
    )
    assert unknown.status_code == 404, "the email is not Ana's on a typed card number"
    [request] = await svc.get("/v1/merge-requests")
    assert (request["reason"], request["customer_ids"]) == ("unverified_attach", [ana])
    [order] = (await svc.get(f"/v1/customers/{ana}"))["view"]["orders"]
    assert order["order_id"] == order_id, "the sale is on Ana's journey"
    assert order["refunded"] == {"amount": "59.90", "currency": "EUR"}, "the typed return counts"


async def test_a_browser_cannot_rename_a_customer_a_server_named(
    profile_service: RunningProfileService,
) -> None:
    """The desk greets Ana by the name her shop's server gave: a call with the public web key
    naming her email does not change it (it may add what nobody verified told)."""
    svc = profile_service
    named = interaction(1, kind="identify", email="ana@example.com")
    forged = interaction(2, minutes=1, kind="identify", email="ana@example.com")
    await svc.publish(
        [
            named.model_copy(update={"payload": Identified(traits={"name": "Ana García"})}),
            forged.model_copy(
                update={
                    "payload": Identified(traits={"name": "Mallory", "plan": "pro"}),
                    "identity_trust": "unverified",
                }
            ),
        ]
    )
    await svc.wait_for_entries(2)
    ana = await svc.customer_of("email", "ana@example.com")
    traits = (await svc.get(f"/v1/customers/{ana}"))["view"]["traits"]

    assert (traits["name"]["value"], traits["name"]["verified"]) == ("Ana García", True)
    assert traits["plan"]["value"] == "pro"
    assert "verified" not in traits["plan"], "absent for what a browser told, as before"


async def test_a_decided_merge_request_no_longer_counts_as_an_open_conflict(
    profile_service: RunningProfileService,
) -> None:
    """The context counted every conflict, decided requests too: a store clerk's client showed
    a conflict to look at that an agent had rejected (the desk filtered them itself)."""
    svc = profile_service
    request = await _one_pending_request(svc, 20)
    customer = request["customer_ids"][0]
    before = await svc.get(f"/v1/customers/{customer}/context")

    rejected = await svc.http.post(
        f"/v1/merge-requests/{request['id']}/reject", json={"by": "agent-7", "reason": "two"}
    )
    after = await svc.get(f"/v1/customers/{customer}/context")

    assert rejected.status_code == 200
    assert (before["open_conflicts"], after["open_conflicts"]) == (1, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"kind": "email", "value": "x\\ud800y@example.com"}', "value"),
        ('{"kind": "email\\ud800", "value": "a@example.com"}', "kind"),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_a_422_not_a_500(
    profile_service: RunningProfileService, body: str, field: str
) -> None:
    """JSON allows `\\ud800`; no UTF-8 encodes it, and FastAPI's answer, which echoes the value,
    failed with a 500: the desk and offers then took the profile service for down."""
    response = await profile_service.http.post(
        "/v1/customers/lookup", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == [
        {
            "loc": ["body", field],
            "msg": "Input should be a valid string, unable to parse raw data as a unicode string",
            "type": "string_unicode",
        }
    ]
