"""Limits against hostile clients, over raw sockets against the real gateway.

Request line (414), header block (431), bodies (413), the request phase's
time limit ``REQUEST_TIMEOUT_MS`` (408 or a closed connection for slow,
trickling and idle clients) and that established streams and waiting
long-polls are *not* subject to it. Subscription and constraint limits and
the WebSocket frame limit have their own tests in
``test_connection_limits.py`` and ``test_websocket.py``; the frame limit is
checked here once more with a small configured value.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import requests
from clients import ce, ws_close_of, ws_connect
from conftest import wait_until

TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def gw(gateway_factory):
    return gateway_factory(
        REQUEST_TIMEOUT_MS=str(int(TIMEOUT_S * 1000)),
        MAX_EVENT_BODY_BYTES="1024",
        LONGPOLLING_WAIT_MS="1500",
        WS_MAX_FRAME_BYTES="1024",
    )


def raw(port: int, data: bytes, *, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response else 0


# --------------------------------------------------------------------------- #
# Size
# --------------------------------------------------------------------------- #


def test_request_line_over_8_kib_is_414(gw):
    sock = raw(gw.inbound_port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(read_all(sock)) == 414


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 40000 + b"\r\n",
        b"".join(b"X-%d: 1\r\n" % i for i in range(101)),
        b"".join(b"X-%d: " % i + b"a" * 400 + b"\r\n" for i in range(90)),
    ],
    ids=["one huge header", "101 headers", "36 KiB of headers"],
)
def test_header_block_over_the_limit_is_431(gw, headers):
    for port in (gw.inbound_port, gw.api_port):
        sock = raw(port, b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        response = read_all(sock)
        assert status_of(response) == 431, response[:200]
        assert b"Request headers too large" in response


def test_headers_within_the_limit_are_fine(gw):
    headers = b"".join(b"X-%d: " % i + b"a" * 200 + b"\r\n" for i in range(98))
    sock = raw(gw.inbound_port, b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(read_all(sock, 1.0)) == 200


def test_event_body_over_the_limit_is_413_declared_or_chunked(gw):
    event = ce("big", "x" * 2000)
    response = requests.post(f"{gw.inbound}/_rig/v1/events", json=event, timeout=10)
    assert response.status_code == 413
    chunks = (json.dumps(event)[i : i + 100].encode() for i in range(0, 2200, 100))
    chunked = requests.post(
        f"{gw.api}/v3/messages",
        data=chunks,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 413


def test_put_body_over_the_limit_is_413(gw):
    subs = [{"eventType": f"t{i}"} for i in range(100)]
    response = requests.put(
        f"{gw.inbound}/_rig/v1/connection/sse/any-token/subscriptions",
        json={"subscriptions": subs},
        timeout=10,
    )
    assert response.status_code == 413


def test_websocket_frame_over_the_configured_limit_closes_with_1009(gw):
    ws = ws_connect(gw.connect_url("ws"))
    try:
        ws.recv(), ws.recv()
        ws.send("x" * 2000)
        assert ws_close_of(ws)[0] == 1009
    finally:
        ws.close()


# --------------------------------------------------------------------------- #
# Time: the request phase only
# --------------------------------------------------------------------------- #


def test_silent_client_is_disconnected_after_the_request_timeout(gw):
    started = time.monotonic()
    sock = raw(gw.inbound_port, b"GET /_rig/hea")  # never finishes the line
    assert read_all(sock) == b""
    assert TIMEOUT_S * 0.8 < time.monotonic() - started < TIMEOUT_S + 1.0


def test_unfinished_headers_get_408(gw):
    started = time.monotonic()
    sock = raw(gw.inbound_port, b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n")
    response = read_all(sock)
    assert status_of(response) == 408, response
    assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_trickling_headers_cannot_extend_the_deadline(gw):
    # One byte every 100 ms: each read is quick, the whole head is not.
    sock = raw(gw.inbound_port, b"GET /_rig/health HTTP/1.1\r\n")
    started = time.monotonic()
    sock.settimeout(0.05)
    answer = b""
    while time.monotonic() - started < 3:
        try:
            sock.sendall(b"X")
        except OSError:
            break
        try:
            answer += sock.recv(4096)
            if answer:
                break
        except TimeoutError:
            pass
        time.sleep(0.1)
    answer += read_all(sock, 1.0)
    assert status_of(answer) == 408
    assert time.monotonic() - started < TIMEOUT_S + 1.0


@pytest.mark.parametrize("api", [False, True])
def test_slow_body_gets_408_and_the_connection_closes(gw, api):
    port = gw.api_port if api else gw.inbound_port
    path = b"/v3/messages" if api else b"/_rig/v1/events"
    started = time.monotonic()
    sock = raw(
        port,
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"spec",
    )
    response = read_all(sock)
    assert status_of(response) == 408, response
    assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_idle_keep_alive_connection_is_closed(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.inbound_port, timeout=5)
    conn.request("GET", "/_rig/health")
    assert conn.getresponse().read() == b"OK"
    started = time.monotonic()
    assert read_all(conn.sock) == b""
    assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_kept_alive_connection_serves_requests_in_time(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.inbound_port, timeout=5)
    ports = set()
    for _ in range(3):
        conn.request("GET", "/_rig/health")
        assert conn.getresponse().read() == b"OK"
        ports.add(conn.sock.getsockname()[1])
        time.sleep(TIMEOUT_S / 2)
    assert len(ports) == 1  # one connection, kept alive
    conn.close()


def test_established_streams_are_not_timed_out(gw):
    ws = ws_connect(gw.connect_url("ws", [{"eventType": "late"}]))
    with gw.sse([{"eventType": "late"}]) as sse:
        sse.events(2)
        ws.recv(), ws.recv()
        time.sleep(3 * TIMEOUT_S)
        event = ce("late", {"n": 1})
        gw.publish(event)
        assert sse.next_event(2).json == event
        received = json.loads(ws.recv())
        received.pop("rigeventid")  # the replay id (ws_event_ids, on by default)
        assert received == event
    ws.close()


def test_a_long_poll_may_wait_longer_than_the_request_timeout(gw):
    session = requests.Session()
    url = gw.connect_url("longpolling", [{"eventType": "lp"}])
    assert session.get(url, timeout=10).json() == "ok"
    session.get(url, timeout=10)  # the two greeting events
    started = time.monotonic()
    answer = session.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["events"] == []
    assert time.monotonic() - started > 1.4  # LONGPOLLING_WAIT_MS


def test_the_gateway_still_serves_and_nothing_crashed(gw):
    wait_until(lambda: requests.get(f"{gw.inbound}/_rig/health", timeout=5).ok)
    stats = gw.stats()
    assert stats["restarts"] == 0
    assert stats["counters"]["crashes"] == 0
    assert "Traceback" not in gw.log()
