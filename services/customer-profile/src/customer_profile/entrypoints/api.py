"""The HTTP API channels and agents read: lookup, profile, journey, context, export, erasure,
splits (un-merge), and the merge requests agents confirm or reject."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    Security,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError

from customer_profile.adapters.conflicts import PENDING
from customer_profile.adapters.store import ProfileStore
from customer_profile.domain.identity import split_key
from customer_profile.domain.journey import JourneyEntry
from customer_profile.domain.profile import (
    CartState,
    ConsentState,
    OpenConversation,
    OrderSummary,
    ProfileView,
    SurveyResult,
)
from customer_profile.service.merge_requests import (
    AlreadyDecided,
    Decision,
    MergeRequests,
    RequestNotFound,
)
from customer_profile.service.ports import StoredProfile
from customer_profile.service.privacy import Privacy
from customer_profile.service.splits import CustomerNotFound, Requester, SplitRefused, Splits
from hilo.auth import API_KEY_HEADER, check_api_key
from hilo.contract import (
    IdentifierKind,
    Identifiers,
    IdentityTrust,
    display_name,
    heading_identifier,
)
from hilo.invalid_requests import invalid_request
from hilo.kafka import PublishFailed
from hilo.logs import error_text
from hilo.offers.facts import facts_from_profile
from hilo.offers.model import OffersSnapshot
from hilo.offers.showcase import OfferShown, offers_for
from hilo.request_size import limit_request_bodies
from hilo.webhook import secrets_match

log = structlog.get_logger(__name__)


class ApiState:
    """What the routes need, built once by the composition root."""

    def __init__(
        self,
        store: ProfileStore,
        privacy: Privacy,
        merge_requests: MergeRequests,
        splits: Splits,
        api_keys: list[str],
        window: timedelta,
        offers: Callable[[], OffersSnapshot | None] = lambda: None,
        admin_api_keys: Sequence[str] = (),
        queue_horizon: timedelta = timedelta(days=7),
    ) -> None:
        self.queue_horizon = queue_horizon
        self.offers = offers
        self.store = store
        self.privacy = privacy
        self.merge_requests = merge_requests
        self.splits = splits
        self.api_keys = [*api_keys, *admin_api_keys]
        self.admin_api_keys = list(admin_api_keys)
        self.window = window


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(_state)]


def require_api_key(state: State, key: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
    """Every data route needs a configured key (none configured: development only)."""
    if state.api_keys:
        check_api_key(state.api_keys, key)


def require_admin_key(state: State, key: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
    """What cannot be undone or hands out everything (erase, export, split, merge decisions)
    needs an admin key: a read key, which the desk and the offers service hold, is refused."""
    if not state.api_keys:
        return
    check_api_key(state.api_keys, key)
    if not any(secrets_match(admin, key) for admin in state.admin_api_keys):
        raise HTTPException(
            status_code=403,
            detail="this key may read but not erase, export, split or decide merges: use one of "
            "HILO_ADMIN_API_KEYS",
        )


Admin = [Depends(require_admin_key)]


class LookupRequest(BaseModel):
    kind: IdentifierKind
    value: str = Field(min_length=1, max_length=500)


def _identifier_key(identifier: LookupRequest) -> str:
    """The stored key of an identifier typed by a person (422 when it is not one)."""
    value = identifier.value
    if identifier.kind is IdentifierKind.WHATSAPP_ID:
        value = _as_wa_id(value)
    try:
        identifiers = Identifiers.model_validate({identifier.kind.value: value})
    except ValidationError as exc:
        raise HTTPException(
            status_code=422, detail=[{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()]
        ) from None
    kind, value = identifiers.strongest()
    return f"{kind.value}:{value}"


_TYPED_NUMBER = re.compile(r"[\d\s+().-]+")


def _as_wa_id(typed: str) -> str:
    """A WhatsApp id as the channel stores Meta's `wa_id`: the number's digits, country code
    first, no `+`. A person types it as a phone (`+34 612 34 56 78`, `whatsapp:+34...`)."""
    number = typed.strip().removeprefix("whatsapp:")
    return re.sub(r"\D", "", number) if _TYPED_NUMBER.fullmatch(number) else typed


class Identity(BaseModel):
    kind: str
    value: str


class CustomerRef(BaseModel):
    customer_id: str


class ProfilePublic(BaseModel):
    customer_id: str
    requested_id: str = Field(description="The id asked for; differs when it was merged away.")
    merged_from: list[str]
    identifiers: list[Identity]
    created_at: datetime
    version: int
    conversation_open: bool
    conversation_waiting: bool = Field(
        description="The customer waits for an answer in their last conversation, within "
        "`HILO_QUEUE_DAYS`, open or closed by the silence since: they are in the agents' queue."
    )
    view: ProfileView


class JourneyPage(BaseModel):
    customer_id: str
    entries: list[JourneyEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; None at the end."
    )


class RecentOrder(OrderSummary):
    """An order of the context, with its lines: what a clerk needs to take a return or an
    exchange at the till."""

    items: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Its lines as last told (sku, name, quantity, unit_price, a weighed line's "
        "measure); empty when its journey entries are no longer kept.",
    )


RECENT_ORDERS = 5
"""Orders the context carries, the latest updated first."""


class AgentContext(BaseModel):
    """What an agent or store clerk needs the moment the customer shows up, on any channel."""

    customer_id: str
    display_name: str | None
    identifiers: list[Identity]
    last_channel: str | None
    last_seen: datetime | None
    open_conversation: OpenConversation | None
    conversation_open: bool
    cart: CartState | None
    recent_orders: list[RecentOrder]
    lifetime_value: dict[str, str]
    consent: list[ConsentState]
    surveys: dict[str, SurveyResult]
    last_interactions: list[dict[str, Any]]
    open_conflicts: int
    offers: list[OfferShown] | None = Field(
        description="Promotions the customer qualifies for now on any channel, each with an "
        "example basket priced as a channel's quote would price it; null while the service "
        "has not read the `offers` topic (not known, which is not none)."
    )


def _identities(profile: StoredProfile) -> list[Identity]:
    return [
        Identity(kind=split_key(key)[0].value, value=split_key(key)[1])
        for key in sorted(profile.identifiers)
    ]


def _is_open(view: ProfileView, window: timedelta) -> bool:
    conversation = view.conversation
    return conversation is not None and datetime.now(UTC) - conversation.last_at <= window


def _is_waiting(view: ProfileView, horizon: timedelta) -> bool:
    conversation = view.conversation
    waiting = conversation.awaiting_reply_since if conversation else None
    return waiting is not None and datetime.now(UTC) - waiting <= horizon


async def _profile(state: ApiState, customer_id: str) -> StoredProfile:
    profile = await state.store.get(customer_id)
    if profile is None:
        raise HTTPException(status_code=404, detail="no customer with this id")
    return profile


def _encode_cursor(entry: JourneyEntry) -> str:
    raw = json.dumps([entry.occurred_at.isoformat(), entry.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def storable(at: datetime) -> datetime:
    """The time in UTC, as MongoDB holds it (a naive one taken as UTC); a ValueError when it
    falls outside MongoDB's years 1 to 9999 there (year 1 at +01:00 is year 0 in UTC)."""
    try:
        return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("a time between the years 1 and 9999 (UTC)") from None


