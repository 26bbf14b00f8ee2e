"""Fuzzing every endpoint of a live gateway with hypothesis.

The endpoints are not listed by hand: they are read from the inbound and
internal Flask apps' URL maps (so an endpoint added later is fuzzed too),
and each request goes over a raw socket (no client library "fixes" the
path or the headers). The inputs: malformed and deeply nested JSON, values
of the wrong type in subscription, event, blacklist and API bodies, huge
and invalid-UTF-8 bodies, bogus, expired, unsigned and validly signed
tokens with odd claims, bogus cookies, path tricks (``..``, ``%00``, very
long, unicode), odd methods and headers; and random WebSocket frames after
a real handshake.

Asserted throughout:

- no answer is a 5xx;
- the process stays up, no supervisor restarted anything (``restarts``
  in ``/_rig/stats``) and no traceback reached the log (connection actors
  that end on bad input just close);
- a separate SSE client keeps receiving a steady stream of events, in
  order, without a gap over one second (:class:`Monitor`).

Bounded in time: ``max_examples`` per test and no per-example deadline; the
whole module runs in well under a minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests
from clients import SseClient
from conftest import EXTRACTORS, JWT_SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HTTP_EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "500"))
WS_EXAMPLES = int(os.environ.get("FUZZ_WS_EXAMPLES", "150"))

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# --------------------------------------------------------------------------- #
# The gateway under fuzz, and the bystander that must keep receiving
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def gw(gateway_factory):
    return gateway_factory(
        EXTRACTORS=json.dumps(EXTRACTORS),
        JWT_SECRET_KEY=JWT_SECRET,
        SUBMISSION_CHECK="jwt_validation",
        LONGPOLLING_WAIT_MS="50",
        REQUEST_TIMEOUT_MS="2000",
        FAULT_INJECTION="false",  # /_rig/faults would crash actors on request
        MAX_CONNECTIONS_PER_MINUTE="100000",
    )


class Monitor:
    """An SSE client fed one event every 50 ms; records what it receives, and when."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.sse = SseClient(gateway.connect_url("sse", [{"eventType": "fuzz.monitor"}]))
        self.sse.events(2)
        self.published = 0
        self.received: list[tuple[int, float]] = []
        self.problems: list[str] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _publish(self) -> None:
        session = requests.Session()
        while not self.stopping.is_set():
            n = self.published + 1
            event = {"specversion": "1.0", "type": "fuzz.monitor", "source": "m", "id": str(n)}
            try:
                response = session.post(f"{self.gateway.api}/v3/messages", json=event, timeout=5)
                if response.status_code != 202:
                    self.problems.append(f"publish {n}: {response.status_code}")
            except requests.RequestException as exc:
                self.problems.append(f"publish {n}: {exc}")
            self.published = n
            time.sleep(0.05)

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                event = self.sse.next_event(2)
            except Exception as exc:
                if not self.stopping.is_set():
                    self.problems.append(f"monitor stream: {type(exc).__name__}: {exc}")
                return
            self.received.append((int(event.json["id"]), time.monotonic()))

    def check(self) -> None:
        """Every event published until a moment ago arrived, in order, without long gaps."""
        published = self.published
        deadline = time.monotonic() + 3
        while len(self.received) < published - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.problems, self.problems[:5]
        ids = [n for n, _ in self.received]
        assert ids == list(range(1, len(ids) + 1)), "events lost or out of order"
        assert len(ids) >= published - 1
        times = [t for _, t in self.received]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps, default=0) < 1.0, f"the monitor stalled for {max(gaps):.2f} s"

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        self.sse.close()


@pytest.fixture(scope="module")
def monitor(gw):
    watching = Monitor(gw)
    yield watching
    watching.stop()


@pytest.fixture(scope="module")
def victim(gw) -> str:
    """A live SSE connection's token: PUTs and polls with it reach a real actor."""
    sse = gw.sse([{"eventType": "greeting"}])
    token = sse.events(2)[0].json["data"]["connection_token"]
    yield token
    sse.close()


def assert_healthy(gw, monitor: Monitor) -> None:
    assert gw.proc.poll() is None, "the gateway exited"
    stats = gw.stats()
    assert stats["restarts"] == 0, stats
    # Connection actors that ended on bad input are allowed; they are counted.
    crashes = stats["counters"].get("crashes")
    print(f"\nconnection crashes: {crashes}, monitor events: {len(monitor.received)}")
    monitor.check()
    log = gw.log()
    assert "Traceback" not in log, log[
        log.index("Traceback") - 2000 : log.index("Traceback") + 3000
    ]


# --------------------------------------------------------------------------- #
# Every endpoint, from the apps themselves
# --------------------------------------------------------------------------- #


