"""Merges an unverified source asked for, waiting for a person to confirm or reject them.

Confirming does not merge here: it publishes a verified interaction carrying the identifiers
that asked (channel `agent`, a custom event naming the request), and the pipeline merges as it
does for any verified event, with every effect exactly once. The event's id is derived from the
request, so a retried confirmation is the same event; it also stays in the customer's journey as
the record of who merged and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import structlog

from customer_profile.adapters.conflicts import CONFIRMED, PENDING, REJECTED, WITHDRAWN
from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.identity import KEPT_APART, split_key
from hilo.contract import CustomEvent, Identifiers, Interaction, new_interaction
from hilo.kafka import KafkaPublisher, PublishFailed
from hilo.topics import Topic

log = structlog.get_logger(__name__)

AGENT_CHANNEL = "agent"


class RequestNotFound(LookupError):
    pass


class AlreadyDecided(RuntimeError):
    def __init__(self, status: str) -> None:
        super().__init__(f"the merge request was {status} already")
        self.status = status


class ConfirmationUnderWay(AlreadyDecided):
    """A rejection while someone else's confirmation is being sent."""

    def __init__(self) -> None:
        RuntimeError.__init__(
            self, "a confirmation of this merge request is being sent: look at it again"
        )
        self.status = "confirming"


class ConfirmationMayLand(AlreadyDecided):
    """A rejection of an attach request after a confirmation whose answer was lost: it may
    still reach Kafka and add the identifiers, and nothing can keep one profile apart from
    itself."""

    def __init__(self) -> None:
        RuntimeError.__init__(
            self,
            "a confirmation sent earlier may still add these identifiers: confirm the request "
            "(they are added once), then split them off if they are not the customer's",
        )
        self.status = "confirming"


class ConfirmationLanded(AlreadyDecided):
    """A rejection after a confirmation whose answer was lost, but which reached Kafka and
    merged the profiles."""

    def __init__(self) -> None:
        RuntimeError.__init__(
            self,
            "a confirmation sent earlier reached the profiles and merged them: confirm it to "
            "record that, then split them if they are not one person",
        )
        self.status = "merged"


@dataclass(frozen=True)
class Decision:
    """Who decided, and why: kept on the request (and, when confirmed, in the journey)."""

    by: str
    reason: str


