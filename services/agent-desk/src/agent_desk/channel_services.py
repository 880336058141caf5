"""Whether the channel service that sends a reply is running, read from Kafka.

A reply is queued on `outbound`; the channel's service takes it from there in its consumer
group (`hilo.outbound.outbound_group`). When that group has no member, no instance of the
service is running: the reply waits on Kafka until one starts. The agent should know that
before writing (the reply box says so) and after (the queued reply says why it waits), rather
than only that the reply is not confirmed yet.

The desk asks Kafka in the background every `EVERY_SECONDS`, for every reply channel at once,
so no page waits on it. A service is taken as running unless Kafka says twice in a row that it
is not (a restart, or a service still joining its group when the desk starts, is not reported);
an answer that does not come within `ASK_SECONDS` says nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, TypeAlias

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request

from hilo.kafka_security import client_options
from hilo.logs import error_text
from hilo.outbound import outbound_group, sending_service
from hilo.settings import HiloSettings

log = structlog.get_logger(__name__)

EVERY_SECONDS = 10.0
ASK_SECONDS = 5.0
NOT_RUNNING = frozenset({"Empty", "Dead"})
"""Kafka's states of a group without members: stopped, or never started (`Dead`)."""


class ChannelServices:
    """Which reply channels' services are stopped, as Kafka last said."""

    def __init__(self, settings: HiloSettings, channels: Collection[str]) -> None:
        self.settings = settings
        self.groups = {
            channel: outbound_group(settings, sending_service(channel)) for channel in channels
        }
        self.stopped: frozenset[str] = frozenset()
        """The channels whose service has no instance running."""
        self._idle: frozenset[str] = frozenset()
        """Those Kafka said had none the last time it was asked."""
        self._admin: AIOKafkaAdminClient | None = None

    async def watch(self) -> None:
        """Ask Kafka now and every `EVERY_SECONDS` after, until cancelled."""
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(EVERY_SECONDS)
        finally:
            await self.close()

    async def refresh(self) -> None:
        """Ask Kafka which services are stopped; when it does not answer, none are said to be."""
        try:
            states = await asyncio.wait_for(self._group_states(), ASK_SECONDS)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.info("desk_channel_services_unknown", error=type(exc).__name__)
            states = await self._without_answer()
        except Exception as exc:  # a bug must not end the watch and leave old warnings shown
            log.exception("desk_channel_services_failed", error=error_text(exc))
            states = await self._without_answer()
        idle = frozenset(
            channel for channel, group in self.groups.items() if states.get(group) in NOT_RUNNING
        )
        stopped, self._idle = idle & self._idle, idle
        if stopped != self.stopped:
            log.info("desk_channel_services_stopped", channels=sorted(stopped))
        self.stopped = stopped

    async def _without_answer(self) -> dict[str, str]:
        """No group's state is known: a new client next time (one that timed out may be
        stuck), and nothing said to be stopped."""
        await self.close()
        self._idle = frozenset()
        return {}

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    async def _group_states(self) -> dict[str, str]:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(
                **client_options(self.settings),
                client_id=self.settings.client_id,
                request_timeout_ms=int(ASK_SECONDS * 1000) - 1000,  # fails before it is cut off
            )
            await self._admin.start()
        states: dict[str, str] = {}
        for group in sorted(set(self.groups.values())):
            coordinator = await self._admin.find_coordinator(group)
            response = await self._admin._send_request(DescribeGroups([group]), coordinator)
            states.update(_state(described) for described in response.groups)
        return states


_Versions: TypeAlias = (
    DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2
)


class DescribeGroups(Request[_Versions]):  # type: ignore[misc]  # aiokafka.protocol: no stubs
    """Kafka's DescribeGroups, up to version 2. aiokafka 0.14.0 reads a version 3 answer
    (which brokers since 2.3 give) with version 2's layout, and fails on every answer
    ("Buffer underrun decoding string"), so `describe_consumer_groups` cannot be used."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(self, request_struct_class: Any) -> Any:
        """The version the broker and this class both speak (`Request.prepare` picks it)."""
        return request_struct_class(self.groups)


def _state(group: Any) -> tuple[str, str]:
    """(group id, state) of one group in a DescribeGroups answer (error code, id, state, ...);
    the state is unknown (empty) when Kafka answered with an error, a refused `Describe` say."""
    error_code, group_id, state = group[0], str(group[1]), str(group[2])
    return group_id, state if error_code == 0 else ""