Instant = Annotated[datetime, AfterValidator(storable)]
"""A time from a request, answered 422 rather than 500 when MongoDB cannot hold it."""


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return storable(datetime.fromisoformat(at)), str(event_id)
    except (ValueError, TypeError, RecursionError, binascii.Error):  # deep nesting: Recursion
        raise HTTPException(status_code=400, detail="cursor is not one this API returned") from None


router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_api_key)]
)


@router.post("/lookup", responses={404: {"description": "No customer has this identifier."}})
async def lookup(body: LookupRequest, state: State) -> CustomerRef:
    """Find a customer by any identifier (normalised as the channels normalise it)."""
    owners = await state.store.owners([_identifier_key(body)])
    # A claim's profile is created right after it (or by the next event that meets it, after a
    # crash in between): until then nobody answers for the identifier.
    if not owners or not await state.store.existing_profiles(owners.values()):
        raise HTTPException(status_code=404, detail="no customer has this identifier")
    return CustomerRef(customer_id=next(iter(owners.values())))


@router.get("/by-order/{order_id:path}", responses={404: {"description": "No customer has it."}})
async def find_by_order(order_id: str, state: State) -> CustomerRef:
    """Find the customer of an order or store receipt by its id (as printed on it). The id may
    hold a "/" (`2026/00123`): the server decodes `%2F` before routing, so the route takes the
    rest of the path."""
    customer_id = await state.store.customer_of_order(order_id.strip())
    if customer_id is None:
        raise HTTPException(status_code=404, detail="no customer has this order")
    return CustomerRef(customer_id=customer_id)


