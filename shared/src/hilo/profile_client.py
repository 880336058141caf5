"""A client of the customer-profile HTTP API, for the services that read customers from it (the
agent desk, the offers service): one way to call it and to read its answers.

They keep no copy of customers: the profile service is the one synchronised view of every
channel. 404 and 422 mean "nobody" (no such customer, not an identifier); 400 means the request
carried something the API does not accept, such as a stale or edited journey cursor
(`ProfileRequestRefused`, the caller's 400); no answer, any other error or a body that is not
JSON mean the service is away (`ProfileUnavailable`), which each caller turns into a 503 rather
than guess.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


class ProfileUnavailable(Exception):
    """The profile API did not answer usably."""


class ProfileRequestRefused(Exception):
    """The profile API refused the request itself (400), saying why: the service is up, and
    retrying the same request would be refused again."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def first_key(keys: str) -> str:
    """The key to send, of a comma-separated list its first: compose passes the profile API's
    own `HILO_API_KEYS` while `HILO_PROFILE_API_KEY` is unset, and during a rotation that holds
    the new key first and the old one after it."""
    return keys.split(",", 1)[0].strip()


class ProfileClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = first_key(api_key)
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"X-API-Key": key} if key else {},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self, method: str, path: str, *, always_there: bool = False, **request: Any
    ) -> Any | None:
        """One request: the JSON answer, None for nobody, `ProfileUnavailable` when away.

        `always_there` for a route that names no customer (the open conversations): its 404
        says the URL reaches something else (a wrong `HILO_PROFILE_API_URL`, a gateway), which
        read as nobody showed an empty queue and zero waiting."""
        try:
            response = await self._http.request(method, path, **request)
        except httpx.HTTPError as exc:
            raise ProfileUnavailable(type(exc).__name__) from exc
        if response.status_code == 404 and always_there:
            raise ProfileUnavailable(f"profile API answered 404 for {path}: is its URL right?")
        if response.status_code in (404, 422):
            return None
        if response.status_code == 400:
            raise ProfileRequestRefused(_detail(response))
        if response.status_code >= 400:
            raise ProfileUnavailable(f"profile API answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise ProfileUnavailable("profile API answered something that is not JSON") from exc

    async def lookup(self, kind: str, value: str) -> str | None:
        """The customer holding this identifier (normalised as the channels normalise it)."""
        found = await self.call("POST", "/v1/customers/lookup", json={"kind": kind, "value": value})
        return None if found is None else str(found["customer_id"])

    async def profile(self, customer_id: str) -> dict[str, Any] | None:
        """The profile (the survivor's, for an id merged away), or None: also for text typed
        or sent as an id that cannot be one (`customer_path`)."""
        try:
            path = customer_path(customer_id)
        except ValueError:
            return None
        found: dict[str, Any] | None = await self.call("GET", path)
        return found


def _detail(response: httpx.Response) -> str:
    """The API's own reason (FastAPI's `detail`), short; a generic one when it gives none."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail[:200] if isinstance(detail, str) and detail else "the request was not accepted"


def customer_path(customer_id: str) -> str:
    """The customer's path. Raises ValueError for an id holding a "/", or `.`/`..`, which no
    customer id is: the server decodes `%2F` before routing, so `<id>/conflicts` would reach
    another route, and httpx resolves dot segments (`..` asked for `GET /v1`)."""
    if "/" in customer_id or customer_id.strip(".") == "":
        raise ValueError("a customer id holds no '/' and is no '.' or '..'")
    return f"/v1/customers/{quote(customer_id, safe='')}"
