"""channel-whatsapp with every publish answered at once, after its linger window, and nothing
sent to Kafka: run by `webhooks.py --floors` to tell the service's own CPU from the Kafka
client's. A benchmark tool only: what it answers 200 to is lost.
"""

from __future__ import annotations

import runpy
from collections.abc import Sequence

from hilo.kafka import KafkaPublisher, Record


async def _linger_only(self: KafkaPublisher, records: Sequence[Record]) -> None:
    if self._linger:
        await self._linger_with_others()


if __name__ == "__main__":
    KafkaPublisher.publish_records = _linger_only  # type: ignore[method-assign]
    runpy.run_module("channel_whatsapp", run_name="__main__")
