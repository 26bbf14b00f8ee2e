"""The API gateway with Kafka: target kafka, response_from kafka|http_async, route replication.

Two gateway nodes (``python -m rig_actors``) share one broker; a third one
is started later to show that a new (or restarted) node gets the routes
changed at run time from its peers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from backend import Backend
from clients import ce
from conftest import GatewayProcess, wait_until
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

pytestmark = pytest.mark.kafka

# Node a waits long for correlated answers (the tests that answer), node b
# briefly (the tests that expect a 504), so neither kind is slow or flaky.
LONG_TIMEOUT_MS = 15000
SHORT_TIMEOUT_MS = 1500
KAFKA_CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "*",
    "access-control-allow-headers": "content-type,authorization",
}


def ep(endpoint_id: str, method: str, path: str, **fields: object) -> dict:
    return {"id": endpoint_id, "method": method, "path_regex": path, **fields}


def find_record(
    broker, topic: str, predicate: Callable[[ConsumerRecord], bool], timeout: float = 10.0
) -> ConsumerRecord:
    """The first record of ``topic`` (any partition, from the start) that matches."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    if predicate(record):
                        return record
        raise AssertionError(f"no matching record on {topic} within {timeout} s")
    finally:
        consumer.close()


def event_with_id(event_id: str) -> Callable[[ConsumerRecord], bool]:
    return lambda record: json.loads(record.value).get("id") == event_id


def health(gateway: GatewayProcess) -> dict[str, Any]:
    return requests.get(
        f"{gateway.api}/health", headers={"accept": "application/json"}, timeout=5
    ).json()


def fully_ready(gateway: GatewayProcess) -> bool:
    kafka = health(gateway)["kafka"]
    return kafka["state"] == "ready" and kafka["proxy-responses"]["state"] == "ready"


def proxy_stats(gateway: GatewayProcess) -> dict[str, Any]:
    return requests.get(f"{gateway.api}/_rig/proxy", timeout=5).json()


def knows(gateway: GatewayProcess, other: GatewayProcess) -> bool:
    return health(other)["worker"] in gateway.stats().get("peers", {})


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


@pytest.fixture(scope="module")
def topics(broker) -> dict[str, str]:
    names = ("source", "control", "responses", "events", "ask", "log")
    return {name: broker.new_topic(f"proxy-{name}", partitions=2) for name in names}


@pytest.fixture(scope="module")
def env(broker, backend: Backend, topics: dict[str, str]) -> dict[str, str]:
    proxy = {"target_url": "localhost", "port": backend.port}
    apis = [
        {
            "id": "kafka-target",
            "name": "kafka target",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        ep("publish", "POST", "/events", target="kafka", topic=topics["events"]),
                        ep("publish-options", "OPTIONS", "/events", target="kafka", topic="x"),
                        ep(
                            "ask",
                            "POST",
                            "/ask",
                            target="kafka",
                            topic=topics["ask"],
                            response_from="kafka",
                        ),
                    ]
                }
            },
        },
        {
            "id": "http-async",
            "name": "http async",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        ep("via-kafka", "GET", "/via-kafka", response_from="kafka"),
                        ep("via-http", "GET", "/via-http", response_from="http_async"),
                        ep("logged", "GET", "/logged"),
                    ]
                }
            },
        },
    ]
    return {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": topics["source"],
        "KAFKA_CONTROL_TOPIC": topics["control"],
        "PROXY_KAFKA_RESPONSE_TOPICS": topics["responses"],
        "PROXY_KAFKA_RESPONSE_TIMEOUT": str(LONG_TIMEOUT_MS),
        "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT": str(LONG_TIMEOUT_MS),
        "REQUEST_LOG": "kafka",
        "KAFKA_LOG_TOPIC": topics["log"],
        "PROXY_CONFIG_FILE": json.dumps(apis),
    }


