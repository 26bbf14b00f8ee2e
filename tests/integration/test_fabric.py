"""Kafka as the fabric: several gunicorn workers and several nodes act as one gateway."""

from __future__ import annotations

import pytest
import requests
from clients import SseClient, ce
from conftest import kafka_ready, start_procfile, wait_until

pytestmark = pytest.mark.kafka


def owner_of(token: str) -> str:
    return token.split(".", 1)[0]


def ready_workers(gateway, expected: int) -> set[str]:
    """Ask /health until ``expected`` distinct workers answered with Kafka ready."""
    seen: set[str] = set()

    def probe() -> bool:
        response = requests.get(
            f"{gateway.api}/health", headers={"accept": "application/json"}, timeout=5
        )
        body = response.json()
        if body["kafka"]["state"] == "ready":
            seen.add(body["worker"])
        return len(seen) >= expected

    wait_until(probe, timeout=60, interval=0.02)
    return seen


def clients_on_every_worker(gateway, workers: set[str], subs) -> dict[str, SseClient]:
    """Open SSE connections until each worker holds one; close the extras."""
    chosen: dict[str, SseClient] = {}
    for _ in range(60):
        sse = gateway.sse(subs)
        create, _ = sse.events(2)
        sse.connection_token = create.json["data"]["connection_token"]
        owner = owner_of(sse.connection_token)
        if owner in chosen:
            sse.close()
        else:
            chosen[owner] = sse
        if set(chosen) == workers:
            return chosen
    raise AssertionError(f"connections only reached {set(chosen)} of {workers}")


@pytest.fixture()
def two_workers(broker, tmp_path):
    topic = broker.new_topic("fabric", partitions=2)
    control = broker.new_topic("fabric-control")
    gateway = start_procfile(
        tmp_path,
        {
            "WEB_CONCURRENCY": "2",
            "KAFKA_BROKERS": broker.bootstrap,
            "KAFKA_SOURCE_TOPICS": topic,
            "KAFKA_CONTROL_TOPIC": control,
        },
    )
    yield gateway
    gateway.stop()


def test_event_posted_to_either_worker_reaches_clients_on_both(two_workers):
    workers = ready_workers(two_workers, 2)
    clients = clients_on_every_worker(two_workers, workers, [{"eventType": "fan"}])
    try:
        posted_by: set[str] = set()
        n = 0
        while posted_by != workers:
            n += 1
            assert n < 100, "the kernel never spread POSTs over both workers"
            event = ce("fan", {"n": n}, id_=str(n))
            response = requests.post(
                f"{two_workers.inbound}/_rig/v1/events", json=event, timeout=10
            )
            assert response.status_code == 202
            posted_by.add(response.headers["x-rig-worker"])
            for sse in clients.values():
                assert sse.next_event(10).json == event
    finally:
        for sse in clients.values():
            sse.close()


def test_two_nodes_share_events(broker, gateway_factory):
    topic = broker.new_topic("nodes", partitions=2)
    control = broker.new_topic("nodes-control")
    env = {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": topic,
        "KAFKA_CONTROL_TOPIC": control,
    }
    a, b = gateway_factory(**env), gateway_factory(**env)
    wait_until(lambda: kafka_ready(a) and kafka_ready(b), timeout=30)
    with a.sse([{"eventType": "node"}]) as on_a, b.sse([{"eventType": "node"}]) as on_b:
        on_a.events(2)
        on_b.events(2)
        for source, n in ((a, 1), (b, 2)):
            event = ce("node", {"n": n}, id_=str(n))
            assert requests.post(f"{source.api}/v3/messages", json=event, timeout=10).ok
            assert on_a.next_event(10).json == event
            assert on_b.next_event(10).json == event


@pytest.fixture()
def two_nodes(broker, gateway_factory):
    topic = broker.new_topic("nodes", partitions=2)
    control = broker.new_topic("nodes-control")
    env = {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": topic,
        "KAFKA_CONTROL_TOPIC": control,
    }
    a, b = gateway_factory(**env), gateway_factory(**env)
    wait_until(lambda: kafka_ready(a) and kafka_ready(b), timeout=30)
    # Each node must have heard the other's hello before it can forward.
    wait_until(lambda: _knows_peer(a, b) and _knows_peer(b, a), timeout=15)
    return a, b


def _knows_peer(gateway, other) -> bool:
    other_id = requests.get(f"{other.api}/health", headers={"accept": "application/json"}).json()[
        "worker"
    ]
    peers = requests.get(f"{gateway.api}/_rig/stats", timeout=5).json().get("peers", {})
    return other_id in peers


def put(gateway, token: str, subscriptions) -> requests.Response:
    return requests.put(
        f"{gateway.inbound}/_rig/v1/connection/sse/{token}/subscriptions",
        json={"subscriptions": subscriptions},
        timeout=15,
    )


def test_put_sent_to_another_node_is_applied_by_the_owner(two_nodes):
    a, b = two_nodes
    with b.sse([{"eventType": "before"}]) as on_b:
        token = on_b.next_event().json["data"]["connection_token"]
        on_b.next_event()
        response = put(a, token, [{"eventType": "after"}])
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == "*"
        subs_set = on_b.next_event(10)
        assert subs_set.type == "rig.subscriptions_set"
        assert subs_set.json["data"] == [{"eventType": "after", "oneOf": []}]
        event = ce("after", {"n": 1})
        assert requests.post(f"{a.api}/v3/messages", json=event, timeout=10).ok
        assert on_b.next_event(10).json == event
    # The owner is alive but the connection is gone: the owner says 410.
    wait_until(lambda: b.stats()["connections"]["sse"] == 0)
    assert put(a, token, []).status_code == 410


def test_long_poll_session_on_another_node_is_polled_through_its_owner(two_nodes):
    a, b = two_nodes
    session = requests.Session()
    first = session.get(b.connect_url("longpolling", [{"eventType": "lp.remote"}]), timeout=10)
    assert first.json() == "ok"
    cookies = {c.name: c.value for c in session.cookies}
    polled = requests.get(
        f"{a.inbound}/_rig/v1/connection/longpolling", cookies=cookies, timeout=15
    )
    assert polled.status_code == 200
    types = [event["type"] for event in polled.json()["events"]]
    assert types == ["rig.connection.create", "rig.subscriptions_set"]


def test_put_routed_to_the_non_owner_worker_takes_effect(two_workers):
    workers = ready_workers(two_workers, 2)
    wait_until(lambda: len(two_workers.stats().get("peers", {})) >= 2, timeout=15)
    clients = clients_on_every_worker(two_workers, workers, [{"eventType": "w.before"}])
    try:
        owner, sse = next(iter(clients.items()))
        token = sse.connection_token
        for _ in range(100):
            response = put(two_workers, token, [{"eventType": "w.after", "oneOf": []}])
            assert response.status_code == 204, response.text
            assert sse.next_event(10).json["data"] == [{"eventType": "w.after", "oneOf": []}]
            if response.headers["x-rig-worker"] != owner:
                break
        else:
            raise AssertionError("no PUT reached the other worker")
        event = ce("w.after", {"n": 1})
        assert requests.post(f"{two_workers.api}/v3/messages", json=event, timeout=10).ok
        assert sse.next_event(10).json == event
    finally:
        for client in clients.values():
            client.close()
