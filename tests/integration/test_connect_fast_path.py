"""The connect fast path: plain SSE connects skip pywsgi's parser and Flask.

Whatever takes the fast path, or is left to the full path, the client must
see the same gateway: a working stream, or the same error answer.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import pytest
import requests
from clients import SseClient, ce, sign_jwt
from conftest import JWT_SECRET

SSE = "/_rig/v1/connection/sse"
SUBS = quote('[{"eventType":"fastpath.greeting"}]')


def fast_connects(gateway) -> int:
    return gateway.stats()["counters"].get("fast_connects", 0)


def read_stream_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def open_raw(gateway, head: bytes, pieces: int = 1, pause_s: float = 0.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.inbound_port), timeout=5)
    step = -(-len(head) // pieces)
    for i in range(0, len(head), step):
        sock.sendall(head[i : i + step])
        if pause_s:
            time.sleep(pause_s)
    return sock


def test_plain_sse_connect_takes_the_fast_path_and_streams_events(gateway):
    before = fast_connects(gateway)
    with gateway.sse([{"eventType": "fastpath.greeting"}]) as sse:
        assert sse.status == 200
        assert [e.type for e in sse.events(2)] == ["rig.connection.create", "rig.subscriptions_set"]
        assert fast_connects(gateway) == before + 1
        gateway.publish(ce("fastpath.greeting", {"n": 1}, id_="fp-1"))
        assert sse.next_event().json["id"] == "fp-1"


def test_head_and_greeting_arrive_in_one_write(gateway):
    # The greeting waits for rig.subscriptions_set: the head, the
    # connection token and the subscription set arrive together.
    sock = open_raw(gateway, f"GET {SSE}?subscriptions={SUBS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with sock:
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"rig.connection.create" in first and b"rig.subscriptions_set" in first


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("", id="plain"),
        pytest.param("X-Long: " + "a" * 9000 + "\r\n", id="head over the peek size"),
    ],
)
def test_head_sent_in_slow_pieces_is_served_by_the_full_path(gateway, extra):
    before = fast_connects(gateway)
    head = f"GET {SSE}?subscriptions={SUBS} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    with open_raw(gateway, head, pieces=3, pause_s=0.3) as sock:
        data = read_stream_until(sock, b"rig.subscriptions_set")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"rig.subscriptions_set" in data
        gateway.publish(ce("fastpath.greeting", {"n": 2}, id_="fp-slow"))
        assert b'"id": "fp-slow"' in read_stream_until(sock, b"fp-slow")
    assert fast_connects(gateway) == before


def test_bytes_pipelined_after_the_head_do_not_disturb_the_stream(gateway):
    head = f"GET {SSE}?subscriptions={SUBS} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with open_raw(gateway, head + b"GET /other HTTP/1.1\r\n\r\n") as sock:
        assert b"rig.subscriptions_set" in read_stream_until(sock, b"rig.subscriptions_set")
        gateway.publish(ce("fastpath.greeting", {"n": 3}, id_="fp-pipe"))
        assert b'"id": "fp-pipe"' in read_stream_until(sock, b"fp-pipe")


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("jwt=not-a-token", 400, "could not parse subscriptions: could not decode JWT:"),
        ("subscriptions=%7Bnope", 400, "Failed to decode subscription list:"),
        ("subscriptions=" + quote('[{"oneOf":[]}]'), 400, "could not parse subscriptions"),
    ],
)
def test_refused_connects_get_the_full_paths_answer(gateway, query, status, text):
    before = fast_connects(gateway)
    response = requests.get(f"{gateway.inbound}{SSE}?{query}", timeout=5)
    assert response.status_code == status
    assert response.text.startswith(text)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-rig-worker"]  # the full path's response headers
    assert fast_connects(gateway) == before


def test_other_methods_and_encoded_paths_still_connect(gateway):
    for method, path in [("POST", SSE), ("GET", "/_rig/v1/connection/%73se")]:
        head = f"{method} {path}?subscriptions={SUBS} HTTP/1.1\r\nHost: x\r\n"
        body = "Content-Length: 0\r\n\r\n" if method == "POST" else "\r\n"
        with open_raw(gateway, (head + body).encode()) as sock:
            data = read_stream_until(sock, b"rig.subscriptions_set")
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), (method, path, data[:200])


def test_jwt_in_header_or_query_subscribes_the_same_on_the_fast_path(gateway):
    token = sign_jwt(JWT_SECRET, sub="fast-user")
    with (
        SseClient(f"{gateway.inbound}{SSE}", headers={"Authorization": f"Bearer {token}"}) as a,
        SseClient(f"{gateway.inbound}{SSE}?jwt={token}") as b,
    ):
        set_a = a.events(2)[1]
        set_b = b.events(2)[1]
        assert set_a.type == set_b.type == "rig.subscriptions_set"
        assert set_a.json["data"] == set_b.json["data"]


def test_internal_api_port_never_takes_the_fast_path(gateway):
    before = fast_connects(gateway)
    response = requests.get(f"{gateway.api}{SSE}", timeout=5)
    assert response.status_code == 404
    assert fast_connects(gateway) == before
