"""Replay from Kafka: the events between a client's last id and now.

A client that reconnects with a Kafka position id (see
:mod:`rig_actors.kafka.positions`) is owed, for every source partition,
the records from its position up to where this worker's live stream
stands (the registry's positions when the client subscribed). This reads
exactly that range with a private consumer (no group, ``assign``), so it
works on any worker, and returns the matching events with their ids.
What Kafka no longer holds (retention) is reported as a gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from ..config import Settings
from ..events.cloudevent import CloudEvent, CloudEventError, from_kafka
from .clients import consumer_options
from .positions import Positions, encode

__all__ = ["ReplayResult", "replay"]

log = logging.getLogger(__name__)

ReplayResult = tuple[list[tuple[str, CloudEvent]], dict[str, object] | None]


def replay(
    settings: Settings,
    client_id: str,
    start: Positions,
    stop: Positions,
    wants: Callable[[CloudEvent], bool],
    timeout_s: float = 10.0,
) -> ReplayResult:
    """Events in ``[start, stop)`` per partition that ``wants`` accepts, in order.

    Partitions are read one after the other; within a partition records come
    in offset order, as they did live. A partition the client did not know
    (it appeared later) is read from its beginning.
    """
    topics = settings.kafka_source_topics
    todo = {key: end for key, end in stop.items() if end > start.get(key, 0)}
    if not todo:
        return [], None
    consumer = KafkaConsumer(**consumer_options(settings, client_id))
    found: list[tuple[str, CloudEvent]] = []
    missed = 0
    positions = dict(start)
    deadline = time.monotonic() + timeout_s
    try:
        for (topic_index, partition), end in sorted(todo.items()):
            tp = TopicPartition(topics[topic_index], partition)
            consumer.assign([tp])
            first = consumer.beginning_offsets([tp], timeout_ms=5000)[tp]
            begin = start.get((topic_index, partition), first)
            if begin < first:
                missed += first - begin  # removed by retention: say so
                begin = first
            consumer.seek(tp, begin)
            while consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replay of {tp} did not finish in {timeout_s:g} s")
                for record in consumer.poll(timeout_ms=200).get(tp, ()):
                    if record.offset >= end:
                        break
                    positions[(topic_index, partition)] = record.offset + 1
                    try:
                        event = from_kafka(
                            [(k, v or b"") for k, v in record.headers or ()], record.value
                        )
                    except CloudEventError:
                        continue  # the live consumer skipped it too
                    if wants(event):
                        found.append((encode(positions), event))
    finally:
        consumer.close()
    gap = None
    if missed:
        gap = {
            "reason": "too old: Kafka no longer holds the missed events",
            "missed": missed,
        }
    return found, gap
