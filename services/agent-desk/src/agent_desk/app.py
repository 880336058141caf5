"""The desk's web application: server-rendered pages, a little JavaScript for the live timeline
and replies, nothing about customers readable without signing in.

Pages: sign-in, the inbox (open conversations on every channel, the queue of customers waiting
for an answer, who handles which: `agent_desk.handling`), search, and the customer page
(identities, consent, conversation and who handles it, cart, orders, value, CSAT, conflicts,
notes for colleagues: `agent_desk.notes`, the timeline of every channel with filters and
paging, live, and the reply box). The queue's gauges for a supervisor: `agent_desk.queue`.

Without a session only the sign-in form, `/static`, and the operational endpoints of
`hilo.health` answer: `/health` and `/metrics` (scraped by operations; counters and timings, no
personal data). The OpenAPI schema and its docs pages are off: they would describe the routes to
anyone.

When the customer-profile service does not answer, pages and API calls answer 503 (an error page
for a browser, `{"error": ...}` for the page's scripts) so nothing mistakes the outage for an
answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode
from uuid import UUID

import structlog
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
)
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp

from agent_desk.auth import (
    Agents,
    NotSignedIn,
    SignedOut,
    SignInThrottle,
    check_csrf,
    csrf_token,
    session_end,
    session_id,
    sign_in,
    signed_in_agent,
)
from agent_desk.channel_services import ChannelServices
from agent_desk.handling import (
    HANDLING,
    Handling,
    Handlings,
    NotSaved,
    SeenTo,
    TakenByAnother,
    done_mark,
    overdue,
    state_of,
    strongest_first,
)
from agent_desk.headers import SecurityHeaders
from agent_desk.live import Gap, JourneyFeed, LiveEntry
from agent_desk.notes import NOTE_LENGTH, NOTES, Note, Notes, ids_of
from agent_desk.pending import (
    PENDING_REPLIES,
    PendingReplies,
    not_running_warning,
    pending_rows,
    waiting_state,
    with_pending,
)
from agent_desk.policy import (
    ReplyOption,
    channel_name,
    default_channel,
    refusal,
    reply_options,
    too_long,
)
from agent_desk.profiles import ProfileApi, ProfileRequestRefused, ProfileUnavailable
from agent_desk.queue import QUEUE_PAGE, read_queue, watch_queue
from agent_desk.replies import (
    CONTACTS,
    MAX_SUBJECT,
    last_contact,
    publish_reply,
    reply_command,
    thread_of,
    written_from,
)
from agent_desk.search import find_customers
from agent_desk.settings import DeskSettings
from agent_desk.timeline import attach_statuses, row, type_name
from hilo.contract import BUILT_IN_CHANNELS, display_name, heading_identifier
from hilo.contract.outbound import Template, one_line
from hilo.health import health_router, kafka_check, mongo_check
from hilo.invalid_requests import invalid_request
from hilo.kafka import (
    KafkaPublisher,
    PublishFailed,
    create_broker,
    start_or_keep_trying,
    watch_producer,
)
from hilo.logs import error_text
from hilo.mongo import create_mongo_client
from hilo.offers.money import format_amount
from hilo.request_size import limit_request_bodies
from hilo.sealing import NoKeys, create_sealer
from hilo.shutdown import cancelled, shut_down

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
T = TypeVar("T")
PAGE_SIZE = 50
PROFILES_DOWN = "The customer profile service is not answering. Try again in a moment."
LINK_REFUSED = "This link is not valid any more: open the customer again from the inbox or search"
SIGN_IN_REFUSED = "Unknown agent or wrong password."
REPLY_MAYBE_QUEUED = (
    "Kafka is not answering: the reply may or may not be queued. Send it again unchanged (it "
    "will not go out twice); a changed reply would be another message."
)
FORM_REFUSED = "The form was not complete, or too long: go back and try again."
TOO_MANY_TRIES = (
    "Too many failed sign-ins for this agent or from this address. "
    "Wait five minutes, then try again."
)
INBOX_SIZE = 200
INBOX_REFRESH_SECONDS = 15.0
"""How often an open inbox reads itself again (the queue moves without the agent)."""
PANELS_REFRESH_SECONDS = 15.0
"""How often an open customer page reads its panels again between entries: a colleague taking
the conversation, or marking it done, shows within it."""
InboxView = Literal["all", "waiting", "mine", "unassigned"]
NoteAction = Literal["add", "delete"]
HANDLING_LOOKUP_SECONDS = 1.0
"""How long a page waits for who handles what before it shows itself without (MongoDB away)."""
HANDLING_CHANGE_SECONDS = 5.0
DATABASE_AWAY = "The desk's database is not answering: try again in a moment."
DONE_NOT_TOLD = "Kafka is not answering: nothing was marked done. Try again in a moment."
CONTACTS_READ = 100
"""How many of the customer's latest contacts a done mark looks through for the one it sees to
(its identifier is the mark's): more came since only on a page left open through a long chat."""
BEING_ERASED = "Nothing can be kept about this customer: their data is being erased."
INBOX_VIEWS: dict[str, str] = {
    "all": "All open",
    "waiting": "Waiting for a reply",
    "mine": "Mine",
    "unassigned": "Nobody's",
}
HandlingAction = Literal["take", "release", "done"]
FILTER_TYPES = [
    "message",
    "call",
    "order",
    "refund",
    "cart",
    "page_view",
    "store_visit",
    "survey_answer",
    "consent",
]


def _in_utc(moment: datetime) -> datetime:
    """A time the page showed, in UTC: one at the calendar's edge with an offset past it
    (`9999-12-31T23:00-14:00`) is no time a page shows, refused rather than a 500."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("a time outside the calendar") from None


PageTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class ReplyBody(BaseModel):
    channel: str = Field(min_length=1, max_length=40)
    text: str | None = Field(default=None, max_length=4_096)
    template_name: str | None = Field(default=None, max_length=512)
    template_language: str = Field(default="en_US", min_length=2, max_length=15)
    template_parameters: list[str] = Field(default_factory=list, max_length=20)
    subject: str | None = Field(default=None, max_length=10_000)
    purpose: str = Field(default="service", pattern="^(service|marketing)$")
    command_id: UUID | None = Field(
        default=None,
        description="The page's id for this reply, sent again when the agent retries the same "
        "reply: a retry after an answer that did not come back is the same command, sent once.",
    )

    @field_validator("subject")
    @classmethod
    def _on_one_line(cls, subject: str | None) -> str | None:
        """The subject as it is sent (`one_line`), None when nothing is left of it."""
        return one_line(subject or "") or None


PASSWORD_CHECKS_AT_ONCE = 2
"""An argon2 check takes ~64 MiB and a core for ~50 ms: a burst of sign-ins waits its turn
instead of taking the process's memory, or both cores from the pages being served."""


class Desk:
    """What the routes share, built once per app."""

    def __init__(self, settings: DeskSettings) -> None:
        self.settings = settings
        self.agents = Agents(settings.desk_agents)
        self.throttle = SignInThrottle()
        self.verifying = asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)
        self.profiles = ProfileApi(settings)
        self.broker = create_broker(settings)
        self.mongo = create_mongo_client(settings)
        self.sealer = create_sealer(settings, self.mongo)
        self.publisher = KafkaPublisher(self.broker, settings, sealer=self.sealer)
        self.signed_out = SignedOut(self.mongo[settings.mongodb_database][SIGNED_OUT])
        self.pending = PendingReplies(self.mongo[settings.mongodb_database][PENDING_REPLIES])
        self.handlings = Handlings(self.mongo[settings.mongodb_database][HANDLING])
        self.notes = Notes(self.mongo[settings.mongodb_database][NOTES], self.sealer)
        self.services = ChannelServices(settings, settings.desk_reply_channels)
        self.feed = JourneyFeed(
            settings,
            self.sealer,
            settings.desk_live_buffer,
            on_entries=self.pending.recorded,
            on_erasures=self.notes.forget,
        )
        self.templates = desk_templates()

    @property
    def session_seconds(self) -> float:
        """How long a sign-in lasts (`HILO_DESK_SESSION_HOURS`)."""
        return self.settings.desk_session_hours * 3600


