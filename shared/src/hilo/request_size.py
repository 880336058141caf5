"""Request bodies bounded before anything reads them, for the APIs (the channel services bound
theirs as they read them, `hilo.channel.raw_body`).

FastAPI reads and parses a request's body (a form's files into temporary files, JSON into
memory) before any dependency runs, the API key and the CSRF checks included: unbounded, anyone
who can reach the port fills the disk or the memory with requests that are refused only once
they are read.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_REQUEST_BYTES: Final = 1 << 20
"""Far above any request the APIs take (a quote of 500 lines, 100 prices, a reply's text)."""


class BodyLimit:
    """Answers 413 to a request whose body is larger than `max_bytes`: before reading any of it
    when it says so (`Content-Length`; the server does not ask a client that waits for a
    `100 Continue` to send it, and throws away what comes unread), else as soon as that much
    has arrived."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared(scope) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised where the app reads the body: its handlers answer it, as FastAPI
                    # passes an HTTPException through its own body parsing.
                    raise HTTPException(413, _detail(self.max_bytes))
            return message

        await self.app(scope, bounded, send)


def limit_request_bodies(app: FastAPI, max_bytes: int = MAX_REQUEST_BYTES) -> None:
    """Bound every request body of `app` (`BodyLimit`)."""
    app.add_middleware(BodyLimit, max_bytes=max_bytes)


def _declared(scope: Scope) -> int:
    """The `Content-Length` the request gives (0 without one, or with one that is no number:
    the server refuses those itself)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _detail(max_bytes: int) -> str:
    return f"request body larger than {max_bytes} bytes"


async def _too_large(send: Send, max_bytes: int) -> None:
    body = b'{"detail":"' + _detail(max_bytes).encode() + b'"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
