"""An actor that reads every partition of some topics, from their end, forever.

Each gateway worker must see every event (and every control message), so
readers use no consumer group: they ``assign()`` themselves all partitions
of their topics. A reader starts at the end of each partition: what was
published before it was ready is not delivered (see ``docs/fabric.rst``).
With ``from_beginning=True`` it reads each partition from its start instead
(the session blacklist, a compacted topic every worker must know whole).

The poll loop is a message the actor sends itself, so a stop (or any other
message) is handled between two polls. A broker that cannot be reached is
not a crash: the reader reports ``connecting``/``disconnected`` in its
:class:`~rig_actors.kafka.clients.KafkaState`, backs off and tries again,
while the rest of the gateway keeps serving. Only bugs crash it, and then
its supervisor restarts it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ..actors.core import Actor, ActorDeadError, ActorRef
from ..config import Settings
from .clients import Backoff, KafkaState, consumer_options

__all__ = ["TopicReader"]

log = logging.getLogger(__name__)

_CONNECT, _POLL = "connect", "poll"
_PROBE_EVERY_S = 2.0


class TopicReader(Actor):
    """Base class: subclasses implement :meth:`handle`."""

    def __init__(
        self,
        settings: Settings,
        topics: tuple[str, ...],
        client_id: str,
        *,
        from_beginning: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.topics = topics
        self.client_id = client_id
        self.from_beginning = from_beginning
        self.state = KafkaState()
        self._consumer: KafkaConsumer | None = None
        self._backoff = Backoff()
        self._next_probe = 0.0
        self._assigned: set[TopicPartition] = set()
        # (topic, partition) -> records behind the end; read by the metrics sampler.
        self.lag: dict[tuple[str, int], int] = {}

    @classmethod
    def start_linked(cls, exit_to: Any, **kwargs: Any) -> ActorRef:
        return cls(**kwargs)._begin(exit_to)

    def handle(self, records: list[ConsumerRecord]) -> None:
        raise NotImplementedError

    def positioned(self, consumer: KafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Called once the reader knows where it starts in every partition."""

    def on_start(self) -> None:
        self.actor_ref.tell(_CONNECT)

    def on_receive(self, message: Any) -> Any:
        if message == _POLL:
            self._poll()
            return None
        if message == _CONNECT:
            self._connect()
            return None
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, exc: BaseException) -> None:
        self._close()

    # -- connecting -----------------------------------------------------------------

    def _connect(self) -> None:
        self.state.set("connecting", self.state.error)
        try:
            consumer = KafkaConsumer(**consumer_options(self.settings, self.client_id))
            partitions = self._partitions(consumer)
            if not partitions:
                raise RuntimeError(f"no partitions for {', '.join(self.topics)} yet")
            consumer.assign(list(partitions))
            if self.from_beginning:
                consumer.seek_to_beginning(*partitions)
            else:
                consumer.seek_to_end(*partitions)
            for tp in partitions:
                consumer.position(tp, timeout_ms=5000)  # resolve now: "ready" means positioned
            self.positioned(consumer, partitions)
        except Exception as exc:  # any client error: retry later
            self._retry_later(exc)
            try:
                consumer.close()  # type: ignore[possibly-undefined]
            except Exception:
                pass
            return
        self._consumer = consumer
        self._assigned = set(partitions)
        self._backoff.reset()
        self._next_probe = time.monotonic() + _PROBE_EVERY_S
        self.state.set("ready")
        log.info(
            "%s reading %s (%d partitions)", self.client_id, ",".join(self.topics), len(partitions)
        )
        self.actor_ref.tell(_POLL)

    def _partitions(self, consumer: KafkaConsumer) -> set[TopicPartition]:
        consumer.topics()  # a metadata round trip: fails fast if the brokers are gone
        found = set()
        for topic in self.topics:
            for partition in consumer.partitions_for_topic(topic) or ():
                found.add(TopicPartition(topic, partition))
        return found

    def _retry_later(self, exc: BaseException) -> None:
        delay = self._backoff.next()
        error = f"{type(exc).__name__}: {exc}"
        if self.state.error != error:
            log.warning("%s cannot reach Kafka (%s); retrying", self.client_id, error)
        self.state.set("disconnected", error)
        gevent.get_hub().loop.timer(delay).start(self._tell_safely, _CONNECT)

    def _tell_safely(self, message: str) -> None:
        try:
            self.actor_ref.tell(message)
        except ActorDeadError:
            pass

    # -- reading --------------------------------------------------------------------

    def _poll(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        batches = consumer.poll(timeout_ms=200)
        if batches:
            records = [record for batch in batches.values() for record in batch]
            self.handle(records)
        if time.monotonic() >= self._next_probe:
            self._probe(consumer)
        self.actor_ref.tell(_POLL)

    def _probe(self, consumer: KafkaConsumer) -> None:
        """A metadata round trip: are the brokers there, and any new partitions?"""
        self._next_probe = time.monotonic() + _PROBE_EVERY_S
        try:
            partitions = self._partitions(consumer)
        except Exception as exc:  # the broker is away; kafka-python reconnects
            error = f"{type(exc).__name__}: {exc}"
            if self.state.state != "disconnected":
                log.warning("%s lost Kafka (%s)", self.client_id, error)
            self.state.set("disconnected", error)
            return
        if self.state.state != "ready":
            log.info("%s reached Kafka again", self.client_id)
            self._rewind_truncated(consumer)
        self.state.set("ready")
        new = partitions - self._assigned
        if new:
            self._assigned |= new
            consumer.assign(list(self._assigned))
            consumer.seek_to_beginning(*new)  # a partition that appeared: all of it is new
        self._sample_lag(consumer)

    def _sample_lag(self, consumer: KafkaConsumer) -> None:
        """Records behind each partition's end: the last fetch's highwater - position.

        No broker round trip: the highwater comes with every fetch response
        and the position is local, so this runs with each probe.
        """
        lag = {}
        for tp in self._assigned:
            try:
                end = consumer.highwater(tp)
                position = consumer.position(tp, timeout_ms=100)
            except Exception:  # not assigned (any more) or not positioned: skip it
                continue
            if end is not None and position is not None:
                lag[(tp.topic, tp.partition)] = max(0, end - position)
        self.lag = lag

    def _rewind_truncated(self, consumer: KafkaConsumer) -> None:
        """After an outage, read partitions that now end before our position.

        A broker that lost its data (or a topic deleted and re-created)
        starts its offsets again from zero; what it holds now was written
        after the outage, so it is read from the beginning rather than
        skipped until the old offset is reached again.
        """
        try:
            ends = consumer.end_offsets(list(self._assigned), timeout_ms=5000)
        except Exception as exc:  # the broker left again; the next probe retries
            log.debug("end offsets unavailable: %s", exc)
            return
        behind = [tp for tp, end in ends.items() if consumer.position(tp) > end]
        if behind:
            log.warning(
                "%s: %d partitions restarted below our position; reading them from the start",
                self.client_id,
                len(behind),
            )
            consumer.seek_to_beginning(*behind)

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # closing is best effort
                log.debug("closing the consumer failed", exc_info=True)