@router.get("/{customer_id}")
async def get_profile(customer_id: str, state: State) -> ProfilePublic:
    """The current profile; an id that was merged away answers with the survivor."""
    profile = await _profile(state, customer_id)
    view = profile.view or ProfileView()
    return ProfilePublic(
        customer_id=profile.customer_id,
        requested_id=customer_id,
        merged_from=profile.merged_from,
        identifiers=_identities(profile),
        created_at=profile.created_at,
        version=profile.version,
        conversation_open=_is_open(view, state.window),
        conversation_waiting=_is_waiting(view, state.queue_horizon),
        view=view,
    )


@router.get("/{customer_id}/journey")
async def get_journey(
    customer_id: str,
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    channel: Annotated[list[str] | None, Query()] = None,
    type: Annotated[list[str] | None, Query(description="Payload kinds")] = None,  # noqa: A002
    since: Instant | None = None,
    until: Instant | None = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="`desc`: newest first (a timeline).")
    ] = "asc",
) -> JourneyPage:
    """The journey in event-time order (or newest first), a page at a time, with a stable
    cursor."""
    profile = await _profile(state, customer_id)
    filters: dict[str, Any] = {}
    if channel:
        filters["channel"] = {"$in": channel}
    if type:
        filters["type"] = {"$in": type}
    window = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
    if window:
        filters["occurred_at"] = window
    after = _decode_cursor(cursor) if cursor else None
    entries = await state.store.page(
        profile.aliases,
        after=after,
        limit=limit + 1,
        filters=filters,
        newest_first=order == "desc",
    )
    more = len(entries) > limit
    entries = entries[:limit]
    return JourneyPage(
        customer_id=profile.customer_id,
        entries=[e.model_copy(update={"customer_id": profile.customer_id}) for e in entries],
        next_cursor=_encode_cursor(entries[-1]) if more else None,
    )


@router.get("/{customer_id}/context")
async def get_agent_context(customer_id: str, state: State) -> AgentContext:
    """The compact answer for an agent or clerk: who, what is open, what is in the cart."""
    profile = await _profile(state, customer_id)
    view = profile.view or ProfileView()
    conflicts = await state.store.conflicts_of(profile.aliases)
    return AgentContext(
        customer_id=profile.customer_id,
        display_name=_display_name(view),
        identifiers=_identities(profile),
        last_channel=view.last_channel,
        last_seen=view.last_seen,
        open_conversation=view.conversation,
        conversation_open=_is_open(view, state.window),
        cart=view.cart,
        recent_orders=await _recent_orders(state, profile, view),
        lifetime_value=view.lifetime_value,
        consent=view.consent,
        surveys=view.surveys,
        last_interactions=[p.model_dump() for p in reversed(view.recent_interactions)],
        open_conflicts=sum(conflict.get("status") in (None, PENDING) for conflict in conflicts),
        offers=_offers(state, profile, None),
    )


async def _recent_orders(
    state: ApiState, profile: StoredProfile, view: ProfileView
) -> list[RecentOrder]:
    """The latest updated orders, each with the lines of its latest state in the customer's
    own journey (one read, through the index on the order id), as the profile folds them: an
    unverified event (the public web key) never changes an order already told."""
    orders = sorted(view.orders, key=lambda o: o.last_update, reverse=True)[:RECENT_ORDERS]
    aliases = set(profile.aliases)
    found = await state.store.order_entries([o.order_id for o in orders], set())
    latest: dict[str, JourneyEntry] = {}
    for entry in sorted(found, key=lambda e: (e.occurred_at, e.id)):
        if entry.type != "order" or entry.customer_id not in aliases:
            continue
        order_id = entry.payload["order_id"]
        if entry.identity_trust != "unverified" or order_id not in latest:
            latest[order_id] = entry
    lines = {order_id: entry.payload.get("items", []) for order_id, entry in latest.items()}
    return [
        RecentOrder(**order.model_dump(), items=lines.get(order.order_id, [])) for order in orders
    ]


