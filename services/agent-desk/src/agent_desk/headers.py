"""Response headers for pages that show personal data to people at shared screens.

- `Cache-Control: no-store` on everything but the static assets: after signing out, the Back
  button or the browser's cache of a shop terminal must not show the last customer again.
- A Content-Security-Policy that lets the page run only its own script and style, connect only
  to the desk (its live stream and replies) and never be framed; `nosniff`; and no referrer, as
  the desk's URLs carry customer ids and search text.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)
ALWAYS: Final = (
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
CACHEABLE_PREFIX: Final = "/static/"


class SecurityHeaders:
    """ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer the live
    stream): adds the headers above to every HTTP response the desk sends, error pages too
    (`app.DeskApp` puts it outside Starlette's error handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith(CACHEABLE_PREFIX)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if cacheable or name.lower() != b"cache-control"
                ]
                headers += ALWAYS
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
