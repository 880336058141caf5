"""The AsyncAPI 3.0 document of every Hilo topic, as each service serves it (`GET /asyncapi.json`).

The document is generated from the code (the topic registry `hilo.topics` and the record models:
the contract's, the profile service's `customer_profile.records`, the offers') by `make schema`,
which writes it to docs/asyncapi.json and into this package; a test fails when either differs
from what the code generates. Analytics in any language builds on it: channels (topics) with
their keys, cleanup policy and retention, each message's headers and JSON Schema (draft
2020-12), and which service sends and which receives.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

DOCUMENT = "asyncapi.json"


@cache
def document() -> dict[str, Any]:
    """The packaged document (what docs/asyncapi.json holds)."""
    loaded: dict[str, Any] = json.loads(files("hilo.contract").joinpath(DOCUMENT).read_text())
    return loaded


def asyncapi_router() -> APIRouter:
    """`GET /asyncapi.json`: the topics' contract, next to the service's OpenAPI."""
    router = APIRouter(tags=["contract"])

    @router.get("/asyncapi.json", summary="AsyncAPI 3.0 document of every Hilo topic")
    async def asyncapi() -> JSONResponse:
        return JSONResponse(document())

    return router