@pytest.fixture(scope="module")
def nodes(env: dict[str, str], gateway_factory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    short = str(SHORT_TIMEOUT_MS)
    a = gateway_factory(**env)
    b = gateway_factory(
        **{**env, "PROXY_KAFKA_RESPONSE_TIMEOUT": short, "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT": short}
    )
    wait_until(lambda: fully_ready(a) and fully_ready(b), timeout=30)
    wait_until(lambda: knows(a, b) and knows(b, a), timeout=15)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(autouse=True)
def fresh_backend_queue(backend: Backend) -> None:
    backend.drain()


def reply(broker, topic: str, correlation: str, code: bytes, body: bytes, **headers: str) -> None:
    producer = broker.producer()
    try:
        extra = [(name.replace("_", "-"), value.encode()) for name, value in headers.items()]
        producer.send(
            topic,
            body,
            headers=[
                ("rig-correlation", correlation.encode()),
                ("rig-response-code", code),
                *extra,
            ],
        ).get(10)
    finally:
        producer.close()


# ------------------------------------------------------------------ target kafka


def test_target_kafka_produces_the_event_with_rig_metadata(nodes, broker, topics) -> None:
    a, _ = nodes
    event = ce("com.example.test", {"foo": "bar"}, id_="kafka-1", rig={"target_partition": "k1"})
    response = requests.post(
        f"{a.inbound}/events?a=1", json=event, headers={"x-custom": "v"}, timeout=10
    )
    assert (response.status_code, response.text) == (202, "Accepted.")
    for name, value in KAFKA_CORS.items():
        assert response.headers[name] == value

    record = find_record(broker, topics["events"], event_with_id("kafka-1"))
    assert record.key == b"k1"
    produced = json.loads(record.value)
    assert produced["data"] == {"foo": "bar"} and produced["type"] == "com.example.test"
    rig = produced["rig"]
    assert set(rig) == {
        "correlation",
        "remoteip",
        "host",
        "port",
        "scheme",
        "headers",
        "method",
        "path",
        "query",
    }
    assert rig["remoteip"] == "127.0.0.1"
    assert (rig["host"], rig["port"], rig["scheme"]) == ("127.0.0.1", a.inbound_port, "http")
    assert (rig["method"], rig["path"], rig["query"]) == ("POST", "/events", "a=1")
    assert ["x-custom", "v"] in rig["headers"]
    assert rig["correlation"].count(".") == 2
    assert produced["traceparent"].startswith("00-")

    # 1.0 events are taken too; without a partition key the record has none.
    event10 = ce("t", {"n": 1}, id_="kafka-2", version="1.0")
    assert requests.post(f"{a.inbound}/events", json=event10, timeout=10).status_code == 202
    assert find_record(broker, topics["events"], event_with_id("kafka-2")).key is None


def test_target_kafka_rejects_what_is_not_a_cloudevent(nodes) -> None:
    a, _ = nodes
    cases = [
        (
            {"specversion": "0.1", "id": "1"},
            "Bad request: the body does not look like a CloudEvent.",
        ),
        ({"foo": "bar"}, "Bad request: the body does not look like a CloudEvent."),
        (
            {"specversion": "1.0", "id": "1"},
            "Bad request: the body does not look like a CloudEvent.",
        ),
    ]
    for body, first_line in cases:
        response = requests.post(f"{a.inbound}/events", json=body, timeout=10)
        assert response.status_code == 400
        assert response.text.splitlines()[0] == first_line
        assert "# Usage" in response.text
    broken = requests.post(f"{a.inbound}/events", data="{nope", timeout=10)
    assert broken.status_code == 400
    assert broken.text.startswith("Bad request: expected a JSON encoded request body.")


def test_target_kafka_answers_preflight_requests(nodes) -> None:
    a, _ = nodes
    response = requests.options(f"{a.inbound}/events", timeout=10)
    assert (response.status_code, response.content) == (204, b"")
    for name, value in KAFKA_CORS.items():
        assert response.headers[name] == value


def test_target_kafka_waits_for_the_correlated_reply(nodes, broker, topics) -> None:
    a, b = nodes
    others_before = proxy_stats(b)["replies"]["others"]
    with ThreadPoolExecutor(1) as pool:
        event = ce("question", {"q": 1}, id_="ask-1")
        waiting = pool.submit(requests.post, f"{a.inbound}/ask", json=event, timeout=30)
        produced = json.loads(find_record(broker, topics["ask"], event_with_id("ask-1")).value)
        reply(
            broker,
            topics["responses"],
            produced["rig"]["correlation"],
            b"201",
            b'{"message":"this is the async response that reaches the client instead"}',
            content_type="application/json;charset=utf-8",
        )
        response = waiting.result(30)
    assert response.status_code == 201
    assert response.json() == {
        "message": "this is the async response that reaches the client instead"
    }
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.headers["access-control-allow-headers"] == "content-type,authorization"
    # The other node read the reply too, and left it to the owner.
    wait_until(lambda: proxy_stats(b)["replies"]["others"] > others_before, timeout=5)


def test_target_kafka_without_a_reply_is_504(nodes) -> None:
    _, b = nodes
    started = time.monotonic()
    response = requests.post(f"{b.inbound}/ask", json=ce("question", id_="ask-2"), timeout=15)
    assert (response.status_code, response.content) == (504, b"")
    assert response.headers["access-control-allow-origin"] == "*"
    assert time.monotonic() - started >= SHORT_TIMEOUT_MS / 1000 - 0.1


# ------------------------------------------------------- response_from, http target


def test_http_target_with_response_from_kafka(nodes, broker, topics, backend: Backend) -> None:
    a, _ = nodes
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.get, f"{a.inbound}/via-kafka", headers={"x-test-status": "202"}, timeout=30
        )
        (correlation,) = backend.next_request().query["correlation"]
        reply(broker, topics["responses"], correlation, b"200", b"from kafka", x_reply="1")
        response = waiting.result(30)
    assert (response.status_code, response.text) == (200, "from kafka")
    assert response.headers["x-reply"] == "1"
    assert response.headers["access-control-allow-headers"] == "content-type"