@router.get(
    "/{customer_id}/offers",
    responses={503: {"description": "The offers are not loaded yet: ask again shortly."}},
)
async def get_offers(
    customer_id: str, state: State, channel: str | None = None
) -> list[OfferShown]:
    """The promotions this customer qualifies for now (on `channel`, or on any), each with an
    example basket priced as that channel's quote would price it."""
    offers = _offers(state, await _profile(state, customer_id), channel)
    if offers is None:  # an empty list would tell an agent there is no promotion
        raise HTTPException(
            status_code=503,
            detail="the offers are not loaded yet (the offers topic has not been read)",
            headers={"Retry-After": "5"},
        )
    return offers


def _offers(
    state: ApiState, profile: StoredProfile, channel: str | None
) -> list[OfferShown] | None:
    """None while the offers topic has not been read: unknown, not none."""
    snapshot = state.offers()
    if snapshot is None:
        return None
    now = datetime.now(UTC)
    view = (profile.view or ProfileView()).model_dump(mode="json")
    facts = facts_from_profile({"customer_id": profile.customer_id, "view": view}, now)
    return offers_for(snapshot, facts, channel=channel, at=now)


def _display_name(view: ProfileView) -> str | None:
    return display_name({name: trait.value for name, trait in view.traits.items()})


@router.get("/{customer_id}/conflicts")
async def get_conflicts(customer_id: str, state: State) -> list[dict[str, Any]]:
    """Identity conflicts: merges refused by merge protection, identifiers over their cap."""
    profile = await _profile(state, customer_id)
    return await state.store.conflicts_of(profile.aliases)


@router.get(
    "/{customer_id}/export",
    dependencies=Admin,
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}},
)
async def export_customer(customer_id: str, state: State) -> StreamingResponse:
    """Everything held about the customer (right of access), as one JSON document whose
    `journey` is sent as it is read (a body cut short, without its closing brackets, is a
    failure to retry)."""
    profile = await _profile(state, customer_id)
    export = await state.privacy.export(profile)
    return StreamingResponse(export.json_chunks(), media_type="application/json")


@router.delete(
    "/{customer_id}",
    dependencies=Admin,
    responses={
        202: {"description": "Recorded; it completes by itself once Kafka takes the tombstones."},
        404: {"description": "No such customer, and no erasure of one."},
    },
)
async def erase_customer(customer_id: str, state: State, response: Response) -> dict[str, Any]:
    """Erase the customer (right to be forgotten); tombstones go to the profiles topic.

    The erasure is recorded before anything is deleted and completed in the background if Kafka
    or MongoDB fail half-way (202); asking again answers where it stands (200 done, 202 pending).
    MongoDB failing before the erasure was recorded is a 503: nothing was done.
    """
    profile = await state.store.get(customer_id)
    failed: PyMongoError | None = None
    if profile is not None:
        try:
            erased = await state.privacy.erase(profile)
        except PublishFailed:
            pass
        except PyMongoError as exc:
            failed = exc
        else:
            if erased["status"] != "done":
                response.status_code = 202
            return erased
    status = await state.privacy.status(customer_id)
    if status is None and failed is not None:
        raise failed
    if status is None:
        raise HTTPException(status_code=404, detail="no customer with this id")
    if status["status"] != "done":
        response.status_code = 202
    return status


class SplitBody(BaseModel):
    """Undo one merge (`merge`), or move named identifiers to a profile of their own."""

    merge: str | None = Field(
        default=None, description="Id of a profile merged into this customer: undo that merge."
    )
    identifiers: list[LookupRequest] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Identifiers that are someone else's: they, and the entries only they "
        "explain, move to a new profile.",
    )
    by: str = Field(min_length=1, max_length=200, description="Who asks (agent id or name).")
    reason: str = Field(min_length=1, max_length=1000, description="Why, for the audit trail.")

    @model_validator(mode="after")
    def _one_kind_of_split(self) -> SplitBody:
        if (self.merge is None) == (self.identifiers is None):
            raise ValueError("give either `merge` or `identifiers`")
        return self


SPLIT_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"description": "Recorded; it completes by itself once Kafka takes the corrections."},
    404: {"description": "No customer with this id."},
    409: {"description": "The merge or the identifiers named are not this customer's."},
}