def discover_routes() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(listener, rule, methods)`` of every route of both apps (built, not started)."""
    from rig_actors.config import load_settings
    from rig_actors.gateway import Gateway
    from rig_actors.web.inbound import create_inbound_app
    from rig_actors.web.internal import create_internal_app

    gateway = Gateway(load_settings(env={}))
    routes = []
    for listener, app in (
        ("inbound", create_inbound_app(gateway)),
        ("internal", create_internal_app(gateway)),
    ):
        for rule in app.url_map.iter_rules():
            methods = tuple(sorted(rule.methods or ())) or ("GET", "POST", "PUT", "DELETE")
            routes.append((listener, rule.rule, methods))
    return routes


ROUTES = discover_routes()
_ARG = re.compile(r"<(?:([^:<>]+):)?([^<>]+)>")


def test_discovery_found_the_core_endpoints():
    rules = {(listener, rule) for listener, rule, _ in ROUTES}
    for expected in [
        ("inbound", "/_rig/v1/connection/sse"),
        ("inbound", "/_rig/v1/connection/ws"),
        ("inbound", "/_rig/v1/connection/longpolling"),
        ("inbound", "/_rig/v1/connection/<transport>/<token>/subscriptions"),
        ("inbound", "/_rig/v1/events"),
        ("inbound", "/_rig/health"),
        ("internal", "/v3/messages"),
        ("internal", "/v2/session-blacklist"),
        ("internal", "/v3/session-blacklist/<path:session_id>"),
        ("internal", "/_rig/stats"),
    ]:
        assert expected in rules


# --------------------------------------------------------------------------- #
# Strategies
# --------------------------------------------------------------------------- #

safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=40
)  # no control characters: they would end the header line
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
subscription_like = st.fixed_dictionaries(
    {"eventType": st.one_of(st.sampled_from(["greeting", "greeting.jwt", "person"]), json_values)},
    optional={
        "oneOf": st.one_of(
            json_values,
            st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=3), max_size=4),
        )
    },
)
subscriptions_body = st.one_of(
    st.fixed_dictionaries({"subscriptions": st.lists(subscription_like, max_size=6)}),
    st.fixed_dictionaries({"subscriptions": json_values}),
    st.lists(subscription_like, max_size=4),
)
event_like = st.fixed_dictionaries(
    {
        "specversion": st.one_of(st.sampled_from(["0.1", "0.2", "1.0", "2.0"]), json_values),
        "type": st.one_of(st.sampled_from(["greeting", "person", "fuzz"]), json_values),
        "source": st.one_of(st.just("fuzz"), json_values),
        "id": st.one_of(st.text(max_size=10), json_values),
    },
    optional={
        "data": json_values,
        "time": json_values,
        "datacontenttype": json_values,
        "contenttype": json_values,
        "cloudEventsVersion": json_values,
        "eventType": json_values,
        "data_base64": json_values,
    },
)
blacklist_like = st.fixed_dictionaries(
    {},
    optional={"sessionId": json_values, "validityInSeconds": json_values},
)
api_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "name": json_values,
        "version_data": json_values,
        "proxy": json_values,
        "auth": json_values,
        "auth_type": json_values,
    },
)
deep = st.integers(min_value=1, max_value=200_000).flatmap(
    lambda depth: st.sampled_from(
        [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth]
    )
)
bodies = st.one_of(
    st.just(b""),
    json_values.map(lambda v: json.dumps(v).encode()),
    subscriptions_body.map(lambda v: json.dumps(v).encode()),
    event_like.map(lambda v: json.dumps(v).encode()),
    blacklist_like.map(lambda v: json.dumps(v).encode()),
    api_like.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(str.encode),  # malformed JSON, form-ish text
    st.binary(max_size=300),  # invalid UTF-8 among it
    st.sampled_from([b"\xff\xfe\xfd", b'{"a":"\xc3\x28"}', b"\xed\xa0\x80", b"{\x00}"]),
    deep,
    st.sampled_from([1_100_000, 300_000, 70_000]).map(lambda n: b'{"data":"' + b"x" * n + b'"}'),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict[str, Any], key: str = JWT_SECRET) -> str:
    """HS256 by hand: any JSON in the claims (PyJWT refuses, e.g., a numeric iss)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    digest = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


def unsigned(claims: Any) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{part}."


