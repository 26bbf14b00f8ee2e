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
        owner = owner_of(create.json["data"]["connection_token"])
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
