"""WebSocket connections against the real gateway (RIG §2.1, §2.3, §15.2 item 3)."""

from __future__ import annotations

import json
import time

import pytest
import requests
import websocket
from clients import (
    ce,
    put_subscriptions,
    sign_jwt,
    wait_until,
    ws_close_of,
    ws_connect,
    ws_next_event,
    ws_next_frame,
)
from conftest import JWT_SECRET

TWO_WAY = "This WebSocket endpoint cannot be used for two-way communication."
OP = websocket.ABNF


def _greeted(ws: websocket.WebSocket) -> tuple[dict, dict]:
    """Read the two events every new connection starts with."""
    return ws_next_event(ws), ws_next_event(ws)


@pytest.fixture(scope="module")
def heartbeat_gateway(gateway_factory):
    return gateway_factory(HEARTBEAT_INTERVAL_MS="300")


def test_ws_connect_sends_connection_create_then_subscriptions_set_as_text_frames(gateway):
    subs = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    ws = ws_connect(gateway.connect_url("ws", subs))
    try:
        first, second = ws_next_frame(ws), ws_next_frame(ws)
        assert first.opcode == OP.OPCODE_TEXT and second.opcode == OP.OPCODE_TEXT
        create, subs_set = json.loads(first.data), json.loads(second.data)
        assert create["type"] == "rig.connection.create"
        assert create["specversion"] == "0.2" and create["source"] == "rig"
        assert isinstance(create["data"]["connection_token"], str)
        assert subs_set["type"] == "rig.subscriptions_set"
        assert subs_set["data"] == subs
    finally:
        ws.close()


def test_ws_event_is_delivered_as_text_frame_with_the_exact_event_json(gateway):
    ws = ws_connect(gateway.connect_url("ws", [{"eventType": "greeting"}]))
    try:
        _greeted(ws)
        raw = '{"specversion":"0.2","type":"greeting","source":"ws-test","id":"w1","data":{"x":1}}'
        response = requests.post(
            f"{gateway.inbound}/_rig/v1/events",
            data=raw,
            headers={"content-type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 202
        frame = ws_next_frame(ws)
        assert frame.opcode == OP.OPCODE_TEXT
        # The producer's bytes, plus the replay id (ws_event_ids, on by default).
        text = frame.data.decode()
        assert text == raw[:-1] + f',"rigeventid":"{json.loads(text)["rigeventid"]}"}}'
    finally:
        ws.close()


def test_ws_subscriber_does_not_receive_non_matching_events(gateway):
    ws = ws_connect(
        gateway.connect_url("ws", [{"eventType": "greeting", "oneOf": [{"name": "a"}]}])
    )
    try:
        _greeted(ws)
        gateway.publish(ce("greeting", {"name": "b"}, id_="b"))
        gateway.publish(ce("other", {"name": "a"}, id_="other"))
        gateway.publish(ce("greeting", {"name": "a"}, id_="a"))
        assert ws_next_event(ws)["id"] == "a"
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws_next_frame(ws, timeout=0.3)
    finally:
        ws.close()


def test_ws_client_ping_gets_a_pong_and_the_connection_keeps_working(gateway):
    # RIG §15.2 item 3: a client ping corrupts RIG's handler state and the next
    # subscription update crashes the connection. Here it must keep working.
    ws = ws_connect(gateway.connect_url("ws", [{"eventType": "greeting"}]))
    try:
        create, _ = _greeted(ws)
        token = create["data"]["connection_token"]
        for payload in (b"hello", b""):
            ws.ping(payload)
            pong = ws_next_frame(ws)
            assert pong.opcode == OP.OPCODE_PONG
            assert pong.data == payload

        response = put_subscriptions(gateway.inbound, token, [{"eventType": "pinged"}], "ws")
        assert response.status_code == 204, response.text
        subs_set = ws_next_event(ws)
        assert subs_set["type"] == "rig.subscriptions_set"
        assert subs_set["data"] == [{"eventType": "pinged", "oneOf": []}]

        gateway.publish(ce("greeting", {"n": 1}, id_="old"))
        gateway.publish(ce("pinged", {"n": 2}, id_="new"))
        assert ws_next_event(ws)["id"] == "new"

        ws.ping(b"again")
        assert ws_next_frame(ws).opcode == OP.OPCODE_PONG
        gateway.publish(ce("pinged", {"n": 3}, id_="newer"))
        assert ws_next_event(ws)["id"] == "newer"
    finally:
        ws.close()


@pytest.mark.parametrize(
    "send",
    [
        lambda ws: ws.send("hello?"),
        lambda ws: ws.send_binary(b"\x00\x01"),
    ],
    ids=["text", "binary"],
)
def test_ws_client_data_frame_closes_with_1000_two_way_reason(gateway, send):
    ws = ws_connect(gateway.connect_url("ws"))
    try:
        _greeted(ws)
        send(ws)
        assert ws_close_of(ws) == (1000, TWO_WAY)
    finally:
        ws.shutdown()


def test_ws_invalid_subscriptions_json_closes_with_1000_and_the_decode_error(gateway):
    query = "subscriptions=%7Bnope"
    ws = ws_connect(f"{gateway.ws}/_rig/v1/connection/ws?{query}")
    try:
        code, reason = ws_close_of(ws)
    finally:
        ws.shutdown()
    assert code == 1000
    assert reason.startswith("Failed to decode subscription list:")
    sse_text = requests.get(f"{gateway.inbound}/_rig/v1/connection/sse?{query}", timeout=5).text
    assert reason == sse_text  # the same decoder message as SSE's 400 body


@pytest.mark.parametrize("jwt", ["not-a-token", "Bearer x.y.z"])
def test_ws_invalid_jwt_closes_with_1000_bad_request(gateway, jwt):
    ws = ws_connect(gateway.connect_url("ws", jwt=jwt))
    try:
        assert ws_close_of(ws) == (1000, "Bad request.")
    finally:
        ws.shutdown()


def test_ws_invalid_subscription_closes_with_1000_bad_request(gateway):
    ws = ws_connect(gateway.connect_url("ws", [{"oneOf": []}]))
    try:
        assert ws_close_of(ws) == (1000, "Bad request.")
    finally:
        ws.shutdown()


def test_ws_valid_jwt_gives_automatic_subscriptions(gateway):
    token = sign_jwt(JWT_SECRET, username="alice")
    ws = ws_connect(gateway.connect_url("ws", jwt=token))
    try:
        _, subs_set = _greeted(ws)
        assert subs_set["data"] == [{"eventType": "greeting.jwt", "oneOf": [{"name": "alice"}]}]
        gateway.publish(ce("greeting.jwt", {"name": "bob"}, id_="bob"))
        gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="alice"))
        assert ws_next_event(ws)["id"] == "alice"
    finally:
        ws.close()