claims_like = st.dictionaries(
    st.sampled_from(["jti", "username", "sub", "user", "aud", "iss", "nbf", "iat", "x"]),
    json_values,
    max_size=5,
)
tokens = st.one_of(
    safe_text,
    st.builds(lambda c: sign({**c, "exp": time.time() + 600}), claims_like),
    st.builds(lambda c: sign({**c, "exp": 1}), claims_like),
    st.builds(lambda c: sign(c), claims_like),  # no exp (or a fuzzed one)
    st.builds(
        lambda c: sign({**c, "exp": time.time() + 600}, "wrong-secret-0123456789abcdefghij"),
        claims_like,
    ),
    claims_like.map(unsigned),
    st.tuples(safe_text, safe_text, safe_text).map(lambda t: "eyJ" + ".".join(t)),
    st.sampled_from(["", ".", "..", "a.b.c", "Bearer ", "eyJhbGciOiJIUzI1NiJ9.e30."]),
)
path_values = st.one_of(
    safe_text.map(lambda s: quote(s, safe="")),
    st.sampled_from(["..", "%2e%2e", "%00", "a%00b", "%ff%fe", "%", "%zz", "ü", "😀", ""]),
    st.integers(min_value=1, max_value=9000).map(lambda n: "a" * n),
)
_TRICKS = st.sampled_from(
    ["", "/", "//", "/..", "/../", "/%2e%2e/", "/./", "%00", "/%00", "?", "#x", ";a=b", "/ü", "%ff"]
)
# Most requests hit the route as it is; a quarter get a trick appended.
tricks = st.one_of(st.just(""), st.just(""), st.just(""), _TRICKS)


@st.composite
def targets(draw: Any, victim: str) -> tuple[str, bytes, str]:
    """``(listener, request target, method)`` for a route with its arguments filled in."""
    listener, rule, methods = draw(st.sampled_from(ROUTES))

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name == "transport":
            return draw(st.sampled_from(["sse", "ws", "longpolling", "x", "..", "%00"]))
        if name == "token":
            return draw(st.one_of(st.just(victim), st.just(victim[:-3] + "abc"), path_values))
        return draw(path_values)

    path = _ARG.sub(fill, rule) + draw(tricks)
    query = draw(
        st.one_of(
            st.just(""),
            st.builds(
                lambda s: "?subscriptions=" + quote(s, safe=""),
                st.one_of(
                    subscriptions_body.map(json.dumps), json_values.map(json.dumps), safe_text
                ),
            ),
            tokens.map(lambda t: "?jwt=" + quote(t, safe="")),
            st.builds(
                lambda a, b: f"?subscriptions={quote(a, safe='')}&jwt={quote(b, safe='')}",
                subscriptions_body.map(json.dumps),
                tokens,
            ),
            st.sampled_from(["?a=%ff%fe", "?=", "?&&&", "?subscriptions=%00", "?jwt"]),
            deep.map(lambda d: "?subscriptions=" + d[:20000].decode()),
        )
    )
    # Mostly a method the route takes; sometimes one nobody takes.
    odd = st.sampled_from(["PATCH", "TRACE", "FOO"])
    method = draw(st.one_of(*[st.sampled_from(methods)] * 4, odd))
    raw_path = draw(st.sampled_from([False, False, True]))
    target = (
        (path + query).encode("utf-8")
        if raw_path
        else (quote(path, safe="/%;?#=&") + query).encode()
    )
    return listener, target, method


@st.composite
def header_lists(draw: Any, victim: str) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[str, str]] = []
    content_type = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/cloudevents+json",
                    "application/cloudevents+xml",
                    "application/cloudevents-batch+json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=xyz",
                    "multipart/form-data",
                    "application/vnd.api+json",
                    ";;;",
                ]
            ),
            safe_text,
        )
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    for _ in range(draw(st.integers(0, 2))):
        headers.append(
            (
                "Authorization",
                draw(
                    st.one_of(tokens.map(lambda t: f"Bearer {t}"), safe_text, st.just("Basic eHl6"))
                ),
            )
        )
    if draw(st.booleans()):
        token = draw(st.one_of(st.just(victim), safe_text))
        cursor = draw(st.one_of(safe_text, st.sampled_from(['"first_event"', '"1"', '"', "-1"])))
        headers.append(("Cookie", f"connection_token={token}; last_event_id={cursor}"))
    if draw(st.booleans()):
        headers.append(
            (
                "Accept",
                draw(
                    st.one_of(safe_text, st.sampled_from(["application/json", "*/*", "text/html"]))
                ),
            )
        )
    for name in draw(
        st.lists(
            st.sampled_from(["specversion", "type", "source", "id", "time", "ext", "data"]),
            max_size=4,
        )
    ):
        headers.append(
            (f"ce-{name}", draw(st.one_of(st.sampled_from(["0.2", "1.0", "greeting"]), safe_text)))
        )
    if draw(st.integers(0, 5)) == 0:
        headers += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        headers.append(
            ("Sec-WebSocket-Key", draw(st.one_of(st.just("dGhlIHNhbXBsZSBub25jZQ=="), safe_text)))
        )
        headers.append(("Sec-WebSocket-Version", draw(st.sampled_from(["13", "8", "x"]))))
    for _ in range(draw(st.integers(0, 2))):
        headers.append(
            (draw(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)), draw(safe_text))
        )
    return [(n.encode("latin-1"), v.encode("utf-8")) for n, v in headers]