@router.post("/{customer_id}/split", responses=SPLIT_ERRORS, dependencies=Admin)
async def split_customer(
    customer_id: str, body: SplitBody, state: State, response: Response
) -> dict[str, Any]:
    """Un-merge: give a merged profile back its journey and identifiers, or split identifiers
    that are someone else's off into a new profile. Both profiles are re-derived from their
    journeys; the corrections go to `journey`, `identity.merges` and `profiles`."""
    who = Requester(body.by, body.reason)
    try:
        if body.merge is not None:
            split = await state.splits.undo_merge(customer_id, body.merge, who)
        else:
            keys = [_identifier_key(identifier) for identifier in body.identifiers or []]
            split = await state.splits.split_identifiers(customer_id, keys, who)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail="no customer with this id") from None
    except SplitRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    if split["status"] == "pending":
        response.status_code = 202
    return split


@router.get("/{customer_id}/splits")
async def get_splits(customer_id: str, state: State) -> list[dict[str, Any]]:
    """The splits that kept or restored this customer: who asked, when, why, what moved."""
    try:
        return await state.splits.of(customer_id)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail="no customer with this id") from None


class ConversationSummary(BaseModel):
    """One open conversation in the inbox: whose, where it started, where it is now."""

    customer_id: str
    display_name: str | None
    heading: Identity | None = Field(
        description="What to call a customer without a name by (`hilo.contract.HEADING_KINDS`: "
        "an email, else a phone, …); null for an anonymous visitor."
    )
    conversation: OpenConversation


conversations = APIRouter(
    prefix="/v1/conversations", tags=["conversations"], dependencies=[Depends(require_api_key)]
)


@conversations.get("")
async def list_open_conversations(
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    awaiting: Annotated[
        bool,
        Query(
            description="Instead: the customers waiting for an answer (their message, or call "
            "no agent took), the longest waiting first, however long ago they last wrote, up to "
            "`HILO_QUEUE_DAYS` of waiting."
        ),
    ] = False,
    waiting_from: Annotated[
        Instant | None,
        Query(
            description="With `awaiting`: only those waiting since this time or later (the "
            "next page: the last one's `awaiting_reply_since`; customers at that very time come "
            "again)."
        ),
    ] = None,
) -> list[ConversationSummary]:
    """Open conversations across every channel, the latest first (the agents' inbox), or the
    agents' queue (`awaiting`)."""
    now = datetime.now(UTC)
    if awaiting:
        horizon = now - state.queue_horizon
        since = max(horizon, waiting_from or horizon)
        docs = await state.store.waiting_conversations(since, limit)
    else:
        docs = await state.store.open_conversations(now - state.window, limit)
    held = await state.store.identifiers_held([doc["customer_id"] for doc in docs])
    found = []
    for doc in docs:
        view = ProfileView.model_validate(doc["view"])
        if view.conversation is not None:
            found.append(
                ConversationSummary(
                    customer_id=doc["customer_id"],
                    display_name=_display_name(view),
                    heading=_heading(held.get(doc["customer_id"], [])),
                    conversation=view.conversation,
                )
            )
    return found


def _heading(keys: list[str]) -> Identity | None:
    held = [(kind.value, value) for kind, value in map(split_key, keys)]
    heading = heading_identifier(held)
    return None if heading is None else Identity(kind=heading[0], value=heading[1])


class PriceMismatch(BaseModel):
    """A line a channel charged differently from the offer in force."""

    event_id: str
    customer_id: str
    channel: str
    type: str
    occurred_at: datetime
    sku: str
    quantity: int
    currency: str
    charged: str = Field(description="Per unit: the SKU's charged total over its quantity.")
    expected: str = Field(description="Per unit, as a quote prices the SKU's whole quantity.")
    charged_total: str
    expected_total: str
    list_price: str
    promotions: list[str]
    offers_version: int
    quote_id: str | None = Field(
        default=None, description="The quote the channel said it charged from, if it passed one."
    )
    identity_trust: IdentityTrust = Field(
        description="The event's: `unverified` came from a public web key, which anyone can "
        "send with any price."
    )


mismatches = APIRouter(
    prefix="/v1/mismatches", tags=["offers"], dependencies=[Depends(require_api_key)]
)


