"""Once a second, fold the gateway's plain counters into the Prometheus metrics.

The delivery path never calls a metric: the registry, the connection
supervisor, the connection actors and the outbox keep plain ints (and a
small latency sample) that cost a few nanoseconds each. This sampler, one
per worker, reads them every ``interval_s`` and turns their growth into
counter increments, sets the gauges (open connections, subscriptions,
Kafka lag and state, peers) and feeds the latency sample to its histogram.
The worker that answers a scrape or feeds the status page samples first,
so its own numbers are current; the other workers' are at most one
interval old.

A counter whose source went back (a restarted registry starts from zero)
is treated as reset: its new value is all growth.

Example::

    >>> sampler = MetricsSampler(gateway)
    >>> sampler.start()          # every second, in the hub
    >>> sampler.sample()         # now, e.g. before a scrape
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent

from . import metrics
from .actors.core import ActorDeadError
from .kafka.reader import TopicReader

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["MAX_TYPE_LABELS", "MetricsSampler"]

log = logging.getLogger(__name__)

#: Distinct event types labelled in ``rig_consumed_events_forwarded_total``;
#: events of types beyond these are counted under ``type="_other"`` so that
#: clients inventing types cannot grow the scrape without bound.
MAX_TYPE_LABELS = 1000


class MetricsSampler:
    """See the module docstring."""

    def __init__(self, gateway: Gateway, interval_s: float = 1.0) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        self._last: dict[Any, int] = {}
        self._typed: set[str] = set()
        self._lag_keys: set[tuple[str, int]] = set()
        self._timer: Any = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = gevent.get_hub().loop.timer(self.interval_s, self.interval_s)
            self._timer.start(self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _tick(self) -> None:
        # In a greenlet of its own: the hub must never wait on a lock.
        gevent.spawn_raw(self._sample_safely)

    def _sample_safely(self) -> None:
        try:
            self.sample()
        except Exception:  # metrics must never take the worker down
            log.exception("metrics sampling failed")

    # -- one pass ---------------------------------------------------------------

    def sample(self) -> None:
        """Bring this worker's metrics up to date; never blocks."""
        gateway = self.gateway
        actors = dict(gateway.names.items())
        connections = _actor(actors.get("connections"))
        if connections is not None:
            for transport, count in connections.open_by_transport.items():
                metrics.CONNECTIONS.labels(transport).set(count)
            for transport, count in connections.opened_by_transport.items():
                self._fold(("opened", transport), count, metrics.CONNECTIONS_OPENED, transport)
        entries = gateway.blacklisting.entries
        metrics.DISTRIBUTED_SET_ITEMS_TOTAL.labels("SessionBlacklist").set(entries.added)
        metrics.DISTRIBUTED_SET_ITEMS_CURRENT.labels("SessionBlacklist").set(entries.live())
        registry = _actor(actors.get("registry"))
        if registry is not None:
            metrics.SUBSCRIPTIONS.set(registry.index.rows())
            self._fold("dispatched", registry.events, metrics.DISPATCHED_EVENTS)
            self._fold("deliveries", registry.deliveries, metrics.DELIVERIES)
            for event_type, count in list(registry.forwarded.items()):
                self._fold(
                    ("forwarded", event_type),
                    count,
                    metrics.CONSUMED_EVENTS_FORWARDED,
                    self._type_label(event_type),
                )
        context = gateway.context
        if context is not None:
            counters = context.counters
            self._fold(
                "slow",
                counters.get("slow_consumer_disconnects", 0),
                metrics.SLOW_CONSUMER_DISCONNECTS,
            )
            self._fold("crashes", counters.get("crashes", 0), metrics.CONNECTION_CRASHES)
            self._fold(
                "slow_dropped",
                counters.get("slow_consumer_drops", 0),
                metrics.DROPPED_EVENTS,
                "slow_consumer",
            )
            self._fold(
                "lp_dropped",
                counters.get("longpolling_dropped", 0),
                metrics.DROPPED_EVENTS,
                "longpolling_buffer_full",
            )
        outbox = gateway.outbox
        if outbox is not None:
            histogram = metrics.DELIVERY_LATENCY
            for value in outbox.latency.drain():
                histogram.observe(value)
        self._sample_kafka(actors)

    def _sample_kafka(self, actors: dict[str, Any]) -> None:
        gateway = self.gateway
        if gateway.producer is None:
            return
        lag_keys = set()
        for name, ref in actors.items():
            reader = _actor(ref)
            if not isinstance(reader, TopicReader):
                continue
            metrics.KAFKA_UP.labels(name).set(1 if reader.state.state == "ready" else 0)
            for (topic, partition), lag in reader.lag.items():
                metrics.KAFKA_CONSUMER_LAG.labels(topic, str(partition)).set(lag)
                lag_keys.add((topic, partition))
        producer_up = gateway.producer.state.state != "disconnected"
        metrics.KAFKA_UP.labels("producer").set(1 if producer_up else 0)
        # A partition no reader holds any more (a restarting reader) reads 0
        # rather than its last lag forever.
        for topic, partition in self._lag_keys - lag_keys:
            metrics.KAFKA_CONSUMER_LAG.labels(topic, str(partition)).set(0)
        self._lag_keys = lag_keys
        if gateway.control is not None:
            metrics.FABRIC_PEERS.set(len(gateway.control.peers()))

    # -- helpers --------------------------------------------------------------------

    def _fold(self, key: Any, value: int, counter: Any, *labels: str) -> None:
        last = self._last.get(key, 0)
        growth = value - last if value >= last else value
        self._last[key] = value
        if growth > 0:
            (counter.labels(*labels) if labels else counter).inc(growth)

    def _type_label(self, event_type: str) -> str:
        if event_type in self._typed:
            return event_type
        if len(self._typed) < MAX_TYPE_LABELS:
            self._typed.add(event_type)
            return event_type
        return "_other"


def _actor(ref: Any) -> Any:
    """The actor behind ``ref`` while it runs (same-hub reads only), else None."""
    if ref is None:
        return None
    try:
        return ref._actor if ref.is_alive() else None
    except ActorDeadError:
        return None
