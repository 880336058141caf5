"""HTTP endpoints for the stores' POS systems: receipts, end-of-day files and visits."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from channel_store.end_of_day import read_upload
from channel_store.receipts import Receipt, Return, Visit
from channel_store.settings import StoreSettings
from channel_store.translate import customer_policy, from_receipt, from_return, from_visit
from hilo.auth import require_api_key
from hilo.channel import (
    Channel,
    create_channel_app,
    parse_json,
    publish_those_that_fit,
    refused_if_unreadable,
    request_body,
)
from hilo.contract import Interaction


def routes(channel: Channel, settings: StoreSettings) -> list[APIRouter]:
    reading = asyncio.Semaphore(1)
    router = APIRouter(
        prefix="/v1",
        tags=["store"],
        dependencies=[Depends(require_api_key(settings.store_api_keys))],
    )

    @router.post("/receipts")
    async def receipt(request: Request) -> dict[str, Any]:
        """One receipt as the till closes it; published before 200 (anonymous sales skipped)."""
        body = await request_body(request, settings)
        policy = customer_policy()
        receipt = parse_json(Receipt, body, context=policy.context())
        with refused_if_unreadable():  # a measured line in a currency with no minor unit
            interaction = from_receipt(
                receipt, datetime.now(UTC), settings.instance, policy.dropped
            )
        return await _published(channel, interaction)

    @router.post("/receipts/upload", response_model=None)
    async def upload(request: Request) -> JSONResponse:
        """An end-of-day CSV file (text/csv). 200: all rows taken; 207: some rows rejected (see
        `rejected`); 422: none taken."""
        # One file at a time, from its body to its last record published: several at once,
        # each body read before waiting, outgrew the container. Reading is CPU-bound: in a
        # thread, so the tills' real-time receipts and the health probes are answered
        # meanwhile. The receipts are translated and published a chunk at a time
        # (`EndOfDayFile`), each whole: a retry after a 503 publishes the same event ids.
        async with reading:
            body = await request_body(request, settings)
            upload = await asyncio.to_thread(
                read_upload, body, datetime.now(UTC), settings.instance
            )
            del body
            chunks = upload.translated()
            while chunk := await asyncio.to_thread(next, chunks, None):
                for receipt, too_large in await publish_those_that_fit(channel, chunk):
                    upload.refuse(receipt, too_large.detail)
        report = upload.finished()
        status = 200 if not report.rejected else 207 if report.rows_accepted else 422
        return JSONResponse(
            {
                "receipts_published": report.receipts_published,
                "anonymous_receipts_skipped": report.anonymous_receipts,
                "rows_accepted": report.rows_accepted,
                "rows_rejected": len(report.rejected),
                "rejected": [asdict(problem) for problem in report.rejected],
            },
            status_code=status,
        )

    @router.post("/returns")
    async def refund(request: Request) -> dict[str, Any]:
        """Goods brought back, or money paid back, at the till: a refund of the order it names,
        published before 200 (a return of an anonymous sale skipped)."""
        body = await request_body(request, settings)
        policy = customer_policy()
        ret = parse_json(Return, body, context=policy.context())
        with refused_if_unreadable():
            interaction = from_return(ret, datetime.now(UTC), settings.instance, policy.dropped)
        return await _published(channel, interaction)

    @router.post("/visits")
    async def visit(request: Request) -> dict[str, Any]:
        """A check-in with a loyalty card or the app's QR code."""
        body = await request_body(request, settings)
        policy = customer_policy()
        visit = parse_json(Visit, body, context=policy.context())
        interaction = from_visit(visit, datetime.now(UTC), settings.instance, policy.dropped)
        await channel.publish([interaction])
        return {"published": 1, "event_id": interaction.id}

    return [router]


async def _published(channel: Channel, interaction: Interaction | None) -> dict[str, Any]:
    """Publish a till's one event (an anonymous sale's is skipped) and say so."""
    if interaction is None:
        return {"published": 0, "skipped": "no customer identifier: an anonymous sale"}
    await channel.publish([interaction])
    return {"published": 1, "event_id": interaction.id}


def create_app(settings: StoreSettings | None = None) -> FastAPI:
    settings = settings or StoreSettings()
    return create_channel_app(
        "store",
        settings,
        lambda channel: routes(channel, settings),
        description="Physical stores: POST /v1/receipts, /v1/receipts/upload (CSV), /v1/returns, "
        "/v1/visits.",
    )
