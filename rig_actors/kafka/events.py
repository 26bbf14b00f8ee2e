"""The Kafka event consumer: records of ``KAFKA_SOURCE_TOPICS`` to the registry.

Records are parsed as CloudEvents 0.1/0.2/1.0, structured or binary mode
(RIG §4.3), and handed to the registry exactly as an HTTP-published event
is. A malformed record is logged once, counted and skipped; the records
after it still arrive.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from .. import metrics
from ..actors.registry import Publish
from ..config import Settings
from ..events.cloudevent import CloudEventError, from_kafka
from .positions import Positions, encode
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
        # Where this worker is in each source partition: (topic index,
        # partition) -> next offset. Every event's id is this vector as it
        # stood right after the event (see rig_actors.kafka.positions).
        self.positions: Positions = {}
        self._topic_index = {topic: i for i, topic in enumerate(settings.kafka_source_topics)}

    def positioned(self, consumer: KafkaConsumer, partitions: set[TopicPartition]) -> None:
        self.positions = {
            (self._topic_index[tp.topic], tp.partition): consumer.position(tp) for tp in partitions
        }
        self._deliver(Publish((), (), dict(self.positions)))

    def handle(self, records: list[ConsumerRecord]) -> None:
        events = []
        ids = []
        origins = []
        positions = self.positions
        topic_index = self._topic_index
        # RIG's consumption metrics: counted per topic once per batch; the
        # processing time is each record's decoding, in real milliseconds.
        consumed: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        clock = time.perf_counter
        for record in records:
            self.counters["consumed"] += 1
            consumed[record.topic] += 1
            started = clock()
            key = (topic_index[record.topic], record.partition)
            positions[key] = record.offset + 1
            try:
                events.append(from_kafka(_headers(record.headers), record.value))
                ids.append(encode(positions))
                origins.append((key, record.offset))
                metrics.CONSUMED_EVENT_DURATION_MS.labels("kafka", record.topic).observe(
                    (clock() - started) * 1000
                )
            except CloudEventError as exc:
                self.counters["failed"] += 1
                failed[record.topic] += 1
                log.warning(
                    "skipping record %s/%d@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
        for topic, count in consumed.items():
            metrics.CONSUMED_EVENTS.labels("kafka", topic).inc(count)
        for topic, count in failed.items():
            metrics.CONSUMED_EVENTS_FAILED.labels("kafka", topic).inc(count)
        if events:
            self._deliver(Publish(tuple(events), tuple(ids), dict(positions), tuple(origins)))


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    return [(name, value if value is not None else b"") for name, value in headers or ()]