SIGNED_OUT = "desk_signed_out"
SIGN_OUT_CHECK_SECONDS = 5.0
"""How soon an open live page learns that its session was signed out elsewhere."""
SIGN_OUT_LOOKUP_SECONDS = 1.0
IDENTITY_CHECK_SECONDS = 15.0
"""How soon an open live page learns that its customer was merged into another, had a merge
undone, or was erased (sooner when an entry arrives under one of its other ids)."""
IDENTITY_LOOKUP_SECONDS = 2.0


@dataclass(frozen=True)
class Watched:
    """The customer an open page shows: the id in its address, and as its profile was when the
    page was rendered, the survivor and every id merged into it (whose entries it shows)."""

    requested: str
    survivor: str
    customers: frozenset[str]

    @classmethod
    def of(cls, requested: str, profile: dict[str, Any]) -> Watched:
        survivor = profile["customer_id"]
        return cls(requested, survivor, frozenset([survivor, *profile.get("merged_from", [])]))

    def followed_by(self, now: Watched | None) -> Watched | None:
        """What the page follows once its customer is as `now` says (None: erased): `now`
        when it only gathers more ids (a profile merged into this customer, as an anonymous
        one at sign-in: more of the same person), None when the page no longer shows one
        person's journey (merged into another, a merge undone, erased)."""
        if now is None or now.survivor != self.survivor or not self.customers <= now.customers:
            return None
        return now


def _when(at: datetime | str | None) -> str:
    """In UTC; as given when UTC is past the calendar (a promotion stored "for ever", ending
    9999-12-31 with an offset, before the offers service refused such dates)."""
    if at is None:
        return ""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    try:
        return moment.astimezone(UTC).strftime("%d %b %Y %H:%M:%S UTC")
    except OverflowError:
        return moment.isoformat()


