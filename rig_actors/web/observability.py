"""Operators' endpoints on the internal API: Prometheus metrics and the live status page.

- ``GET /metrics``: the Prometheus text exposition of the whole box (every
  gunicorn worker's metrics merged, see :mod:`rig_actors.metrics`); 404 when
  ``prometheus_metrics_enabled`` is off, as in RIG.
- ``GET /_rig/status``: a page with connections by transport, events/s,
  deliveries/s, p99 delivery latency, Kafka state, restarts, workers and
  nodes, and a chart of the last minutes. Its script
  (``GET /_rig/status/status.js``) and everything else it shows come from
  the gateway: no CDN, no external asset.
- ``GET /_rig/status/stream``: the page's data, a Server-Sent Events stream
  with one ``status`` event per second (a plain streaming response: it is
  meant for one or two operators, so at most :data:`MAX_STATUS_STREAMS` at
  once per worker).

The numbers come from the same samples a scrape shows, so the page and
Prometheus agree. What each means:

- connections, subscriptions, deliveries/s, p99, restarts: the whole box;
- events/s: events this worker matched per second. With Kafka every worker
  matches every event, so this is the gateway's event rate, not a share;
- p99: of the sampled flush passes of the last 10 s (fan-out start to last
  write), interpolated inside the histogram bucket like ``histogram_quantile``.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response

from .. import metrics
from ..actors.core import ActorDeadError

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "MATCH_KEY",
    "MAX_PROXY_PATHS",
    "MAX_STATUS_STREAMS",
    "StatusFeed",
    "count_proxy_request",
    "observability_blueprint",
    "proxy_outcome",
    "quantile",
]

#: Status streams one worker serves at once; more get a 503.
MAX_STATUS_STREAMS = 8

#: Where the proxy leaves the route it matched, for the request's metrics.
MATCH_KEY = "rig.proxy.match"
#: Distinct request paths labelled in ``rig_proxy_requests_total`` (RIG labels the
#: concrete path); later ones count as ``path="_other"``, so that a scan of
#: random URLs cannot grow a scrape without bound.
MAX_PROXY_PATHS = 1000

_RATE_WINDOW_S = 5.0
_ASYNC = ("kafka", "http_async")
_labelled_paths: set[str] = set()
_LATENCY_WINDOW_S = 10.0
_TICK_S = 1.0


def observability_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("observability", __name__)
    streams = {"open": 0}

    @bp.get("/metrics")
    def scrape() -> Response:
        if not gateway.settings.prometheus_metrics_enabled:
            return Response(
                '{"errors":{"detail":"Not found"}}', 404, content_type="application/json"
            )
        if gateway.sampler is not None:
            gateway.sampler.sample()  # this worker's numbers as of now
        body, content_type = metrics.render()
        return Response(body, 200, content_type=content_type)

    @bp.get("/_rig/status")
    def page() -> Response:
        return Response(_asset("status.html"), 200, content_type="text/html; charset=utf-8")

    @bp.get("/_rig/status/status.js")
    def script() -> Response:
        return Response(_asset("status.js"), 200, content_type="text/javascript; charset=utf-8")

    @bp.get("/_rig/status/stream")
    def stream() -> Response:
        if streams["open"] >= MAX_STATUS_STREAMS:
            return Response(
                "Too many status streams.", 503, content_type="text/plain; charset=utf-8"
            )
        feed = StatusFeed(gateway)

        def events() -> Iterator[bytes]:
            streams["open"] += 1
            try:
                # Reconnect soon if the worker goes away (EventSource does it).
                yield b"retry: 2000\n\n"
                while True:
                    body = json.dumps(feed.next(), separators=(",", ":"))
                    yield f"event: status\ndata: {body}\n\n".encode()
                    gevent.sleep(_TICK_S)
            finally:
                streams["open"] -= 1

        return Response(
            events(),
            200,
            content_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return bp


class StatusFeed:
    """One status stream's view: samples over time, and rates from them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._history: deque[tuple[float, int, float, list[tuple[float, float]]]] = deque()

    def next(self) -> dict[str, Any]:
        """Sample now; the status as of now (rates over the last seconds)."""
        gateway = self.gateway
        if gateway.sampler is not None:
            gateway.sampler.sample()
        samples = metrics.collect()
        now = time.monotonic()
        dispatched = _dispatched(gateway)
        deliveries = _total(samples, "rig_deliveries_total")
        buckets = _buckets(samples, "rig_delivery_latency_seconds_bucket")
        history = self._history
        history.append((now, dispatched, deliveries, buckets))
        while history and now - history[0][0] > _LATENCY_WINDOW_S + _TICK_S:
            history.popleft()

        rate_base = next((h for h in history if now - h[0] <= _RATE_WINDOW_S), history[-1])
        elapsed = now - rate_base[0]
        events_per_s = max(0, dispatched - rate_base[1]) / elapsed if elapsed else 0.0
        deliveries_per_s = max(0.0, deliveries - rate_base[2]) / elapsed if elapsed else 0.0
        old_buckets = history[0][3]
        window = _subtract(buckets, old_buckets) if len(history) > 1 else []
        p99 = quantile(0.99, window)

        connections = {"sse": 0, "ws": 0, "longpolling": 0}
        for labels, value in samples.get("rig_connections", ()):
            connections[labels.get("transport", "?")] = int(value)
        return {
            "time": time.time(),
            "worker": gateway.worker_id,
            "uptime_s": round(time.time() - gateway.started_at, 1),
            "connections": {**connections, "total": sum(connections.values())},
            "subscriptions": int(_total(samples, "rig_subscriptions_total")),
            "events_per_s": round(events_per_s, 2),
            "deliveries_per_s": round(deliveries_per_s, 2),
            "events_total": dispatched,
            "deliveries_total": int(deliveries),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "latency_samples": int(window[-1][1]) if window else 0,
            "restarts": int(_total(samples, "rig_actor_restarts_total")),
            "connection_crashes": int(_total(samples, "rig_connection_crashes_total")),
            "slow_consumer_disconnects": int(
                _total(samples, "rig_slow_consumer_disconnects_total")
            ),
            "dropped_events": int(_total(samples, "rig_dropped_events_total")),
            "kafka": {
                **gateway.kafka_health(),
                "lag": int(_total(samples, "rig_kafka_consumer_lag")),
            },
            **_fabric(gateway),
        }


