"""Reading back from a provider's own log what its webhooks could not bring: for providers that
never retry, and keep what they received.

Twilio posts a webhook once (it retries only a connection it could not open, within 15 s), so
an SMS whose webhook was refused (MongoDB away: no key to seal it with, and no spool) or found
nobody listening (every instance stopped, a deploy) never comes again. Twilio does keep every
message and call in its logs, readable through its API. A channel that passes a `ReadBack`
reads the log for the time it may have missed and publishes what is in it, under the event ids
the webhooks would have had: a message its webhook did bring is one journey entry still, since
every consumer drops a repeated id.

The time missed is known three ways:
- the refusals this process answered, read back once the first is `SETTLE` old (the provider's
  lists are eventually consistent), kept in memory until then, and noted in the
  channel's document in MongoDB (`channel_watermarks`: the first and last not read back) on the
  next pass and at shutdown, so that another instance reads them back if this one stops first;
- a watermark in the same document, moved to the end of each pass (every
  `HILO_CATCH_UP_SECONDS`) by whichever instance is running. An instance starting reads back
  from it at once (the time nobody, or only it, was running);
- a running instance reads back from the watermark when it is more than two passes old: MongoDB
  took no move meanwhile, so any instance may have refused webhooks.
No watermark yet: a new deployment, nothing to read back.

A read-back starts `MARGIN` before the window (clocks apart, a message arriving as the window
was taken) and never more than `HILO_CATCH_UP_MAX_HOURS` ago. It fails whole (the provider,
Kafka or MongoDB away), and the next pass reads the same window again; an event it cannot
publish for good (one its webhook would have had refused, a number the provider redacted, one
larger than Kafka takes) is left out and counted instead of holding up the rest. Instances that
all find the watermark behind each read the window back: a repeat per instance, which consumers
drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import structlog
from prometheus_client import Counter
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from hilo.contract import Interaction
from hilo.mongo import MongoDocument

log = structlog.get_logger(__name__)

WATERMARKS_COLLECTION: Final = "channel_watermarks"
MARGIN: Final = timedelta(minutes=2)
"""Read back this much before the time missed: the provider's clock and ours may differ."""
FAR_PAST: Final = datetime(2000, 1, 1, tzinfo=UTC)
SETTLE: Final = timedelta(seconds=30)
"""How old a refusal is before it is read back: a provider's lists are eventually consistent,
and a call refused as it ended may still be listed in progress for a moment."""


