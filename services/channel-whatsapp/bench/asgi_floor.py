"""The floor under any webhook: uvicorn with an ASGI app that reads the body and answers 200.

Run by `webhooks.py --floors` with the service's settings (`HILO_HTTP_PORT`), so the difference
between this and the service is what the service itself costs.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Message = dict[str, Any]
ANSWER = b'{"published":1,"ignored":0}'


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ANSWER)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["HILO_HTTP_PORT"]),
        log_config=None,
        access_log=False,
    )