@mismatches.get("")
async def list_mismatches(
    state: State,
    channel: str | None = None,
    sku: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    identity_trust: Annotated[
        list[IdentityTrust] | None,
        Query(
            description="Only these sources, the parameter repeated "
            "(`?identity_trust=verified&identity_trust=claimed` leaves browsers' out)."
        ),
    ] = None,
) -> list[PriceMismatch]:
    """Carts, orders and receipts that charged a price other than the offer in force for that
    customer, channel and time, newest first."""
    filters: dict[str, Any] = {}
    if channel:
        filters["channel"] = channel
    if identity_trust:
        # An entry stored before the field was is a verified one's (`JourneyEntry`'s default).
        unmarked = [None] if "verified" in identity_trust else []
        filters["identity_trust"] = {"$in": [*identity_trust, *unmarked]}
    if sku:
        filters["price_mismatches.sku"] = sku
    window = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
    if window:
        filters["occurred_at"] = window
    return [
        PriceMismatch(
            event_id=entry.id,
            customer_id=entry.customer_id,
            channel=entry.channel,
            type=entry.type,
            occurred_at=entry.occurred_at,
            identity_trust=entry.identity_trust,
            **line,
        )
        for entry in await state.store.mismatches(filters, limit)
        for line in entry.price_mismatches
        if sku is None or line["sku"] == sku
    ]


merge_requests = APIRouter(
    prefix="/v1/merge-requests", tags=["merge requests"], dependencies=[Depends(require_api_key)]
)


class DecisionBody(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="Who decides (agent id or name).")
    reason: str = Field(min_length=1, max_length=1000, description="Why, for the audit trail.")


DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such merge request."},
    409: {"description": "The request was confirmed or rejected already."},
    503: {"description": "Kafka did not take the decision's records: ask again to complete it."},
}


@merge_requests.get("")
async def list_merge_requests(
    state: State, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[dict[str, Any]]:
    """Merges that only an unverified source asked for, waiting for a person, oldest first."""
    return await state.merge_requests.pending(limit)


@merge_requests.post("/{request_id}/confirm", responses=DECISION_ERRORS, dependencies=Admin)
async def confirm_merge(request_id: str, body: DecisionBody, state: State) -> dict[str, Any]:
    """Merge the customers: a verified event is published and merged like any other."""
    return await _decided(state.merge_requests.confirm, request_id, body)


@merge_requests.post("/{request_id}/reject", responses=DECISION_ERRORS, dependencies=Admin)
async def reject_merge(request_id: str, body: DecisionBody, state: State) -> dict[str, Any]:
    """Keep the customers apart; the request stays, rejected, for the audit trail."""
    return await _decided(state.merge_requests.reject, request_id, body)


async def _decided(
    action: Callable[[str, Decision], Awaitable[dict[str, Any]]],
    request_id: str,
    body: DecisionBody,
) -> dict[str, Any]:
    try:
        return await action(request_id, Decision(by=body.by, reason=body.reason))
    except RequestNotFound:
        raise HTTPException(status_code=404, detail="no such merge request") from None
    except AlreadyDecided as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except PublishFailed:
        raise HTTPException(
            status_code=503,
            detail="Kafka did not take the decision's records: ask again, the retry completes it",
            headers={"Retry-After": "5"},
        ) from None


def create_api(state: ApiState, extra: list[APIRouter]) -> FastAPI:
    app = FastAPI(
        title="Hilo customer profile",
        version="1",
        description="One synchronised journey and profile per customer, across every channel.",
    )
    app.state.api = state
    limit_request_bodies(app)
    app.add_exception_handler(PyMongoError, _database_failed)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.include_router(router)
    app.include_router(conversations)
    app.include_router(mismatches)
    app.include_router(merge_requests)
    for more in extra:
        app.include_router(more)
    return app


async def _database_failed(_request: Request, exc: Exception) -> JSONResponse:
    """MongoDB unreachable or slow: 503, so the caller retries. Any other database error: 500,
    logged with its frames. A message goes through `error_text` either way, since a write
    error's quotes the documents it refused (uvicorn would log it whole)."""
    away = isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
    if away:
        log.warning("api_database_away", error=error_text(exc))
        return JSONResponse(
            {"detail": "the database does not answer; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    log.error("api_database_failed", error=error_text(exc), exc_info=exc)  # frames: a bug
    return JSONResponse({"detail": "the database refused the request"}, status_code=500)
