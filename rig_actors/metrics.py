"""Prometheus metrics: RIG's names and labels (reference §11.1) plus ours.

Every metric of the gateway is defined here, once, at import. The module
depends on nothing but ``prometheus_client`` so that any layer may import
it (the Kafka clients and the proxy count directly; the actors do not: they
bump plain ints that :mod:`rig_actors.sampler` folds in once a second, so
the delivery path never touches a metric).

One scrape shows the whole box. Under gunicorn, ``gunicorn_conf`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker is
forked; every worker then writes its values to memory-mapped files there
and :func:`render` merges them (counters and histograms are summed; each
gauge says how in ``multiprocess_mode``). The embedded single process uses
the plain default registry, which adds the process and Python collectors.

RIG compatibility notes (see ``docs/observability.rst``):

- ``rig_consumed_events_forwarded_total`` is counted at every log level (RIG
  counts it only with debug logging, §15.16);
- ``rig_consumed_event_processing_duration_milliseconds`` holds real
  milliseconds (RIG records VM native time units under that name);
- ``rig_proxy_requests_total`` has RIG's label ``path`` with the concrete
  request path (the documentation's ``path_regex`` never existed).

Example::

    >>> body, content_type = render()
    >>> b"rig_deliveries_total" in body
    True
"""

from __future__ import annotations

import os

from prometheus_client import values as _values

if multiprocess_enabled := "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    # A directory named in the environment but not there yet: make it rather
    # than fail at the first metric.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    # prometheus_client picks its value class when it is first imported. If
    # that happened before the directory was configured (a library imported
    # it early), metrics would silently stay per-process: pick again.
    if not getattr(_values.ValueClass, "_multiprocess", False):
        _values.ValueClass = _values.get_value_class()

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "ACTOR_RESTARTS",
    "CONNECTIONS",
    "CONNECTIONS_OPENED",
    "CONNECTION_CRASHES",
    "CONSUMED_EVENTS",
    "CONSUMED_EVENTS_FAILED",
    "CONSUMED_EVENTS_FORWARDED",
    "CONSUMED_EVENT_DURATION_MS",
    "DELIVERIES",
    "DELIVERY_LATENCY",
    "DISPATCHED_EVENTS",
    "DISTRIBUTED_SET_ITEMS_CURRENT",
    "DISTRIBUTED_SET_ITEMS_TOTAL",
    "DROPPED_EVENTS",
    "FABRIC_PEERS",
    "KAFKA_CONSUMER_LAG",
    "KAFKA_UP",
    "PRODUCED_EVENTS",
    "PRODUCED_EVENTS_FAILED",
    "PROXY_REQUESTS",
    "PROXY_REQUEST_DURATION",
    "SLOW_CONSUMER_DISCONNECTS",
    "SUBSCRIPTIONS",
    "collect",
    "multiprocess_enabled",
    "render",
]

# -- RIG's metrics (§11.1) -----------------------------------------------------------