# --------------------------------------------------------------------------- #
# A raw HTTP exchange
# --------------------------------------------------------------------------- #


def exchange(
    port: int,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    chunked: bool = False,
) -> int | None:
    """Send one request over a fresh socket; the status, or None if the server hung up."""
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(body)) + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d" % len(body))
        payload = body
    head.append(b"Connection: close")
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        try:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        except OSError:
            pass  # the server may answer (413, 431...) and close before reading it all
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
            return None
        content_type = response.getheader("content-type") or ""
        if response.status != 101 and "text/event-stream" not in content_type:
            try:
                response.read()
            except (http.client.IncompleteRead, ConnectionResetError):
                pass
        return response.status
    finally:
        sock.close()


def _chunks(body: bytes, size: int = 4096) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)] or []


# --------------------------------------------------------------------------- #
# The fuzz tests
# --------------------------------------------------------------------------- #


def test_http_fuzz_every_endpoint(gw, monitor, victim):
    statuses: dict[int | None, int] = {}
    failures: list[str] = []

    @settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
    @given(
        target=targets(victim),
        headers=header_lists(victim),
        body=bodies,
        chunked=st.booleans(),
    )
    def one(target: tuple[str, bytes, str], headers: list, body: bytes, chunked: bool) -> None:
        listener, raw_target, method = target
        port = gw.inbound_port if listener == "inbound" else gw.api_port
        status = exchange(port, method, raw_target, headers, body, chunked)
        statuses[status] = statuses.get(status, 0) + 1
        if status is not None and status >= 500:
            failures.append(f"{status} for {method} {raw_target[:200]!r} on {listener}")
        assert status is None or status < 500, failures[-1]

    one()
    seen = sorted(statuses.items(), key=str)
    print(f"\nHTTP fuzz: {sum(statuses.values())} requests, statuses {seen}")
    assert_healthy(gw, monitor)


def ws_frame(opcode: int, payload: bytes, fin: bool, masked: bool, length: int | None) -> bytes:
    """One WebSocket frame; ``length`` overrides the declared payload length (lies)."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (opcode & 0x0F)
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        head = bytes([first, mask_bit | declared])
    elif declared < 65536:
        head = bytes([first, mask_bit | 126]) + declared.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + declared.to_bytes(8, "big")
    if masked:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


frames = st.one_of(
    st.builds(
        ws_frame,
        opcode=st.integers(0, 15),
        payload=st.binary(max_size=200),
        fin=st.booleans(),
        masked=st.booleans(),
        length=st.one_of(st.none(), st.sampled_from([0, 125, 126, 65535, 65536, 2**31, 2**63 - 1])),
    ),
    st.binary(min_size=1, max_size=200),
)


def test_websocket_frame_fuzz(gw, monitor):
    closes: dict[str, int] = {}

    @settings(FUZZ_SETTINGS, max_examples=WS_EXAMPLES)
    @given(sequence=st.lists(frames, min_size=1, max_size=6), wait=st.booleans())
    def one(sequence: list[bytes], wait: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", gw.inbound_port), timeout=5)
        try:
            sock.sendall(
                b"GET /_rig/v1/connection/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, "no handshake answer"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head[:100]
            try:
                for frame in sequence:
                    sock.sendall(frame)
            except OSError:
                closes["reset while sending"] = closes.get("reset while sending", 0) + 1
                return
            if wait:  # read what the server says back (a close frame, a pong...)
                sock.settimeout(0.05)
                try:
                    while sock.recv(65536):
                        pass
                    closes["closed by the server"] = closes.get("closed by the server", 0) + 1
                except TimeoutError:
                    closes["still open"] = closes.get("still open", 0) + 1
                except ConnectionResetError:
                    closes["reset"] = closes.get("reset", 0) + 1
        finally:
            sock.close()

    one()
    print(f"\nWebSocket fuzz: {sum(closes.values())} observed outcomes {closes}")
    assert_healthy(gw, monitor)
    # The fuzzed connections all ended; only the monitor and the victim remain.
    deadline = time.monotonic() + 5
    while gw.stats()["connections"]["ws"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.stats()["connections"]["ws"] == 0
