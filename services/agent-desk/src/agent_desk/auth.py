"""Who may use the desk: operator-configured agents, signed session cookies, CSRF tokens.

Passwords are stored as argon2id hashes (`agent-desk hash-password`); the session is a signed
cookie (Starlette's `SessionMiddleware`: HttpOnly, SameSite=Lax, Secure in production) holding the
agent id, the sign-in time and a per-session CSRF token that every form and every state-changing
request must echo.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from pydantic import SecretStr

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

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def verify(self, agent: str, password: str) -> bool:
        """True when `password` is the agent's; the same work is done for unknown agents."""
        hashed = self._hashes.get(agent, _UNKNOWN_AGENT_HASH)
        try:
            _HASHER.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False
        return agent in self._hashes


class NotSignedIn(Exception):
    """The request needs a signed-in agent; pages redirect to the sign-in form."""


def sign_in(request: Request, agent: str) -> None:
    request.session.clear()
    request.session.update(
        {"agent": agent, "at": int(time.time()), "csrf": secrets.token_urlsafe(32)}
    )


def signed_in_agent(request: Request, max_age_seconds: float) -> str:
    """The agent of this session, or `NotSignedIn` (none, or signed in too long ago)."""
    agent = request.session.get("agent")
    at = request.session.get("at", 0)
    if not isinstance(agent, str) or time.time() - float(at) > max_age_seconds:
        request.session.clear()
        raise NotSignedIn
    return agent


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