PROXY_REQUESTS = Counter(
    "rig_proxy_requests_total",
    "Proxied requests by outcome (RIG).",
    ["method", "path", "target", "response_from", "status"],
)
CONSUMED_EVENTS = Counter(
    "rig_consumed_events_total",
    "Records consumed from an event source, parsed or not (RIG).",
    ["source", "topic"],
)
CONSUMED_EVENTS_FAILED = Counter(
    "rig_consumed_events_failed_total",
    "Consumed records that could not be parsed as CloudEvents (RIG).",
    ["source", "topic"],
)
CONSUMED_EVENT_DURATION_MS = Histogram(
    "rig_consumed_event_processing_duration_milliseconds",
    "Time to decode one consumed record into an event, in milliseconds (RIG).",
    ["source", "topic"],
    buckets=(1, 2, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000),
)
CONSUMED_EVENTS_FORWARDED = Counter(
    "rig_consumed_events_forwarded_total",
    "Events delivered to at least one connection, by event type (RIG; every log level).",
    ["type"],
)
PRODUCED_EVENTS = Counter(
    "rig_produced_events_total",
    "Records the brokers acknowledged (RIG; control-channel records excluded).",
    ["target", "topic"],
)
PRODUCED_EVENTS_FAILED = Counter(
    "rig_produced_events_failed_total",
    "Records the brokers did not acknowledge (RIG).",
    ["target", "topic"],
)
SUBSCRIPTIONS = Gauge(
    "rig_subscriptions_total",
    "Current subscription rows (RIG; summed over the box's workers).",
    multiprocess_mode="livesum",
)
DISTRIBUTED_SET_ITEMS_TOTAL = Gauge(
    "rig_distributed_set_items_total",
    "Items ever added to a replicated set such as the session blacklist (RIG).",
    ["name"],
    multiprocess_mode="livemax",
)
DISTRIBUTED_SET_ITEMS_CURRENT = Gauge(
    "rig_distributed_set_items_current",
    "Items currently held in a replicated set such as the session blacklist (RIG).",
    ["name"],
    multiprocess_mode="livemax",
)

# -- ours ----------------------------------------------------------------------------

CONNECTIONS = Gauge(
    "rig_connections",
    "Open client connections by transport (sse, ws, longpolling).",
    ["transport"],
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED = Counter(
    "rig_connections_opened_total",
    "Client connections opened, by transport.",
    ["transport"],
)
DISPATCHED_EVENTS = Counter(
    "rig_dispatched_events_total",
    "Events matched against the subscriptions, per worker (with Kafka every worker "
    "matches every event, so the box total is workers x events).",
)
DELIVERIES = Counter(
    "rig_deliveries_total",
    "Events handed to connections: one per matching connection and event.",
)
DELIVERY_LATENCY = Histogram(
    "rig_delivery_latency_seconds",
    "Sampled flush passes: from the start of an event's fan-out to the last write of "
    "the pass that carried it (an upper bound of each of its deliveries).",
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
    ),
)
SLOW_CONSUMER_DISCONNECTS = Counter(
    "rig_slow_consumer_disconnects_total",
    "Connections closed because their outbound buffer passed outbound_buffer_max_bytes.",
)
DROPPED_EVENTS = Counter(
    "rig_dropped_events_total",
    "Events not delivered: slow_consumer (slow_consumer_policy drop_oldest), "
    "longpolling_buffer_full (a session's buffer overflowed between polls) or "
    "registry_restarting.",
    ["reason"],
)
CONNECTION_CRASHES = Counter(
    "rig_connection_crashes_total",
    "Connection actors that crashed (each ends its own connection only).",
)
ACTOR_RESTARTS = Counter(
    "rig_actor_restarts_total",
    "Restarts of long-lived actors by their supervisor, by actor name.",
    ["actor"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "rig_kafka_consumer_lag",
    "Records behind the partition's end (highwater - position), sampled; the box's worst worker.",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
KAFKA_UP = Gauge(
    "rig_kafka_up",
    "1 when the Kafka client is connected and positioned; the box's worst worker.",
    ["client"],
    multiprocess_mode="livemin",
)
FABRIC_PEERS = Gauge(
    "rig_fabric_peers",
    "Workers (on every node) heard from on the Kafka control channel lately.",
    multiprocess_mode="livemax",
)
PROXY_REQUEST_DURATION = Histogram(
    "rig_proxy_request_duration_seconds",
    "Time to answer a proxied request, by target.",
    ["target"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def _registry() -> CollectorRegistry:
    if not multiprocess_enabled:
        return REGISTRY
    # A fresh registry per scrape: the collector reads every worker's files.
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def render() -> tuple[bytes, str]:
    """The scrape body for the whole box and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def collect() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the box by sample name: ``{name: [(labels, value), ...]}``.

    What the status page reads; the same numbers a scrape shows.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in _registry().collect():
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples
