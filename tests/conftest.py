"""Fixtures that run the real gateway: ``python -m rig_actors`` on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from clients import SseClient
from kafka_broker import Broker

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    inbound_port: int
    api_port: int
    log_path: Path

    @property
    def inbound(self) -> str:
        return f"http://127.0.0.1:{self.inbound_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.inbound_port}"

    def connect_url(
        self, transport: str, subscriptions: list[dict[str, Any]] | None = None, **params: str
    ) -> str:
        """URL of a connect endpoint (``sse``, ``ws``, ``longpolling``) with parameters."""
        query = dict(params)
        if subscriptions is not None:
            query["subscriptions"] = json.dumps(subscriptions)
        base = self.ws if transport == "ws" else self.inbound
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{base}/_rig/v1/connection/{transport}{suffix}"

    def sse(self, subscriptions: list[dict[str, Any]] | None = None, **params: str) -> SseClient:
        return SseClient(self.connect_url("sse", subscriptions, **params))

    def stats(self, **params: Any) -> dict[str, Any]:
        return requests.get(f"{self.api}/_rig/stats", params=params, timeout=10).json()

    def publish(self, event: dict[str, Any]) -> requests.Response:
        response = requests.post(f"{self.api}/v3/messages", json=event, timeout=5)
        assert response.status_code == 202, response.text
        return response

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(tmp_path: Path, env: dict[str, str] | None = None) -> GatewayProcess:
    inbound, api = free_port(), free_port()
    full_env = {
        **os.environ,
        "INBOUND_PORT": str(inbound),
        "API_HTTP_PORT": str(api),
        "BIND_ADDRESS": "127.0.0.1",
        "LOG_LEVEL": "info",
        "NODE_COOKIE": "test-cookie",
        "FAULT_INJECTION": "true",
        "RIG_CONFIG": str(ROOT / "config.yaml"),
        **(env or {}),
    }
    log_path = tmp_path / f"gateway-{inbound}.log"
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rig_actors"],
        cwd=ROOT,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    gateway = GatewayProcess(proc, inbound, api, log_path)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log()}")
        try:
            ok = requests.get(f"{gateway.api}/health", timeout=1).status_code == 200
            ok = ok and requests.get(f"{gateway.inbound}/_rig/health", timeout=1).status_code == 200
            if ok:
                return gateway
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError(f"gateway did not come up:\n{gateway.log()}")
        time.sleep(0.05)


def procfile_command() -> str:
    line = (ROOT / "Procfile").read_text().strip()
    assert line.startswith("web: ")
    return line.removeprefix("web: ")


def start_procfile(tmp_path: Path, env: dict[str, str]) -> GatewayProcess:
    """Run the Procfile's web command (gunicorn) on free ports; wait until it serves."""
    port, api = free_port(), free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    full_env = {
        **os.environ,
        "PORT": str(port),
        "API_HTTP_PORT": str(api),
        "BIND_ADDRESS": "127.0.0.1",
        "NODE_COOKIE": "test-cookie",
        "RIG_CONFIG": str(ROOT / "config.yaml"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **env,
    }
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {procfile_command()}"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(proc, port, api, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{gateway.log()}")
        try:
            if requests.get(f"{gateway.inbound}/_rig/health", timeout=1).ok:
                return gateway
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError(f"gunicorn did not come up:\n{gateway.log()}")
        time.sleep(0.1)


EXTRACTORS = {
    "greeting": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}}},
    "greeting.jwt": {
        "name": {
            "stable_field_index": 0,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        }
    },
    "person": {
        "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}},
        "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}},
    },
}
JWT_SECRET = "secret-for-tests-only-0123456789abcdef"


@pytest.fixture(scope="module")
def gateway_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways with extra settings; they stop when the test module ends.

    Module scope, not session: an idle gateway with Kafka readers still
    polls, and dozens left running would slow down every later test.
    """
    started: list[GatewayProcess] = []

    def factory(**env: str) -> GatewayProcess:
        gateway = start_gateway(tmp_path_factory.mktemp("gw"), env)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The shared default gateway: extractors and an HS256 secret configured."""
    shared = start_gateway(
        tmp_path_factory.mktemp("gw"),
        {"EXTRACTORS": json.dumps(EXTRACTORS), "JWT_SECRET_KEY": JWT_SECRET},
    )
    yield shared
    shared.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One in-memory Tansu broker for the whole session."""
    started = Broker(tmp_path_factory.mktemp("tansu")).start()
    yield started
    started.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def kafka_ready(gateway: GatewayProcess) -> bool:
    response = requests.get(
        f"{gateway.api}/health", headers={"accept": "application/json"}, timeout=5
    )
    return response.ok and response.json().get("kafka", {}).get("state") == "ready"
