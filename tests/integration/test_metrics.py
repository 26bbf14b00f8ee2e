"""GET /metrics on the internal API: RIG's metrics and ours, scraped and parsed.

Every scrape is parsed with prometheus_client's text parser, as Prometheus
would read it. Counts are compared as growth between two scrapes, so the
shared gateway can be used where nothing else runs at the same time.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from backend import Backend, closed_port
from clients import ce, ws_connect, ws_next_event
from conftest import GatewayProcess, kafka_ready, start_procfile, wait_until
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]

RIG_METRICS = (
    "rig_proxy_requests",
    "rig_consumed_events",
    "rig_consumed_events_failed",
    "rig_consumed_event_processing_duration_milliseconds",
    "rig_consumed_events_forwarded",
    "rig_produced_events",
    "rig_produced_events_failed",
    "rig_subscriptions_total",
)
OUR_METRICS = (
    "rig_connections",
    "rig_connections_opened",
    "rig_dispatched_events",
    "rig_deliveries",
    "rig_delivery_latency_seconds",
    "rig_slow_consumer_disconnects",
    "rig_dropped_events",
    "rig_connection_crashes",
    "rig_actor_restarts",
    "rig_kafka_consumer_lag",
    "rig_kafka_up",
    "rig_fabric_peers",
    "rig_proxy_request_duration_seconds",
)


def scrape(gateway: GatewayProcess) -> tuple[Samples, dict[str, Any]]:
    """The parsed scrape: samples by name and labels, and the families by name."""
    response = requests.get(f"{gateway.api}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def test_scrape_has_rigs_names_and_labels_and_ours(gateway):
    _, families = scrape(gateway)
    for name in RIG_METRICS + OUR_METRICS:
        assert name in families, name
    assert families["rig_proxy_requests"].type == "counter"
    assert families["rig_subscriptions_total"].type == "gauge"
    assert families["rig_consumed_event_processing_duration_milliseconds"].type == "histogram"
    # The embedded single process uses the default registry: process metrics too.
    assert "process_resident_memory_bytes" in families
    # RIG's buckets, in milliseconds.
    buckets = {
        s.labels["le"]
        for s in families["rig_consumed_event_processing_duration_milliseconds"].samples
    }
    assert buckets in (
        set(),
        {
            "1.0",
            "2.0",
            "5.0",
            "10.0",
            "25.0",
            "50.0",
            "75.0",
            "100.0",
            "250.0",
            "500.0",
            "750.0",
            "1000.0",
            "+Inf",
        },
    )


def test_connections_subscriptions_deliveries_and_forwarded_events(gateway):
    subs = [{"eventType": "metrics.fan"}]
    before, _ = scrape(gateway)
    clients = [gateway.sse(subs) for _ in range(3)]
    try:
        for sse in clients:
            sse.events(2)
        during, _ = scrape(gateway)
        assert value(during, "rig_connections", transport="sse") == (
            value(before, "rig_connections", transport="sse") + 3
        )
        assert value(during, "rig_connections_opened_total", transport="sse") == (
            value(before, "rig_connections_opened_total", transport="sse") + 3
        )
        assert value(during, "rig_subscriptions_total") == (
            value(before, "rig_subscriptions_total") + 3
        )
        for n in range(2):
            gateway.publish(ce("metrics.fan", {"n": n}, id_=str(n)))
            for sse in clients:
                sse.next_event()
        gateway.publish(ce("metrics.nobody", id_="x"))
        after, _ = scrape(gateway)
    finally:
        for sse in clients:
            sse.close()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Counted at the default log level (RIG counts forwarded events only at debug).
    assert grew("rig_consumed_events_forwarded_total", type="metrics.fan") == 2
    assert grew("rig_consumed_events_forwarded_total", type="metrics.nobody") == 0
    assert grew("rig_dispatched_events_total") == 3
    assert grew("rig_deliveries_total") == 6  # two events, three connections each
    assert grew("rig_delivery_latency_seconds_count") >= 1
    assert 0 < grew("rig_delivery_latency_seconds_sum") < 1.0

    def closed() -> bool:
        now, _ = scrape(gateway)
        return value(now, "rig_connections", transport="sse") == value(
            before, "rig_connections", transport="sse"
        )

    wait_until(closed, timeout=10)


def test_websocket_and_longpolling_connections_by_transport(gateway):
    before, _ = scrape(gateway)
    ws = ws_connect(gateway.connect_url("ws"))
    session = requests.Session()
    try:
        assert ws_next_event(ws)["type"] == "rig.connection.create"
        assert session.get(gateway.connect_url("longpolling"), timeout=5).json() == "ok"
        during, _ = scrape(gateway)
        for transport in ("ws", "longpolling"):
            assert value(during, "rig_connections", transport=transport) == (
                value(before, "rig_connections", transport=transport) + 1
            )
    finally:
        ws.close()
        session.close()


def test_longpolling_buffer_overflow_is_counted_as_dropped(gateway_factory):
    gw = gateway_factory(LONGPOLLING_BUFFER_SIZE="2", LONGPOLLING_WAIT_MS="200")
    session = requests.Session()
    url = gw.connect_url("longpolling", [{"eventType": "metrics.lp"}])
    assert session.get(url, timeout=5).json() == "ok"
    seen: list[str] = []

    def subscribed() -> bool:  # the buffer now holds connection.create, subscriptions_set
        seen.extend(e["type"] for e in session.get(url, timeout=5).json()["events"])
        return "rig.subscriptions_set" in seen

    wait_until(subscribed, timeout=5)
    for n in range(5):
        gw.publish(ce("metrics.lp", {"n": n}, id_=str(n)))
    wait_until(lambda: gw.stats()["registry"]["deliveries"] >= 5, timeout=5)
    polled = session.get(url, timeout=5).json()
    assert [e["data"]["n"] for e in polled["events"]] == [3, 4]  # the buffer kept two
    samples, _ = scrape(gw)
    assert value(samples, "rig_dropped_events_total", reason="longpolling_buffer_full") == 3


def test_actor_restarts_and_connection_crashes_are_counted(gateway_factory):
    gw = gateway_factory()
    with gw.sse([{"eventType": "metrics.crash"}]) as sse:
        create, _ = sse.events(2)
        token = create.json["data"]["connection_token"]
        response = requests.post(f"{gw.api}/_rig/faults", json={"actor": "registry"}, timeout=5)
        assert response.status_code == 202
        response = requests.post(
            f"{gw.api}/_rig/faults", json={"actor": "connection", "token": token}, timeout=5
        )
        assert response.status_code == 202
        assert sse.is_closed()

    def counted() -> bool:
        samples, _ = scrape(gw)
        return (
            value(samples, "rig_actor_restarts_total", actor="registry") == 1
            and value(samples, "rig_connection_crashes_total") == 1
        )

    wait_until(counted, timeout=10)


def test_slow_consumer_disconnect_is_counted(gateway_factory):
    gw = gateway_factory(OUTBOUND_BUFFER_MAX_BYTES="65536")
    sse = gw.sse([{"eventType": "metrics.big"}])
    sse.events(2)
    # The client stops reading; the kernel's buffers fill, then ours passes
    # its bound and the gateway lets the connection go.
    payload = "x" * 30_000
    try:
        for n in range(1000):
            gw.publish(ce("metrics.big", payload, id_=str(n)))
            if n % 20 == 19 and gw.stats()["connections"]["sse"] == 0:
                break
        samples, _ = scrape(gw)
        assert value(samples, "rig_slow_consumer_disconnects_total") == 1
    finally:
        sse.close()


def test_metrics_can_be_switched_off(gateway_factory):
    gw = gateway_factory(PROMETHEUS_METRICS_ENABLED="false")
    assert requests.get(f"{gw.api}/metrics", timeout=5).status_code == 404


@pytest.mark.kafka
def test_kafka_consumption_production_and_lag(broker, gateway_factory):
    topic = broker.new_topic("metrics", partitions=2)
    control = broker.new_topic("metrics-control")
    gw = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap, KAFKA_SOURCE_TOPICS=topic, KAFKA_CONTROL_TOPIC=control
    )
    wait_until(lambda: kafka_ready(gw), timeout=30)
    with gw.sse([{"eventType": "metrics.kafka"}]) as sse:
        sse.events(2)
        gw.publish(ce("metrics.kafka", {"n": 1}))
        assert sse.next_event(10).json["data"] == {"n": 1}
        producer = broker.producer()
        producer.send(topic, b"{not json", partition=0).get(10)
        producer.close()

        def counted() -> bool:
            samples, _ = scrape(gw)
            return value(samples, "rig_consumed_events_failed_total", source="kafka", topic=topic)

        wait_until(counted, timeout=10)
    samples, _ = scrape(gw)
    assert value(samples, "rig_produced_events_total", target="kafka", topic=topic) == 1
    # The workers' own control-channel chatter is not counted as events.
    assert value(samples, "rig_produced_events_total", target="kafka", topic=control) == 0
    assert value(samples, "rig_consumed_events_total", source="kafka", topic=topic) == 2
    assert value(samples, "rig_consumed_events_failed_total", source="kafka", topic=topic) == 1
    count = value(
        samples,
        "rig_consumed_event_processing_duration_milliseconds_count",
        source="kafka",
        topic=topic,
    )
    total_ms = value(
        samples,
        "rig_consumed_event_processing_duration_milliseconds_sum",
        source="kafka",
        topic=topic,
    )
    assert count == 1
    # Real milliseconds: decoding one small record takes well under 100 ms,
    # and is not zero (RIG recorded VM native units, far larger numbers).
    assert 0 < total_ms < 100
    assert value(samples, "rig_consumed_events_forwarded_total", type="metrics.kafka") == 1
    assert value(samples, "rig_kafka_up", client="kafka-events") == 1

    def lag_sampled() -> bool:
        now, _ = scrape(gw)
        lag = now.get("rig_kafka_consumer_lag", {})
        peers = value(now, "rig_fabric_peers")
        return peers >= 1 and all(
            frozenset({("topic", topic), ("partition", str(p))}) in lag for p in (0, 1)
        )

    wait_until(lag_sampled, timeout=10)
    now, _ = scrape(gw)
    assert value(now, "rig_kafka_consumer_lag", topic=topic, partition="0") == 0


@pytest.mark.kafka
def test_two_gunicorn_workers_one_scrape_sums_the_box(broker, tmp_path):
    topic = broker.new_topic("metrics-box", partitions=2)
    control = broker.new_topic("metrics-box-control")
    gw = start_procfile(
        tmp_path,
        {
            "WEB_CONCURRENCY": "2",
            "KAFKA_BROKERS": broker.bootstrap,
            "KAFKA_SOURCE_TOPICS": topic,
            "KAFKA_CONTROL_TOPIC": control,
        },
    )
    clients = []
    # The master (the Procfile's command execs gunicorn) made a directory of its own.
    (metrics_dir,) = Path(tempfile.gettempdir()).glob(f"rig-metrics-{gw.proc.pid}-*")
    try:
        workers: set[str] = set()

        def both_ready() -> bool:
            body = requests.get(
                f"{gw.api}/health", headers={"accept": "application/json"}, timeout=5
            ).json()
            if body["kafka"]["state"] == "ready":
                workers.add(body["worker"])
            return len(workers) == 2

        wait_until(both_ready, timeout=60, interval=0.02)
        owners: dict[str, int] = {}
        while len(owners) < 2 or len(clients) < 4:
            assert len(clients) < 60, f"connections only reached {owners}"
            sse = gw.sse([{"eventType": "metrics.box"}])
            create, _ = sse.events(2)
            owner = create.json["data"]["connection_token"].split(".", 1)[0]
            owners[owner] = owners.get(owner, 0) + 1
            clients.append(sse)
        assert set(owners) == workers

        # Whichever worker answers the scrape, it shows the box: both
        # workers' connections summed (each samples once a second).
        answered_by: set[str] = set()

        def summed_by_both() -> bool:
            response = requests.get(f"{gw.api}/metrics", timeout=5)
            samples: Samples = {}
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    key = frozenset(sample.labels.items())
                    samples.setdefault(sample.name, {})[key] = sample.value
            if value(samples, "rig_connections", transport="sse") == len(clients):
                answered_by.add(response.headers["x-rig-worker"])
            return answered_by == workers

        wait_until(summed_by_both, timeout=30, interval=0.05)
        # Each worker writes its own files there (named after its pid).
        assert len({db.stem.rsplit("_", 1)[1] for db in metrics_dir.glob("*.db")}) >= 2
        gw.publish(ce("metrics.box", {"n": 1}))
        for sse in clients:
            assert sse.next_event(10).json["data"] == {"n": 1}

        def delivered() -> bool:
            samples, _ = scrape(gw)
            return value(samples, "rig_deliveries_total") == len(clients)

        wait_until(delivered, timeout=10)
    finally:
        for sse in clients:
            sse.close()
        gw.stop()
    assert not metrics_dir.exists()  # removed when the master stopped


def test_status_stream_reports_the_numbers(gateway):
    with gateway.sse([{"eventType": "metrics.status"}]) as sse:
        sse.events(2)
        response = requests.get(f"{gateway.api}/_rig/status/stream", stream=True, timeout=10)
        try:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "x-request-id" not in response.headers  # not on streams
            lines = response.iter_lines(decode_unicode=True)
            status = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                gateway.publish(ce("metrics.status", id_="s"))
                line = next(lines)
                if line.startswith("data: "):
                    status = json.loads(line[6:])
                    if status["events_per_s"] > 0 and status["deliveries_per_s"] > 0:
                        break
            assert status is not None
            assert status["connections"]["sse"] >= 1
            assert status["events_per_s"] > 0 and status["deliveries_per_s"] > 0
            assert status["kafka"]["state"] == "disabled"
            assert status["workers"][0]["id"] == status["worker"]
        finally:
            response.close()


def test_proxied_requests_are_counted_with_rigs_labels(gateway_factory):
    with Backend() as backend:

        def api(api_id: str, port: int, *paths: str) -> dict:
            endpoints = [{"id": p, "method": "GET", "path_regex": p} for p in paths]
            return {
                "id": api_id,
                "name": api_id,
                "proxy": {"target_url": "localhost", "port": port},
                "version_data": {"default": {"endpoints": endpoints}},
            }

        apis = [
            api("live", backend.port, "/m/ok", "/m/slow"),
            api("dead", closed_port(), "/m/dead"),
        ]
        gw = gateway_factory(PROXY_CONFIG_FILE=json.dumps(apis), PROXY_RECV_TIMEOUT="300")
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ok = requests.get(
            f"{gw.inbound}/m/ok",
            headers={"traceparent": traceparent, "x-request-id": "proxy-req-1"},
            timeout=5,
        )
        assert ok.status_code == 200
        seen = backend.next_request()
        # The backend's parent is the gateway's span, the one its response names,
        # and the request id travels with it; the proxied response keeps both.
        assert seen.header("traceparent") == ok.headers["traceparent"]
        assert ok.headers["traceparent"].split("-")[1] == traceparent.split("-")[1]
        assert ok.headers["x-request-id"] == "proxy-req-1"
        assert requests.get(f"{gw.inbound}/m/dead", timeout=5).status_code == 502
        slow = requests.get(f"{gw.inbound}/m/slow", headers={"x-test-delay-ms": "1500"}, timeout=5)
        assert slow.status_code == 504
        assert requests.get(f"{gw.inbound}/m/nowhere", timeout=5).status_code == 404
        samples, _ = scrape(gw)

    def count(path: str, target: str, response_from: str, status: str) -> float:
        return value(
            samples,
            "rig_proxy_requests_total",
            method="GET",
            path=path,
            target=target,
            response_from=response_from,
            status=status,
        )

    assert count("/m/ok", "http", "http", "ok") == 1
    assert count("/m/dead", "http", "http", "unreachable") == 1
    assert count("/m/slow", "http", "http", "request_timeout") == 1
    assert count("/m/nowhere", "N/A", "N/A", "not_found") == 1
    assert value(samples, "rig_proxy_request_duration_seconds_count", target="http") == 3


def test_blacklist_entries_are_counted_like_rigs_distributed_set(gateway):
    for name in ("metrics-a", "metrics-b"):
        response = requests.post(
            f"{gateway.api}/v3/session-blacklist",
            json={"sessionId": name, "validityInSeconds": 60},
            timeout=5,
        )
        assert response.status_code == 201

    def counted() -> bool:
        samples, _ = scrape(gateway)
        labels = frozenset({("name", "SessionBlacklist")})  # "name" is value()'s own argument
        current = samples.get("rig_distributed_set_items_current", {}).get(labels, 0.0)
        total = samples.get("rig_distributed_set_items_total", {}).get(labels, 0.0)
        return current >= 2 and total >= 2

    wait_until(counted, timeout=10)
