"""Running the desk for tests: on a real port (a browser and SSE need one), signed in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from agent_desk.app import create_app
from agent_desk.auth import hash_password
from agent_desk.settings import DeskSettings
from hilo.settings import HiloSettings
from hilo.testkit.serving import served

AGENT = "ana.agent"
PASSWORD = "correct horse battery staple"  # noqa: S105 - the test agent's
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def desk_settings(settings: HiloSettings, profile_url: str, api_key: str) -> DeskSettings:
    return DeskSettings.model_validate(
        {
            **settings.model_dump(),
            "desk_agents": [f"{AGENT}:{hash_password(PASSWORD)}"],
            "desk_session_secret": "test-session-secret-test-session-secret",
            "profile_api_url": profile_url,
            "profile_api_key": api_key,
        }
    )


@asynccontextmanager
async def running_desk(settings: DeskSettings) -> AsyncIterator[str]:
    """The desk on a free port until the block ends; yields its URL."""
    async with served(create_app(settings)) as url:
        yield url


def csrf_of(page: str) -> str:
    """The CSRF token a desk page carries (forms and the reply box echo it)."""
    found = _CSRF.search(page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@asynccontextmanager
async def signed_in(desk_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a signed-in session, as a browser has after the sign-in form."""
    async with httpx.AsyncClient(base_url=desk_url, headers={"Accept": "text/html"}) as client:
        form = await client.get("/login")
        answer = await client.post(
            "/login", data={"agent": AGENT, "password": PASSWORD, "csrf": csrf_of(form.text)}
        )
        assert answer.status_code == 303, answer.text
        yield client