class MergeRequests:
    def __init__(self, store: ProfileStore, publisher: KafkaPublisher | None) -> None:
        self._store = store
        self._publisher = publisher

    async def pending(self, limit: int) -> list[dict[str, Any]]:
        return [_public(doc) for doc in await self._store.merge_requests(PENDING, limit)]

    async def confirm(self, request_id: str, decision: Decision) -> dict[str, Any]:
        """Publish the verified event that merges, then record the decision. The request is
        first marked `confirming`, so that a rejection knows a confirmation may land."""
        request = await self._open(request_id, CONFIRMED, decision)
        # Confirmed already (a retry): its event was on Kafka before the status was stored.
        # Allowing the merge again would undo a split made since, and the event would merge
        # the two again: only the decision is announced again.
        if request.get("status") == PENDING:
            if not await self._store.note_confirming(request_id, decision.by):
                await self._refuse_decided(await self._store.merge_request(request_id) or {})
            await self._store.allow_merge(request["customer_ids"])
            if self._publisher is not None:
                await self._publisher.publish_interaction(confirmation(request, decision))
        return await self._decide(request, CONFIRMED, decision)

    async def reject(self, request_id: str, decision: Decision) -> dict[str, Any]:
        """Record the rejection. After a confirmation whose answer was lost (it may still
        reach Kafka), the profiles are kept apart first, so that it no longer merges them; if
        it merged them already, the rejection is refused (`ConfirmationLanded`)."""
        request = await self._open(request_id, REJECTED, decision)
        pending = request.get("status") == PENDING
        sent = pending and bool(request.get("confirming"))
        if sent and len(set(request["customer_ids"])) < 2:  # identifiers for one customer
            if await self._attached(request):
                raise ConfirmationLanded
            raise ConfirmationMayLand
        if sent and await self._merged(request["customer_ids"]):
            raise ConfirmationLanded
        if sent or (pending and request.get("reason") == KEPT_APART):
            await self._store.keep_apart(request["customer_ids"])
        if sent and await self._merged(request["customer_ids"]):  # it landed just before
            raise ConfirmationLanded
        return await self._decide(request, REJECTED, decision)

    async def _attached(self, request: dict[str, Any]) -> bool:
        """Whether every identifier the request asked for is the customer's now."""
        [customer] = set(request["customer_ids"])
        target = (await self._store.canonical([customer])).get(customer, customer)
        owners = await self._store.owners(request["keys"])
        owned = set((await self._store.canonical(owners.values())).values())
        return bool(owners) and owners.keys() == set(request["keys"]) and owned == {target}

    async def _merged(self, customer_ids: list[str]) -> bool:
        return len(set((await self._store.canonical(customer_ids)).values())) < len(customer_ids)

    async def _open(self, request_id: str, status: str, decision: Decision) -> dict[str, Any]:
        """The request, pending, or decided this way by this person already (a retry, which
        completes what the first call may not have: the records on Kafka).

        Decided otherwise, the stored decision is announced again before the refusal: the call
        that stored it may have failed before its record reached Kafka, and nobody else would
        ever retry it."""
        request = await self._store.merge_request(request_id)
        if request is None:
            raise RequestNotFound(request_id)
        if request.get("status") != PENDING and not _decided_so(request, status, decision):
            await self._refuse_decided(request)
        return request

    async def _refuse_decided(self, request: dict[str, Any]) -> NoReturn:
        """`AlreadyDecided`, having announced the stored decision again (best effort: with
        Kafka down the caller still learns it was decided, and the next refusal retries)."""
        try:
            await self._announce(request)
        except PublishFailed:
            log.warning("merge_decision_announce_failed", request_id=request.get("_id"))
        raise AlreadyDecided(str(request.get("status", "removed")))

    async def _decide(
        self, request: dict[str, Any], status: str, decision: Decision
    ) -> dict[str, Any]:
        """Record the decision once, then tell `identity.merge_requests`."""
        request_id = request["_id"]
        if request.get("status") == PENDING:
            record = {"by": decision.by, "reason": decision.reason, "at": datetime.now(UTC)}
            judged = request.get("confirming")
            if not await self._store.decide_merge_request(request_id, status, record, judged):
                current = await self._store.merge_request(request_id) or {}
                if current.get("status") == PENDING:  # a confirmation was sent meanwhile
                    raise ConfirmationUnderWay
                if not _decided_so(current, status, decision):
                    await self._refuse_decided(current)
        decided = await self._store.merge_request(request_id)
        if decided is None:  # an erasure withdrew it meanwhile: its record on Kafka says so
            raise AlreadyDecided(WITHDRAWN)
        await self._announce({**decided, "_id": request_id, "status": status})
        return _public(decided)

    async def _announce(self, request: dict[str, Any]) -> None:
        """Tell `identity.merge_requests` the stored decision; a repeat is the same record again
        under the same key, which readers following the queue by request id take once."""
        status = request.get("status")
        if self._publisher is None or status not in (CONFIRMED, REJECTED):
            return
        await self._publisher.publish(
            Topic.MERGE_REQUESTS,
            decided_record(request["_id"], str(status), request.get("decision", {})),
            key=str(request["_id"]).encode(),
            headers={"content-type": "application/json"},
        )


def _decided_so(request: dict[str, Any], status: str, decision: Decision) -> bool:
    return request.get("status") == status and request.get("decision", {}).get("by") == decision.by


def decided_record(request_id: str, status: str, decision: dict[str, Any]) -> bytes:
    """A decision on `identity.merge_requests`: who and when (the reason stays in MongoDB: free
    text may name the customer)."""
    at = decision.get("at")
    return json.dumps(
        {
            "type": status,
            "request_id": request_id,
            "by": decision.get("by"),
            "at": at.isoformat() if isinstance(at, datetime) else None,
        }
    ).encode()


def confirmation(request: dict[str, Any], decision: Decision) -> Interaction:
    """The verified event a confirmed request becomes (same id on every retry)."""
    identifiers = Identifiers.model_validate(
        {split_key(key)[0].value: split_key(key)[1] for key in request["keys"]}
    )
    return new_interaction(
        channel=AGENT_CHANNEL,
        instance="merge-requests",
        provider_event_id=f"merge-request:{request['_id']}",
        identifiers=identifiers,
        payload=CustomEvent(
            name="Identity merge confirmed",
            properties={"request_id": request["_id"], "by": decision.by, "reason": decision.reason},
        ),
        occurred_at=datetime.now(UTC),
    )


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """A request as the API shows it: `id` for `_id`."""
    document = dict(doc)
    request_id = document.pop("_id", None)
    return {"id": request_id, **document}