class ProviderLog(Protocol):
    """A provider's log of what it received (Twilio's message list)."""

    def read_back(self, since: datetime) -> AsyncIterator[Sequence[Interaction]]:
        """What it received since `since`, a page of interactions at a time (raises
        `CatchUpFailed` or `httpx.HTTPError` when it cannot be read whole)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ReadBack:
    """What a channel reads back from, how often it looks, and how far back at most."""

    provider_log: ProviderLog
    every_seconds: float
    max_age: timedelta
    settle: timedelta = SETTLE


Publish = Callable[[Sequence[Interaction]], Awaitable[None]]

READ_BACK = Counter(
    "hilo_channel_read_back_total",
    "Provider events read back from the provider's log after a refusal or a stop (most were "
    "published by their webhook already: consumers drop the repeats)",
    ["channel"],
)
READ_BACK_FAILURES = Counter(
    "hilo_channel_read_back_failures_total",
    "Read-backs that failed (the provider, Kafka or MongoDB away) and wait for the next interval",
    ["channel"],
)

LEFT_OUT = Counter(
    "hilo_channel_read_back_left_out_total",
    "Provider events a read-back left out, by reason: one its webhook would have had refused "
    "(unreadable), a number the provider redacted, one larger than Kafka takes",
    ["channel", "reason"],
)


def left_out(channel: str, reason: str) -> None:
    """Count and log an event a read-back leaves out (never what it held)."""
    LEFT_OUT.labels(channel, reason).inc()
    log.info("read_back_left_out", channel=channel, reason=reason)


@dataclass(frozen=True)
class Window:
    """From when to read back, and why (for the log)."""

    since: datetime
    reason: str


def window_to_read(
    *,
    watermark: datetime | None,
    missed_since: datetime | None,
    starting: bool,
    now: datetime,
    stale_after: timedelta,
    max_age: timedelta,
    settle: timedelta = SETTLE,
) -> Window | None:
    """The time to read back, or `None` when nothing may have been missed (module docstring).
    Refusals are read back once the first is `settle` old."""
    candidates: list[Window] = []
    if watermark is not None and (starting or now - watermark > stale_after):
        candidates.append(Window(watermark, "started" if starting else "watermark_stale"))
    if missed_since is not None and now - missed_since >= settle:
        candidates.append(Window(missed_since, "refused"))
    if not candidates:
        return None
    earliest = min(candidates, key=lambda w: w.since)
    return Window(max(earliest.since - MARGIN, now - max_age), earliest.reason)


class CatchUp:
    """One channel's read-backs: `missed` notes a refusal, `run_forever` reads back."""

    def __init__(
        self,
        channel: str,
        watermarks: AsyncCollection[MongoDocument],
        read_back: ReadBack,
        publish: Publish,
    ) -> None:
        self.channel = channel
        self._watermarks = watermarks
        self._log = read_back.provider_log
        self._publish = publish
        self._every = read_back.every_seconds
        self._max_age = read_back.max_age
        self._settle = read_back.settle
        self._missed: tuple[datetime, datetime] | None = None
        """The first and last refusal not read back yet."""
        self._started = False
        self._read = READ_BACK.labels(channel)
        self._failures = READ_BACK_FAILURES.labels(channel)

    def missed(self, at: datetime | None = None) -> None:
        """A webhook was refused at `at` (now): the provider will not send it again."""
        at = at or datetime.now(UTC)
        first = at if self._missed is None else min(self._missed[0], at)
        self._missed = (first, at if self._missed is None else max(self._missed[1], at))

    @property
    def missed_since(self) -> datetime | None:
        """The first refusal not read back yet."""
        return None if self._missed is None else self._missed[0]

    async def run_forever(self) -> None:
        """Read back whenever something may have been missed, every `every_seconds`."""
        while True:
            try:
                await self.once()
            except CatchUpFailed as exc:
                self._failed(str(exc))
            except Exception as exc:  # the loop outlives any one pass
                # MongoDB or the provider away, or a page nobody expected: its type alone, since
                # a message may quote what it could not read.
                self._failed(type(exc).__name__)
            await asyncio.sleep(self._every)

    def _failed(self, error: str) -> None:
        """Counted and logged; the next pass reads the same window again."""
        self._failures.inc()
        log.warning("read_back_failed", channel=self.channel, error=error)

    async def once(self) -> int:
        """One pass: read back what may have been missed, then move the watermark to the end of
        the pass; how many events were read back."""
        now = datetime.now(UTC)
        await self.note_refusals()
        found = await self._watermarks.find_one({"_id": self.channel}) or {}
        noted: datetime | None = found.get("missed_since")
        missed = self._missed
        window = window_to_read(
            watermark=found.get("through"),
            missed_since=min(
                (at for at in (noted, missed[0] if missed else None) if at is not None),
                default=None,
            ),
            starting=not self._started,
            now=now,
            stale_after=timedelta(seconds=2 * self._every),
            max_age=self._max_age,
            settle=self._settle,
        )
        read = 0 if window is None else await self._read_and_publish(window)
        await self.note_refusals()  # those of a long read-back, before the watermark passes them
        # The end of the pass: this instance took webhooks all along (a refusal meanwhile is
        # noted), so a long read-back does not leave the watermark behind.
        await self._watermarks.update_one(
            {"_id": self.channel}, {"$max": {"through": datetime.now(UTC)}}, upsert=True
        )
        self._started = True
        if window is not None:
            await self._forget_refusals(window.since, now - self._settle)
        return read

    async def note_refusals(self) -> None:
        """Note this instance's refusals in the watermark document, for any instance to read
        back should this one stop first (raises `PyMongoError` while MongoDB is away)."""
        if self._missed is None:
            return
        first, last = self._missed
        await self._watermarks.update_one(
            {"_id": self.channel},
            {"$min": {"missed_since": first}, "$max": {"missed_last": last}},
            upsert=True,
        )

    async def close(self) -> None:
        """At shutdown: what this instance refused and did not read back yet is noted, so that
        an instance still running, or the next to start, reads it back; then the provider's log
        is closed."""
        try:
            await self.note_refusals()
        except PyMongoError as exc:
            error = type(exc).__name__
        else:
            return
        finally:
            await self._log.close()
        missed = self.missed_since
        log.error(
            "read_back_refusals_unnoted",
            channel=self.channel,
            since=missed.isoformat() if missed else None,
            error=error,
        )

    async def _forget_refusals(self, since: datetime, settled: datetime) -> None:
        """The pass read back everything from `since` on: refusals from then up to `settled`
        (those old enough to be in the provider's lists) are done, here and in the document.
        Later ones stay, from `settled` on, to be read again. A refusal another instance noted
        before `since` (after this pass read the document) was not read, and stays whole,
        unless it is older than anything read back (`max_age`): it never can be."""
        if self._missed is not None:
            last = self._missed[1]
            self._missed = None if last <= settled else (max(self._missed[0], settled), last)
        expired = datetime.now(UTC) - self._max_age
        floor = since if since > expired else FAR_PAST
        await self._watermarks.update_one(
            {
                "_id": self.channel,
                "missed_since": {"$gte": floor},
                "missed_last": {"$lte": settled},
            },
            {"$unset": {"missed_since": "", "missed_last": ""}},
        )
        await self._watermarks.update_one(
            {
                "_id": self.channel,
                "missed_since": {"$gte": floor, "$lt": settled},
                "missed_last": {"$gt": settled},
            },
            {"$set": {"missed_since": settled}},
        )

    async def _read_and_publish(self, window: Window) -> int:
        log.info(
            "read_back_started",
            channel=self.channel,
            since=window.since.isoformat(),
            reason=window.reason,
        )
        read = 0
        async for interactions in self._log.read_back(window.since):
            if interactions:
                await self._publish(interactions)
            read += len(interactions)
            self._read.inc(len(interactions))
        log.info("read_back_done", channel=self.channel, events=read)
        return read


class CatchUpFailed(Exception):
    """A read-back could not be completed (the provider answered an error, Kafka refused)."""
