"""The API gateway under gunicorn, two workers and Kafka: one gateway, whichever worker answers."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from backend import Backend
from conftest import GatewayProcess, start_procfile, wait_until

pytestmark = pytest.mark.kafka


def ep(endpoint_id: str, method: str, path: str, **fields: object) -> dict:
    return {"id": endpoint_id, "method": method, "path_regex": path, **fields}


def health(gateway: GatewayProcess) -> dict[str, Any]:
    response = requests.get(
        f"{gateway.api}/health", headers={"accept": "application/json"}, timeout=5
    )
    return response.json()


def ready_workers(gateway: GatewayProcess, expected: int) -> set[str]:
    """Ask /health until ``expected`` workers answered with Kafka and the reply reader ready."""
    seen: set[str] = set()

    def probe() -> bool:
        body = health(gateway)
        kafka = body["kafka"]
        if kafka["state"] == "ready" and kafka["proxy-responses"]["state"] == "ready":
            seen.add(body["worker"])
        return len(seen) >= expected

    wait_until(probe, timeout=60, interval=0.02)
    return seen


def answered_by_all(url: str, workers: set[str], expect: int = 200, **kwargs: Any) -> None:
    """Repeat a request until every worker in ``workers`` answered it with ``expect``."""
    ok: set[str] = set()

    def probe() -> bool:
        response = requests.get(url, timeout=5, **kwargs)
        if response.status_code == expect:
            ok.add(response.headers["x-rig-worker"])
        return workers <= ok

    wait_until(probe, timeout=40, interval=0.01)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


@pytest.fixture(scope="module")
def cluster(
    broker, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, set[str], str]]:
    responses = broker.new_topic("workers-responses", partitions=2)
    proxy = {"target_url": "localhost", "port": backend.port}
    apis = [
        {
            "id": "async",
            "name": "async",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        ep("via-http", "GET", "/via-http", response_from="http_async"),
                        ep("via-kafka", "GET", "/via-kafka", response_from="kafka"),
                    ]
                }
            },
        }
    ]
    gateway = start_procfile(
        tmp_path_factory.mktemp("workers"),
        {
            "WEB_CONCURRENCY": "2",
            "KAFKA_BROKERS": broker.bootstrap,
            "KAFKA_SOURCE_TOPICS": broker.new_topic("workers-source"),
            "KAFKA_CONTROL_TOPIC": broker.new_topic("workers-control"),
            "PROXY_KAFKA_RESPONSE_TOPICS": responses,
            "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT": "15000",
            "PROXY_KAFKA_RESPONSE_TIMEOUT": "15000",
            "PROXY_CONFIG_FILE": json.dumps(apis),
        },
    )
    try:
        workers = ready_workers(gateway, 2)
        # Each worker must have heard the other before replies can be forwarded.
        wait_until(lambda: len(gateway.stats().get("peers", {})) >= 2, timeout=15)
        yield gateway, workers, responses
    finally:
        gateway.stop()


@pytest.fixture(autouse=True)
def fresh_backend_queue(backend: Backend) -> None:
    backend.drain()


def definition(api_id: str, port: int, path: str) -> dict:
    return {
        "id": api_id,
        "name": api_id,
        "proxy": {"target_url": "localhost", "port": port},
        "version_data": {"default": {"endpoints": [ep("e", "GET", path)]}},
    }


def test_route_changes_reach_both_workers(cluster, backend: Backend) -> None:
    gateway, workers, _ = cluster
    created = requests.post(
        f"{gateway.api}/v3/apis", json=definition("shared", backend.port, "/shared"), timeout=10
    )
    assert created.status_code == 201
    answered_by_all(f"{gateway.api}/v3/apis/shared", workers)
    answered_by_all(f"{gateway.inbound}/shared", workers)

    changed = definition("shared", backend.port, "/moved")
    assert requests.put(f"{gateway.api}/v3/apis/shared", json=changed, timeout=10).ok
    answered_by_all(f"{gateway.inbound}/moved", workers)
    answered_by_all(f"{gateway.inbound}/shared", workers, expect=404)

    assert requests.delete(f"{gateway.api}/v3/apis/shared", timeout=10).status_code == 204
    answered_by_all(f"{gateway.api}/v3/apis/shared", workers, expect=404)


def test_http_async_reply_posted_to_the_other_worker(cluster, backend: Backend) -> None:
    gateway, _, _ = cluster
    for _ in range(40):
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                requests.get,
                f"{gateway.inbound}/via-http",
                headers={"x-test-status": "202"},
                timeout=30,
            )
            (correlation,) = backend.next_request().query["correlation"]
            owner = correlation.split(".", 1)[0]
            posted = requests.post(
                f"{gateway.api}/v3/responses",
                json={"from": "backend"},
                headers={"rig-correlation": correlation, "rig-response-code": "201"},
                timeout=10,
            )
            assert posted.status_code == 202, posted.text
            response = waiting.result(30)
        assert (response.status_code, response.json()) == (201, {"from": "backend"})
        assert response.headers["x-rig-worker"] == owner
        if posted.headers["x-rig-worker"] != owner:
            return  # the reply crossed from one worker to the other
    raise AssertionError("no reply was ever posted to the non-waiting worker")


def test_kafka_reply_reaches_the_waiting_worker(cluster, broker, backend: Backend) -> None:
    gateway, _, responses = cluster
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.get,
            f"{gateway.inbound}/via-kafka",
            headers={"x-test-status": "202"},
            timeout=30,
        )
        (correlation,) = backend.next_request().query["correlation"]
        producer = broker.producer()
        producer.send(
            responses,
            b"via kafka",
            headers=[("rig-correlation", correlation.encode()), ("rig-response-code", b"200")],
        ).get(10)
        producer.close()
        response = waiting.result(30)
    assert (response.status_code, response.text) == (200, "via kafka")
    assert response.headers["x-rig-worker"] == correlation.split(".", 1)[0]


def worker_pid(gateway: GatewayProcess, worker_id: str) -> int:
    """The pid of a worker of this gunicorn (worker ids start with the pid in hex)."""
    master = gateway.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in map(int, children):
        if worker_id.startswith(f"{pid:x}"):
            return pid
    raise AssertionError(f"{worker_id} is not a child of {master}")


def test_a_restarted_worker_gets_the_runtime_routes(cluster, backend: Backend) -> None:
    gateway, workers, _ = cluster
    body = definition("survivor", backend.port, "/survivor")
    assert requests.post(f"{gateway.api}/v3/apis", json=body, timeout=10).status_code == 201
    answered_by_all(f"{gateway.api}/v3/apis/survivor", workers)

    victim = sorted(workers)[0]
    os.kill(worker_pid(gateway, victim), signal.SIGKILL)
    (survivor,) = workers - {victim}
    replacement = ready_workers(gateway, 2) - {survivor}
    assert victim not in replacement
    # gunicorn started a fresh worker; it asked its peer for the table.
    answered_by_all(f"{gateway.api}/v3/apis/survivor", replacement | {survivor})
    answered_by_all(f"{gateway.inbound}/survivor", replacement | {survivor})
