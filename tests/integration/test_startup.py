"""Start-up: configuration errors, gunicorn and the Procfile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from clients import ce
from conftest import ROOT, free_port, procfile_command


def run_gateway(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig_actors"],
        cwd=ROOT,
        env={**os.environ, "BIND_ADDRESS": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_config_value_stops_startup_with_one_line_naming_the_key():
    result = run_gateway({"INBOUND_PORT": "abc"})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "INBOUND_PORT" in lines[0] and "abc" in lines[0]


def test_bad_jwt_algorithm_stops_startup():
    result = run_gateway({"JWT_ALG": "none"})
    assert result.returncode != 0
    assert "JWT_ALG" in result.stderr


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_procfile_runs_gunicorn_on_port_with_internal_api(tmp_path):
    port, api = free_port(), free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "API_HTTP_PORT": str(api),
        "BIND_ADDRESS": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {procfile_command()}"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_rig/health", proc, log)
        wait_healthy(f"http://127.0.0.1:{api}/health", proc, log)
        from clients import SseClient

        url = f"http://127.0.0.1:{port}/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22g%22%7D%5D"
        with SseClient(url) as sse:
            sse.events(2)
            response = requests.post(f"http://127.0.0.1:{api}/v3/messages", json=ce("g", {"x": 1}))
            assert response.status_code == 202
            assert sse.next_event().json["data"] == {"x": 1}
    finally:
        proc.terminate()
        proc.wait(20)


def test_several_workers_without_kafka_are_refused(tmp_path):
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "API_HTTP_PORT": str(free_port()),
        "BIND_ADDRESS": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-c", f"exec {procfile_command()}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "KAFKA_BROKERS" in result.stdout + result.stderr
