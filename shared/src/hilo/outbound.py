"""The `outbound` topic, both ends: publishing a command to send, and sending it on its channel.

Whoever speaks for the company publishes an `OutboundCommand` (`command_record`). A channel
service with a `Provider` consumes `outbound` in its own consumer group, takes the commands of
the channels it sends for (its own; `channel-social` both `messenger` and `instagram`) and, for
each (`OutboundSender.handle`):

1. claims the command id in MongoDB (`outbound_sends`) with a token of its own: only the
   attempt whose claim was stored sends. A command delivered again after it was sent is not
   sent again, only its record is re-published (the interaction id is derived from the command
   id, so the journey keeps it once);
2. sends it through the provider, retrying what the provider did not take (503, 429, a
   provider's own rate-limit answer, no connection) with exponential backoff; a refusal (any
   other 4xx) is not retried, nor is a request that went out and got no answer or any other 5xx
   (the provider may have taken it: Twilio says a 500 to a message may still reach the
   customer);
3. records the outcome on `interactions`: the sent message as an outbound `message` in the
   command's conversation, or a `message_status` `failed` carrying the provider's reason, which
   the agent sees.

The offset is committed after that; when MongoDB or Kafka fail the command is delivered again.
Nothing is sent twice: a delivery that finds another attempt's claim still `sending` waits while
that attempt may be in flight (`RetryPolicy.in_flight_seconds`, a second instance after a
rebalance), and after that reports the message as not confirmed (`UNCONFIRMED`) instead of
sending it: the attempt died after claiming it, before or after the provider took it, and none of
the providers takes an idempotency key that would tell which. The agent sees it and decides. An
attempt stopped during its call (a deploy) or failing in its own code says so itself at once
(`INTERRUPTED`, `failed_in_code`), so no delivery waits for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol

import httpx
import structlog
from cachetools import TTLCache
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import Counter
from pydantic import ValidationError
from pydantic_core import from_json, to_json
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from hilo.contract import (
    Conversation,
    DeliveryStatus,
    Direction,
    Identifiers,
    Interaction,
    MessageExchanged,
    MessageStatusChanged,
    new_interaction,
    rfc2822_time,
)
from hilo.contract.outbound import (
    OutboundCommand,
    OutboundMessage,
    failure_provider_id,
)
from hilo.contract.personal import OUTBOUND_FIELDS
from hilo.dead_letters import publish_dead_letter
from hilo.kafka import KafkaPublisher, PublishFailed, Record, cloudevent_headers, keep_bytes
from hilo.logs import error_text, mask_text
from hilo.mongo import MongoDocument
from hilo.sealing import Sealer
from hilo.settings import HiloSettings
from hilo.topics import Topic, topic_name

log = structlog.get_logger(__name__)

CHANNEL_HEADER = "hilo_channel"
OUTBOUND_SOURCE = "/hilo/outbound"
"""CloudEvents source of outbound commands (who asked is `requested_by`, in the sealed value:
an agent's name is personal data)."""
_THREADS_DROPPED = "migration:recorded-threads-dropped"
"""Marks `outbound_sends` as cleaned of recorded threads (no state: no query of sends finds it)."""
SENDS_COLLECTION = "outbound_sends"
SENDS_KEPT = timedelta(days=45)
"""How long a send is remembered (MongoDB's TTL on `claimed_at`): longer than the `outbound`
topic (7 days) and its dead-letter topic (30 days) keep commands, so a command redelivered or
replayed from either still finds its send and is not sent twice, and a provider's late status
still finds its message. Not for ever: a send names its customer and the provider's message id,
which can hold their number (a WhatsApp `wamid`)."""

SENT = Counter("hilo_outbound_sent_total", "Outbound messages the provider accepted", ["channel"])
FAILED = Counter(
    "hilo_outbound_failed_total", "Outbound messages not sent, by reason", ["channel", "reason"]
)
DUPLICATES = Counter(
    "hilo_outbound_redelivered_total",
    "Commands delivered again after they were sent (not sent twice)",
    ["channel"],
)


class SendRefused(Exception):
    """The provider refused the message (a 4xx): retrying would not help; the agent is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SendUncertain(SendRefused):
    """The request went out and no answer came: the provider may have taken the message. Not
    retried (the customer could get it twice); reported to the agent as not confirmed."""


def accepted_without_id(response: httpx.Response) -> SendUncertain:
    """A 2xx without the message id the provider documents: it probably took the message, but
    its statuses cannot be matched. Not retried, and the agent is told it may have been sent
    rather than that it failed, so as not to send it twice."""
    return SendUncertain(
        f"the provider answered {response.status_code} without a message id: it may have been "
        "sent; look at the conversation before sending it again"
    )


class SendUnavailable(Exception):
    """The provider could not be reached, or did not take the message (503, 429, a rate limit):
    worth retrying, no sooner than `retry_after` seconds when the provider said so."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.attempts = 1


def retry_after(response: httpx.Response) -> float | None:
    """The wait a `Retry-After` header asks for, in seconds (it may give seconds or a date);
    None without one, or with one that is neither."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    when = rfc2822_time(value)
    if when is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class SendInProgress(Exception):
    """Another attempt claimed the command a moment ago and may still be sending it (a second
    instance after a rebalance): the command is taken up again later, not sent twice."""


ECHO_WAIT_SECONDS = 1.0
"""How long an echo that matches no sent message waits while a send is being stored."""

CHECK_FIRST: Final = "look at the conversation before sending it again"
"""How every reason ends whose message may have reached the customer all the same: the desk
says "perhaps not sent" for those, not "not sent"."""

UNCONFIRMED = f"not confirmed: the channel service stopped while sending it; {CHECK_FIRST}"
INTERRUPTED = (
    f"not confirmed: the channel service was stopped while the provider answered; {CHECK_FIRST}"
)
"""A send whose call was cancelled (a deploy that outlasts the provider's answer): stored at
once, so the next delivery reports it instead of waiting `in_flight_seconds` for an attempt
that is gone."""


SendReport = Literal["perhaps_sent", "unsettled"]
"""What became of a command's send, for a provider status about its message that comes later
(`OutboundSender.reports_of`)."""

COMMAND_TAG: Final = "hilo-command:"
"""How a provider that echoes an opaque string with each status of a message (WhatsApp's
`biz_opaque_callback_data`) is given the command id: `hilo-command:<id>` is ours, any other
value another sender's on the same account."""


def tagged_command(value: str | None) -> str | None:
    """The command id of a `COMMAND_TAG`-ged value, else None."""
    if value is None or not value.startswith(COMMAND_TAG):
        return None
    return value.removeprefix(COMMAND_TAG) or None


def _report(state: MongoDocument) -> SendReport | None:
    if state.get("state") == "sending":
        return "unsettled"
    if state.get("state") == "failed" and CHECK_FIRST in str(state.get("reason") or ""):
        return "perhaps_sent"
    return None


def failed_in_code(error: BaseException) -> str:
    """The reason of a send the channel's own code failed on (a defect, not the provider's
    answer): before or after the call, so the message may be out."""
    failure = type(error).__name__
    return f"not confirmed: the channel service failed while sending it ({failure}); {CHECK_FIRST}"


@dataclass(frozen=True)
class Sent:
    """What the provider answered for an accepted message."""

    provider_message_id: str
    thread: str | None = None
    """The provider's thread reference when the message starts or continues one (email)."""


class Provider(Protocol):
    """One channel's provider API: sends a message, or raises `SendRefused`/`SendUnavailable`."""

    async def send(self, command: OutboundCommand) -> Sent: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class NotConfigured:
    """The provider of a channel whose provider settings are missing: it refuses every command,
    naming what is missing.

    A channel that did not consume `outbound` at all would leave the agent's reply waiting on
    "sending" with no reason, and once credentials came, its new consumer group would send the
    whole backlog, weeks late. Refused, the reply is `failed` with this reason on the desk now.
    """

    reason: str

    async def send(self, command: OutboundCommand) -> Sent:
        raise SendRefused(self.reason)

    async def close(self) -> None:
        return None


def not_configured(channel: str, reason: str) -> NotConfigured:
    """The provider of a channel whose settings are missing, said once in the log at start."""
    log.warning("outbound_not_configured", channel=channel, reason=reason)
    return NotConfigured(reason)


RETRYABLE_STATUSES = frozenset({429, 503})
"""Answers that say the provider did not take the request: too many requests, unavailable."""


async def provider_call(
    request: Callable[[], Any],
    reason_of: Callable[[httpx.Response], str],
    throttled: Callable[[httpx.Response], bool] | None = None,
) -> httpx.Response:
    """Make one provider HTTP call, sorting failures the way every provider needs them sorted.

    No connection (or none free in time), a 503 (unavailable), a 429 or an answer the
    provider's `throttled` recognises as not taken (Graph says so by error code, whatever the
    status: its rate limits, Messenger's temporary send failure) is `SendUnavailable` (retried,
    after the `Retry-After` the provider asked for): the provider did not take the message. A
    request sent but not answered (a read timeout, a dropped connection) or answered with
    another 5xx (500, 502, 504: the provider failed or timed out while handling it) is
    `SendUncertain`: the provider may have taken it, and sending it again could reach the
    customer twice (Twilio's error 20500 says so of messages). Any other 4xx is `SendRefused`
    with `reason_of(response)`, the provider's own explanation.
    """
    try:
        response: httpx.Response = await request()
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise SendUnavailable(f"provider not reachable: {type(exc).__name__}") from exc
    except RuntimeError as exc:
        if "client has been closed" not in str(exc):
            raise
        # The service is stopping and closed its client: no request went out.
        raise SendUnavailable("the channel service is stopping") from exc
    except httpx.HTTPError as exc:
        raise SendUncertain(
            f"no answer from the provider ({type(exc).__name__}): it may have been sent; "
            + CHECK_FIRST
        ) from exc
    if response.status_code in RETRYABLE_STATUSES:
        raise SendUnavailable(f"provider answered {response.status_code}", retry_after(response))
    if response.status_code >= 400 and throttled is not None and throttled(response):
        raise SendUnavailable(f"provider did not take it: {reason_of(response)}")
    if response.status_code >= 500:
        raise SendUncertain(
            f"the provider answered {response.status_code}: it may have been sent; {CHECK_FIRST}"
        )
    if response.status_code >= 400:
        raise SendRefused(reason_of(response))
    return response


def message_text(message: OutboundMessage) -> str:
    """The text as the customer reads it; a template is recorded by name and parameters."""
    if message.text:
        return message.text
    template = message.template
    if template is None:  # pragma: no cover - the model requires one of the two
        return ""
    parameters = f": {', '.join(template.parameters)}" if template.parameters else ""
    return f"[template {template.name} ({template.language})]{parameters}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_wait_seconds: float = 0.5
    max_wait_seconds: float = 30.0
    in_flight_seconds: float = 300.0
    """How long a claim may be another attempt's send in progress; older, that attempt died."""


@dataclass
class Calling:
    """Whether a send is with the provider right now, or waiting between attempts."""

    now: bool = False


SENT_BY: Final = {"messenger": "social", "instagram": "social"}
"""The channel service that sends a channel's replies, where it is not the one named after the
channel: one service speaks for both Meta channels."""


def sending_service(channel: str) -> str:
    """The name of the channel service that sends `channel`'s replies."""
    return SENT_BY.get(channel, channel)


def outbound_group(settings: HiloSettings, service: str) -> str:
    """The consumer group in which `service` takes its commands from `outbound`: a group with no
    member is a service not running, whose replies wait on Kafka (the agent desk says so)."""
    return f"{settings.topic_prefix}hilo-channel-{service}-outbound"


UNSTORED_KEPT = 10_000
UNSTORED_SECONDS = 3_600.0
"""What a sender remembers of sends MongoDB did not answer for, and how long: past that, a
redelivery settles the send from what is stored (`_abandoned`)."""


class OutboundSender:
    """Sends a channel service's commands once each, and records what happened (module
    docstring).

    `channel` names the service (its consumer group); `sends_for` the channels whose commands it
    sends, `channel` alone by default (one service may speak for several: Messenger and
    Instagram). Each command is counted and recorded under its own channel.
    """

    def __init__(
        self,
        channel: str,
        instance: str,
        provider: Provider,
        publisher: KafkaPublisher,
        sends: AsyncCollection[MongoDocument],
        retry: RetryPolicy,
        *,
        sends_for: Collection[str] = (),
    ) -> None:
        self.channel = channel
        self.sends_for = frozenset(sends_for or (channel,))
        self.instance = instance
        self._provider = provider
        self._publisher = publisher
        self._sends = sends
        self._retry = retry
        self._unstored: TTLCache[str, MongoDocument] = TTLCache(UNSTORED_KEPT, UNSTORED_SECONDS)
        """Outcomes the provider gave that MongoDB did not take: a redelivery stores them
        instead of taking the claim for another attempt's, which would report a message the
        customer got as not confirmed."""
        self._storing: set[asyncio.Future[None]] = set()
        """Outcomes (or interrupted marks) being stored, which a stop waits for
        (`finish_storing`)."""
        self._claims_unanswered: TTLCache[str, str] = TTLCache(UNSTORED_KEPT, UNSTORED_SECONDS)
        """Claim tokens whose write got no answer: it may be stored, and a redelivery that
        claims with the same token sends (nothing was sent yet) instead of waiting for it."""

    async def sent_here(self, channel: str, provider_message_ids: Collection[str]) -> set[str]:
        """Which of these provider message ids are messages this service sent on `channel`: a
        provider that echoes what the business sent (Instagram) must not have it recorded a
        second time, under another id, from its echo."""
        if not provider_message_ids:
            return set()
        found = await self._sent_ids(channel, provider_message_ids)
        if len(found) < len(set(provider_message_ids)) and await self._sending(channel):
            # The echo can overtake the sender storing the provider's id: look once more.
            await asyncio.sleep(ECHO_WAIT_SECONDS)
            found = await self._sent_ids(channel, provider_message_ids)
        return found

    async def _sent_ids(self, channel: str, provider_message_ids: Collection[str]) -> set[str]:
        cursor = self._sends.find(
            {"provider_message_id": {"$in": list(provider_message_ids)}, "channel": channel},
            {"provider_message_id": 1},
        )
        return {doc["provider_message_id"] async for doc in cursor}

    async def _sending(self, channel: str) -> bool:
        return await self._sends.find_one({"state": "sending", "channel": channel}) is not None

    async def create_indexes(self) -> None:
        """Indexes (sends expire `SENDS_KEPT` after they were claimed), and, once per
        database, the threads of sends recorded before threads were dropped once recorded (for
        SMS the customer's number) removed."""
        await self._sends.create_index("provider_message_id", sparse=True)
        await self._sends.create_index([("state", 1), ("channel", 1)])
        await self._sends.create_index(
            "claimed_at", expireAfterSeconds=int(SENDS_KEPT.total_seconds())
        )
        if await self._sends.find_one({"_id": _THREADS_DROPPED}) is None:
            await self._sends.update_many(
                {"recorded": True, "thread": {"$exists": True}}, {"$unset": {"thread": ""}}
            )
            await self._sends.update_one(
                {"_id": _THREADS_DROPPED}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
            )

    async def handle(self, command: OutboundCommand) -> MongoDocument:
        """Send (unless sent or claimed before) and record; the send's state is returned.

        Only the attempt whose claim was stored sends. A later delivery that finds another
        attempt's claim still `sending` waits while that attempt may be in flight
        (`SendInProgress`), and after that records the send as not confirmed rather than risk
        sending it twice.
        """
        if (outcome := self._unstored.get(command.id)) is not None:
            await self._store_outcome(command.id, outcome)
            self._unstored.pop(command.id, None)
            log.info("outbound_outcome_stored_late", channel=command.channel, command_id=command.id)
            state = {"_id": command.id, **outcome}
        else:
            state, ours = await self._claimed(command)
            if ours:
                state = await self._send(command, state["claim"])
            elif state["state"] == "sending":
                state = await self._abandoned(command, state)
            elif not state.get("recorded"):
                log.info("outbound_record_resumed", channel=command.channel, command_id=command.id)
            else:
                DUPLICATES.labels(command.channel).inc()
                return state
        await self._publisher.publish_interaction(self._record(command, state))
        # The thread can name the customer (SMS: "business:customer phone"): it was kept only to
        # record the send, which is done; the record on `interactions` holds it sealed.
        await self._sends.update_one(
            {"_id": command.id}, {"$set": {"recorded": True}, "$unset": {"thread": ""}}
        )
        state.pop("thread", None)
        return {**state, "recorded": True}

    async def reports_of(self, command_ids: Collection[str]) -> dict[str, SendReport]:
        """What a status the provider reports later for each command's message belongs to
        (one read for all; commands with nothing to say are left out): `perhaps_sent` when the
        send was reported not confirmed (`CHECK_FIRST`: the status then belongs to that
        report); `unsettled` while a send is claimed without an outcome (an attempt that died
        is settled only after `in_flight_seconds`, or one is still storing what the provider
        answered). A command sent under the provider's id is left out."""
        if not command_ids:
            return {}
        found = self._sends.find(
            {"_id": {"$in": list(set(command_ids))}}, {"state": 1, "reason": 1}
        )
        return {
            state["_id"]: report async for state in found if (report := _report(state)) is not None
        }

    async def report_not_sent(self, command_id: str, failure: Interaction) -> None:
        """Tell the agent a command that goes to `outbound.dlq` was not sent (the desk would
        show it as sending for good), unless an earlier delivery did send it."""
        state = await self._sends.find_one({"_id": command_id}, {"state": 1})
        if state is not None and state.get("state") == "sent":
            return
        await self._publisher.publish_interaction(failure)

    async def _claimed(self, command: OutboundCommand) -> tuple[MongoDocument, bool]:
        """The command's state after claiming it, and whether the claim is this attempt's. A
        claim whose write got no answer is made again with the same token: if it was stored,
        it is ours, and nothing was sent under it."""
        kept = self._claims_unanswered.pop(command.id, None)
        token = kept or uuid.uuid4().hex
        try:
            state = await self._claim(command, token)
            ours = state["state"] == "sending" and state.get("claim") == token
            if ours and kept:
                state, ours = await self._renewed(command, token, state)
        except PyMongoError:
            self._claims_unanswered[command.id] = token
            raise
        except asyncio.CancelledError:
            # Stopped while claiming: the claim may be stored, and nothing is ever sent under a
            # token before this returns, so it goes.
            await asyncio.shield(self._release(command, token))
            raise
        return state, ours

    async def _renewed(
        self, command: OutboundCommand, token: str, state: MongoDocument
    ) -> tuple[MongoDocument, bool]:
        """A claim stored earlier under this token, taken now: from now on, as a claim made now
        (another delivery waits `in_flight_seconds` from it before it gives up on it), unless
        another delivery gave up on it meanwhile."""
        renewed: MongoDocument | None = await self._sends.find_one_and_update(
            {"_id": command.id, "claim": token, "state": "sending"},
            {"$set": {"claimed_at": datetime.now(UTC)}},
            return_document=ReturnDocument.AFTER,
        )
        if renewed is not None:
            return renewed, True
        return await self._sends.find_one({"_id": command.id}) or state, False

    async def _claim(self, command: OutboundCommand, token: str) -> MongoDocument:
        state: MongoDocument | None = await self._sends.find_one_and_update(
            {"_id": command.id},
            {
                "$setOnInsert": {
                    "state": "sending",
                    "claim": token,
                    "channel": command.channel,
                    "customer_id": command.customer_id,
                    "claimed_at": datetime.now(UTC),
                }
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if state is None:  # pragma: no cover - an upsert returning AFTER always has a document
            raise PyMongoError("the claim was not stored")
        return state

    async def _abandoned(self, command: OutboundCommand, state: MongoDocument) -> MongoDocument:
        """Another attempt's claim: in flight still, or left by an attempt that died."""
        claimed_at: datetime = state["claimed_at"]
        if datetime.now(UTC) - claimed_at < timedelta(seconds=self._retry.in_flight_seconds):
            raise SendInProgress(command.id)
        update = {"state": "failed", "reason": UNCONFIRMED, "done_at": datetime.now(UTC)}
        # The claim as read: renewed since (its attempt came back for it), it is not given up.
        still = {"state": "sending", "claim": state.get("claim"), "claimed_at": claimed_at}
        taken = await self._sends.update_one({"_id": command.id, **still}, {"$set": update})
        if not taken.matched_count:  # that attempt finished meanwhile: take what it stored
            raise SendInProgress(command.id)
        FAILED.labels(command.channel, "unconfirmed").inc()
        log.warning("outbound_unconfirmed", channel=command.channel, command_id=command.id)
        return {**state, **update}

    async def _send(self, command: OutboundCommand, claim: str) -> MongoDocument:
        update: MongoDocument
        calling = Calling()
        try:
            sent = await self._with_retries(command, calling)
        except asyncio.CancelledError:
            # Stopped (a deploy) while waiting to try again: nothing is with the provider, so
            # the claim goes, and the next delivery sends. Stopped during a call, that call may
            # have reached the provider: the send is given up as not confirmed, at once.
            if calling.now:
                await self._through_a_stop(self._interrupted(command, claim))
            else:
                await self._through_a_stop(self._release(command, claim))
            raise
        except SendUncertain as exc:
            FAILED.labels(command.channel, "uncertain").inc()
            update = {"state": "failed", "reason": exc.reason}
        except SendRefused as exc:
            FAILED.labels(command.channel, "refused").inc()
            update = {"state": "failed", "reason": exc.reason}
        except SendUnavailable as exc:
            FAILED.labels(command.channel, "unavailable").inc()
            asked = f"; it asked to wait {exc.retry_after:.0f} s" if exc.retry_after else ""
            reason = f"{exc} (after {exc.attempts} attempts{asked})"
            update = {"state": "failed", "reason": reason}
        except Exception as exc:  # a defect in the channel's code: reported now, not in minutes
            FAILED.labels(command.channel, "error").inc()
            log.exception("outbound_send_error", channel=command.channel, command_id=command.id)
            update = {"state": "failed", "reason": failed_in_code(exc)}
        else:
            SENT.labels(command.channel).inc()
            update = {
                "state": "sent",
                "provider_message_id": sent.provider_message_id,
                "thread": sent.thread,
            }
        if "reason" in update:
            # A provider's explanation may quote the recipient (Mailgun's address, Meta's
            # number): the reason is stored and shown in the clear, so they are masked.
            update["reason"] = mask_text(update["reason"])
        update["done_at"] = datetime.now(UTC)
        log.info(
            "outbound_sent" if update["state"] == "sent" else "outbound_failed",
            channel=command.channel,
            command_id=command.id,
            reason=update.get("reason"),
        )
        try:
            # A stop meanwhile (a deploy) must not lose what the provider answered: the claim
            # would stay `sending`, and the message be reported not confirmed.
            await self._through_a_stop(self._store_outcome(command.id, update))
        except (PyMongoError, asyncio.CancelledError):
            self._unstored[command.id] = update
            raise
        return {"_id": command.id, **update}

    async def _through_a_stop(self, write: Coroutine[Any, Any, None]) -> None:
        """Run `write` to its end even when this handler is cancelled (a stop), and have the
        stop wait for it before MongoDB's client closes (`finish_storing`): an interrupted mark
        left running landed after the stop was done (a reader then saw the send `sending`), or
        never, once the client had closed."""
        task = asyncio.ensure_future(write)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        await asyncio.shield(task)

    async def finish_storing(self) -> None:
        """Wait for the outcomes a stop cut their handling short of (a step of the channel's
        shutdown, before MongoDB's client closes)."""
        for outcome in await asyncio.gather(*self._storing, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("outbound_outcome_not_stored", error=type(outcome).__name__)

    async def _store_outcome(self, command_id: str, update: MongoDocument) -> None:
        """Store what the provider answered, retrying a while: if this is lost, a redelivery
        can only report the send as not confirmed."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(6),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(PyMongoError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._sends.update_one({"_id": command_id}, {"$set": update})

    async def _interrupted(self, command: OutboundCommand, claim: str) -> None:
        """Give up a send stopped during its call as not confirmed (`INTERRUPTED`). When MongoDB
        does not take it, the claim stays, and a redelivery waits it out as before."""
        update = {"state": "failed", "reason": INTERRUPTED, "done_at": datetime.now(UTC)}
        try:
            await self._sends.update_one(
                {"_id": command.id, "claim": claim, "state": "sending"}, {"$set": update}
            )
        except PyMongoError as exc:
            log.warning(
                "outbound_interrupted_not_stored", command_id=command.id, error=error_text(exc)
            )
            return
        FAILED.labels(command.channel, "unconfirmed").inc()
        log.warning("outbound_interrupted", channel=command.channel, command_id=command.id)

    async def _release(self, command: OutboundCommand, claim: str) -> None:
        try:
            await self._sends.delete_one({"_id": command.id, "claim": claim, "state": "sending"})
        except PyMongoError as exc:  # then a redelivery reports it not confirmed, as before
            log.warning("outbound_claim_not_released", command_id=command.id, error=error_text(exc))
        else:
            log.info("outbound_claim_released", channel=command.channel, command_id=command.id)

    async def _with_retries(self, command: OutboundCommand, calling: Calling) -> Sent:
        """Send, retrying what the provider did not take; never for longer than half the time
        another delivery takes this claim for a live attempt's (`in_flight_seconds`): past it,
        that delivery reports the message not confirmed while this attempt could still send."""
        backoff = wait_exponential(
            multiplier=self._retry.first_wait_seconds, max=self._retry.max_wait_seconds
        )

        def wait(state: RetryCallState) -> float:
            """The backoff, or longer when the provider asked for a longer wait (`Retry-After`):
            an earlier try would be refused again and spend an attempt."""
            failure = state.outcome.exception() if state.outcome else None
            asked = failure.retry_after if isinstance(failure, SendUnavailable) else None
            return max(backoff(state), asked or 0.0)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts)
            | stop_before_delay(self._retry.in_flight_seconds / 2),
            wait=wait,
            retry=retry_if_exception_type(SendUnavailable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    calling.now = True
                    try:
                        sent = await self._provider.send(command)
                    except Exception:
                        calling.now = False  # answered (or refused): nothing in flight now
                        raise
                    # Cancelled during the call, the flag stays: the call may have reached the
                    # provider, and the claim must stay with it.
                    calling.now = False
                    return sent
        except SendUnavailable as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        raise SendUnavailable("no attempt was made")  # pragma: no cover - stop_after_attempt >= 1

    def _record(self, command: OutboundCommand, state: MongoDocument) -> Interaction:
        """The sent message, or the failure, as an interaction in the command's conversation."""
        payload: MessageExchanged | MessageStatusChanged
        if state["state"] == "sent":
            payload = MessageExchanged(
                direction=Direction.OUTBOUND,
                text=message_text(command.payload),
                subject=command.payload.subject,
                provider_message_id=state["provider_message_id"],
                reply_to_provider_message_id=command.payload.reply_to_provider_message_id,
                purpose=command.payload.purpose,
            )
            event_id = f"outbound:{command.id}"
        else:
            payload = MessageStatusChanged(
                provider_message_id=command.failure_provider_id(),
                status=DeliveryStatus.FAILED,
                error=str(state.get("reason") or "not sent")[:1_000],
            )
            event_id = f"outbound-failed:{command.id}"
        return new_interaction(
            channel=command.channel,
            instance=self.instance,
            provider_event_id=event_id,
            identifiers=command.identifiers,
            payload=payload,
            occurred_at=state.get("done_at") or datetime.now(UTC),
            conversation=_conversation(command, state.get("thread")),
        )


def _conversation(command: OutboundCommand, thread: str | None) -> Conversation | None:
    conversation = command.conversation
    if conversation is None or thread is None or conversation.thread:
        return conversation
    return conversation.model_copy(update={"thread": thread})


async def command_record(command: OutboundCommand, sealer: Sealer) -> Record:
    """The record of `command` on `outbound`: sealed, keyed by customer id, the channel in a
    header so that other channels skip it without opening it."""
    documents = await sealer.seal_all(
        [from_json(command.model_dump_json())], OUTBOUND_FIELDS, create=True
    )
    return Record(
        Topic.OUTBOUND,
        key=command.customer_id.encode(),
        value=to_json(documents[0]),
        headers={
            "content-type": "application/json",
            **cloudevent_headers(
                event_id=command.id,
                event_type=command.type,
                source=OUTBOUND_SOURCE,
                occurred=command.requested_at,
            ),
            CHANNEL_HEADER: command.channel,
        },
    )


MAX_FAILED_DELIVERIES = 5
"""Deliveries of one command that fail unexpectedly (a bug, not an outage) before it goes to
`outbound.dlq`: the commands behind it on its partition are not held up for good."""


def subscribe_outbound(
    broker: KafkaBroker,
    sender: OutboundSender,
    sealer: Sealer,
    publisher: KafkaPublisher,
    settings: HiloSettings,
    *,
    retry_seconds: float = 2.0,
) -> None:
    """Register the `outbound` handler of `sender`'s channels on `broker`.

    An unreadable command (invalid, its person erased, or naming another channel than its
    header) goes to `outbound.dlq` with the reason and the consumer goes on. MongoDB or Kafka
    failing, or another attempt still sending the command, makes it come again after
    `retry_seconds`; nothing is committed until it has been handled. Any other failure is
    retried the same way `MAX_FAILED_DELIVERIES` times, then dead-lettered.
    """
    failures: dict[tuple[int, int], int] = {}

    @broker.subscriber(
        topic_name(Topic.OUTBOUND, settings),
        group_id=outbound_group(settings, sender.channel),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=keep_bytes,
    )
    async def on_command(message: KafkaMessage) -> None:
        record = message.raw_message
        if isinstance(record, tuple):  # pragma: no cover - not a batch subscriber
            record = record[0]
        headers = dict(record.headers or ())
        if headers.get(CHANNEL_HEADER, b"").decode(errors="replace") not in sender.sends_for:
            return
        position = (record.partition, record.offset)
        try:
            await _handle(record, sender, sealer, publisher)
        except PublishFailed as exc:
            if not exc.for_good:
                log.warning("outbound_retry_later", channel=sender.channel, error="PublishFailed")
                await asyncio.sleep(retry_seconds)
                raise
            await _unrecorded(publisher, record, exc)
        except (PyMongoError, SendInProgress) as exc:
            log.warning("outbound_retry_later", channel=sender.channel, error=type(exc).__name__)
            await asyncio.sleep(retry_seconds)
            raise
        except Exception as exc:
            failures[position] = failures.get(position, 0) + 1
            log.exception("outbound_failed_unexpectedly", attempt=failures[position])
            if failures[position] < MAX_FAILED_DELIVERIES:
                await asyncio.sleep(retry_seconds)
                raise
            document = await _opened(record.value, sealer)
            await _not_sent(document, sender, "the channel service failed on it")
            await _dead_letter(publisher, record, "failed", type(exc).__name__)
        failures.pop(position, None)


async def _handle(
    record: Any, sender: OutboundSender, sealer: Sealer, publisher: KafkaPublisher
) -> None:
    document = await _opened(record.value, sealer)
    command = _command(document)
    if command is None:
        await _not_sent(document, sender, "this channel service cannot read it")
        await _dead_letter(publisher, record, "unreadable", "invalid or its person erased")
    elif command.channel not in sender.sends_for:
        await _not_sent(document, sender, "no channel service sends it (its header)")
        await _dead_letter(publisher, record, "wrong_channel", "its header names another channel")
    else:
        await sender.handle(command)


def _command(document: dict[str, Any] | None) -> OutboundCommand | None:
    try:
        return None if document is None else OutboundCommand.model_validate(document)
    except ValidationError:
        return None


async def _opened(value: bytes | None, sealer: Sealer) -> dict[str, Any] | None:
    """The command's document with its sealed fields in place; None when it does not open (not
    JSON, or its person erased: then nothing about it may be published)."""
    opened = (await sealer.open_all([value]))[0]
    return None if isinstance(opened, ValueError) else opened


async def _not_sent(document: dict[str, Any] | None, sender: OutboundSender, why: str) -> None:
    """Report a command going to `outbound.dlq` as not sent, as far as it can be read: its id,
    channel and recipient (a command of a newer form than this service reads still has them)."""
    if document is None:
        return
    try:
        command_id, channel = str(document["id"]), str(document["channel"])
        failure = new_interaction(
            channel=channel,
            instance=sender.instance,
            provider_event_id=f"outbound-failed:{command_id}",
            identifiers=Identifiers.model_validate(document["identifiers"]),
            payload=MessageStatusChanged(
                provider_message_id=failure_provider_id(command_id),
                status=DeliveryStatus.FAILED,
                error=f"not sent: {why}; it is on outbound.dlq",
            ),
            occurred_at=datetime.now(UTC),
        )
    except (KeyError, TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        log.warning("outbound_not_sent_unreported", reason=why)
        return
    await sender.report_not_sent(command_id, failure)


async def _unrecorded(publisher: KafkaPublisher, record: Any, exc: PublishFailed) -> None:
    """The command was handled (sent, or failed and stored so), but Kafka refuses its record on
    `interactions` for good (too large for the topic's `max.message.bytes`): delivered again, it
    would be refused again, and every command behind it on the partition would wait for ever.
    It goes to `outbound.dlq` instead (reason `unrecorded`): what was sent stays sent, and the
    letter's command, put back on `outbound` once the topic takes such records (within
    `SENDS_KEPT`), is recorded, not sent again."""
    log.error("outbound_record_refused_for_good", offset=record.offset, error=str(exc))
    await _dead_letter(publisher, record, "unrecorded", f"Kafka refused its record: {exc}")


async def _dead_letter(publisher: KafkaPublisher, record: Any, reason: str, detail: str) -> None:
    log.warning("outbound_dead_lettered", reason=reason, offset=record.offset)
    await publish_dead_letter(publisher, Topic.OUTBOUND_DLQ, record, reason=reason, detail=detail)
