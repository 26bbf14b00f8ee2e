"""The reverse proxy, target http: a real gateway in front of a real backend (RIG §7.3-7.7)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from backend import BLOCK, Backend, closed_port, pattern_sha256
from clients import sign_jwt
from conftest import JWT_SECRET, GatewayProcess, wait_until

ASYNC_TIMEOUT_MS = 3000
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "*",
    "access-control-allow-headers": "content-type",
}


def endpoint(endpoint_id: str, method: str, path: str, **fields: object) -> dict:
    return {"id": endpoint_id, "method": method, "path_regex": path, **fields}


def definitions(port: int) -> list[dict]:
    proxy = {"target_url": "localhost", "port": port}
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        {
            "id": "echo",
            "name": "echo",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        *(endpoint(f"echo-{m.lower()}", m, "/echo(/.*)?") for m in methods),
                        endpoint(
                            "rewrite",
                            "get",  # lower case on purpose: methods are upper-cased
                            "/foo/([^/]+)/bar/([^/]+)",
                            path_replacement="/bar/\\1/foo/\\2",
                        ),
                        endpoint("head-only", "HEAD", "/head-only"),
                        endpoint("get-only", "GET", "/get-only"),
                        endpoint("odd", "BADMETHOD", "/odd"),
                        endpoint(
                            "transformed", "GET", "/transformed", transform_request_headers=True
                        ),
                        endpoint("async", "GET", "/async", response_from="http_async"),
                        endpoint("upload", "POST", "/upload"),
                        endpoint("download", "GET", "/download"),
                    ]
                },
                # Only the default version is routed.
                "v2": {"endpoints": [endpoint("v2-only", "GET", "/v2-only")]},
            },
        },
        {
            "id": "transforming",
            "name": "transforming",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        endpoint("t", "GET", "/with-added-headers", transform_request_headers=True)
                    ],
                    "transform_request_headers": {
                        "add_headers": {"X-Added": "yes", "User-Agent": "rig-proxy"}
                    },
                }
            },
        },
        {
            "id": "kafka-without-kafka",
            "name": "kafka without kafka",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [endpoint("k", "POST", "/to-kafka", target="kafka", topic="t")]
                }
            },
        },
        {
            "id": "unreachable",
            "name": "unreachable",
            "proxy": {"target_url": "http://127.0.0.1", "port": closed_port()},
            "version_data": {"default": {"endpoints": [endpoint("u", "GET", "/unreachable")]}},
        },
        {
            "id": "secured",
            "name": "secured",
            "auth_type": "jwt",
            "proxy": proxy,
            "version_data": {
                "default": {
                    "endpoints": [
                        endpoint("s", "GET", "/secured/header", secured=True),
                        endpoint("open", "GET", "/secured/open"),
                    ]
                }
            },
        },
        {
            "id": "secured-custom",
            "name": "secured-custom",
            "auth_type": "jwt",
            "auth": {
                "use_header": True,
                "header_name": "x-api-token",
                "use_query": True,
                "query_name": "token",
            },
            "proxy": proxy,
            "version_data": {
                "default": {"endpoints": [endpoint("sc", "GET", "/secured/custom", secured=True)]}
            },
        },
    ]


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(
    backend: Backend, gateway_factory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = tmp_path_factory.mktemp("proxy") / "proxy.json"
    config.write_text(json.dumps(definitions(backend.port)))
    started = gateway_factory(
        PROXY_CONFIG_FILE=str(config),
        PROXY_RECV_TIMEOUT="1000",
        PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT=str(ASYNC_TIMEOUT_MS),
        JWT_SECRET_KEY=JWT_SECRET,
        REQUEST_LOG="console",
    )
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def fresh_backend_queue(backend: Backend) -> None:
    backend.drain()


def echo(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def headers_of(body: dict) -> dict[str, str]:
    return {name: value for name, value in body["headers"]}


# --------------------------------------------------------------- routing


def test_path_is_rewritten_and_the_query_forwarded(gateway: GatewayProcess) -> None:
    body = echo(requests.get(f"{gateway.inbound}/FOO/1/BAR/2?b=x%20y&a=1&a=2", timeout=5))
    assert body["path"] == "/bar/1/foo/2"
    assert body["query"] == "b=x%20y&a=1&a=2"


def test_every_method_is_forwarded_with_its_body(gateway: GatewayProcess) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        body = echo(
            requests.request(method, f"{gateway.inbound}/echo/x", data=b"payload", timeout=5)
        )
        assert (body["method"], body["path"], body["body"]) == (method, "/echo/x", "payload")
    options = echo(requests.options(f"{gateway.inbound}/echo", timeout=5))
    assert options["method"] == "OPTIONS" and options["body_len"] == 0


def test_unknown_routes_get_rigs_404(gateway: GatewayProcess) -> None:
    for path in ("/nothing-here", "/_rig/nothing", "/v2-only", "/"):
        response = requests.get(f"{gateway.inbound}{path}", timeout=5)
        assert response.status_code == 404
        assert response.text == '{"message":"Not Found"}'
    # A method no endpoint has is a 404 too, also on a path RIG itself serves.
    assert requests.delete(f"{gateway.inbound}/get-only", timeout=5).status_code == 404
    assert requests.get(f"{gateway.inbound}/_rig/v1/events", timeout=5).status_code == 404


def test_an_unsupported_method_on_a_matching_endpoint_is_405(gateway: GatewayProcess) -> None:
    response = requests.request("BADMETHOD", f"{gateway.inbound}/odd", timeout=5)
    assert response.status_code == 405
    assert response.text == "Method not allowed."


def test_head_reaches_head_endpoints_and_get_endpoints(
    gateway: GatewayProcess, backend: Backend
) -> None:
    assert requests.head(f"{gateway.inbound}/head-only", timeout=5).status_code == 200
    assert backend.next_request().method == "HEAD"
    response = requests.head(f"{gateway.inbound}/get-only", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert backend.next_request().method == "HEAD"
    assert requests.get(f"{gateway.inbound}/head-only", timeout=5).status_code == 404


# --------------------------------------------------------------- headers


def test_request_headers_as_the_backend_sees_them(
    gateway: GatewayProcess, backend: Backend
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = requests.get(
        f"{gateway.inbound}/echo",
        headers={
            "Connection": "keep-alive, x-private-hop",
            "X-Private-Hop": "1",
            "Keep-Alive": "timeout=30",
            "Forwarded": "for=6.6.6.6",
            "X-Forwarded-For": "10.1.1.1",
            "traceparent": parent,
            "X-Custom": "kept",
        },
        timeout=5,
    )
    body = echo(response)
    headers = headers_of(body)
    assert headers["host"] == f"localhost:{backend.port}"
    assert headers["forwarded"] == "for=127.0.0.1;by=127.0.0.1"
    assert headers["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.inbound_port}"
    assert headers["x-custom"] == "kept"
    assert headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert headers["traceparent"] != parent
    # The backend's parent span is the one the gateway names in its response.
    if "traceparent" in response.headers:
        assert headers["traceparent"] == response.headers["traceparent"]
        assert headers["x-request-id"] == response.headers["x-request-id"]
    for hop in ("x-private-hop", "keep-alive", "te", "upgrade", "transfer-encoding"):
        assert hop not in headers
    assert headers.get("connection", "keep-alive") == "keep-alive"  # ours, to the backend


def test_response_headers_lose_hop_by_hop_ones(gateway: GatewayProcess) -> None:
    response = requests.get(
        f"{gateway.inbound}/echo", headers={"x-test-hop": "1", "x-test-status": "201"}, timeout=5
    )
    assert response.status_code == 201
    assert response.headers["x-backend"] == "yes"
    assert "x-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.json()["path"] == "/echo"


def test_transform_request_headers_adds_and_replaces(gateway: GatewayProcess) -> None:
    body = echo(
        requests.get(
            f"{gateway.inbound}/with-added-headers",
            headers={"user-agent": "curl/8", "x-added": "no"},
            timeout=5,
        )
    )
    headers = headers_of(body)
    assert headers["x-added"] == "yes"
    assert headers["user-agent"] == "rig-proxy"
    assert [name for name, _ in body["headers"]].count("x-added") == 1
    # An endpoint that opts in on an API without add_headers keeps the headers.
    plain = headers_of(echo(requests.get(f"{gateway.inbound}/transformed", timeout=5)))
    assert plain["user-agent"].startswith("python-requests")


def test_backend_connections_are_kept_alive(gateway: GatewayProcess, backend: Backend) -> None:
    for _ in range(20):
        echo(requests.get(f"{gateway.inbound}/echo", timeout=5))
    peers = {seen.extra["peer"] for seen in backend.requests[-20:]}
    assert len(peers) <= 2, peers


# ---------------------------------------------------------------- errors


def test_an_unreachable_backend_is_502(gateway: GatewayProcess) -> None:
    response = requests.get(f"{gateway.inbound}/unreachable", timeout=5)
    assert response.status_code == 502
    assert response.text == "Bad gateway."


def test_target_kafka_without_kafka_is_502(gateway: GatewayProcess) -> None:
    event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    response = requests.post(f"{gateway.inbound}/to-kafka", json=event, timeout=5)
    assert response.status_code == 502
    assert response.text == "Bad gateway: the Kafka brokers did not acknowledge the event."


def test_a_backend_slower_than_proxy_recv_timeout_is_504(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    response = requests.get(
        f"{gateway.inbound}/echo", headers={"x-test-delay-ms": "5000"}, timeout=10
    )
    assert response.status_code == 504
    assert response.text == "Gateway timeout."
    # PROXY_RECV_TIMEOUT is 1 s here; the backend would answer after 5 s.
    assert 0.9 < time.monotonic() - started < 4.5


# ---------------------------------------------------------------- secured


def test_secured_endpoint_with_the_authorization_header(gateway: GatewayProcess) -> None:
    url = f"{gateway.inbound}/secured/header"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.text == "Authentication failed."
    for name, value in CORS.items():
        assert missing.headers[name] == value
    bad = requests.get(url, headers={"authorization": "Bearer not-a-jwt"}, timeout=5)
    assert bad.status_code == 401
    expired = sign_jwt(JWT_SECRET, ttl_s=-60)
    assert requests.get(url, headers={"authorization": f"Bearer {expired}"}).status_code == 401
    good = sign_jwt(JWT_SECRET, username="alice")
    assert echo(requests.get(url, headers={"authorization": f"Bearer {good}"}, timeout=5))
    # Query tokens are not configured for this API.
    assert requests.get(url, params={"token": good}, timeout=5).status_code == 401
    # Endpoints without secured: true stay open.
    assert echo(requests.get(f"{gateway.inbound}/secured/open", timeout=5))


def test_secured_endpoint_with_a_custom_header_and_query_tokens(gateway: GatewayProcess) -> None:
    url = f"{gateway.inbound}/secured/custom"
    good = sign_jwt(JWT_SECRET)
    assert echo(requests.get(url, headers={"x-api-token": good}, timeout=5))
    assert requests.get(url, headers={"x-api-token": "nope"}, timeout=5).status_code == 401
    # The custom header replaces Authorization for this API.
    response = requests.get(url, headers={"authorization": f"Bearer {good}"}, timeout=5)
    assert response.status_code == 401
    assert echo(requests.get(url, params={"token": f"bad,{good}"}, timeout=5))
    assert requests.get(url, params={"token": "bad,worse"}, timeout=5).status_code == 401


# ---------------------------------------------------------------- streaming


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class PatternBody:
    """A request body of ``size`` pattern bytes, produced on demand (length known)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.left = size
        self.block = bytes(range(256)) * (BLOCK // 256)

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        out = (self.block * (n // BLOCK + 1))[:n] if n > BLOCK else self.block[:n]
        self.left -= len(out)
        return out


def chunks(size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * (BLOCK // 256)
    left = size
    while left:
        yield block[: min(BLOCK, left)]
        left -= min(BLOCK, left)


def test_large_bodies_stream_through_with_bounded_memory(
    gateway: GatewayProcess, backend: Backend
) -> None:
    import hashlib

    pid = gateway.proc.pid
    size = 200 * 1024 * 1024
    start_rss = vm_kib(pid, "VmRSS")

    upload = requests.post(f"{gateway.inbound}/upload", data=PatternBody(size), timeout=120)
    body = echo(upload)
    assert (body["body_len"], body["body_sha256"]) == (size, pattern_sha256(size))
    assert headers_of(body)["content-length"] == str(size)

    chunked = echo(requests.post(f"{gateway.inbound}/upload", data=chunks(size // 4), timeout=60))
    assert (chunked["body_len"], chunked["body_sha256"]) == (size // 4, pattern_sha256(size // 4))
    assert headers_of(chunked)["transfer-encoding"] == "chunked"

    for chunked_download, length in ((False, size), (True, size // 4)):
        headers = {"x-test-download": str(length)}
        if chunked_download:
            headers["x-test-chunked"] = "1"
        response = requests.get(f"{gateway.inbound}/download", headers=headers, stream=True)
        assert response.status_code == 200
        digest, received = hashlib.sha256(), 0
        for data in response.iter_content(1024 * 1024):
            digest.update(data)
            received += len(data)
        assert (received, digest.hexdigest()) == (length, pattern_sha256(length))

    # The peak resident size stayed far below one body (200 MiB).
    growth_mib = (vm_kib(pid, "VmHWM") - start_rss) / 1024
    assert growth_mib < 40, f"the gateway's peak RSS grew by {growth_mib:.0f} MiB"


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_client_leaving_mid_download_frees_the_backend_connection(
    gateway: GatewayProcess,
) -> None:
    import socket

    pid = gateway.proc.pid
    echo(requests.get(f"{gateway.inbound}/echo", timeout=5))  # pools warmed up
    baseline = open_fds(pid)
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", gateway.inbound_port), timeout=5) as sock:
            sock.sendall(b"GET /download HTTP/1.1\r\nHost: x\r\nx-test-download: 104857600\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # Each abandoned download's backend connection is closed, not parked.
    wait_until(lambda: open_fds(pid) <= baseline + 1, timeout=10)
    echo(requests.get(f"{gateway.inbound}/echo", timeout=5))


# ---------------------------------------------------------------- http_async


def post_response(gateway: GatewayProcess, headers: dict[str, str], body: object = None):
    return requests.post(f"{gateway.api}/v3/responses", json=body, headers=headers, timeout=5)


def test_http_async_answer_reaches_the_waiting_client(
    gateway: GatewayProcess, backend: Backend
) -> None:
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.get,
            f"{gateway.inbound}/async?q=1&correlation=forged",
            headers={"x-test-status": "202"},
            timeout=10,
        )
        seen = backend.next_request()
        assert seen.path == "/async"
        assert seen.query["q"] == ["1"]
        (correlation,) = seen.query["correlation"]
        assert correlation != "forged"
        answer = post_response(
            gateway,
            {
                "rig-correlation": correlation,
                "rig-response-code": "201",
                "content-type": "application/json;charset=utf-8",
                "x-extra": "from-backend",
                "user-agent": "backend-client/1",
            },
            {"message": "this is the async response"},
        )
        assert answer.status_code == 202
        assert answer.text == "message sent to correlated reverse proxy request"
        response = waiting.result(10)
    assert response.status_code == 201
    assert response.json() == {"message": "this is the async response"}
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.headers["x-extra"] == "from-backend"
    for name, value in CORS.items():
        assert response.headers[name] == value
    # Headers about the POST itself are not copied (RIG's §15.13).
    assert "backend-client" not in response.headers.get("user-agent", "")
    assert response.headers["content-length"] == str(len(response.content))


def test_http_async_backend_answering_directly_is_passed_through(gateway: GatewayProcess) -> None:
    response = requests.get(f"{gateway.inbound}/async", timeout=5)
    assert response.status_code == 200
    assert "correlation=" in response.json()["query"]


def test_http_async_without_an_answer_is_504(gateway: GatewayProcess, backend: Backend) -> None:
    started = time.monotonic()
    response = requests.get(f"{gateway.inbound}/async", headers={"x-test-status": "202"})
    assert response.status_code == 504
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert ASYNC_TIMEOUT_MS / 1000 - 0.1 < time.monotonic() - started < ASYNC_TIMEOUT_MS / 1000 + 3
    # An answer that comes too late is accepted and dropped.
    (correlation,) = backend.next_request().query["correlation"]
    late = post_response(gateway, {"rig-correlation": correlation, "rig-response-code": "200"}, {})
    assert late.status_code == 202


def test_v3_responses_reports_rigs_parse_errors(gateway: GatewayProcess) -> None:
    valid = requests.get(f"{gateway.inbound}/async", timeout=5).json()["query"]
    correlation = valid.split("correlation=")[1]
    cases = [
        ({"rig-response-code": "200"}, "Failed to parse request body: :error"),
        ({"rig-correlation": correlation}, "Failed to parse request body: :error"),
        (
            {"rig-correlation": correlation, "rig-response-code": "abc201"},
            'Failed to parse request body: {:error, {:not_an_integer, "abc201"}}',
        ),
        (
            {"rig-correlation": "%%%", "rig-response-code": "200"},
            "Failed to parse request body: {:error, :not_base64}",
        ),
        (
            {"rig-correlation": correlation[:-3] + "AAA", "rig-response-code": "200"},
            "Failed to parse request body: {:error, :invalid_term}",
        ),
    ]
    for headers, text in cases:
        response = post_response(gateway, headers, {"x": 1})
        assert (response.status_code, response.text) == (400, text)
    broken = requests.post(
        f"{gateway.api}/v3/responses",
        data="{not json",
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert broken.status_code == 400
    assert broken.json() == {"errors": {"detail": "Bad request"}}


# ---------------------------------------------------------------- request log


def test_console_request_log_prints_rigs_call_line(
    gateway: GatewayProcess, backend: Backend
) -> None:
    echo(requests.get(f"{gateway.inbound}/FOO/9/BAR/8", timeout=5))
    expected = "CALL: [rewrite] GET /foo/([^/]+)/bar/([^/]+) => localhost"
    deadline = time.monotonic() + 5
    while expected not in gateway.log():
        assert time.monotonic() < deadline, gateway.log()[-2000:]
        time.sleep(0.05)
