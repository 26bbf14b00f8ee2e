"""MAX_HEADER_BYTES: the header block limit is a setting, and no path skips it.

The connect fast path parses heads itself; a head the full path would
answer 431 must never become a stream through it.
"""

from __future__ import annotations

import socket

import pytest

SSE = "/_rig/v1/connection/sse"


def exchange(port: int, head: bytes, timeout: float = 3.0) -> bytes:
    """Send ``head``; what the server sends back within ``timeout`` (or until it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"rig.subscriptions_set" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


@pytest.fixture(scope="module")
def small(gateway_factory):
    return gateway_factory(MAX_HEADER_BYTES="4096")


@pytest.mark.parametrize("path", ["/_rig/health", SSE])
def test_a_configured_header_limit_is_enforced_on_every_path(small, path):
    big = b"X-Big: " + b"a" * 5000 + b"\r\n"
    response = exchange(
        small.inbound_port, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + big + b"\r\n"
    )
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert b"at most 100 lines and 4096 bytes" in response


def test_headers_within_a_configured_limit_pass(small):
    ok = b"X-Ok: " + b"a" * 3000 + b"\r\n"
    response = exchange(
        small.inbound_port, f"GET {SSE} HTTP/1.1\r\nHost: x\r\n".encode() + ok + b"\r\n"
    )
    assert response.startswith(b"HTTP/1.1 200 OK"), response[:200]
    assert b"rig.subscriptions_set" in response


def test_too_many_header_lines_never_open_a_stream(gateway):
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    response = exchange(gateway.inbound_port, f"GET {SSE} HTTP/1.1\r\n".encode() + many + b"\r\n")
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
