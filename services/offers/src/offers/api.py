"""The offers HTTP API: the admin side (prices, promotions, their history) and quotes.

Every change is a new version: stored in MongoDB first, then put on the `offers` topic. An
answer of 200 says both happened; 202 says the version is stored and the outbox will publish
it within seconds (Kafka did not confirm in time). A request refused (4xx) stores nothing.

Quotes are priced from this process's copy of the topic (`hilo.offers.book`) with the shared
pricing function, exactly as every other service prices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_extra_types.currency_code import ISO4217
from pymongo.errors import PyMongoError

from hilo.contract import Identifiers
from hilo.contract.payloads import MAX_STORED_INT
from hilo.invalid_requests import invalid_request
from hilo.offers.book import OffersFollower
from hilo.offers.model import (
    CHANNEL_PATTERN,
    CalendarTime,
    Channel,
    CustomerFacts,
    NewPromotion,
    OfferRecord,
    OffersSnapshot,
    PricedLines,
    PricePoint,
    Promotion,
    PromotionId,
    QuoteLine,
    Sku,
    promotion_key,
)
from hilo.offers.money import CurrencyError, minor_units
from hilo.offers.pricing import price_lines, qualifying, quote_id
from hilo.offers.showcase import example_of
from hilo.profile_client import ProfileRequestRefused
from hilo.request_size import limit_request_bodies
from offers.changes import (
    Change,
    NewPrice,
    ScheduleFull,
    price_keys,
    price_records,
    promotion_records,
    retirement_records,
)
from offers.outbox import Outbox
from offers.profiles import CustomerNotFound, CustomerProfiles, ProfileUnavailable
from offers.store import (
    Build,
    CatalogueLoading,
    OffersStore,
    RecordsTooLarge,
    VersionContention,
)

log = structlog.get_logger(__name__)

MAX_PRICES = 100
"""Prices per change: each record carries its whole schedule, and one version is one MongoDB
document (16 MB at most)."""
MAX_LINES = 500
QuoteTime = CalendarTime
"""A quote's time: within the calendar pricing works with (`hilo.offers.model.CalendarTime`)."""


@dataclass
class ApiState:
    """What the routes need, built once by the composition root."""

    store: OffersStore
    outbox: Outbox
    follower: OffersFollower
    profiles: CustomerProfiles
    pepper: bytes
    """The key of quote ids (`hilo.offers.pricing.quote_id`)."""


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.offers
    return state


State = Annotated[ApiState, Depends(_state)]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class ChangeAnswer(_Answer):
    version: int
    at: datetime
    by: str
    keys: list[str]
    published: bool = Field(
        description="On the `offers` topic already; false (status 202): stored, and the outbox "
        "publishes it within seconds."
    )


QUOTED = (
    "Whether quotes price with this version yet: the catalogue shows a change once it is stored, "
    "and quotes (every channel's) once Kafka has it and this instance has read it back. False "
    "while Kafka is away; `GET /v1/versions` says which versions wait to be published."
)


class PriceState(_Answer):
    sku: str
    currency: str
    version: int = Field(description="The version that last changed this SKU's price.")
    points: list[PricePoint]
    in_force: PricePoint | None = Field(description="The point in force now.")
    quoted: bool = Field(description=QUOTED)


class PromotionState(_Answer):
    version: int = Field(description="The version that set it as it is.")
    changed_at: datetime
    changed_by: str
    promotion: Promotion
    quoted: bool = Field(description=QUOTED)


class VersionEntry(_Answer):
    version: int
    at: datetime
    by: str
    keys: list[str]
    published: bool


class QuoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    identifiers: Identifiers | None = Field(
        default=None, description="Who the customer is, if known ({kind: value}); any channel's."
    )
    customer_id: str | None = Field(default=None, min_length=1, max_length=100)
    channel: Channel
    currency: ISO4217
    lines: list[QuoteLine] = Field(min_length=1, max_length=MAX_LINES)
    at: QuoteTime | None = Field(
        default=None, description="Price as of (from 1900 to before 9999); default: now."
    )
    quote_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The caller's own id for this quote; default: derived from the question.",
    )


class Quote(PricedLines):
    quote_id: str
    customer_id: str | None


class PromotionOffer(_Answer):
    promotion: Promotion
    example: PricedLines = Field(
        description="What a quote of its SKUs answers now with this promotion alone (a unit "
        "of each; enough units for a buy-X-get-Y; a bundle's set), as the profile API and the "
        "agent desk show it: with every promotion another that wins the basket would show "
        "under this one's name. What the customer pays is a quote's (`POST /v1/quotes`)."
    )


