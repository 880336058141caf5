"""Twilio's call log, read back for the calls whose status callbacks could not bring them
(`hilo.catch_up`).

`GET /2010-04-01/Accounts/{AccountSid}/Calls.json?To=<number>&StartTime>=<day>` lists the calls
to a number (and `From=<number>`, the calls from it), newest first by creation. Twilio leaves
`end_time` and `duration` empty for a call that did not complete (busy, no answer, failed,
canceled), so the filter is on the start, a day granular one: Twilio ends every call within 24
hours, so every call that ended since the time asked for started at most `LONGEST_CALL` before
it, and paging stops at calls created earlier. A call ended when its `end_time` says, else when
it was last updated (`date_updated`: its final status). Each call that ended since the time
asked for becomes the final status callback Twilio would have posted (`StatusCallback`: the
call's duration, which Twilio gives completed calls only, as their callbacks), translated as
its webhook is, under the same event id; progress (queued, ringing, in-progress) is not read
back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from channel_voice.calls import StatusCallback
from channel_voice.translate import CHANNEL, FINAL_STATUSES
from hilo.catch_up import left_out
from hilo.contract import Interaction
from hilo.providers.twilio_api import TwilioLog, redacted, twilio_time

LONGEST_CALL = timedelta(hours=25)
"""Twilio's longest call (24 hours), and an hour for a call's time queued before it."""

Translate = Callable[[StatusCallback], Interaction | None]
"""A call's final status as the interaction its status callback would make."""


class TwilioCallLog(TwilioLog[Translate]):
    """Calls to and from the given numbers that ended since a time: the voice channel's
    `hilo.catch_up.ProviderLog`."""

    async def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        """The interactions of each page of calls that ended since `since`."""
        earliest = since - LONGEST_CALL  # the earliest start of a call that ended since
        day = earliest.astimezone(UTC).date().isoformat()
        for number in self.numbers:
            for side in ("To", "From"):
                pages = self._lists.pages(
                    self._lists.path("Calls"),
                    "calls",
                    {side: number, "StartTime>": day},
                    last=lambda items: any(_created_before(item, earliest) for item in items),
                )
                async for items in pages:
                    yield [
                        interaction
                        for item in items
                        if _ended_since(item, since)
                        for interaction in self._translated(item)
                    ]

    def _translated(self, call: dict[str, Any]) -> list[Interaction]:
        """As its final status callback would have been; one the callback would have had
        refused with 422 (a number that is none) is left out, as the webhook would have."""
        if redacted(call.get("from")) or redacted(call.get("to")):
            left_out(CHANNEL, "redacted")
            return []
        try:
            interaction = self._translate(StatusCallback.model_validate(_as_callback(call)))
        except ValueError:  # a pydantic ValidationError too
            left_out(CHANNEL, "unreadable")
            return []
        return [] if interaction is None else [interaction]


def _as_callback(call: dict[str, Any]) -> dict[str, Any]:
    """The form of the call's final status callback."""
    return {
        "CallSid": call.get("sid"),
        "CallStatus": call.get("status"),
        "Direction": call.get("direction"),
        "From": call.get("from"),
        "To": call.get("to"),
        "CallDuration": call.get("duration"),
        "ParentCallSid": call.get("parent_call_sid"),
        "Timestamp": call.get("end_time") or call.get("date_updated"),
    }


def _ended_since(call: dict[str, Any], since: datetime) -> bool:
    ended = twilio_time(call, "end_time", "date_updated")
    return call.get("status") in FINAL_STATUSES and ended is not None and ended >= since


def _created_before(call: dict[str, Any], at: datetime) -> bool:
    created = twilio_time(call, "date_created", "start_time")
    return created is not None and created < at
