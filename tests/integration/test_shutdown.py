"""Graceful shutdown: SIGTERM tells clients how to come back, then the worker exits."""

from __future__ import annotations

import re
import signal
import time

from clients import SseClient, ws_connect
from conftest import start_procfile


def read_until_closed(sse: SseClient, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = sse.buffer
    while time.monotonic() < deadline:
        sse.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sse.sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"stream not closed; got {data!r}")


def retry_ms(data: bytes) -> int:
    match = re.search(rb"\nretry: (\d+)\n\n", b"\n" + data)
    assert match, data
    return int(match.group(1))


def test_sigterm_sends_sse_retry_with_jitter_closes_ws_with_1001_and_exits(gateway_factory):
    gateway = gateway_factory(RECONNECT_RETRY_MS="1000", RECONNECT_JITTER_MS="3000")
    streams = [gateway.sse([{"eventType": "bye"}]) for _ in range(20)]
    for sse in streams:
        sse.events(2)
    ws = ws_connect(gateway.connect_url("ws"))
    ws.recv(), ws.recv()
    gateway.proc.send_signal(signal.SIGTERM)
    retries = [retry_ms(read_until_closed(sse)) for sse in streams]
    assert all(1000 <= r <= 4000 for r in retries), retries
    assert len(set(retries)) > 1, "every client was told the same delay: no jitter"
    frame = ws.recv_frame()
    assert frame.opcode == 8 and int.from_bytes(frame.data[:2], "big") == 1001
    assert gateway.proc.wait(10) == 0


def test_gunicorn_worker_drains_its_streams_on_sigterm(tmp_path):
    gateway = start_procfile(tmp_path, {"WEB_CONCURRENCY": "1"})
    try:
        sse = gateway.sse([{"eventType": "bye"}])
        sse.events(2)
        gateway.proc.send_signal(signal.SIGTERM)
        assert 1000 <= retry_ms(read_until_closed(sse)) <= 5000
        assert gateway.proc.wait(20) == 0
    finally:
        gateway.stop()
