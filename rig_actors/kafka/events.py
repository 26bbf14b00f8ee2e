"""The Kafka event consumer: records of ``KAFKA_SOURCE_TOPICS`` to the registry.

Records are parsed as CloudEvents 0.1/0.2/1.0, structured or binary mode
(RIG §4.3), and handed to the registry exactly as an HTTP-published event
is. A malformed record is logged once, counted and skipped; the records
after it still arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from ..actors.registry import Publish
from ..config import Settings
from ..events.cloudevent import CloudEventError, from_kafka
from .reader import TopicReader

__all__ = ["EventConsumer"]

log = logging.getLogger(__name__)


class EventConsumer(TopicReader):
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        deliver: Callable[[Publish], None],
        counters: dict[str, int],
    ) -> None:
        super().__init__(settings, settings.kafka_source_topics, client_id)
        self._deliver = deliver
        self.counters = counters

    def handle(self, records: list[ConsumerRecord]) -> None:
        events = []
        for record in records:
            self.counters["consumed"] += 1
            try:
                events.append(from_kafka(_headers(record.headers), record.value))
            except CloudEventError as exc:
                self.counters["failed"] += 1
                log.warning(
                    "skipping record %s/%d@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
        if events:
            self._deliver(Publish(tuple(events)))


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    return [(name, value if value is not None else b"") for name, value in headers or ()]
