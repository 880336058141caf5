"""Who may use the desk: operator-configured agents, signed session cookies, CSRF tokens, and a
limit on password guessing.

Passwords are stored as argon2id hashes (`agent-desk hash-password`); the session is a signed
cookie (Starlette's `SessionMiddleware`: HttpOnly, SameSite=Lax, Secure in production) holding the
agent id, the sign-in time and a per-session CSRF token that every form and every state-changing
request must echo. A session is honoured only while its agent is still configured, so removing
an agent from `HILO_DESK_AGENTS` (and restarting) ends their sessions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from pydantic import SecretStr
from pymongo.asynchronous.collection import AsyncCollection

from hilo.mongo import MongoDocument
from hilo.webhook import secrets_match

_HASHER = PasswordHasher()
_UNKNOWN_AGENT_HASH = _HASHER.hash(secrets.token_urlsafe(16))
"""Verified against when the agent id is unknown, so the answer takes as long either way."""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


class Agents:
    """The agents allowed to sign in, from `HILO_DESK_AGENTS` (`agent-id:hash` pairs)."""

    def __init__(self, entries: Sequence[SecretStr]) -> None:
        self._hashes: dict[str, str] = {}
        for entry in entries:
            agent, separator, hashed = entry.get_secret_value().partition(":")
            if not separator or not agent or not hashed.startswith("$argon2"):
                raise ValueError("each HILO_DESK_AGENTS entry is `agent-id:<argon2 hash>`")
            self._hashes[agent.strip()] = hashed.strip()

    @property
    def ids(self) -> frozenset[str]:
        """The configured agent ids (never their hashes)."""
        return frozenset(self._hashes)

    def verify(self, agent: str, password: str) -> bool:
        """True when `password` is the agent's; the same work is done for unknown agents."""
        hashed = self._hashes.get(agent, _UNKNOWN_AGENT_HASH)
        try:
            _HASHER.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False
        return agent in self._hashes


