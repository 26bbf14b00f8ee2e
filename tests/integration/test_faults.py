"""Faults under load, and replay across workers and nodes through Kafka."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests
from clients import SseClient, ce
from conftest import kafka_ready, start_procfile, wait_until
from test_fabric import clients_on_every_worker, ready_workers

pytestmark = pytest.mark.kafka


def test_a_client_that_reconnects_to_another_node_replays_what_it_missed(broker, gateway_factory):
    topic = broker.new_topic("replay", partitions=1)
    env = {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": topic,
        "KAFKA_CONTROL_TOPIC": broker.new_topic("replay-control"),
    }
    a, b = gateway_factory(**env), gateway_factory(**env)
    wait_until(lambda: kafka_ready(a) and kafka_ready(b), timeout=30)
    subs = [{"eventType": "r"}]
    with a.sse(subs) as on_a:
        on_a.events(2)
        a.publish(ce("r", {"n": 1}))
        last = on_a.next_event(10)
        assert last.id.startswith("k1.")
    for n in (2, 3, 4):
        b.publish(ce("r", {"n": n}))
    b.publish(ce("other", {"n": 0}))
    time.sleep(0.5)  # let node B's live stream move past them
    with SseClient(b.connect_url("sse", subs), headers={"Last-Event-ID": last.id}) as on_b:
        on_b.events(2)
        assert [on_b.next_event(10).json["data"]["n"] for _ in range(3)] == [2, 3, 4]
        b.publish(ce("r", {"n": 5}))
        assert on_b.next_event(10).json["data"] == {"n": 5}
        on_b.expect_silence()


class Reader(threading.Thread):
    """An SSE client that reconnects with Last-Event-ID whenever its stream ends."""

    def __init__(self, gateway, first: SseClient, subs) -> None:
        super().__init__(daemon=True)
        self.gateway, self.sse, self.subs = gateway, first, subs
        self.seen: list[int] = []
        self.reconnects = 0
        self.last_id: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                event = self.sse.next_event(1)
            except TimeoutError:
                continue
            except OSError:
                self._reconnect()
                continue
            if event.type == "fault":
                self.seen.append(event.json["data"]["n"])
                self.last_id = event.id

    def _reconnect(self) -> None:
        self.sse.close()
        self.reconnects += 1
        for _ in range(100):
            try:
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                self.sse = SseClient(
                    self.gateway.connect_url("sse", self.subs), headers=headers
                )
                self.sse.events(2)
                return
            except OSError:
                time.sleep(0.1)


def test_kill_9_of_a_worker_under_load_loses_nothing(broker, tmp_path):
    topic = broker.new_topic("fault", partitions=1)
    gateway = start_procfile(
        tmp_path,
        {
            "WEB_CONCURRENCY": "2",
            "KAFKA_BROKERS": broker.bootstrap,
            "KAFKA_SOURCE_TOPICS": topic,
            "KAFKA_CONTROL_TOPIC": broker.new_topic("fault-control"),
        },
    )
    try:
        workers = ready_workers(gateway, 2)
        subs = [{"eventType": "fault"}]
        firsts = clients_on_every_worker(gateway, workers, subs)
        victim = next(iter(firsts))
        readers = {owner: Reader(gateway, sse, subs) for owner, sse in firsts.items()}
        for reader in readers.values():
            reader.start()
        total = 120
        for n in range(total):
            response = requests.post(f"{gateway.api}/v3/messages", json=ce("fault", {"n": n}))
            assert response.status_code == 202
            if n == 40:
                pid = _worker_pid(gateway, victim)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        wait_until(lambda: all(len(r.seen) >= total for r in readers.values()), timeout=30)
        for owner, reader in readers.items():
            reader.stop.set()
            assert reader.seen == list(range(total)), f"{owner}: lost or repeated events"
        assert readers[victim].reconnects >= 1
        survivor = next(owner for owner in readers if owner != victim)
        assert readers[survivor].reconnects == 0, "the other worker kept delivering"
        # The master replaced the killed worker: two workers answer again.
        assert len(ready_workers(gateway, 2) - {victim}) >= 2
    finally:
        gateway.stop()


def _worker_pid(gateway, worker_id: str) -> int:
    """gunicorn's worker pids are the children of the master; ids start with the pid in hex."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == gateway.proc.pid and worker_id.startswith(f"{int(entry):x}"):
            return int(entry)
    raise AssertionError(f"no worker process for {worker_id}")


@pytest.mark.parametrize("actor", ["kafka-events", "kafka-control", "connections"])
def test_each_actor_type_is_restarted_after_an_injected_crash(broker, gateway_factory, actor):
    topic = broker.new_topic("crash", partitions=1)
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap,
        KAFKA_SOURCE_TOPICS=topic,
        KAFKA_CONTROL_TOPIC=broker.new_topic("crash-control"),
    )
    wait_until(lambda: kafka_ready(gateway), timeout=30)
    restarts = gateway.stats()["restarts"]
    response = requests.post(f"{gateway.api}/_rig/faults", json={"actor": actor}, timeout=5)
    assert response.status_code == 202
    wait_until(lambda: gateway.stats()["restarts"] == restarts + 1)
    wait_until(lambda: kafka_ready(gateway), timeout=30)
    assert f"restarting {actor}" in gateway.log()
    # The restarted tree still delivers.
    with gateway.sse([{"eventType": "after.crash"}]) as sse:
        sse.events(2)
        gateway.publish(ce("after.crash", {"ok": True}))
        assert sse.next_event(15).json["data"] == {"ok": True}
