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

A metadata probe every 2 s tells whether the brokers answer (one that
takes 3 s counts as lost). While they are lost the partitions are paused;
when they answer again, partitions whose topic came back new (a broker
that lost its data: a new topic id) are read from their start, the others
from where the reader was (docs/reliability.rst, "Broker outage").
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

Batches = dict[TopicPartition, list[ConsumerRecord]]

_CONNECT, _POLL = "connect", "poll"
_PROBE_EVERY_S = 2.0
# A broker that holds its connections but does not answer (frozen, stalled)
# only fails a probe after the client's request timeout (10 s): a 10 s outage
# would never show in /health. A probe unanswered this long already counts.
_PROBE_UNANSWERED_S = 3.0
# While the brokers are away, look again sooner: the partitions are held back
# until a probe has seen them (see _release).
_PROBE_AWAY_S = 0.5


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
        self._topic_ids: dict[str, object] = {}
        self._held: set[TopicPartition] = set()
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
        self._topic_ids = _topic_ids(consumer, self.topics)
        self._held = set()
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
        batches = self._check_topics(consumer, consumer.poll(timeout_ms=200))
        if batches:
            records = [record for batch in batches.values() for record in batch]
            self.handle(records)
        if time.monotonic() >= self._next_probe:
            self._probe(consumer)
        self.actor_ref.tell(_POLL)

    def _probe(self, consumer: KafkaConsumer) -> None:
        """A metadata round trip: are the brokers there, and any new partitions?"""
        watchdog = gevent.get_hub().loop.timer(_PROBE_UNANSWERED_S)
        watchdog.start(self._lost, f"no answer from Kafka in {_PROBE_UNANSWERED_S:g} s")
        try:
            partitions = self._partitions(consumer)
        except Exception as exc:  # the broker is away; kafka-python reconnects
            self._lost(f"{type(exc).__name__}: {exc}")
            self._hold(consumer)
            self._next_probe = time.monotonic() + _PROBE_AWAY_S
            return
        finally:
            watchdog.close()
        self._next_probe = time.monotonic() + _PROBE_EVERY_S
        if self.state.state != "ready":
            log.info("%s reached Kafka again", self.client_id)
        self._check_topics(consumer, {})  # this metadata may be the first to show it
        self._release(consumer, partitions)
        self.state.set("ready")
        new = partitions - self._assigned
        if new:
            self._assigned |= new
            consumer.assign(list(self._assigned))
            consumer.seek_to_beginning(*new)  # a partition that appeared: all of it is new
        self._sample_lag(consumer)

    def _lost(self, error: str) -> None:
        if self.state.state != "disconnected":
            log.warning("%s lost Kafka (%s)", self.client_id, error)
        self.state.set("disconnected", error)

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

    def _hold(self, consumer: KafkaConsumer) -> None:
        """The brokers are gone: fetch nothing until a probe has seen them again.

        They may come back without their data (in memory, or a topic deleted
        and re-created) and start offsets from zero again. Fetching on from
        our old offsets would then skip what was written since, silently if
        the new log is already longer; held back, we look first.
        """
        if self._assigned - self._held:
            self._held |= self._assigned
            consumer.pause(*self._held)

    def _release(self, consumer: KafkaConsumer, present: set[TopicPartition]) -> None:
        """Resume the held partitions the brokers have again.

        Those of a re-created topic were sent back to the start by
        :meth:`_check_topics`; without topic ids (brokers before Kafka 2.8)
        a log that now ends below our position says the same.
        """
        back = self._held & present
        if not back:
            return  # a topic still missing stays held until it is back
        unknown = {tp for tp in back if tp.topic not in self._topic_ids}
        restarted = self._truncated(consumer, unknown)
        if restarted:
            log.warning(
                "%s: %d partitions restarted below our position; reading them from the start",
                self.client_id,
                len(restarted),
            )
            consumer.seek_to_beginning(*restarted)
        self._held -= back
        consumer.resume(*back)

    def _check_topics(self, consumer: KafkaConsumer, batches: Batches) -> Batches:
        """Read from the start the topics that are not the ones we were reading.

        A broker that lost its data (in memory, or a topic deleted and
        re-created) starts offsets from zero again: everything it holds was
        written since, and the fetcher would go on from our old offset,
        skipping it, once the new log is that long. A re-created topic has a
        new id (Kafka 2.8+). Records of it fetched in this very poll may be
        such a continuation: they are dropped and read again from the start.
        """
        ids = _topic_ids(consumer, self.topics)
        changed = {t for t, i in ids.items() if self._topic_ids.get(t, i) != i}
        self._topic_ids.update(ids)
        if not changed:
            return batches
        log.warning(
            "%s: %s came back without what we had read (the broker lost it); "
            "reading it from the start",
            self.client_id,
            ", ".join(sorted(changed)),
        )
        restart = [tp for tp in self._assigned if tp.topic in changed]
        if restart:
            consumer.seek_to_beginning(*restart)
        return {tp: records for tp, records in batches.items() if tp.topic not in changed}

    def _truncated(
        self, consumer: KafkaConsumer, partitions: set[TopicPartition]
    ) -> list[TopicPartition]:
        """Partitions that now end before our position (the broker restarted empty)."""
        if not partitions:
            return []
        try:
            ends = consumer.end_offsets(list(partitions), timeout_ms=5000)
        except Exception as exc:  # cannot tell: read on, the fetcher resets if out of range
            log.debug("end offsets unavailable: %s", exc)
            return []
        return [tp for tp, end in ends.items() if consumer.position(tp) > end]

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # closing is best effort
                log.debug("closing the consumer failed", exc_info=True)


def _topic_ids(consumer: KafkaConsumer, topics: tuple[str, ...]) -> dict[str, object]:
    """The ids of ``topics`` in the consumer's last metadata; {} when unknown.

    kafka-python keeps them (Metadata v10+) but has no public accessor;
    without them, :meth:`TopicReader._truncated` is the fallback.
    """
    topic_id = getattr(getattr(consumer, "_cluster", None), "topic_id", None)
    if topic_id is None:
        return {}
    return {topic: found for topic in topics if (found := topic_id(topic)) is not None}
