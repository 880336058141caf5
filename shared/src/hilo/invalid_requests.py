"""A request the API could not read, answered 422 naming its fields, never echoing their values.

FastAPI's own answer echoes each value, which may be personal (an email), and fails with a 500
on a string no UTF-8 can encode (a lone surrogate, `"\\ud800"`, which JSON allows): a client of
the API then takes the service for down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's `RequestValidationError` handler: 422 with each error's field, message and
    type."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": described(errors)})


def described(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Each error's `loc`, `msg` and `type`, every text among them encodable (a key or a
    message may hold what the client sent)."""
    return [
        {
            "loc": [_encodable(part) for part in error["loc"]],
            "msg": _encodable(error["msg"]),
            "type": error["type"],
        }
        for error in errors
    ]


def _encodable(part: Any) -> Any:
    return part.encode("utf-8", "replace").decode() if isinstance(part, str) else part