def test_ws_oversized_client_frame_closes_with_1009(gateway):
    ws = ws_connect(gateway.connect_url("ws"))
    try:
        _greeted(ws)
        try:
            ws.send("x" * 65537)
        except (OSError, websocket.WebSocketException):
            pass  # the server may close before it has read the whole frame
        code, _ = ws_close_of(ws)
        assert code == 1009
    finally:
        ws.shutdown()


def test_ws_frame_at_the_size_limit_is_not_refused_as_oversized(gateway):
    ws = ws_connect(gateway.connect_url("ws"))
    try:
        _greeted(ws)
        ws.send("x" * 65536)
        assert ws_close_of(ws) == (1000, TWO_WAY)  # refused for being data, not size
    finally:
        ws.shutdown()


def test_ws_client_close_removes_the_connection(gateway):
    before = gateway.stats()["connections"]["ws"]
    ws = ws_connect(gateway.connect_url("ws", [{"eventType": "greeting"}]))
    create, _ = _greeted(ws)
    token = create["data"]["connection_token"]
    wait_until(lambda: gateway.stats()["connections"]["ws"] >= before + 1)
    ws.close()
    assert ws.close_frame is not None  # the server answered the close handshake
    assert int.from_bytes(ws.close_frame.data[:2], "big") == 1000
    wait_until(lambda: gateway.stats()["connections"]["ws"] <= before)
    response = put_subscriptions(gateway.inbound, token, [], "ws")
    assert response.status_code == 410


def test_ws_client_dropping_the_socket_removes_the_connection(gateway):
    before = gateway.stats()["connections"]["ws"]
    ws = ws_connect(gateway.connect_url("ws"))
    _greeted(ws)
    wait_until(lambda: gateway.stats()["connections"]["ws"] >= before + 1)
    ws.shutdown()  # no close frame: just the TCP close
    wait_until(lambda: gateway.stats()["connections"]["ws"] <= before)


def test_non_upgrade_get_on_ws_endpoint_is_a_client_error(gateway):
    response = requests.get(f"{gateway.inbound}/_rig/v1/connection/ws", timeout=5)
    assert 400 <= response.status_code < 500


def test_ws_server_sends_ping_heartbeats(heartbeat_gateway):
    ws = ws_connect(heartbeat_gateway.connect_url("ws"))
    try:
        _greeted(ws)
        started = time.monotonic()
        frame = ws_next_frame(ws, timeout=2)
        assert frame.opcode == OP.OPCODE_PING
        assert time.monotonic() - started < 1.5
        ws.pong(frame.data)  # pongs are ignored: the connection stays open
        assert ws_next_frame(ws, timeout=2).opcode == OP.OPCODE_PING
    finally:
        ws.close()


def test_sse_server_sends_heartbeat_comments(heartbeat_gateway):
    with heartbeat_gateway.sse() as sse:
        sse.events(2)
        with pytest.raises(TimeoutError):
            sse.next_event(timeout=1.0)
        assert "heartbeat" in sse.comments
