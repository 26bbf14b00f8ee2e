"""Tests for rig_actors.transports.head: the connect fast path's strict head parser."""

from __future__ import annotations

import pytest

from rig_actors.transports.head import parse_head

PLAIN = (
    b"GET /_rig/v1/connection/sse?subscriptions=%5B%5D HTTP/1.1\r\n"
    b"Host: 127.0.0.1:4000\r\n"
    b"Authorization: Bearer a\r\n"
    b"authorization:Bearer b \r\n"
    b"Last-Event-ID: k1.0.0.7\r\n"
    b"\r\n"
)


def test_plain_head_is_parsed_with_lowercase_names_and_stripped_values() -> None:
    head = parse_head(PLAIN + b"trailing bytes")
    assert head is not None
    assert (head.method, head.path, head.query, head.version) == (
        "GET",
        "/_rig/v1/connection/sse",
        "subscriptions=%5B%5D",
        "HTTP/1.1",
    )
    assert head.size == len(PLAIN)
    assert head.get("last-event-id") == "k1.0.0.7"
    assert head.getlist("authorization") == ["Bearer a", "Bearer b"]
    # Joined as pywsgi joins repeated headers into one environ value.
    assert head.get("authorization") == "Bearer a,Bearer b"
    assert head.get("cookie") is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PLAIN[:-2], id="incomplete head"),
        pytest.param(b"GET /x HTTP/1.0\r\n\r\n", id="HTTP/1.0"),
        pytest.param(b"GET  /x HTTP/1.1\r\n\r\n", id="double space"),
        pytest.param(b"GET x HTTP/1.1\r\n\r\n", id="not origin-form"),
        pytest.param(b"G\xc3\x89T /x HTTP/1.1\r\n\r\n", id="non-ascii"),
        pytest.param(b"GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", id="folded header"),
        pytest.param(b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n", id="space before colon"),
        pytest.param(b"GET /x HTTP/1.1\r\nnocolon\r\n\r\n", id="no colon"),
        pytest.param(b"GET /x HTTP/1.1\r\nA: b\nC: d\r\n\r\n", id="bare LF"),
        pytest.param(b"GET /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", id="body"),
        pytest.param(b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
        pytest.param(b"GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", id="expect"),
        pytest.param(b"GET /x HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", id="too long"),
        pytest.param(b"GET /x HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", id="101 header lines"),
    ],
)
def test_anything_but_the_plain_case_is_left_to_the_full_parser(data: bytes) -> None:
    assert parse_head(data) is None
