"""The side-by-side benchmark harness measures rig-actors and Nchan in one command.

``loadtest/harness.py --quick`` at a tiny scale, as a subprocess: it starts the
real gateway and a real nginx with the Nchan module on free loopback ports,
opens real SSE connections and publishes real events to both, and writes its
figures and their ratios as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADTEST = ROOT / "loadtest"
CONNECTIONS = 300
EVENTS = 30
# Figures that cannot be zero when both servers worked. CPU per connect is left
# out: a few hundred connects can take less than one clock tick of Nchan's CPU.
POSITIVE = {
    "connections_held",
    "connect_time_s",
    "connect_rate_per_s",
    "deliveries_per_server_cpu_s",
    "deliveries_per_s",
    "server_cpu_us_per_delivery",
    "latency_p50_ms",
    "latency_p99_ms",
    "publish_rate_achieved",
}


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rig_loadtest_bench", LOADTEST / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


MISSING = load_bench().nchan_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Nchan cannot run: {MISSING}")


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("harness")
    json_path, png_path = out / "harness.json", out / "harness.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(LOADTEST / "harness.py"),
            "--quick",
            "-n",
            str(CONNECTIONS),
            "--events",
            str(EVENTS),
            "--only",
            "idle,connect,burst,rate",
            "--json",
            str(json_path),
            "--png",
            str(png_path),
            "--timeout",
            "240",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"data": json.loads(json_path.read_text()), "png": png_path, "stdout": proc.stdout}


def test_every_scenario_runs_against_both_servers(harness_run: dict[str, Any]) -> None:
    runs = harness_run["data"]["runs"]
    assert sorted((r["key"], r["server"]) for r in runs) == sorted(
        (key, server)
        for key in (
            f"hold-{CONNECTIONS}",
            f"burst-{CONNECTIONS}x{EVENTS}",
            f"rate-{CONNECTIONS}x{EVENTS}@20",
        )
        for server in ("rig", "nchan")
    )
    for run in runs:
        assert run["exit_status"] == 0, run
        assert run["result"]["config"]["server"] == run["server"]
        assert run["result"]["connections_held"] == CONNECTIONS, run["log"]


def test_both_servers_deliver_every_event(harness_run: dict[str, Any]) -> None:
    publishing = [r for r in harness_run["data"]["runs"] if r["spec"]["kind"] != "hold"]
    assert {r["server"] for r in publishing} == {"rig", "nchan"}
    for run in publishing:
        res = run["result"]
        assert res["publish"]["accepted"] == EVENTS, run["log"]
        assert res["deliveries_expected"] == CONNECTIONS * EVENTS
        assert res["deliveries"] == CONNECTIONS * EVENTS, run["log"]
        assert res["lost_deliveries"] == 0
        assert res["excess_deliveries"] == 0
        assert res["latency_samples"] > 0


def test_figures_are_positive_and_ratios_come_from_their_medians(
    harness_run: dict[str, Any],
) -> None:
    figures = harness_run["data"]["figures"]
    assert {f["field"] for f in figures} >= POSITIVE
    for f in figures:
        assert f["rig"]["values"] and f["nchan"]["values"], f
        if f["field"] in POSITIVE:
            assert f["rig"]["median"] > 0 and f["nchan"]["median"] > 0, f
    compared = [f for f in figures if f["better"] in ("higher", "lower")]
    assert {f["field"] for f in compared} >= POSITIVE - {"publish_rate_achieved"}
    for f in compared:
        rig, nchan = f["rig"]["median"], f["nchan"]["median"]
        if rig is None or nchan is None or min(rig, nchan) <= 0:
            assert f["ratio"] is None, f
        elif f["better"] == "higher":
            assert f["ratio_of"] == "rig/nchan"
            assert f["ratio"] == pytest.approx(rig / nchan)
        else:
            assert f["ratio_of"] == "nchan/rig"
            assert f["ratio"] == pytest.approx(nchan / rig)
    lost = [f for f in figures if f["field"] == "lost_deliveries"]
    assert lost and all(f["rig"]["median"] == 0 == f["nchan"]["median"] for f in lost)
    assert all(f["verdict"] == "met" for f in lost)


def test_the_table_and_the_plot_show_both_servers(harness_run: dict[str, Any]) -> None:
    stdout = harness_run["stdout"]
    assert "deliveries per server CPU-second" in stdout
    assert "rig/nchan" in stdout and "nchan/rig" in stdout
    assert harness_run["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert harness_run["data"]["peer"]["nchan"]