def test_tampered_correlation_ids_are_ignored(nodes, broker, topics, backend: Backend) -> None:
    _, b = nodes
    rejected = proxy_stats(b)["replies"]["rejected"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.get, f"{b.inbound}/via-kafka", headers={"x-test-status": "202"}, timeout=15
        )
        (correlation,) = backend.next_request().query["correlation"]
        owner, request_id, signature = correlation.split(".")
        forged = f"{owner}.{request_id[::-1]}.{signature}"
        reply(broker, topics["responses"], forged, b"200", b"forged")
        response = waiting.result(30)
    assert response.status_code == 504
    wait_until(lambda: proxy_stats(b)["replies"]["rejected"] > rejected, timeout=5)


def test_http_async_reply_posted_to_another_node(nodes, backend: Backend) -> None:
    a, b = nodes
    forwarded = proxy_stats(b)["replies"]["forwarded"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.get, f"{a.inbound}/via-http", headers={"x-test-status": "202"}, timeout=30
        )
        (correlation,) = backend.next_request().query["correlation"]
        posted = requests.post(
            f"{b.api}/v3/responses",
            json={"answer": 42},
            headers={"rig-correlation": correlation, "rig-response-code": "200"},
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        response = waiting.result(30)
    assert (response.status_code, response.json()) == (200, {"answer": 42})
    assert response.headers["x-rig-worker"] == health(a)["worker"]
    assert proxy_stats(b)["replies"]["forwarded"] == forwarded + 1


# ------------------------------------------------------------------ request log


def test_kafka_request_log(nodes, broker, topics) -> None:
    a, _ = nodes
    assert requests.get(f"{a.inbound}/logged?x=1", timeout=10).status_code == 200

    def is_call(record: ConsumerRecord) -> bool:
        return json.loads(record.value)["data"]["request_path"] == "/logged"

    record = find_record(broker, topics["log"], is_call)
    assert record.key == b"partition"
    logged = json.loads(record.value)
    assert (logged["type"], logged["source"], logged["specversion"]) == (
        "com.rig.proxy.api.call",
        "/rig",
        "0.2",
    )
    assert logged["contenttype"] == "application/json"
    assert logged["data"]["endpoint"]["id"] == "logged"
    assert logged["data"]["remote_ip"] == "127.0.0.1"


# ---------------------------------------------------------- route replication


def api_on(gateway: GatewayProcess, api_id: str) -> dict | None:
    response = requests.get(f"{gateway.api}/v3/apis/{api_id}", timeout=5)
    return response.json() if response.status_code == 200 else None


def test_route_changes_reach_every_node_and_a_new_one(
    nodes, backend: Backend, env: dict[str, str], gateway_factory
) -> None:
    a, b = nodes
    definition = {
        "id": "runtime",
        "name": "runtime",
        "proxy": {"target_url": "localhost", "port": backend.port},
        "version_data": {"default": {"endpoints": [ep("r", "GET", "/runtime/(.*)")]}},
    }
    assert requests.post(f"{a.api}/v3/apis", json=definition, timeout=10).status_code == 201
    wait_until(lambda: api_on(b, "runtime") is not None, timeout=10)
    assert requests.get(f"{b.inbound}/runtime/x", timeout=5).json()["path"] == "/runtime/x"

    definition["version_data"]["default"]["endpoints"] = [
        ep("r", "GET", "/moved/(.*)", path_replacement="/runtime/\\1")
    ]
    assert requests.put(f"{b.api}/v3/apis/runtime", json=definition, timeout=10).status_code == 200
    wait_until(lambda: (api_on(a, "runtime") or {}).get("ref_number") == 1, timeout=10)
    assert requests.get(f"{a.inbound}/moved/y", timeout=5).json()["path"] == "/runtime/y"
    assert requests.get(f"{a.inbound}/runtime/y", timeout=5).status_code == 404

    doomed = {**definition, "id": "doomed"}
    assert requests.post(f"{b.api}/v3/apis", json=doomed, timeout=10).status_code == 201
    wait_until(lambda: api_on(a, "doomed") is not None, timeout=10)
    assert requests.delete(f"{a.api}/v3/apis/doomed", timeout=10).status_code == 204
    wait_until(lambda: api_on(b, "doomed") is None, timeout=10)

    # A node that starts now (or restarts) asks its peers for the table.
    c = gateway_factory(**env)
    wait_until(lambda: api_on(c, "runtime") is not None, timeout=20)
    assert api_on(c, "runtime")["ref_number"] == 1  # type: ignore[index]
    assert requests.get(f"{c.inbound}/moved/z", timeout=5).json()["path"] == "/runtime/z"
    # The deactivation came along too: re-creating continues its ref_number.
    assert api_on(c, "doomed") is None
    assert requests.post(f"{c.api}/v3/apis", json=doomed, timeout=10).status_code == 201
    assert api_on(c, "doomed")["ref_number"] == 2  # type: ignore[index]
    wait_until(lambda: (api_on(a, "doomed") or {}).get("ref_number") == 2, timeout=10)
    c.stop()


def test_a_produce_failure_is_502_not_202(broker, gateway_factory) -> None:
    # The brokers refuse the record (an illegal topic name); RIG would still say 202.
    apis = [
        {
            "id": "k",
            "name": "k",
            "proxy": {"target_url": "localhost", "port": 1},
            "version_data": {
                "default": {
                    "endpoints": [ep("p", "POST", "/p", target="kafka", topic="bad topic!")]
                }
            },
        }
    ]
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap,
        KAFKA_CONTROL_TOPIC=broker.new_topic("proxy-control"),
        KAFKA_SOURCE_TOPICS=broker.new_topic("proxy-source"),
        PROXY_CONFIG_FILE=json.dumps(apis),
    )
    response = requests.post(f"{gateway.inbound}/p", json=ce("t"), timeout=30)
    assert response.status_code == 502
    assert response.text == "Bad gateway: the Kafka brokers did not acknowledge the event."
    gateway.stop()