def _waited(since: datetime) -> str:
    """How long a customer has waited, as a queue shows it: `4 min`, `2 h 5 min`, `3 d 1 h`."""
    minutes = max(int((datetime.now(UTC) - since).total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "under a minute"


def desk_templates() -> Jinja2Templates:
    """The desk's pages, with the filters that show times, money and channels alike."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        channel_name=channel_name,
        type_name=type_name,
        survey_scales=SURVEY_SCALES,
        is_overdue=lambda state, target: overdue(state, target, datetime.now(UTC)),
    )
    templates.env.filters.update(
        when=_when, waited=_waited, money=_money, channel_name=channel_name
    )
    return templates


def _money(amount: str | float | None, currency: str) -> str:
    """An amount with its currency's decimals (12.5 KWD is 12.500 KWD, 1500.0 JPY is 1500 JPY),
    as the channels' decimal strings do not always have them; as given for a currency ISO 4217
    does not know."""
    if amount is None:
        return ""
    try:
        return f"{format_amount(Decimal(str(amount)), currency)} {currency}"
    except (ArithmeticError, ValueError):
        return f"{amount} {currency}"


SURVEY_SCALES = {"csat": ("CSAT", 5), "nps": ("NPS", 10), "ces": ("CES", 7)}
"""Each survey metric's name and top score, as `hilo.contract.SurveyAnswered` checks them."""


def _desk(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


DeskDep = Annotated[Desk, Depends(_desk)]


async def _agent(request: Request, desk: DeskDep) -> str:
    agent = signed_in_agent(request, desk.agents, desk.session_seconds)
    if await _signed_out(desk, session_id(request)):
        request.session.clear()
        raise NotSignedIn
    return agent


Agent = Annotated[str, Depends(_agent)]


def _page(desk: Desk, request: Request, template: str, **context: Any) -> HTMLResponse:
    context.setdefault("agent", request.session.get("agent"))
    context["csrf"] = csrf_token(request)
    return desk.templates.TemplateResponse(request, template, context)


def _error_page(desk: Desk, request: Request, message: str, status: int) -> HTMLResponse:
    """What a person navigating reads when the desk cannot show what was asked."""
    page = _page(desk, request, "error.html", message=message)
    page.status_code = status
    return page


def _wants_html(request: Request) -> bool:
    """A browser navigating (not the page's scripts, not the event stream)."""
    return "text/html" in request.headers.get("accept", "")


async def _shut_down(desk: Desk, background: list[asyncio.Task[None]]) -> None:
    """Stop the feed (and a connection still being tried) and close every connection; each
    step runs even when one before it failed or hung (`hilo.shutdown`)."""
    await shut_down(
        "agent-desk",
        [
            ("feed", lambda: cancelled(background)),
            ("kafka", desk.broker.stop),
            ("profiles", desk.profiles.close),
            ("mongo", desk.mongo.close),
        ],
    )


class DeskApp(FastAPI):
    """The desk's FastAPI app, its security headers outermost: added as ordinary middleware
    they would sit inside Starlette's error handler, and a 500 page would go out without them."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_app(settings: DeskSettings | None = None) -> FastAPI:
    settings = settings or DeskSettings()
    desk = Desk(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with suppress(PyMongoError):  # made once MongoDB answers; it only tidies away
            await desk.signed_out.create_indexes()
        with suppress(PyMongoError):  # likewise: without it, pending replies are kept longer
            await desk.pending.create_indexes()
        with suppress(PyMongoError):  # likewise
            await desk.handlings.create_indexes()
        with suppress(PyMongoError):  # likewise: without it, a page reads the notes slower
            await desk.notes.create_indexes()
        connecting = await start_or_keep_trying(desk.broker, settings)
        follower = asyncio.create_task(desk.feed.run())
        watch = asyncio.create_task(watch_producer(desk.broker, "agent-desk"))
        services = asyncio.create_task(desk.services.watch())
        background = [follower, watch, services, *_queue_watch(desk)]
        if not connecting:  # with Kafka away, journeys are read all the same: no waiting
            with suppress(TimeoutError):
                await asyncio.wait_for(desk.feed.ready.wait(), 30)
        log.info("desk_started", agents=len(desk.agents.ids))
        try:
            yield
        finally:
            await _shut_down(desk, [*background, *connecting])

    app = DeskApp(
        title="Hilo agent desk",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.desk = desk
    secret = settings.desk_session_secret.get_secret_value() or secrets.token_urlsafe(32)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="hilo_desk",
        # Ends with the browser (a shop terminal closed signs its agent out); the session's
        # length is checked by the desk itself (`signed_in_agent`).
        max_age=None,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    limit_request_bodies(app)  # outside the session: a form's files are read before CSRF
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(
        health_router(
            {"keys": mongo_check(desk.mongo)}, optional={"kafka": kafka_check(desk.broker)}
        )
    )
    _routes(app)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        if _wants_html(request):
            # Back to the page after signing in; a form's POST-only path would be a 405 page.
            back = request.url.path if request.method == "GET" else "/"
            return RedirectResponse(f"/login?next={quote(back)}", status_code=303)
        return JSONResponse({"detail": "sign in first"}, status_code=401)

    @app.exception_handler(ProfileRequestRefused)
    async def refused(request: Request, exc: ProfileRequestRefused) -> Response:
        message = f"{LINK_REFUSED} ({exc.detail})"
        if _wants_html(request):
            return _error_page(desk, request, message, 400)
        return JSONResponse({"error": message}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def refused_page(request: Request, exc: StarletteHTTPException) -> Response:
        """A person navigating reads a page (no such customer, a form that expired), not
        JSON; the page's scripts and the stream get FastAPI's answer as before."""
        if not _wants_html(request):
            return await http_exception_handler(request, exc)
        return _error_page(desk, request, str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def incomplete_form(request: Request, exc: RequestValidationError) -> Response:
        if not _wants_html(request):
            return await invalid_request(request, exc)
        return _error_page(desk, request, FORM_REFUSED, 422)

    @app.exception_handler(ProfileUnavailable)
    async def unavailable(request: Request, _exc: ProfileUnavailable) -> Response:
        log.warning("desk_profiles_unavailable", path=request.url.path.split("/")[1])
        if _wants_html(request):
            return _error_page(desk, request, PROFILES_DOWN, 503)
        return JSONResponse({"error": PROFILES_DOWN}, status_code=503)

    return app


def _routes(app: FastAPI) -> None:
    _session_routes(app)
    _customer_routes(app)
    _conversation_routes(app)
    _note_routes(app)


def _note_routes(app: FastAPI) -> None:
    """Notes agents leave about a customer for each other (`agent_desk.notes`)."""

    @app.post("/customers/{customer_id}/notes")
    async def note(
        request: Request,
        desk: DeskDep,
        agent: Agent,
        customer_id: str,
        action: Annotated[NoteAction, Form()] = "add",
        text: Annotated[str, Form(max_length=2 * NOTE_LENGTH)] = "",  # a browser sends CRLF
        note_id: Annotated[str, Form(max_length=100)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        """Leave a note about the customer for colleagues, or delete one of the agent's own."""
        check_csrf(request, csrf)
        profile = await desk.profiles.profile(customer_id)
        if profile is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        text = text.replace("\r\n", "\n").strip()
        message, status = await _note(desk, profile, agent, action, text, note_id)
        return _acted(request, profile["customer_id"], message, status)


def _conversation_routes(app: FastAPI) -> None:
    """The inbox, and who handles each conversation."""

    @app.get("/", response_class=HTMLResponse)
    async def inbox(
        request: Request, desk: DeskDep, agent: Agent, show: InboxView = "all"
    ) -> HTMLResponse:
        """Open conversations (the latest first), the queue of customers waiting for a reply
        (the longest waiting first), the agent's own, or nobody's."""
        if show == "waiting":
            listed, handlings = await read_queue(
                desk.profiles, lambda ids: _handlings(desk, ids), enough=INBOX_SIZE
            )
        else:
            listed = await desk.profiles.open_conversations(INBOX_SIZE)
            if show != "all":  # theirs or nobody's: also those closed by the silence, unanswered
                waiting = await desk.profiles.open_conversations(QUEUE_PAGE, awaiting=True)
                closed = [{**c, "closed_unless_waiting": True} for c in waiting]
                listed = _once_each([*listed, *closed])
            handlings = await _handlings(desk, [c["customer_id"] for c in listed])
        return _page(
            desk,
            request,
            "inbox.html",
            conversations=_inbox_rows(listed, handlings, show, agent),
            target=_reply_target(desk),
            show=show,
            views=INBOX_VIEWS,
            handling_known=handlings is not None,
            refresh_ms=int(INBOX_REFRESH_SECONDS * 1000),
        )

    @app.post("/customers/{customer_id}/handling")
    async def handle(
        request: Request,
        desk: DeskDep,
        agent: Agent,
        customer_id: str,
        action: Annotated[HandlingAction, Form()],
        csrf: Annotated[str, Form(max_length=200)] = "",
        shown: Annotated[str, Form(max_length=200)] = "",
        through: Annotated[PageTime | None, Form()] = None,
        waiting: Annotated[PageTime | None, Form()] = None,
    ) -> Response:
        """Take the customer's conversation (from whoever the page `shown`), let it go, or mark
        their messages up to `through` (the latest the page showed, of a customer it showed
        `waiting` since) as seen to."""
        check_csrf(request, csrf)
        profile = await desk.profiles.profile(customer_id)
        if profile is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        page = (through, waiting)
        message, status = await _handle(desk, profile, agent, action, shown or None, page)
        # Merged since: the survivor's page.
        return _acted(request, profile["customer_id"], message, status)


def _acted(request: Request, customer_id: str, message: str, status: int) -> Response:
    """The answer to a form of the customer page: JSON for its script (`message`: what to tell
    the agent, empty when done), else the page again; a refusal, posted without the script,
    as a page saying why (the page again said nothing of it: the note or mark looked taken)."""
    if request.headers.get("x-requested-with") == "fetch":
        return JSONResponse({"message": message}, status_code=status)
    if status >= 400:
        raise HTTPException(status_code=status, detail=message)
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


def _queue_watch(desk: Desk) -> list[asyncio.Task[None]]:
    """The task keeping the queue's gauges (`agent_desk.queue`), unless turned off."""
    every = desk.settings.desk_queue_metrics_seconds
    if not every:
        return []
    watching = watch_queue(
        desk.profiles,
        lambda ids: _handlings_within(desk, ids, HANDLING_CHANGE_SECONDS),
        target=_reply_target(desk),
        every=every,
        now=lambda: datetime.now(UTC),
    )
    return [asyncio.create_task(watching)]


def _once_each(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each customer's first summary, in order."""
    first: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        first.setdefault(summary["customer_id"], summary)
    return list(first.values())


def _inbox_rows(
    listed: list[dict[str, Any]],
    handlings: dict[str, Handling] | None,
    show: InboxView,
    agent: str,
) -> list[dict[str, Any]]:
    """The inbox's rows for `show`, each with who handles it and since when its customer waits
    (the queue: the longest waiting first). Whose they are is not known while the desk's
    database is away (`handlings` None): "mine" and "nobody's" list none, not every one (an
    agent answered a customer a colleague was handling)."""
    if handlings is None:
        if show in ("mine", "unassigned"):
            return []
        handlings = {}
    rows = [
        {
            **c,
            "name": _summary_name(c),
            "state": state_of(c["conversation"], handlings.get(c["customer_id"])),
        }
        for c in listed
    ]
    if show == "waiting":
        rows = [r for r in rows if r["state"].waiting_since is not None]
        rows.sort(key=lambda r: r["state"].waiting_since)
    elif show in ("mine", "unassigned"):
        wanted = agent if show == "mine" else None
        rows = [
            r
            for r in rows
            if r["state"].agent == wanted
            and (r["state"].waiting_since is not None or not r.get("closed_unless_waiting"))
        ]
    return rows[:INBOX_SIZE]


def _reply_target(desk: Desk) -> timedelta:
    """How long a customer may wait before the desk shows them overdue (0: never)."""
    return timedelta(minutes=desk.settings.desk_first_reply_minutes)


def _summary_name(summary: dict[str, Any]) -> str:
    """An inbox row's customer: their name, else what a person recognises them by."""
    heading = summary.get("heading") or {}
    return str(summary.get("display_name") or heading.get("value") or "Anonymous visitor")


def _session_routes(app: FastAPI) -> None:
    """Signing in and out."""

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, desk: DeskDep, next: str = "/") -> HTMLResponse:  # noqa: A002
        return _page(desk, request, "login.html", next=_local(next), error=None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(
        request: Request,
        desk: DeskDep,
        agent: Annotated[str, Form(max_length=200)],
        password: Annotated[str, Form(max_length=1_000)],
        csrf: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2_000)] = "/",  # noqa: A002
    ) -> Response:
        check_csrf(request, csrf)
        agent = agent.strip()
        client = request.client.host if request.client else "unknown"
        async with desk.throttle.turn(agent, client):
            if desk.throttle.blocked(agent, client):
                log.warning("desk_sign_in_throttled")
                return _login_refused(desk, request, next, TOO_MANY_TRIES, 429)
            if not await _password_checked(desk, agent, password, client):
                log.info("desk_sign_in_refused")
                return _login_refused(desk, request, next, SIGN_IN_REFUSED, 401)
        desk.throttle.succeeded(agent, client)
        sign_in(request, agent)
        log.info("desk_signed_in", agent=agent)
        return RedirectResponse(_local(next), status_code=303)

    @app.post("/logout")
    async def logout(
        request: Request,
        desk: DeskDep,
        _agent: Agent,
    ) -> Response:
        """No form token is checked: a sign-out from a page rendered before the last sign-in
        (another tab) must still sign this browser out (a shared terminal), and a forged one
        harms nobody."""
        ends = session_end(request, desk.session_seconds)
        sid = session_id(request)
        request.session.clear()  # first: this browser is signed out whatever MongoDB says
        try:
            await desk.signed_out.record(sid, ends)
        except PyMongoError as exc:
            log.warning("desk_sign_out_not_recorded", error=type(exc).__name__)
        return RedirectResponse("/login", status_code=303)


def _customer_routes(app: FastAPI) -> None:
    """Search, a customer's page and live timeline, replies."""

    @app.get("/search", response_class=HTMLResponse)
    async def search(
        request: Request,
        desk: DeskDep,
        _agent: Agent,
        q: Annotated[str, Query(max_length=300)] = "",
    ) -> Response:
        return await _found(desk, request, q)

    @app.post("/search", response_class=HTMLResponse)
    async def search_form(
        request: Request,
        desk: DeskDep,
        _agent: Agent,
        q: Annotated[str, Form(max_length=300)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        """The search box: what was typed (a phone, an email) travels in the body, so it stays
        out of the browser's history and address-bar suggestions on a shared terminal."""
        check_csrf(request, csrf)
        return await _found(desk, request, q)

    @app.get("/customers/{customer_id}", response_class=HTMLResponse)
    async def customer(
        request: Request,
        desk: DeskDep,
        agent: Agent,
        customer_id: str,
        channel: Annotated[list[str] | None, Query()] = None,
        type: Annotated[list[str] | None, Query()] = None,  # noqa: A002
        cursor: str | None = None,
    ) -> Response:
        live_from = desk.feed.position  # before reading: what arrives meanwhile is sent live
        profile = await desk.profiles.profile(customer_id)
        if profile is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        if profile["customer_id"] != customer_id:
            # The survivor's page, with the filters asked for (not the cursor: a place in
            # another journey).
            kept = urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            )
            survivor = f"/customers/{profile['customer_id']}"
            return RedirectResponse(f"{survivor}?{kept}" if kept else survivor, status_code=303)
        page = await desk.profiles.journey(
            customer_id,
            cursor=cursor,
            channels=channel or [],
            types=with_statuses(type or []),
            limit=PAGE_SIZE,
        )
        rows = attach_statuses(page["entries"])
        if cursor is None and not channel and not type:
            rows = with_pending(rows, await _pending(desk, profile, rows))
        return _page(
            desk,
            request,
            "customer.html",
            **await _panels(desk, profile, agent),
            note_length=NOTE_LENGTH,
            rows=rows,
            reply_wait_seconds=desk.settings.desk_reply_waiting_seconds,
            next_cursor=page["next_cursor"],
            paged=cursor is not None,
            filters={"channel": channel or [], "type": type or []},
            filter_channels=_filter_channels(profile, channel or []),
            filter_types=FILTER_TYPES,
            live_from=live_from,
        )

    @app.get("/customers/{customer_id}/panels", response_class=HTMLResponse)
    async def panels(
        request: Request, desk: DeskDep, agent: Agent, customer_id: str
    ) -> HTMLResponse:
        """The customer's side panels as they are now: the page refreshes them when a live
        entry changes the conversation, the cart, the orders or what a reply may do."""
        profile = await desk.profiles.profile(customer_id)
        if profile is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        return _page(desk, request, "panels_fresh.html", **await _panels(desk, profile, agent))

    @app.get("/customers/{customer_id}/live")
    async def live(
        request: Request,
        desk: DeskDep,
        _agent: Agent,
        customer_id: str,
        after: str = "",
        channel: Annotated[list[str] | None, Query()] = None,
        type: Annotated[list[str] | None, Query()] = None,  # noqa: A002
        ids: str = "",
    ) -> StreamingResponse:
        """Server-Sent Events: each new entry of this customer as a rendered row. `ids`: the
        customer ids the page was rendered with, so a merge or split while the browser was
        reconnecting is told too; a page reconnecting while the profile service is away goes
        on with them (`_identity_now`), as an open stream does, rather than reload onto an
        error page and lose the reply being typed."""
        if ids:
            rendered = Watched(customer_id, customer_id, frozenset(ids.split(",")))
            now = await _identity_now(desk, rendered)
        else:
            profile = await desk.profiles.profile(customer_id)
            now = None if profile is None else Watched.of(customer_id, profile)
        if now is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        rendered = rendered if ids else now
        cursor = request.headers.get("last-event-id") or after
        wanted = (set(channel or []), set(with_statuses(type or [])))
        ends = session_end(request, desk.session_seconds)
        return StreamingResponse(
            _events(desk, request, (cursor, ends), (rendered, now), wanted, session_id(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.post("/customers/{customer_id}/replies")
    async def reply(
        request: Request, desk: DeskDep, agent: Agent, customer_id: str
    ) -> JSONResponse:
        check_csrf(request, request.headers.get("x-csrf-token"))
        try:
            body = ReplyBody.model_validate(await request.json())
        except (ValidationError, ValueError):
            return JSONResponse({"error": "The reply is not complete."}, status_code=422)
        profile = await desk.profiles.profile(customer_id)
        if profile is None:
            raise HTTPException(status_code=404, detail="no customer with this id")
        return await _reply(desk, profile, body, agent, customer_id)


async def _pending(
    desk: Desk, profile: dict[str, Any], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows for the customer's replies queued and not yet recorded (`agent_desk.pending`); none
    while MongoDB does not answer (the page is shown all the same, within the wait the page's
    other lookups of the desk's database allow, not the driver's 5 s and more)."""
    ids = [profile["customer_id"], *profile.get("merged_from", [])]
    try:
        async with asyncio.timeout(HANDLING_LOOKUP_SECONDS):
            pending = await desk.pending.of(ids)
    except (PyMongoError, TimeoutError):
        return []
    wait = timedelta(seconds=desk.settings.desk_reply_waiting_seconds)
    return pending_rows(
        pending, rows, now=datetime.now(UTC), waiting_after=wait, stopped=desk.services.stopped
    )


async def _found(desk: Desk, request: Request, query: str) -> Response:
    """The one customer found (303 to their page), else the matches or why there are none."""
    matches = await find_customers(desk.profiles, query, desk.settings.default_phone_region)
    if len(matches) == 1:
        return RedirectResponse(f"/customers/{matches[0].customer_id}", status_code=303)
    return _page(desk, request, "search.html", query=query, matches=matches)


async def _password_checked(desk: Desk, agent: str, password: str, client: str) -> bool:
    """Check the password off the event loop (in the throttle's turn), counting a failure."""
    async with desk.verifying:
        verified = await asyncio.to_thread(desk.agents.verify, agent, password)
    if not verified:
        desk.throttle.failed(agent, client)
    return verified


def _login_refused(
    desk: Desk, request: Request, next_path: str, message: str, status: int
) -> Response:
    """The sign-in form again, saying why; a throttled answer says when to come back."""
    response = _page(desk, request, "login.html", next=_local(next_path), error=message)
    response.status_code = status
    if status == 429:
        response.headers["Retry-After"] = str(int(desk.throttle.window_seconds))
    return response


def _unsendable(body: ReplyBody, template: Template | None) -> str | None:
    """What is wrong with the reply as written, whoever it goes to (answered 422), or None."""
    text = (body.text or "").strip()
    if text and template is not None:
        return "Send either the message or the template, not both: clear one of them."
    if not text and template is None:
        label = channel_name(body.channel)
        if body.template_name:
            return f"Templates are WhatsApp's: on {label}, write the message instead."
        return "Write a message first."
    if len(body.subject or "") > MAX_SUBJECT:
        return f"A subject holds at most {MAX_SUBJECT} characters: shorten it."
    return too_long(body.channel, text) if text else None


async def _reply(
    desk: Desk, profile: dict[str, Any], body: ReplyBody, agent: str, asked_for: str
) -> JSONResponse:
    """Check the provider's rules, then publish the command; the page shows it as pending
    until the channel records it sent (or failed, with the provider's reason)."""
    options = {o.channel: o for o in await _reply_options(desk, profile)}
    option: ReplyOption | None = options.get(body.channel)
    if option is None:
        reason = f"The customer cannot be reached on {channel_name(body.channel)}."
        return JSONResponse({"error": reason}, status_code=409)
    template = (
        Template(
            name=body.template_name,
            language=body.template_language,
            parameters=body.template_parameters,
        )
        if body.template_name and body.channel == "whatsapp"  # templates are WhatsApp's
        else None
    )
    if (error := _unsendable(body, template)) is not None:
        return JSONResponse({"error": error}, status_code=422)
    why = refusal(
        profile,
        option,
        template=template is not None,
        purpose=body.purpose,
        now=datetime.now(UTC),
        windows=desk.settings.reply_windows,
    )
    if why is not None:
        return JSONResponse({"error": why}, status_code=409)
    recent = await desk.profiles.journey(
        profile["customer_id"], cursor=None, channels=[body.channel], types=["message"], limit=20
    )
    thread = thread_of(recent["entries"])
    command = reply_command(
        profile,
        option,
        text=(body.text or "").strip() or None,
        template=template,
        purpose="marketing" if body.purpose == "marketing" else "service",
        agent=agent,
        thread=thread,
        subject=body.subject,
        page_id=str(body.command_id) if body.command_id else None,
        unanswered=await _unanswered(desk, profile),
        page_customer=asked_for,
    )
    try:
        await publish_reply(desk.publisher, desk.sealer, command)
    except PublishFailed:
        return JSONResponse(
            {"error": REPLY_MAYBE_QUEUED},
            status_code=503,
        )
    except PyMongoError:  # the key store seals the command before anything is sent
        return JSONResponse({"error": DATABASE_AWAY}, status_code=503)
    log.info("desk_reply_queued", agent=agent, channel=body.channel, command_id=command.id)
    try:
        await desk.pending.queued(command)
    except PyMongoError as exc:  # queued all the same: only a reload would not show it sending
        log.warning("desk_pending_reply_not_noted", command_id=command.id, error=type(exc).__name__)
    if body.purpose == "service":
        await _take_on_reply(desk, profile, agent)
    state = waiting_state(command.channel, stopped=command.channel in desk.services.stopped)
    return JSONResponse(
        {
            "command_id": command.id,
            "entry_id": command.sent_interaction_id(),
            "failure_id": command.failure_provider_id(),
            "channel": command.channel,
            "service_running": not state["stopped"],
            "waiting_status": state["status"],
            "waiting_note": state["note"],
        },
        status_code=202,
    )


async def _take_on_reply(desk: Desk, profile: dict[str, Any], agent: str) -> None:
    """The agent who answers a conversation nobody handles handles it from then on, as help
    desks assign it; one a colleague has stays theirs. Never in the reply's way: the reply is
    queued already, and MongoDB away only leaves it unassigned."""
    conversation = _conversation(profile)
    if conversation is None:
        return
    await _adopt(desk, profile)
    try:
        async with asyncio.timeout(HANDLING_LOOKUP_SECONDS):
            await _change(desk, profile["customer_id"], conversation, agent, "take", (None, None))
    except TakenByAnother:
        return
    except (PyMongoError, TimeoutError) as exc:
        log.warning("desk_handling_not_saved", action="take", error=error_text(exc))


async def _events(
    desk: Desk,
    request: Request,
    span: tuple[str, float],
    identity: tuple[Watched, Watched],
    wanted: tuple[set[str], set[str]],
    sid: str,
) -> AsyncIterator[str]:
    """The stream of one page, from its cursor until its session ends (`span`). After each
    batch (or heartbeat) whose last shown entry is not the newest number the feed reached, a
    `tick` carries that number as the event id: the browser resumes from it after a blip
    instead of from its last shown entry, which on a busy desk would have fallen out of the
    buffer and forced a reload (losing a reply being typed). When the session ends, or is
    signed out anywhere (checked every `SIGN_OUT_CHECK_SECONDS`), so does the stream, with a
    `signed-out` event: the page says so and keeps what the agent is typing. Likewise, with an
    `identity-changed` event, when the customer was merged into another, had a merge undone or
    was erased since the page was rendered (`identity`: as rendered, as now; then checked every
    `IDENTITY_CHECK_SECONDS`, and before showing an entry recorded under one of the customer's
    other ids): the page no longer shows one person's journey, and must not go on showing the
    entries of someone a split took away. A profile merged into the customer is followed too."""
    cursor, ends = span
    channels, types = wanted
    rendered, now = identity
    watched = rendered.followed_by(now)
    yield "retry: 1000\n\n"
    if watched is None:
        yield IDENTITY_CHANGED
        return
    following = set(watched.customers)  # `follow` reads it on every batch: it may grow
    checked = identity_checked = time.monotonic()
    told = desk.services.stopped
    yield _services(desk, told)
    try:
        async for batch, reached in desk.feed.follow(
            cursor, following, until=ends, heartbeat_seconds=SIGN_OUT_CHECK_SECONDS
        ):
            if await request.is_disconnected():
                return
            if time.monotonic() - checked >= SIGN_OUT_CHECK_SECONDS:
                checked = time.monotonic()
                if await _signed_out(desk, sid):
                    break
            under_other_id = any(live.customer_id != watched.survivor for live in batch)
            if under_other_id or time.monotonic() - identity_checked >= IDENTITY_CHECK_SECONDS:
                identity_checked = time.monotonic()
                watched = watched.followed_by(await _identity_now(desk, watched))
                if watched is None:
                    yield IDENTITY_CHANGED
                    return
                following |= watched.customers
            if desk.services.stopped != told:
                told = desk.services.stopped
                yield _services(desk, told)
            shown = [live for live in batch if _shown(live, channels, types)]
            for live in shown:
                yield _event(desk, live)
            if not shown or shown[-1].number != reached:
                yield _tick(desk, reached)
    except Gap:
        yield f"event: resync\ndata: {json.dumps({'position': desk.feed.position})}\n\n"
        return
    if time.time() >= ends or await _signed_out(desk, sid):
        yield "event: signed-out\ndata: {}\n\n"


IDENTITY_CHANGED = "event: identity-changed\ndata: {}\n\n"


def _services(desk: Desk, stopped: frozenset[str]) -> str:
    """Whether each reply channel's service runs, as Kafka last said (`ChannelServices`), with
    what a queued reply's row says of it: sent when the stream opens and whenever it changes,
    so an open page follows a service that stops or starts (its rows and its reply box)."""
    states = {
        channel: waiting_state(channel, stopped=channel in stopped)
        for channel in desk.settings.desk_reply_channels
    }
    return f"event: services\ndata: {json.dumps(states)}\n\n"


async def _identity_now(desk: Desk, watched: Watched) -> Watched | None:
    """The page's customer as the profile service has it now (None: erased); as it was when
    the service cannot say within `IDENTITY_LOOKUP_SECONDS`: an outage must not end every open
    page's stream."""
    try:
        async with asyncio.timeout(IDENTITY_LOOKUP_SECONDS):
            profile = await desk.profiles.profile(watched.requested)
    except (ProfileUnavailable, ProfileRequestRefused, TimeoutError) as exc:
        log.warning("desk_identity_unknown", error=type(exc).__name__)
        return watched
    return None if profile is None else Watched.of(watched.requested, profile)


async def _signed_out(desk: Desk, sid: str) -> bool:
    """False when MongoDB cannot say within `SIGN_OUT_LOOKUP_SECONDS`: an outage must not sign
    every agent out, nor stall each page on the database's own timeout (the desk reads
    customers from the profile API; only replies need MongoDB)."""
    try:
        async with asyncio.timeout(SIGN_OUT_LOOKUP_SECONDS):
            return await desk.signed_out.includes(sid)
    except (PyMongoError, TimeoutError) as exc:
        log.warning("desk_sign_out_unknown", error=type(exc).__name__)
        return False


SHOWN_WITH = {"message": "message_status", "order": "refund"}
"""Kinds a filter to the first brings along: what became of a message (sent, delivered,
failed), which the page shows on each message, and the money paid back on an order."""


def with_statuses(types: list[str]) -> list[str]:
    """The kinds a page filtered to `types` shows (`SHOWN_WITH`); the same for the rows it is
    rendered with and the ones its live stream sends."""
    followers = [f for kind, f in SHOWN_WITH.items() if kind in types and f not in types]
    return [*types, *followers]


def _filter_channels(profile: dict[str, Any], checked: list[str]) -> list[str]:
    """The built-in channels, then any other this customer used (a channel service added
    since) or the filter names, so each of their entries can be shown alone."""
    used = (profile.get("view") or {}).get("channels") or {}
    others = (set(used) | set(checked)) - set(BUILT_IN_CHANNELS)
    return [*BUILT_IN_CHANNELS, *sorted(others)]


def _shown(live: LiveEntry, channels: set[str], types: set[str]) -> bool:
    """Whether the page's filters let the entry through (`types` as `with_statuses` widens)."""
    entry = live.entry
    return (not channels or entry.get("channel") in channels) and (
        not types or entry.get("type") in types
    )


def _tick(desk: Desk, reached: int) -> str:
    """Nothing to show up to `reached`: the id moves the browser's resume point there (and the
    event keeps the connection alive through proxies)."""
    return f"id: {desk.feed.epoch}:{reached}\nevent: tick\ndata: {reached}\n\n"


def _event(desk: Desk, live: LiveEntry) -> str:
    entry = row(live.entry)
    html = desk.templates.get_template("entry.html").render(r=entry)
    data = {
        "id": entry["id"],
        "type": entry["type"],
        "occurred_at": entry["at"].isoformat(),
        "provider_id": entry["provider_id"],
        "after_report": entry["after_report"],
        "status": (entry.get("payload") or {}).get("status"),
        "error": (entry.get("payload") or {}).get("error"),
        "html": html,
    }
    return f"id: {desk.feed.epoch}:{live.number}\nevent: entry\ndata: {json.dumps(data)}\n\n"


async def _panels(desk: Desk, profile: dict[str, Any], agent: str) -> dict[str, Any]:
    """What the side panels and the reply box show about the customer right now."""
    options = await _reply_options(desk, profile)
    now = datetime.now(UTC)
    conversation = _conversation(profile)
    await _adopt(desk, profile)
    handlings, notes = await asyncio.gather(  # MongoDB away: one second, not one each
        _handlings(desk, [profile["customer_id"]]), _notes(desk, profile)
    )
    handling = state_of(conversation or {}, (handlings or {}).get(profile["customer_id"]))
    return {
        "agent": agent,
        "refresh_ms": int(PANELS_REFRESH_SECONDS * 1000),
        "conversation_shown": conversation is not None,
        "notes": notes,
        "handling": handling,
        "overdue": overdue(handling, _reply_target(desk), now),
        "handling_known": handlings is not None,
        "profile": profile,
        "view": profile.get("view") or {},
        "name": _display_name(profile),
        "conflicts": waiting_for_review(await desk.profiles.conflicts(profile["customer_id"])),
        "offers": await desk.profiles.offers(profile["customer_id"]),
        "options": options,
        "reply_labels": [(o.channel, f"{channel_name(o.channel)} · {o.address}") for o in options],
        "default_channel": default_channel(profile, options),
        "warnings": {
            o.channel: _warning(
                refusal(
                    profile,
                    o,
                    template=False,
                    purpose="service",
                    now=now,
                    windows=desk.settings.reply_windows,
                ),
                not_running_warning(o.channel) if o.channel in desk.services.stopped else None,
            )
            for o in options
        },
    }


def _conversation(profile: dict[str, Any]) -> dict[str, Any] | None:
    """The customer's conversation the desk shows and acts on: the open one, or the last one
    while the customer is in the queue for its answer (`conversation_waiting`: within
    `HILO_QUEUE_DAYS`), however long ago they wrote."""
    conversation = (profile.get("view") or {}).get("conversation")
    if not conversation:
        return None
    if profile.get("conversation_open") or profile.get("conversation_waiting"):
        return dict(conversation)
    return None


async def _unanswered(desk: Desk, profile: dict[str, Any]) -> bool:
    """Whether the customer's closed conversation still waits for its answer, as the desk
    shows it (in the queue, not marked done): a reply then answers it, linked to it."""
    conversation = _conversation(profile)
    if conversation is None or profile.get("conversation_open"):
        return False
    handlings = await _handlings(desk, [profile["customer_id"]])
    handling = (handlings or {}).get(profile["customer_id"])
    return state_of(conversation, handling).waiting_since is not None


async def _looked_up(lookup: Awaitable[T], unknown: str) -> T | None:
    """What `lookup` reads of the desk's MongoDB; None while it does not answer within
    `HANDLING_LOOKUP_SECONDS` (logged as `unknown`): a page says so and shows the rest."""
    try:
        async with asyncio.timeout(HANDLING_LOOKUP_SECONDS):
            return await lookup
    except (PyMongoError, TimeoutError) as exc:
        log.warning(unknown, error=error_text(exc))
        return None


async def _notes(desk: Desk, profile: dict[str, Any]) -> list[Note] | None:
    """The latest notes about the customer (and the profiles merged into them); None while
    MongoDB does not answer (the page says so)."""
    return await _looked_up(desk.notes.of(ids_of(profile)), "desk_notes_unknown")


async def _note(
    desk: Desk, profile: dict[str, Any], agent: str, action: NoteAction, text: str, note_id: str
) -> tuple[str, int]:
    """Add or delete a note: what to tell the agent, and the status to answer with. The text
    is never logged (personal data)."""
    customer_id = profile["customer_id"]
    try:
        async with asyncio.timeout(HANDLING_CHANGE_SECONDS):
            if action == "delete":
                return await _delete_note(desk, profile, agent, note_id)
            if not text:
                return "Write the note first.", 422
            if len(text) > NOTE_LENGTH:
                return f"A note holds at most {NOTE_LENGTH:,} characters.", 422
            await desk.notes.add(customer_id, profile.get("identifiers") or [], agent, text)
    except NoKeys:
        return BEING_ERASED, 409
    except (PyMongoError, TimeoutError) as exc:
        log.warning("desk_note_not_saved", error=error_text(exc))
        return DATABASE_AWAY, 503
    log.info("desk_note_added", agent=agent, customer_id=customer_id)
    return "", 200


async def _delete_note(
    desk: Desk, profile: dict[str, Any], agent: str, note_id: str
) -> tuple[str, int]:
    deleted = await desk.notes.delete(note_id, ids_of(profile), agent)
    if deleted == "not_author":
        return "Only the agent who wrote a note can delete it.", 403
    if deleted == "gone":
        return "This note was deleted already.", 404
    log.info("desk_note_deleted", agent=agent, customer_id=profile["customer_id"])
    return "", 200


async def _adopt(desk: Desk, profile: dict[str, Any]) -> None:
    """The customer takes over the taking of a profile merged into them, when it is newer
    than their own (`Handlings.adopt`), before anything reads or changes theirs; MongoDB away
    only delays it."""
    adopting = desk.handlings.adopt(profile["customer_id"], profile.get("merged_from", []))
    await _looked_up(adopting, "desk_handling_unknown")


async def _handlings(desk: Desk, customer_ids: list[str]) -> dict[str, Handling] | None:
    """Who handles these customers' conversations; None while MongoDB does not answer within
    `HANDLING_LOOKUP_SECONDS` (the pages say so, and show the rest)."""
    return await _looked_up(
        _handlings_within(desk, customer_ids, HANDLING_LOOKUP_SECONDS), "desk_handling_unknown"
    )


async def _handlings_within(
    desk: Desk, customer_ids: list[str], seconds: float
) -> dict[str, Handling]:
    """Who handles these customers' conversations, or an error after `seconds`."""
    if not customer_ids:
        return {}
    async with asyncio.timeout(seconds):
        return await desk.handlings.of(customer_ids)


async def _handle(
    desk: Desk,
    profile: dict[str, Any],
    agent: str,
    action: HandlingAction,
    shown: str | None,
    page: tuple[datetime | None, datetime | None],
) -> tuple[str, int]:
    """Do what the agent asked of the customer's conversation (`shown`: whom the page showed
    handling it; `page`: the latest contact and the wait it showed): what to tell them, and
    the status to answer with. A done mark goes into the journey first, then the desk keeps it:
    a refused one is not shown done, so the agent can mark it again."""
    customer_id = profile["customer_id"]
    conversation = _conversation(profile)
    if conversation is None:
        return "The customer has no open conversation any more.", 409
    await _adopt(desk, profile)
    done = action == "done"
    seen, refused = await _done_told(desk, profile, conversation, agent, page) if done else NO_MARK
    if refused is not None:
        return refused
    try:
        async with asyncio.timeout(HANDLING_CHANGE_SECONDS):
            await _change(desk, customer_id, conversation, agent, action, (shown, seen))
    except TakenByAnother as taken:
        if taken.agent is None:
            return "Nobody has this conversation now: take it again.", 409
        return f"{taken.agent} took this conversation a moment ago.", 409
    except (PyMongoError, TimeoutError, NotSaved) as exc:
        log.warning("desk_handling_not_saved", action=action, error=error_text(exc))
        return DATABASE_AWAY, 503
    log.info("desk_conversation_handled", agent=agent, customer_id=customer_id, action=action)
    return "", 200


async def _done_told(
    desk: Desk,
    profile: dict[str, Any],
    conversation: dict[str, Any],
    agent: str,
    page: tuple[datetime | None, datetime | None],
) -> tuple[SeenTo | None, tuple[str, int] | None]:
    """What a done mark of the customer's `conversation` sees to, told to the journey first:
    what the desk keeps then, or the refusal to answer (nothing to keep: nobody waits any
    more)."""
    try:
        seen = _seen_to(conversation, *page)
    except PageBehind:
        return None, ("The customer wrote again since this page was drawn: look again.", 409)
    if seen is None:
        return NO_MARK
    refused = await _tell_journey(desk, profile, agent, seen)
    return (None, refused) if refused is not None else (seen, None)


NO_MARK: tuple[None, None] = (None, None)


def _seen_to(
    conversation: dict[str, Any], through: datetime | None, waiting: datetime | None
) -> SeenTo | None:
    """What a done mark sees to: the customer's contacts up to the latest the page showed (no
    later than the latest there is), waiting since when the page showed (else now's). None
    when nobody waits (answered since); `PageBehind` when the page showed an earlier
    conversation."""
    awaiting, latest = conversation.get("awaiting_reply_since"), conversation.get("last_inbound_at")
    if not awaiting or not latest:
        return None
    last = datetime.fromisoformat(latest)
    seen_to = min(through or last, last)
    if seen_to < datetime.fromisoformat(conversation["started_at"]):
        raise PageBehind
    return SeenTo(seen_to, waiting or datetime.fromisoformat(awaiting))


class PageBehind(Exception):
    """The page an agent acted from showed a conversation the customer has left since."""


async def _tell_journey(
    desk: Desk, profile: dict[str, Any], agent: str, seen: SeenTo
) -> tuple[str, int] | None:
    """Record a done mark in the customer's journey (`done_mark`), sealed with the keys the
    customer has (none made: an erasure under way must not leave one): the refusal to answer,
    None once Kafka took it."""
    held = [(i["kind"], i["value"]) for i in profile.get("identifiers") or []]
    contact = await _contact_seen(desk, profile["customer_id"], seen.through)
    identifiers = [*strongest_first(contact), *strongest_first(held)]
    mark = done_mark(profile["customer_id"], identifiers, agent, seen, desk.settings.instance)
    if mark is None:
        return "This customer has no identifier a mark can be recorded under.", 409
    try:
        async with asyncio.timeout(HANDLING_CHANGE_SECONDS):  # the key store it is sealed with
            records = await desk.publisher.interaction_records([mark], create=False)
    except NoKeys:
        return BEING_ERASED, 409
    except (PyMongoError, TimeoutError) as exc:
        log.warning("desk_done_not_sealed", error=error_text(exc))
        return DATABASE_AWAY, 503
    try:
        await desk.publisher.publish_records(records)
    except PublishFailed as exc:
        log.warning("desk_done_not_published", error=error_text(exc))
        return DONE_NOT_TOLD, 503
    return None


async def _contact_seen(desk: Desk, customer_id: str, through: datetime) -> list[tuple[str, str]]:
    """The identifiers of the customer's latest inbound contact up to `through` (a done mark
    goes with it through a split); none when the journey cannot be read."""
    try:
        recent = await desk.profiles.journey(
            customer_id, cursor=None, channels=[], types=CONTACTS, limit=CONTACTS_READ
        )
    except (ProfileUnavailable, ProfileRequestRefused):
        recent = {"entries": []}
    if found := last_contact(recent["entries"], until=through):
        return list(found.items())
    log.warning("desk_done_contact_not_found", customer_id=customer_id)  # the profile's, then
    return []


async def _change(
    desk: Desk,
    customer_id: str,
    conversation: dict[str, Any],
    agent: str,
    action: HandlingAction,
    page: tuple[str | None, SeenTo | None],
) -> None:
    """Take, let go of or mark done the conversation (`page`: whom the page showed handling
    it, and what a done mark sees to)."""
    shown, seen = page
    if action == "take":
        started = datetime.fromisoformat(conversation["started_at"])
        await desk.handlings.take(customer_id, agent, shown=shown, started_at=started)
    elif action == "release":
        await desk.handlings.release(customer_id, agent)
    elif seen is not None:
        await desk.handlings.done(customer_id, agent, seen)


def _warning(*parts: str | None) -> str | None:
    """The reply box's warnings about a channel, in one text (None when there is none)."""
    return " ".join(part for part in parts if part) or None


async def _reply_options(desk: Desk, profile: dict[str, Any]) -> list[ReplyOption]:
    """The channels a reply may take, each to the address the customer last wrote from there,
    else to the one of their latest message or call (`reply_options`): one read, the same for
    the reply box and for the send, so the reply goes where the box said."""
    channels = desk.settings.desk_reply_channels
    recent = await desk.profiles.journey(
        profile["customer_id"], cursor=None, channels=[], types=CONTACTS, limit=50
    )
    entries = recent["entries"]
    return reply_options(
        profile,
        channels,
        written_from(entries),
        last_contact(entries),
        desk.settings.address_kinds,
    )


def _display_name(profile: dict[str, Any]) -> str:
    traits = (profile.get("view") or {}).get("traits") or {}
    name = display_name({key: told.get("value") for key, told in traits.items()})
    if name is not None:
        return name
    held = [(i["kind"], i["value"]) for i in profile.get("identifiers") or []]
    heading = heading_identifier(held)
    if heading is not None:
        return str(heading[1])
    return "Anonymous visitor" if held else str(profile["customer_id"])


def waiting_for_review(conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conflicts a person still has to look at: every one but the merge requests already
    confirmed or rejected. A refused merge (two loyalty ids, a cap) or a `concurrent_merge`
    (a profile left with two loyalty ids, for an agent to split) has no status: it stays."""
    return [c for c in conflicts if c.get("status") in (None, "pending")]


def _local(target: str) -> str:
    """Only a path on this site: a sign-in link must not send the agent elsewhere. Browsers
    read `/\\evil.example` as `//evil.example` and drop tabs and newlines, so paths with a
    backslash or a control character are refused too."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(unicodedata.category(c) == "Cc" for c in target)
    ):
        return "/"
    return target
