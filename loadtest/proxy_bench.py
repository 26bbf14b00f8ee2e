#!/usr/bin/env python3
"""Reverse-proxy overhead: the same requests straight to a backend and through the gateway.

Run from the repository root, with the project's virtualenv active::

    python loadtest/proxy_bench.py                       # defaults below
    python loadtest/proxy_bench.py --requests 20000 --concurrency 1 32 --json out.json

What it does:

1. starts a small gevent WSGI backend (this file with ``--serve-backend``)
   that answers every request with a fixed ``--body-bytes`` body, and the
   gateway (``python -m rig_actors``, no Kafka) with one route,
   ``GET /bench/(.*)`` -> the backend's ``/\\1``; both on loopback ports;
2. for each ``--concurrency`` value, sends ``--requests`` requests over that
   many keep-alive connections (geventhttpclient), first to the backend
   directly, then through the gateway, after ``--warmup`` requests each;
   every run is also bounded by ``--max-seconds``;
3. prints requests/s and latency percentiles for both, the latency the
   gateway adds (gateway percentile minus direct percentile) and the
   gateway's CPU time per request (``/proc/<pid>/stat``; it hardly changes
   when other processes compete for the CPUs, unlike the other figures),
   and writes them as JSON with ``--json``.

With two CPUs the gateway is pinned to CPU 0 and the backend and this
client to CPU 1 (``taskset``; ``--no-pin`` turns it off), so the gateway
has a core to itself in both kinds of run. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------- backend


def serve_backend(port: int, body_bytes: int) -> None:
    """The backend: pywsgi, keep-alive, one fixed body, no logging."""
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer

    body = b"x" * body_bytes
    headers = [("content-type", "application/octet-stream"), ("content-length", str(len(body)))]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [body]

    class NoDelayServer(WSGIServer):
        # pywsgi writes the head and the body separately: without this each
        # kept-alive response would wait out the client's 40 ms delayed ACK.
        def handle(self, sock: Any, address: Any) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    server = NoDelayServer(("127.0.0.1", port), app, log=None, backlog=1024)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=1))
    server.serve_forever()


# ---------------------------------------------------------------------- client


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_load(
    port: int, path: str, requests: int, concurrency: int, warmup: int, max_seconds: float
) -> dict[str, Any]:
    """``requests`` GETs over ``concurrency`` keep-alive connections; latencies in ms."""
    import gevent
    from geventhttpclient import HTTPClient

    client = HTTPClient(
        "127.0.0.1", port, concurrency=concurrency, network_timeout=30, connection_timeout=10
    )
    try:
        for _ in range(warmup):
            response = client.get(path)
            response.read()
        latencies: list[float] = []
        errors = 0
        remaining = [requests]
        deadline = time.monotonic() + max_seconds

        def worker() -> None:
            nonlocal errors
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                started = time.perf_counter()
                try:
                    response = client.get(path)
                    response.read()
                    if response.status_code != 200:
                        errors += 1
                        continue
                except Exception:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50), 3),
        "p90_ms": round(percentile(latencies, 90), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else None,
    }


# ------------------------------------------------------------------ processes

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def wait_for(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on port {port}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=10000, help="per run (default 10000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="bound of each run")
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend, args.body_bytes)
        return 0

    from gevent import monkey

    monkey.patch_all()

    two_cpus = os.cpu_count() == 2 and shutil.which("taskset") and not args.no_pin
    gateway_cpu, other_cpu = (0, 1) if two_cpus else (None, None)
    if other_cpu is not None:
        os.sched_setaffinity(0, {other_cpu})

    backend_port, inbound, api = free_port(), free_port(), free_port()
    route = [
        {
            "id": "bench",
            "name": "bench",
            "proxy": {"target_url": "127.0.0.1", "port": backend_port},
            "version_data": {
                "default": {
                    "endpoints": [
                        {
                            "id": "bench",
                            "method": "GET",
                            "path_regex": "/bench/(.*)",
                            "path_replacement": "/\\1",
                        }
                    ]
                }
            },
        }
    ]
    backend = subprocess.Popen(
        pin(
            [
                sys.executable,
                __file__,
                "--serve-backend",
                str(backend_port),
                "--body-bytes",
                str(args.body_bytes),
            ],
            other_cpu,
        )
    )
    env = {
        **os.environ,
        "INBOUND_PORT": str(inbound),
        "API_HTTP_PORT": str(api),
        "BIND_ADDRESS": "127.0.0.1",
        "LOG_LEVEL": "warn",
        "PROXY_CONFIG_FILE": json.dumps(route),
        "RIG_CONFIG": str(REPO / "config.yaml"),
    }
    env.pop("KAFKA_BROKERS", None)
    gateway = subprocess.Popen(
        pin([sys.executable, "-m", "rig_actors"], gateway_cpu), cwd=REPO, env=env
    )
    results: dict[str, Any] = {
        "requests": args.requests,
        "body_bytes": args.body_bytes,
        "pinned": bool(two_cpus),
        "runs": [],
    }
    try:
        wait_for(backend_port, "/", backend)
        wait_for(inbound, "/bench/x", gateway)
        for concurrency in args.concurrency:
            direct = run_load(
                backend_port, "/x", args.requests, concurrency, args.warmup, args.max_seconds
            )
            cpu_before = cpu_seconds(gateway.pid)
            proxied = run_load(
                inbound, "/bench/x", args.requests, concurrency, args.warmup, args.max_seconds
            )
            # The gateway's own CPU per request: barely moved by other load on
            # the machine, unlike requests/s and latency.
            served = proxied["requests"] + args.warmup
            proxied["gateway_cpu_us_per_request"] = round(
                (cpu_seconds(gateway.pid) - cpu_before) / served * 1e6, 1
            )
            results["runs"].append(
                {
                    "concurrency": concurrency,
                    "direct": direct,
                    "gateway": proxied,
                    "added_p50_ms": round(proxied["p50_ms"] - direct["p50_ms"], 3),
                    "added_p99_ms": round(proxied["p99_ms"] - direct["p99_ms"], 3),
                }
            )
    finally:
        stop(gateway)
        stop(backend)

    header = f"{'conc':>4} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
    print(header + f"{'max ms':>8} {'errors':>6}")
    for run in results["runs"]:
        for name in ("direct", "gateway"):
            r = run[name]
            print(
                f"{run['concurrency']:>4} {name:<8} {r['rps']:>9.1f} {r['p50_ms']:>8.3f} "
                f"{r['p90_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f} {r['errors']:>6}"
            )
        print(
            f"{run['concurrency']:>4} added    p50 +{run['added_p50_ms']:.3f} ms, "
            f"p99 +{run['added_p99_ms']:.3f} ms; gateway CPU "
            f"{run['gateway']['gateway_cpu_us_per_request']:.0f} us/request"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