def count_proxy_request(environ: dict[str, Any], response: Any, started: float) -> None:
    """Count one request the API gateway answered (or did not match) in RIG's metric.

    ``response`` is what the proxy returned (None: no route matched, 404);
    ``started`` the ``time.perf_counter()`` when the request reached it.
    """
    match = environ.get(MATCH_KEY)
    target = getattr(match, "target", None) or "N/A"
    response_from = getattr(match, "response_from", None) or "N/A"
    if response is None:
        status = "not_found"
    else:
        status = proxy_outcome(
            response.status_code,
            from_backend=bool(response.direct_passthrough),
            empty=response.content_length == 0,
            response_from=response_from,
        )
    path = environ.get("PATH_INFO") or "/"
    if path not in _labelled_paths:
        if len(_labelled_paths) < MAX_PROXY_PATHS:
            _labelled_paths.add(path)
        else:
            path = "_other"
    method = str(environ.get("REQUEST_METHOD", "?"))
    metrics.PROXY_REQUESTS.labels(method, path, target, response_from, status).inc()
    if match is not None:
        metrics.PROXY_REQUEST_DURATION.labels(target).observe(time.perf_counter() - started)


def proxy_outcome(status: int, *, from_backend: bool, empty: bool, response_from: str) -> str:
    """RIG's ``status`` label for a proxied request's outcome.

    A response streamed from the backend, or a correlated answer, is ``ok``
    whatever its code; the gateway's own answers say what went wrong:
    ``bad_request``, ``unreachable`` (502: backend or Kafka), ``request_timeout``
    (504 ``Gateway timeout.``: the backend did not answer), ``response_timeout``
    (an empty 504: no correlated answer came), and two of ours, ``unauthorized``
    (401) and ``not_supported`` (501: kinesis, nats).

    Example::

        >>> proxy_outcome(504, from_backend=False, empty=True, response_from="kafka")
        'response_timeout'
    """
    if from_backend or status < 400:
        return "ok"
    if status == 401:
        return "unauthorized"
    if status == 502:
        return "unreachable"
    if status == 504:
        return "response_timeout" if empty and response_from in _ASYNC else "request_timeout"
    if status == 501:
        return "not_supported"
    return "bad_request" if status < 500 else "error"


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, or None if empty.

    Linear inside the bucket that holds the rank, as Prometheus'
    ``histogram_quantile`` does; the open last bucket answers its lower bound.

    Example::

        >>> quantile(0.5, [(0.001, 0), (0.01, 10), (float("inf"), 10)])
        0.0055
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


# -- helpers ----------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return resources.files("rig_actors.web").joinpath("static", name).read_bytes()


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, ()))


def _buckets(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str
) -> list[tuple[float, float]]:
    return sorted((float(labels["le"]), value) for labels, value in samples.get(name, ()))


def _subtract(
    new: list[tuple[float, float]], old: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(old)
    return [(bound, max(0.0, count - before.get(bound, 0.0))) for bound, count in new]


def _dispatched(gateway: Gateway) -> int:
    try:
        return int(gateway.names.get("registry")._actor.events)  # type: ignore[attr-defined]
    except ActorDeadError:
        return 0


def _fabric(gateway: Gateway) -> dict[str, Any]:
    """Workers and nodes seen: the control channel's peers, or just this process."""
    if gateway.control is None:
        node = socket.gethostname()
        return {
            "workers": [{"id": gateway.worker_id, "node": node, "seen_s_ago": 0.0}],
            "nodes": [node],
        }
    now = time.time()
    seen = gateway.control.peers()
    nodes = gateway.control.peer_nodes()
    workers = [
        {"id": worker, "node": nodes.get(worker, "?"), "seen_s_ago": round(now - at, 1)}
        for worker, at in sorted(seen.items())
    ]
    return {"workers": workers, "nodes": sorted(set(nodes.values()))}