class SignInThrottle:
    """Slows password guessing: after `limit` failed sign-ins for one agent id from one address,
    or from one address for any agent, within `window_seconds`, that pair (or address) is
    refused without checking the password until the oldest failure is that old; after
    `DISTRIBUTED` times `limit` failures for one agent id from any addresses, so is that agent.

    One address guessing (or locking an agent out on purpose) is stopped at `limit` without
    touching the agent's own sign-in from elsewhere; many addresses guessing one agent are
    stopped at the higher count. The counts live in this process's memory: a restart forgets
    them and each desk instance counts its own (enough to turn guessing from thousands of tries
    a minute into a handful). A successful sign-in clears its agent id's counts, not the
    address's, so signing in as oneself does not buy more guesses at someone else."""

    _MAX_KEYS = 10_000
    """Beyond this many counted keys, those with no recent failure are forgotten."""
    DISTRIBUTED = 4

    def __init__(
        self,
        limit: int = 5,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: Counter[str] = Counter()

    def blocked(self, agent: str, client: str) -> bool:
        """True while the pair, the address or the agent id has its limit of recent failures."""
        return any(self._recent(key) >= self._limit(key) for key in _keys(agent, client))

    @asynccontextmanager
    async def turn(self, agent: str, client: str) -> AsyncIterator[None]:
        """Wait until no other password of this agent id or address is being checked, then
        hold its place: `blocked` then sees the outcome of every earlier try. Guesses sent all
        at once would otherwise all be checked (each arrives before the first is answered);
        counting the ones under way as failures instead would refuse colleagues signing in
        together from one office address. `failed` must be called inside the turn."""
        keys = sorted(_keys(agent, client))
        self._waiting.update(keys)
        try:
            async with AsyncExitStack() as held:
                for key in keys:
                    await held.enter_async_context(self._locks.setdefault(key, asyncio.Lock()))
                yield
        finally:
            self._waiting.subtract(keys)
            for key in keys:
                if self._waiting[key] <= 0:
                    del self._waiting[key]
                    del self._locks[key]

    def failed(self, agent: str, client: str) -> None:
        """Count a wrong password (or unknown agent) against the pair, address and agent id."""
        if len(self._failures) >= self._MAX_KEYS:
            self._forget_stale()
        now = self._clock()
        for key in _keys(agent, client):
            self._failures.setdefault(key, deque(maxlen=self._limit(key))).append(now)

    def succeeded(self, agent: str, client: str) -> None:
        self._failures.pop(f"agent:{agent}", None)
        self._failures.pop(_pair(agent, client), None)

    def _limit(self, key: str) -> int:
        return self.limit * self.DISTRIBUTED if key.startswith("agent:") else self.limit

    def _recent(self, key: str) -> int:
        failures = self._failures.get(key)
        if not failures:
            return 0
        horizon = self._clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        return len(failures)

    def _forget_stale(self) -> None:
        for key in [k for k in self._failures if self._recent(k) == 0]:
            del self._failures[key]


def _pair(agent: str, client: str) -> str:
    return f"pair:{agent}@{client}"


def _keys(agent: str, client: str) -> tuple[str, str, str]:
    return _pair(agent, client), f"client:{client}", f"agent:{agent}"


class NotSignedIn(Exception):
    """The request needs a signed-in agent; pages redirect to the sign-in form."""


def sign_in(request: Request, agent: str) -> None:
    request.session.clear()
    request.session.update(
        {
            "agent": agent,
            "at": int(time.time()),
            "csrf": secrets.token_urlsafe(32),
            "sid": secrets.token_urlsafe(16),
        }
    )


def signed_in_agent(request: Request, agents: Agents, max_age_seconds: float) -> str:
    """The agent of this session, or `NotSignedIn`: none, signed in too long ago, before
    sessions had ids, or no longer configured (the operator removed them)."""
    agent = request.session.get("agent")
    at = request.session.get("at", 0)
    if (
        not isinstance(agent, str)
        or agent not in agents.ids
        or not isinstance(at, int | float)
        or time.time() - float(at) > max_age_seconds
        or not isinstance(request.session.get("sid"), str)
    ):
        request.session.clear()
        raise NotSignedIn
    return agent


def session_id(request: Request) -> str:
    """The id of this (signed-in) session."""
    return str(request.session["sid"])


class SignedOut:
    """Sessions signed out before they expired, in MongoDB (`desk_signed_out`, removed by a TTL
    index once they would have expired anyway).

    The session is a cookie: clearing it signs out one browser, but a copy of it (another tab's
    open live stream, a cookie taken from a shared terminal) would stay valid until it expires.
    Every desk instance checks this list, so signing out ends them all.
    """

    def __init__(self, collection: AsyncCollection[MongoDocument]) -> None:
        self.collection = collection
        self._known: set[str] = set()
        self._indexed = False

    async def create_indexes(self) -> None:
        await self.collection.create_index("until", expireAfterSeconds=0)
        self._indexed = True

    async def record(self, sid: str, until: float) -> None:
        self._known.add(sid)
        if not self._indexed:  # MongoDB did not answer at start
            await self.create_indexes()
        await self.collection.update_one(
            {"_id": sid}, {"$set": {"until": datetime.fromtimestamp(until, UTC)}}, upsert=True
        )

    async def includes(self, sid: str) -> bool:
        if sid in self._known:
            return True
        if await self.collection.find_one({"_id": sid}, {"_id": 1}) is None:
            return False
        self._known.add(sid)
        return True


def session_end(request: Request, max_age_seconds: float) -> float:
    """When this (signed-in) session expires, as a `time.time()`."""
    return float(request.session.get("at", 0)) + max_age_seconds


def csrf_token(request: Request) -> str:
    """This session's CSRF token (one is made for a visitor who has not signed in yet)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, given: str | None) -> None:
    """403 unless `given` (form field or `X-CSRF-Token` header) is this session's token."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not secrets_match(expected, given):
        raise HTTPException(status_code=403, detail="the form expired; reload the page")
