"""Logs (LOG_LEVEL, LOG_FMT, lifecycle lines, no secrets) and request ids / trace context."""

from __future__ import annotations

import json
import re

import pytest
import requests
from clients import ce, put_subscriptions, sign_jwt, ws_connect, ws_next_event
from conftest import JWT_SECRET, kafka_ready, wait_until

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEX32 = re.compile(r"[0-9a-f]{32}")


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def json_gateway(gateway_factory):
    return gateway_factory(LOG_FMT="json", LOG_LEVEL="debug", JWT_SECRET_KEY=JWT_SECRET)


def test_request_id_is_echoed_and_in_the_requests_log_lines(json_gateway):
    response = requests.post(
        f"{json_gateway.inbound}/_rig/v1/events",
        data=b"{not json",
        headers={"content-type": "application/json", "x-request-id": "req-test-0001"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "req-test-0001"

    def logged() -> list[dict]:
        return [
            line
            for line in json_lines(json_gateway.log())
            if line.get("request_id") == "req-test-0001"
        ]

    lines = wait_until(logged, timeout=5)
    assert any("rejected" in line["message"] for line in lines)
    assert all(line["level"] in ("debug", "info", "warning", "error") for line in lines)


def test_a_bad_request_id_is_replaced_and_every_response_gets_one(json_gateway):
    for value in ("x" * 201, "bad id with spaces", ""):
        response = requests.get(
            f"{json_gateway.api}/health", headers={"x-request-id": value}, timeout=5
        )
        assert HEX32.fullmatch(response.headers["x-request-id"]), value
    plain = requests.get(f"{json_gateway.inbound}/_rig/health", timeout=5)
    assert HEX32.fullmatch(plain.headers["x-request-id"])
    # Without any header the request id is the new trace's id.
    assert plain.headers["x-request-id"] == plain.headers["traceparent"].split("-")[1]


def test_traceparent_is_continued_or_started(json_gateway):
    response = requests.get(
        f"{json_gateway.api}/health",
        headers={"traceparent": TRACEPARENT, "tracestate": "k=v"},
        timeout=5,
    )
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331" and len(span_id) == 16
    for bad in ("00-" + "0" * 32 + "-b7ad6b7169203331-01", "garbage", "ff-" + TRACEPARENT[3:]):
        response = requests.get(
            f"{json_gateway.inbound}/_rig/health", headers={"traceparent": bad}, timeout=5
        )
        new_trace = response.headers["traceparent"].split("-")[1]
        assert new_trace != "0af7651916cd43dd8448eb211c80319c" and HEX32.fullmatch(new_trace)


def test_streams_get_no_request_id(json_gateway):
    with json_gateway.sse([]) as sse:
        assert sse.status == 200
        assert "x-request-id" not in sse.headers and "traceparent" not in sse.headers
    ws = ws_connect(json_gateway.connect_url("ws"), header=["x-request-id: ws-1"])
    try:
        assert "x-request-id" not in (ws.getheaders() or {})
    finally:
        ws.close()


def test_lifecycle_lines_and_no_secrets_in_the_log(json_gateway):
    jwt = sign_jwt(JWT_SECRET, username="alice", jti="session-1")
    with json_gateway.sse([{"eventType": "log.test"}], jwt=jwt) as sse:
        create, _ = sse.events(2)
        token = create.json["data"]["connection_token"]
        conn_id = token.split(".")[1]
        response = put_subscriptions(
            json_gateway.inbound,
            token,
            [{"eventType": "log.other"}],
            headers={"authorization": f"Bearer {jwt}"},
        )
        assert response.status_code == 204
        sse.next_event()  # the new rig.subscriptions_set
    ws = ws_connect(json_gateway.connect_url("ws"))
    ws_token = ws_next_event(ws)["data"]["connection_token"]
    ws.close()
    session = requests.Session()
    assert session.get(json_gateway.connect_url("longpolling", jwt=jwt), timeout=5).ok
    lp_token = session.cookies["connection_token"]
    session.get(json_gateway.connect_url("longpolling"), timeout=5)

    def lines_for(conn: str) -> list[str]:
        return [
            line["message"]
            for line in json_lines(json_gateway.log())
            if line["message"].startswith(f"connection {conn} ")
        ]

    wait_until(lambda: len(lines_for(conn_id)) >= 2, timeout=5)
    assert f"connection {conn_id} (sse) opened" in lines_for(conn_id)
    assert any(m.startswith(f"connection {conn_id} (sse) closed: ") for m in lines_for(conn_id))
    ws_id = ws_token.split(".")[1]
    wait_until(lambda: len(lines_for(ws_id)) >= 2, timeout=5)
    assert any("(ws) closed: close 1000" in m for m in lines_for(ws_id))
    assert f"connection {lp_token.split('.')[1]} (longpolling) opened" in lines_for(
        lp_token.split(".")[1]
    )
    log = json_gateway.log()
    for secret in (jwt, token, ws_token, lp_token, jwt.split(".")[2]):
        assert secret not in log


def test_restarts_are_logged_in_text_format(gateway_factory):
    gw = gateway_factory(LOG_FMT="text")
    response = requests.post(
        f"{gw.api}/_rig/faults",
        json={"actor": "registry"},
        headers={"x-request-id": "drill-42"},
        timeout=5,
    )
    assert response.status_code == 202
    wait_until(lambda: "restarting registry after RuntimeError" in gw.log(), timeout=5)
    # A line logged while serving a request ends with its id.
    requests.post(
        f"{gw.api}/v3/messages",
        data=b"[]",
        headers={"content-type": "application/json", "x-request-id": "text-7"},
        timeout=5,
    )
    wait_until(lambda: re.search(r"rejected.* request_id=text-7$", gw.log(), re.M), timeout=5)


@pytest.mark.kafka
def test_published_events_carry_the_trace_to_kafka(broker, gateway_factory):
    topic = broker.new_topic("trace")
    control = broker.new_topic("trace-control")
    gw = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap, KAFKA_SOURCE_TOPICS=topic, KAFKA_CONTROL_TOPIC=control
    )
    wait_until(lambda: kafka_ready(gw), timeout=30)
    response = requests.post(
        f"{gw.inbound}/_rig/v1/events",
        json=ce("traced", {"n": 1}),
        headers={"traceparent": TRACEPARENT},
        timeout=10,
    )
    assert response.status_code == 202
    ours = response.headers["traceparent"]
    (record,) = broker.read(topic, 1)
    headers = dict(record.headers)
    # The record names the gateway's span, in the client's trace.
    assert headers["traceparent"].decode() == ours
    assert ours.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
