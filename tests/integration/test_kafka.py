"""Kafka as event source and fabric, against a real broker (Tansu)."""

from __future__ import annotations

import json

import pytest
import requests
from clients import ce, ws_connect
from conftest import kafka_ready, wait_until

pytestmark = pytest.mark.kafka


@pytest.fixture()
def kafka_gateway(broker, gateway_factory):
    """A gateway on fresh topics, ready (positioned at the end of them)."""
    topic = broker.new_topic("events", partitions=2)
    control = broker.new_topic("control")
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap, KAFKA_SOURCE_TOPICS=topic, KAFKA_CONTROL_TOPIC=control
    )
    wait_until(lambda: kafka_ready(gateway), timeout=30)
    gateway.topic = topic
    return gateway


def produce(broker, topic: str, value: bytes, headers=None, key: bytes | None = b"k") -> None:
    """Produce one record; one key by default, so records keep their order."""
    producer = broker.producer()
    try:
        producer.send(topic, value=value, key=key, headers=headers or []).get(10)
    finally:
        producer.close()


@pytest.mark.parametrize("version", ["0.1", "0.2", "1.0"])
def test_structured_kafka_records_reach_sse_and_ws_clients_verbatim(broker, kafka_gateway, version):
    subs = [{"eventType": "k.structured"}]
    with kafka_gateway.sse(subs) as sse:
        ws = ws_connect(kafka_gateway.connect_url("ws", subs))
        try:
            sse.events(2)
            ws.recv(), ws.recv()
            event = ce("k.structured", {"v": version}, id_=version, version=version, ext="x")
            raw = json.dumps(event)
            produce(broker, kafka_gateway.topic, raw.encode())
            assert sse.next_event(10).data == raw
            # The record's bytes, plus the replay id (ws_event_ids, on by default).
            text = ws.recv()
            assert text == raw[:-1] + f',"rigeventid":"{json.loads(text)["rigeventid"]}"}}'
        finally:
            ws.close()


@pytest.mark.parametrize("version", ["0.2", "1.0"])
def test_binary_kafka_records_reach_clients_as_structured_json(broker, kafka_gateway, version):
    with kafka_gateway.sse([{"eventType": "k.binary"}]) as sse:
        sse.events(2)
        headers = [
            ("ce_specversion", version.encode()),
            ("ce_type", b"k.binary"),
            ("ce_source", b"/kafka"),
            ("ce_id", b"b-1"),
            ("content-type", b"application/json"),
        ]
        produce(broker, kafka_gateway.topic, b'{"name":"alice"}', headers)
        event = sse.next_event(10).json
        assert event["type"] == "k.binary" and event["id"] == "b-1"
        assert event["specversion"] == version
        assert event["data"] == {"name": "alice"}


def test_malformed_record_between_two_good_ones_is_skipped(broker, kafka_gateway):
    with kafka_gateway.sse([{"eventType": "k.good"}]) as sse:
        sse.events(2)
        produce(broker, kafka_gateway.topic, json.dumps(ce("k.good", {"n": 1}, id_="1")).encode())
        produce(broker, kafka_gateway.topic, b"{not json at all")
        produce(broker, kafka_gateway.topic, json.dumps(ce("k.good", {"n": 2}, id_="2")).encode())
        assert sse.next_event(10).json["data"] == {"n": 1}
        assert sse.next_event(10).json["data"] == {"n": 2}
    assert "skipping record" in kafka_gateway.log()


def test_http_published_event_travels_through_the_source_topic(broker, kafka_gateway):
    with kafka_gateway.sse([{"eventType": "k.http"}]) as sse:
        sse.events(2)
        event = ce("k.http", {"via": "http"}, id_="h1")
        response = requests.post(f"{kafka_gateway.inbound}/_rig/v1/events", json=event, timeout=10)
        assert response.status_code == 202
        assert sse.next_event(10).json == event
    records = broker.read(kafka_gateway.topic, 1)
    assert [json.loads(r.value) for r in records] == [event]


def test_health_reports_the_kafka_state(kafka_gateway):
    assert requests.get(f"{kafka_gateway.api}/health", timeout=5).text == "OK"
    body = requests.get(
        f"{kafka_gateway.api}/health", headers={"accept": "application/json"}, timeout=5
    ).json()
    assert body["kafka"]["state"] == "ready"
    assert body["kafka"]["kafka-events"]["state"] == "ready"


def kafka_state(gateway) -> str:
    response = requests.get(
        f"{gateway.api}/health", headers={"accept": "application/json"}, timeout=15
    )
    assert response.status_code == 200
    return response.json()["kafka"]["kafka-events"]["state"]


def test_gateway_started_before_the_broker_serves_and_connects_later(
    gateway_factory, tmp_path
):
    from kafka_broker import Broker

    broker = Broker(tmp_path)  # a free port, nothing listening yet
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap, KAFKA_SOURCE_TOPICS="late", KAFKA_CONTROL_TOPIC="late-c"
    )
    try:
        assert kafka_state(gateway) in {"connecting", "disconnected"}
        with gateway.sse([{"eventType": "x"}]) as sse:  # connections are served meanwhile
            sse.events(2)
        broker.start()
        broker.create_topics("late", "late-c")
        wait_until(lambda: kafka_state(gateway) == "ready", timeout=30)
        with gateway.sse([{"eventType": "late.event"}]) as sse:
            sse.events(2)
            produce(broker, "late", json.dumps(ce("late.event", {"n": 1})).encode())
            assert sse.next_event(10).json["data"] == {"n": 1}
    finally:
        broker.stop()


def test_broker_restart_mid_stream_gateway_stays_up_and_resumes(gateway_factory, tmp_path):
    from kafka_broker import Broker

    broker = Broker(tmp_path).start()
    broker.create_topics("restart", "restart-c")
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap,
        KAFKA_SOURCE_TOPICS="restart",
        KAFKA_CONTROL_TOPIC="restart-c",
    )
    try:
        wait_until(lambda: kafka_ready(gateway), timeout=30)
        with gateway.sse([{"eventType": "r"}]) as sse:
            sse.events(2)
            produce(broker, "restart", json.dumps(ce("r", {"n": "before"})).encode())
            assert sse.next_event(10).json["data"] == {"n": "before"}
            broker.stop()
            wait_until(lambda: kafka_state(gateway) == "disconnected", timeout=30)
            assert requests.get(f"{gateway.inbound}/_rig/health", timeout=5).text == "OK"
            # The broker comes back empty (in-memory): topics are re-created.
            broker.start()
            broker.create_topics("restart", "restart-c")
            wait_until(lambda: kafka_state(gateway) == "ready", timeout=30)
            produce(broker, "restart", json.dumps(ce("r", {"n": "after"})).encode())
            assert sse.next_event(15).json["data"] == {"n": "after"}
    finally:
        broker.stop()