class CustomerOffers(_Answer):
    customer_id: str
    channel: str
    at: datetime
    offers_version: int
    offers: list[PromotionOffer]


def create_api(
    state: ApiState,
    admin_guard: Sequence[Any],
    quote_guard: Sequence[Any],
    reader_guard: Sequence[Any],
    extra: Sequence[APIRouter],
) -> FastAPI:
    """The app with its routes: changes behind the admin keys, quotes behind the quote keys (a
    channel that may ask for prices may not change them), the catalogue behind either."""
    app = FastAPI(
        title="Hilo offers",
        description=__doc__,
        version="1",
        exception_handlers={RequestValidationError: invalid_request},
    )
    app.state.offers = state
    limit_request_bodies(app)
    app.include_router(admin, dependencies=[Depends(d) for d in admin_guard])
    app.include_router(catalogue, dependencies=[Depends(d) for d in reader_guard])
    app.include_router(quotes, dependencies=[Depends(d) for d in quote_guard])
    for router in extra:
        app.include_router(router)
    return app


def _refuse(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": list(loc), "msg": msg, "type": kind}])


def now() -> datetime:
    """The time of a change, to the millisecond (what MongoDB keeps), so the stored version and
    its records say the same."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _changed_by(
    changed_by: Annotated[
        str | None,
        Header(
            alias="X-Changed-By",
            max_length=200,
            description="Who makes the change (kept in the history); default `api`.",
        ),
    ] = None,
) -> str:
    return (changed_by or "").strip() or "api"


ChangedBy = Annotated[str, Depends(_changed_by)]

CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": ChangeAnswer, "description": "Stored; the outbox publishes it shortly."},
    413: {"description": "A record of the change would be larger than Kafka takes."},
    422: {"description": "Invalid: the fields are named, their values are not echoed."},
    503: {
        "description": "MongoDB busy with other changes or not answering, or the offers topic "
        "still being read at start; try again."
    },
}

admin = APIRouter(prefix="/v1", tags=["admin"])
catalogue = APIRouter(prefix="/v1", tags=["catalogue"])
"""What is in force and its history: readable with a quote key or an admin key."""


@admin.put("/prices", responses=CHANGE_RESPONSES, response_model=ChangeAnswer)
async def put_prices(
    prices: Annotated[list[NewPrice], Body(min_length=1, max_length=MAX_PRICES)],
    state: State,
    by: ChangedBy,
) -> JSONResponse:
    """Set list prices, one version for the whole list; each SKU and currency keeps its
    earlier prices (its schedule) and gets the new points."""
    seen: set[tuple[str, str, datetime | None]] = set()
    for index, price in enumerate(prices):
        _price_currency(price.currency, ["body", index, "currency"])
        point = (price.sku, price.currency, price.valid_from)
        if point in seen:
            raise _refuse(["body", index], "the same SKU, currency and valid_from twice")
        seen.add(point)
    at = now()

    def build(version: int, current: dict[str, OfferRecord]) -> list[OfferRecord]:
        try:
            return price_records(
                prices, current, version=version, at=at, by=by, built_at=datetime.now(UTC)
            )
        except ScheduleFull as exc:
            raise _refuse(["body", exc.index, "valid_from"], str(exc)) from None

    return await _commit(state, price_keys(prices), build, at=at, by=by)


def _expected_version(
    if_match: Annotated[
        str | None,
        Header(
            description="The promotion's `version` (as `GET /v1/promotions` lists it) this "
            'change was made from, `"7"` or `7`: refused with 412 if another change came '
            "since, so two people editing one promotion cannot undo each other's change "
            "unseen. `*`: it must exist. Without it, the change applies whatever came since."
        ),
    ] = None,
) -> str | None:
    if if_match is None:
        return None
    expected = if_match.strip().removeprefix("W/").strip('"')
    if expected != "*" and not re.fullmatch(r"[0-9]{1,18}", expected):
        raise _refuse(["header", "If-Match"], 'a promotion\'s version, such as "7", or *')
    return expected


ExpectedVersion = Annotated[str | None, Depends(_expected_version)]
PRECONDITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: {"description": "`If-Match` names a version the promotion is no longer at."}
}


def _check_expected(expected: str | None, record: OfferRecord | None) -> None:
    """412 unless the promotion is where `If-Match` says the change was made from."""
    if expected is None:
        return
    if record is None:
        raise HTTPException(status_code=412, detail="no promotion with this id yet")
    if expected != "*" and int(expected) != record.version:
        raise HTTPException(
            status_code=412,
            detail=f"the promotion is at version {record.version}: read it again",
            headers={"ETag": f'"{record.version}"'},
        )


@admin.put(
    "/promotions/{promotion_id}",
    responses={**CHANGE_RESPONSES, **PRECONDITION_RESPONSES},
    response_model=ChangeAnswer,
)
async def put_promotion(
    promotion_id: Annotated[PromotionId, Path()],
    promotion: Annotated[NewPromotion, Body()],
    state: State,
    by: ChangedBy,
    expected: ExpectedVersion,
) -> JSONResponse:
    """Create or replace a promotion, whole (a new version; `active: false` retires it)."""
    if promotion.id != promotion_id:
        raise _refuse(["body", "id"], "the promotion's id must be the one in the path")
    _price_currency(promotion.currency, ["body", "currency"])
    key = promotion_key(promotion_id)
    at = now()

    def build(version: int, current: dict[str, OfferRecord]) -> list[OfferRecord]:
        _check_expected(expected, current.get(key))
        return promotion_records(promotion.as_promotion(), version=version, at=at, by=by)

    return await _commit(state, [key], build, at=at, by=by)


@admin.post(
    "/promotions/{promotion_id}/retire",
    responses={
        **CHANGE_RESPONSES,
        **PRECONDITION_RESPONSES,
        404: {"description": "No such promotion."},
        409: {"description": "Retired already."},
    },
    response_model=ChangeAnswer,
)
async def retire_promotion(
    promotion_id: Annotated[PromotionId, Path()],
    state: State,
    by: ChangedBy,
    expected: ExpectedVersion,
) -> JSONResponse:
    """Retire a promotion: a new version in which it is inactive (its history stays)."""
    key = promotion_key(promotion_id)
    at = now()

    def build(version: int, current: dict[str, OfferRecord]) -> list[OfferRecord]:
        record = current.get(key)
        if record is None or record.promotion is None:
            raise HTTPException(status_code=404, detail="no promotion with this id")
        _check_expected(expected, record)
        if not record.promotion.active:
            raise HTTPException(status_code=409, detail="the promotion is retired already")
        return retirement_records(record, version=version, at=at, by=by)

    return await _commit(state, [key], build, at=at, by=by)


@catalogue.get("/prices/{sku:path}", responses={404: {"description": "No price for this SKU."}})
async def get_prices(sku: Annotated[Sku, Path()], state: State) -> list[PriceState]:
    """The SKU's price schedule in each currency, as stored: a change shows here at once, and
    in quotes once published (`quoted`)."""
    records = await state.store.prices_of(sku)
    if not records:
        raise HTTPException(status_code=404, detail="no price for this SKU")
    moment = datetime.now(UTC)
    return [
        PriceState(
            sku=record.price.sku,
            currency=record.price.currency,
            version=record.version,
            points=record.price.points,
            in_force=record.price.at(moment),
            quoted=_quoted(state, record.version),
        )
        for record in records
        if record.price is not None
    ]


@catalogue.get("/promotions")
async def list_promotions(
    state: State,
    request: Request,
    response: Response,
    active: Annotated[bool | None, Query(description="Only active (or retired) ones.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    after: Annotated[
        PromotionId | None, Query(description="The page after this promotion id.")
    ] = None,
) -> list[PromotionState]:
    """Promotions as their latest versions left them, in id order, `limit` a page. A page
    with more after it links the next (`Link: <...>; rel="next"`, `after` its last id), as a
    reference relative to the host (right behind a proxy that ends TLS too)."""
    records = await state.store.promotions(limit=limit + 1, after=after, active=active)
    page = [
        PromotionState(
            version=record.version,
            changed_at=record.changed_at,
            changed_by=record.changed_by,
            promotion=record.promotion,
            quoted=_quoted(state, record.version),
        )
        for record in records[:limit]
        if record.promotion is not None
    ]
    if len(records) > limit:
        following = request.url.include_query_params(after=page[-1].promotion.id, limit=limit)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return page


@catalogue.get("/versions")
async def list_versions(
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_STORED_INT, description="Versions older than this.")
    ] = None,
) -> list[VersionEntry]:
    """The history, newest first: each version, when, who, which keys."""
    return [
        VersionEntry(
            version=document["_id"],
            at=document["at"],
            by=document["by"],
            keys=document["keys"],
            published=document["published"],
        )
        for document in await state.store.history(limit=limit, before=before)
    ]


def _price_currency(currency: str, loc: list[str | int]) -> None:
    """A currency things can be priced in: ISO 4217 with a minor unit (not gold, not XTS)."""
    try:
        minor_units(currency)
    except CurrencyError:
        raise _refuse(loc, "a currency nothing can be priced in (no minor unit)") from None


async def _commit(
    state: ApiState, keys: Sequence[str], build: Build, *, at: datetime, by: str
) -> JSONResponse:
    try:
        change = await state.store.commit(keys, build, at=at, by=by)
    except RecordsTooLarge as exc:
        raise HTTPException(status_code=413, detail=str(exc)) from None
    except VersionContention:
        raise HTTPException(status_code=503, detail="too many changes at once; try again") from None
    except CatalogueLoading as exc:
        raise HTTPException(
            status_code=503, detail=str(exc), headers={"Retry-After": "2"}
        ) from None
    except PyMongoError as exc:
        log.warning("offers_change_not_stored", error=type(exc).__name__)
        raise HTTPException(
            status_code=503,
            detail="the catalogue's database is not answering: try again (a change stored as it "
            "went away is listed by GET /v1/versions)",
            headers={"Retry-After": "5"},
        ) from None
    await state.outbox.try_publish()
    published = await _published(state, change)
    answer = ChangeAnswer(
        version=change.version, at=change.at, by=change.by, keys=change.keys, published=published
    )
    return JSONResponse(answer.model_dump(mode="json"), status_code=200 if published else 202)


async def _published(state: ApiState, change: Change) -> bool:
    try:
        return await state.store.is_published(change.version)
    except Exception:
        return False


quotes = APIRouter(prefix="/v1", tags=["quotes"])

QUOTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "`customer_id` is not a customer the profile service knows."},
    503: {"description": "The offers are still loading, or the profile service is down."},
}


@quotes.post("/quotes", responses=QUOTE_RESPONSES)
async def post_quote(body: QuoteRequest, state: State) -> Quote:
    """Price lines for a customer (or anonymously): list prices and the promotions they get,
    the same answer every channel gets for the same question."""
    _price_currency(body.currency, ["body", "currency"])
    at = body.at or datetime.now(UTC)
    facts = await _facts(state, body.customer_id, body.identifiers, at)
    snapshot = _snapshot(state)
    try:
        priced = price_lines(
            snapshot, body.lines, currency=body.currency, channel=body.channel, facts=facts, at=at
        )
    except ValidationError:  # the same SKU's lines add up to more than a line may hold
        raise HTTPException(
            status_code=422, detail="lines: one SKU's quantities add up to too many units"
        ) from None
    applied = (promotion.id for line in priced.lines for promotion in line.promotions)
    name = body.quote_id or quote_id(
        applied, body.channel, body.currency, body.lines, at, snapshot.version, state.pepper
    )
    # The customer id only when the caller named it: a quote must not turn an email or a phone
    # into the customer's id for whoever can ask for prices.
    return Quote(**dict(priced), quote_id=name, customer_id=body.customer_id)


@quotes.get("/customers/{customer_id}/offers", responses=QUOTE_RESPONSES)
async def customer_offers(
    customer_id: Annotated[str, Path(min_length=1, max_length=100)],
    channel: Annotated[str, Query(min_length=1, max_length=50, pattern=CHANNEL_PATTERN)],
    state: State,
) -> CustomerOffers:
    """The promotions the customer gets now on `channel`, each with its example basket priced
    with that promotion alone, as the profile API and the agent desk show it."""
    at = datetime.now(UTC)
    facts = await _facts(state, customer_id, None, at)
    snapshot = _snapshot(state)
    offers = [
        PromotionOffer(
            promotion=promotion,
            example=example_of(promotion, snapshot, channel=channel, facts=facts, at=at),
        )
        for promotion in qualifying(snapshot, facts=facts, channel=channel, at=at)
    ]
    return CustomerOffers(
        customer_id=facts.customer_id or customer_id,
        channel=channel,
        at=at,
        offers_version=snapshot.version,
        offers=offers,
    )


def _quoted(state: ApiState, version: int) -> bool:
    """Versions apply in order: one at or below the book's is what quotes use."""
    return state.follower.ready.is_set() and version <= state.follower.book.version


def _snapshot(state: ApiState) -> OffersSnapshot:
    if not state.follower.ready.is_set():
        raise HTTPException(status_code=503, detail="the offers are still loading")
    return state.follower.book.snapshot()


async def _facts(
    state: ApiState, customer_id: str | None, identifiers: Identifiers | None, at: datetime
) -> CustomerFacts:
    try:
        return await state.profiles.facts(customer_id=customer_id, identifiers=identifiers, at=at)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail="no customer with this id") from None
    except (ProfileUnavailable, ProfileRequestRefused):  # a refusal of our own request: a bug
        raise HTTPException(
            status_code=503, detail="the customer-profile service is not answering"
        ) from None
