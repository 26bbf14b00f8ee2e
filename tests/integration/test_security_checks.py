"""SUBSCRIPTION_CHECK and SUBMISSION_CHECK against the real gateway (RIG §6.3, §6.4).

Every mode with every place it applies: SSE, WebSocket and long-polling
connects that carry ``subscriptions`` (RIG skips long-polling, §15 item 8),
subscription PUTs, and ``POST /_rig/v1/events`` (RIG's submission check is
broken, §15 item 4). The external checker is a real HTTP server in this
process (:mod:`authservers`).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from authservers import Checker
from clients import SseClient, ce, sign_jwt, ws_close_of, ws_connect, ws_next_frame
from conftest import JWT_SECRET, free_port
from websocket import ABNF

SUBS = [{"eventType": "greeting"}]
DENIED_CONNECT = "Subscription denied (not authorized)."
OTHER_SECRET = "another-secret-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def checker():
    with Checker() as server:
        yield server


@pytest.fixture()
def ask(checker):
    """The checker, reset to allow everything, for one test."""
    checker.reset(200)
    yield checker
    checker.reset(200)


@pytest.fixture(scope="module")
def url_gateway(gateway_factory, checker):
    return gateway_factory(
        SUBSCRIPTION_CHECK=checker.url,
        SUBMISSION_CHECK=checker.url,
        JWT_SECRET_KEY=JWT_SECRET,
        AUTHORIZATION_CHECK_TIMEOUT_MS="500",
        LONGPOLLING_WAIT_MS="300",
    )


@pytest.fixture(scope="module")
def jwt_gateway(gateway_factory):
    return gateway_factory(
        SUBSCRIPTION_CHECK="jwt_validation",
        SUBMISSION_CHECK="JWT_VALIDATION",  # keywords are case-insensitive
        JWT_SECRET_KEY=JWT_SECRET,
        LONGPOLLING_WAIT_MS="300",
    )


def token(**claims: Any) -> str:
    return sign_jwt(JWT_SECRET, **claims)


def connect(gateway, transport: str, subscriptions=SUBS, headers=None, **params: str):
    """Open a connection; ``(allowed, detail)`` where detail is the refusal text."""
    url = gateway.connect_url(transport, subscriptions, **params)
    if transport == "sse":
        with SseClient(url, headers=headers) as sse:
            if sse.status == 200:
                assert sse.events(2)[0].type == "rig.connection.create"
                return True, ""
            return False, f"{sse.status} {sse.body()}"
    if transport == "ws":
        ws = ws_connect(url, header=[f"{k}: {v}" for k, v in (headers or {}).items()])
        try:
            frame = ws_next_frame(ws)
        finally:
            ws.close()
        if frame.opcode == ABNF.OPCODE_TEXT:
            return True, ""
        return False, f"close {frame.data[2:].decode()}"
    response = requests.get(url, headers=headers, timeout=10)
    if response.status_code == 200:
        return True, ""
    return False, f"{response.status_code} {response.text}"


def ws_refusal(gateway, **params: str) -> tuple[int, str]:
    ws = ws_connect(gateway.connect_url("ws", SUBS, **params))
    try:
        return ws_close_of(ws)
    finally:
        ws.close()


def put(gateway, conn_token: str, headers=None, body: dict | None = None):
    return requests.put(
        f"{gateway.inbound}/_rig/v1/connection/sse/{conn_token}/subscriptions",
        json=body if body is not None else {"subscriptions": SUBS},
        headers=headers,
        timeout=10,
    )


def open_sse(gateway, **params: str) -> SseClient:
    sse = gateway.sse(**params)
    create, _ = sse.events(2)
    sse.connection_token = create.json["data"]["connection_token"]
    return sse


# --------------------------------------------------------------------------- #
# External checker (URL mode)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
def test_checker_2xx_allows_every_transport_and_sees_rigs_request(url_gateway, ask, transport):
    jwt = token(jti="checked")
    assert connect(url_gateway, transport, jwt=jwt) == (True, "")
    [asked] = ask.requests
    assert asked.json == {"subscriptions": SUBS}
    assert asked.headers["content-type"] == "application/json; charset=utf-8"
    assert asked.headers["authorization"] == f"Bearer {jwt}"


@pytest.mark.parametrize("status", [401, 403, 404, 500, 302])
def test_checker_deny_or_anything_but_2xx_refuses_sse_and_longpolling(url_gateway, ask, status):
    ask.status = status
    for transport in ("sse", "longpolling"):
        allowed, detail = connect(url_gateway, transport)
        assert not allowed
        assert detail == f"400 {DENIED_CONNECT}", transport


def test_checker_deny_closes_websocket_with_bad_request(url_gateway, ask):
    ask.status = 403
    assert ws_refusal(url_gateway) == (1000, "Bad request.")


def test_checker_is_not_asked_without_a_subscriptions_parameter(url_gateway, ask):
    ask.status = 403
    for transport in ("sse", "ws", "longpolling"):
        assert connect(url_gateway, transport, subscriptions=None)[0], transport
    assert ask.requests == []


def test_checker_sees_the_wrapped_longpolling_list_as_a_list(url_gateway, ask):
    url = (
        url_gateway.connect_url("longpolling")
        + "?subscriptions="
        + requests.utils.quote(json.dumps({"subscriptions": SUBS}))
    )
    assert requests.get(url, timeout=10).json() == "ok"
    assert ask.requests[0].json == {"subscriptions": SUBS}


def test_put_is_checked_with_raw_body_content_type_and_joined_authorization(url_gateway, ask):
    sse = open_sse(url_gateway)
    try:
        ask.requests.clear()
        body = json.dumps({"subscriptions": [{"eventType": "after"}]})
        credentials = f"Bearer {token(jti='put')}, Basic eHl6"
        response = requests.put(
            f"{url_gateway.inbound}/_rig/v1/connection/ws/{sse.connection_token}/subscriptions",
            data=body,
            headers={
                "content-type": "application/json; charset=utf-8",
                "authorization": credentials,
            },
            timeout=10,
        )
        assert response.status_code == 204, response.text
        [asked] = ask.requests
        assert asked.body == body.encode()
        assert asked.headers["content-type"] == "application/json; charset=utf-8"
        assert asked.headers["authorization"] == credentials
        ask.status = 401
        denied = put(url_gateway, sse.connection_token)
        assert (denied.status_code, denied.text) == (403, "Subscription denied.")
        assert denied.headers["access-control-allow-origin"] == "*"
    finally:
        sse.close()


def test_put_check_runs_before_the_connection_token_is_decoded(url_gateway, ask):
    # RIG's order: a denied PUT is 403 even for a token that is garbage.
    ask.status = 403
    assert put(url_gateway, "garbage").status_code == 403
    ask.status = 200
    assert put(url_gateway, "garbage").status_code == 400


def test_event_submission_is_checked_with_the_event_json(url_gateway, ask):
    event = ce("greeting", {"name": "alice"}, id_="sub-1")
    response = requests.post(
        f"{url_gateway.inbound}/_rig/v1/events",
        json=event,
        headers={"authorization": "Bearer xyz"},
        timeout=10,
    )
    assert response.status_code == 202
    [asked] = ask.requests
    assert asked.json == event
    assert asked.headers["authorization"] == "Bearer xyz"
    ask.status = 403
    denied = requests.post(f"{url_gateway.inbound}/_rig/v1/events", json=event, timeout=10)
    assert (denied.status_code, denied.text) == (403, "Submission denied.")
    assert denied.headers["access-control-allow-origin"] == "*"


def test_binary_mode_event_is_sent_to_the_checker_as_structured_json(url_gateway, ask):
    headers = {
        "content-type": "text/plain",
        "ce-specversion": "0.2",
        "ce-type": "greeting",
        "ce-source": "s",
        "ce-id": "bin-1",
    }
    response = requests.post(
        f"{url_gateway.inbound}/_rig/v1/events", data=b"hello", headers=headers, timeout=10
    )
    assert response.status_code == 202
    assert ask.requests[0].json["data"] == "hello"
    assert ask.requests[0].json["id"] == "bin-1"


def test_internal_messages_endpoint_is_never_checked(url_gateway, ask):
    ask.status = 403
    for path in ("/v2/messages", "/v3/messages"):
        response = requests.post(f"{url_gateway.api}{path}", json=ce("greeting"), timeout=10)
        assert response.status_code == 202
    assert ask.requests == []


def test_slow_checker_is_a_deny_after_the_timeout_and_is_logged(url_gateway, ask):
    ask.delay_s = 2.0
    started = time.monotonic()
    allowed, detail = connect(url_gateway, "sse")
    elapsed = time.monotonic() - started
    assert not allowed and detail == f"400 {DENIED_CONNECT}"
    assert 0.4 < elapsed < 1.5, elapsed  # AUTHORIZATION_CHECK_TIMEOUT_MS=500
    assert "subscription check at http://127.0.0.1" in url_gateway.log()
    assert "(no answer within 0.5 s); denying" in url_gateway.log()
    ask.delay_s = 0.0


def test_slow_checker_does_not_block_other_clients(url_gateway, ask):
    with url_gateway.sse([{"eventType": "meanwhile"}]) as watcher:
        watcher.events(2)
        ask.delay_s = 0.25
        results: list[bool] = []

        def one() -> None:
            results.append(connect(url_gateway, "sse")[0])

        threads = [threading.Thread(target=one) for _ in range(10)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(0.1)  # all ten are now waiting for the checker
        health_started = time.monotonic()
        assert requests.get(f"{url_gateway.inbound}/_rig/health", timeout=5).text == "OK"
        health_s = time.monotonic() - health_started
        url_gateway.publish(ce("meanwhile", {"n": 1}))
        assert watcher.next_event(2).json["data"] == {"n": 1}
        for thread in threads:
            thread.join()
        total = time.monotonic() - started
        assert results == [True] * 10
        assert health_s < 0.2, health_s
        assert total < 1.5, total  # ten checks of 0.25 s each: 2.5 s if serialised
    ask.delay_s = 0.0


def test_checker_connections_are_pooled(url_gateway, ask):
    for _ in range(5):
        assert connect(url_gateway, "longpolling")[0]
    # Kept-alive connections served the checks one after the other.
    assert len(ask.requests) == 5
    assert len({asked.client_port for asked in ask.requests}) == 1


def test_unreachable_checker_denies(gateway_factory):
    nobody = f"http://127.0.0.1:{free_port()}/check"
    gateway = gateway_factory(SUBSCRIPTION_CHECK=nobody, SUBMISSION_CHECK=nobody)
    assert connect(gateway, "sse") == (False, f"400 {DENIED_CONNECT}")
    response = requests.post(f"{gateway.inbound}/_rig/v1/events", json=ce("x"), timeout=10)
    assert response.status_code == 403
    assert "failed (" in gateway.log() and "denying" in gateway.log()


# --------------------------------------------------------------------------- #
# jwt_validation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
def test_jwt_validation_allows_a_connect_with_a_valid_token(jwt_gateway, transport):
    assert connect(jwt_gateway, transport, jwt=token(jti="ok"))[0]


def test_jwt_validation_accepts_the_token_from_the_authorization_header(jwt_gateway):
    headers = {"Authorization": f"Bearer {token(jti='hdr')}"}
    for transport in ("sse", "ws", "longpolling"):
        assert connect(jwt_gateway, transport, headers=headers)[0], transport


def test_jwt_validation_refuses_a_connect_without_a_token(jwt_gateway):
    assert connect(jwt_gateway, "sse") == (False, f"400 {DENIED_CONNECT}")
    assert connect(jwt_gateway, "longpolling") == (False, f"400 {DENIED_CONNECT}")
    assert ws_refusal(jwt_gateway) == (1000, "Bad request.")
    # Without subscriptions there is nothing to check (RIG).
    assert connect(jwt_gateway, "sse", subscriptions=None)[0]


def test_jwt_validation_on_put(jwt_gateway):
    sse = open_sse(jwt_gateway, jwt=token(jti="put"))
    try:
        good = {"authorization": f"Bearer {token(jti='put')}"}
        assert put(jwt_gateway, sse.connection_token, good).status_code == 204
        for headers in (
            None,
            {"authorization": "Bearer not-a-jwt"},
            {"authorization": f"Bearer {sign_jwt(JWT_SECRET, ttl_s=-5)}"},
            {"authorization": f"Bearer {sign_jwt(OTHER_SECRET)}"},
        ):
            response = put(jwt_gateway, sse.connection_token, headers)
            assert (response.status_code, response.text) == (403, "Subscription denied.")
    finally:
        sse.close()


def test_jwt_validation_on_event_submission(jwt_gateway):
    url = f"{jwt_gateway.inbound}/_rig/v1/events"
    ok = requests.post(
        url, json=ce("x"), headers={"authorization": f"Bearer {token()}"}, timeout=10
    )
    assert ok.status_code == 202
    for headers in (
        None,
        {"authorization": "Bearer nope"},
        {"authorization": f"Bearer {sign_jwt(JWT_SECRET, ttl_s=-5)}"},
        {"authorization": f"Basic {token()}"},
    ):
        response = requests.post(url, json=ce("x"), headers=headers, timeout=10)
        assert (response.status_code, response.text) == (403, "Submission denied."), headers
    # A bare credential counts as a bearer token (RIG's auth header rule).
    bare = requests.post(url, json=ce("x"), headers={"authorization": token()}, timeout=10)
    assert bare.status_code == 202
