"""Routes from configuration: PROXY_CONFIG_FILE (JSON or YAML), ``apis:`` in YAML (RIG §7.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from backend import Backend
from conftest import ROOT, free_port

ROUTE = {
    "id": "from-config",
    "name": "from config",
    "proxy": {"target_url": "localhost", "port": 0},
    "version_data": {
        "default": {"endpoints": [{"id": "e", "method": "get", "path_regex": "/configured"}]}
    },
}


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


def route_for(backend: Backend) -> dict:
    return {**ROUTE, "proxy": {"target_url": "localhost", "port": backend.port}}


def test_proxy_config_file_may_be_yaml(backend: Backend, gateway_factory, tmp_path: Path) -> None:
    path = tmp_path / "apis.yaml"
    path.write_text(yaml.safe_dump([route_for(backend)]))
    gateway = gateway_factory(PROXY_CONFIG_FILE=str(path))
    response = requests.get(f"{gateway.inbound}/configured", timeout=5)
    assert response.status_code == 200 and response.json()["path"] == "/configured"
    gateway.stop()


def test_apis_in_the_yaml_config_file(backend: Backend, gateway_factory, tmp_path: Path) -> None:
    config = tmp_path / "rig.yaml"
    config.write_text(yaml.safe_dump({"log_level": "info", "apis": [route_for(backend)]}))
    gateway = gateway_factory(RIG_CONFIG=str(config))
    assert requests.get(f"{gateway.inbound}/configured", timeout=5).status_code == 200
    listed = requests.get(f"{gateway.api}/v3/apis", timeout=5).json()
    assert [api["id"] for api in listed] == ["from-config"]
    gateway.stop()


def run_gateway(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig_actors"],
        cwd=ROOT,
        env={
            **os.environ,
            "BIND_ADDRESS": "127.0.0.1",
            "INBOUND_PORT": str(free_port()),
            "API_HTTP_PORT": str(free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_an_invalid_definition_stops_startup_with_the_error_map(tmp_path: Path) -> None:
    invalid = [{**ROUTE, "version_data": {"default": {"endpoints": [{"id": "e"}]}}}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(invalid))
    result = run_gateway({"PROXY_CONFIG_FILE": str(path)})
    assert result.returncode != 0
    expected = {
        "from-config/e": [
            {"path_regex": "must be string"},
            {"path_regex": "must have a length of at least 1"},
            {"method": "must be string"},
            {"method": "must have a length of at least 1"},
        ]
    }
    output = result.stdout + result.stderr
    assert "PROXY_CONFIG_FILE" in output
    assert json.dumps(expected, separators=(",", ":")) in output, output
