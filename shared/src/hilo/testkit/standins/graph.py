"""Meta's Graph API errors, as the WhatsApp Cloud API and the Send API stand-ins answer them."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import JSONResponse


class GraphError(Exception):
    """A request Graph refuses: the HTTP status and the error object Meta answers,
    `{"error": {"message", "type", "code", "error_subcode", "error_data", "is_transient",
    "fbtrace_id"}}` (the optional ones only when given)."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        kind: str = "OAuthException",
        error_data: dict[str, Any] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if subcode is not None:
            self.error["error_subcode"] = subcode
        if error_data is not None:
            self.error["error_data"] = error_data
        if transient:
            self.error["is_transient"] = True

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {**self.error, "fbtrace_id": trace_id()}}, self.status)


def trace_id() -> str:
    """An `fbtrace_id` shaped like Meta's: 27 characters of letters and digits."""
    return secrets.token_urlsafe(20).replace("-", "A").replace("_", "z")[:27]
