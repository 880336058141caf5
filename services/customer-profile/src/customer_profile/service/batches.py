"""Running the pipeline on consumed batches so that nothing is lost and nothing gets stuck.

Two kinds of failure, two answers:

- *Transient* (MongoDB or Kafka unreachable, a primary stepping down): the same batch is retried
  with backoff for `store_retry_seconds`, then handed back to Kafka uncommitted (redelivered).
  Nothing is dead-lettered for an outage.
- *Anything else* (a record the code or the database cannot take): the batch is retried a few
  times in case it was transient after all, then split: each record runs alone, in order, and the
  one that still fails goes to the dead-letter topic with the reason, so the partition moves on.

Every failed attempt is logged (error type, masked detail) and counted; while a batch keeps
failing, `ConsumerHealth` reports the consumer stuck and readiness answers 503.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import structlog
from prometheus_client import Counter, Gauge
from pymongo.errors import ConnectionFailure, OperationFailure
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from customer_profile.service.pipeline import BatchOutcome, Pipeline, RawRecord
from customer_profile.service.ports import Contention, ErasedClaimsMet
from hilo.kafka import PublishFailed
from hilo.logs import error_text

log = structlog.get_logger(__name__)

FAILED_ATTEMPTS = Counter(
    "hilo_profile_batch_failures_total", "Batch attempts that failed, by error type", ["error"]
)
POISONED = Counter(
    "hilo_profile_poison_records_total",
    "Records dead-lettered because processing them failed after parsing",
)
STUCK = Gauge("hilo_profile_consumer_stuck", "1 while a batch has been failing for too long")

# MongoDB's retryable error codes (not-primary, shutdown, network, write conflict, time limits,
# a write concern not met while replicas are away: 64 and 100): the server will answer again, so
# the batch waits for it instead of dead-lettering records.
RETRYABLE_CODES = frozenset(
    {6, 7, 50, 64, 89, 91, 100, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 251}
)
# A user the server refuses (Unauthorized, AuthenticationFailed: a role or a password changed
# under the service) waits too: an operator fixes it, and until then every record would be
# dead-lettered (Kafka's authorisation errors wait as well).
REFUSED_USER_CODES = frozenset({13, 18})
TRANSIENT_CODES = RETRYABLE_CODES | REFUSED_USER_CODES
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
Result = TypeVar("Result")


def is_transient(exc: BaseException) -> bool:
    """True for failures of the infrastructure, which retrying (or redelivery) will fix, for
    other writers winning every race of an attempt (`Contention`), and for an erasure about to
    delete a profile the batch needs (`ErasureUnderWay`), or whose claims the batch kept meeting
    (`ErasedClaimsMet`): its next attempt checks its events again.

    Kafka refusing a record for good (too large for the topic) is not transient: the record
    whose output it is gets dead-lettered, instead of its partition waiting for ever."""
    if isinstance(exc, PublishFailed):
        return not exc.for_good
    if isinstance(exc, ConnectionFailure | ErasedClaimsMet | Contention):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_CODES or any(map(exc.has_error_label, TRANSIENT_LABELS))
    return False


@dataclass(frozen=True)
class RetryPolicy:
    transient_seconds: float
    """How long one batch waits for MongoDB/Kafka before it is handed back uncommitted."""
    poison_attempts: int = 3
    """Attempts of a non-transient failure before the batch is split record by record."""
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 10.0


class ConsumerHealth:
    """Whether the consumer is making progress: a readiness check and a gauge."""

    def __init__(self, stuck_after_seconds: float) -> None:
        self._stuck_after = stuck_after_seconds
        self._failing_since: float | None = None

    def failed(self) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        STUCK.set(1 if self.stuck else 0)

    def progressed(self) -> None:
        self._failing_since = None
        STUCK.set(0)

    @property
    def stuck(self) -> bool:
        since = self._failing_since
        return since is not None and time.monotonic() - since >= self._stuck_after

    async def check(self) -> bool:
        """Readiness: false while a batch has been failing for longer than allowed."""
        STUCK.set(1 if self.stuck else 0)
        return not self.stuck


class BatchRunner:
    """Process a batch through the pipeline; isolate and dead-letter what can never succeed."""

    def __init__(self, pipeline: Pipeline, policy: RetryPolicy, health: ConsumerHealth) -> None:
        self._pipeline = pipeline
        self._policy = policy
        self._health = health

    async def run(self, records: Sequence[RawRecord]) -> BatchOutcome:
        """The batch's outcome once every record is processed or dead-lettered.

        Raises only transient failures that outlasted the retry window: the caller leaves the
        batch uncommitted and Kafka delivers it again.
        """
        try:
            outcome = await self._attempts(partial(self._pipeline.process, records), len(records))
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch_isolating_records", records=len(records), error=error_text(exc))
            outcome = await self._one_by_one(records)
        self._health.progressed()
        return outcome

    async def _one_by_one(self, records: Sequence[RawRecord]) -> BatchOutcome:
        total = BatchOutcome()
        for record in records:
            try:
                outcome = await self._attempts(partial(self._pipeline.process, [record]), 1)
            except Exception as exc:
                if is_transient(exc):
                    raise
                await self._poisoned(record, exc)
                total.dead_lettered += 1
            else:
                _add(total, outcome)
        return total

    async def _poisoned(self, record: RawRecord, failure: BaseException) -> None:
        """Dead-letter a record that fails on its own, whatever else is in the batch."""
        send = partial(self._pipeline.dead_letter, record, "processing_failed", error_text(failure))
        await self._attempts(send, 1)
        POISONED.inc()
        log.warning(
            "record_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error_text(failure),
        )

    async def _attempts(self, step: Callable[[], Awaitable[Result]], records: int) -> Result:
        """Run `step`, retrying transient failures for the window and others a few times."""
        policy = self._policy
        started = time.monotonic()
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(
                multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds
            ),
            stop=_stop(policy),
            reraise=True,
        ):
            with attempt:
                try:
                    return await step()
                except Exception as exc:
                    self._failed(exc, records, time.monotonic() - started)
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    def _failed(self, exc: BaseException, records: int, elapsed: float) -> None:
        FAILED_ATTEMPTS.labels(type(exc).__name__).inc()
        self._health.failed()
        log.warning(
            "batch_attempt_failed",
            error=error_text(exc),
            transient=is_transient(exc),
            records=records,
            failing_for_seconds=round(elapsed, 1),
        )


def _stop(policy: RetryPolicy) -> Callable[[RetryCallState], bool]:
    """Transient failures stop after the time window, the others after a few attempts."""

    def stop(state: RetryCallState) -> bool:
        failure = state.outcome.exception() if state.outcome else None
        if failure is not None and is_transient(failure):
            return (state.seconds_since_start or 0) >= policy.transient_seconds
        return state.attempt_number >= policy.poison_attempts

    return stop


def _add(total: BatchOutcome, outcome: BatchOutcome) -> None:
    total.accepted += outcome.accepted
    total.duplicates += outcome.duplicates
    total.repaired += outcome.repaired
    total.dead_lettered += outcome.dead_lettered
    total.merges += outcome.merges
    total.profiles.update(outcome.profiles)
    for step, seconds in outcome.seconds.items():
        total.seconds[step] = total.seconds.get(step, 0.0) + seconds
