"""WebSocket clients learn event ids (``rigeventid``) and resume with them (beyond RIG).

An SSE frame carries its replay id in the ``id:`` line; a WebSocket text
frame is the CloudEvent JSON alone, so the id travels in it as the
CloudEvents extension attribute ``rigeventid`` (``ws_event_ids``, on by
default). A client passes it back as ``?last_event_id=`` when it reconnects.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import websocket
from clients import SseClient, ce, ws_connect
from conftest import kafka_ready, wait_until

ID = "rigeventid"


@contextmanager
def ws_client(gateway, subscriptions: list[dict[str, Any]], **params: str):
    ws = ws_connect(gateway.connect_url("ws", subscriptions, **params))
    try:
        yield ws
    finally:
        ws.close()


def greeted(ws: websocket.WebSocket) -> None:
    create, subs_set = json.loads(ws.recv()), json.loads(ws.recv())
    assert [create["type"], subs_set["type"]] == ["rig.connection.create", "rig.subscriptions_set"]
    # Per-connection events are no place to resume from: they carry no id.
    assert ID not in create and ID not in subs_set


def expect_silence(ws: websocket.WebSocket, seconds: float = 0.3) -> None:
    ws.settimeout(seconds)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.settimeout(5)


def publish_raw(gateway, raw: str) -> None:
    response = requests.post(
        f"{gateway.api}/v3/messages",
        data=raw.encode(),
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 202, response.text


def test_ws_frames_carry_the_replay_id_and_a_reconnect_with_it_gets_exactly_the_missed_events(
    gateway,
):
    subs = [{"eventType": "wsr.a"}]
    with ws_client(gateway, subs) as ws:
        greeted(ws)
        raw = '{"specversion":"1.0","type":"wsr.a","source":"t","id":"e1","data":{"n":1}}'
        publish_raw(gateway, raw)
        text = ws.recv()
        last = json.loads(text)[ID]
        assert last
        # The producer's bytes, with the id spliced in as the last attribute.
        assert text == raw[:-1] + f',"{ID}":"{last}"}}'
    gateway.publish(ce("wsr.a", {"n": 2}))
    gateway.publish(ce("wsr.other", {"n": 0}))
    gateway.publish(ce("wsr.a", {"n": 3}))
    with ws_client(gateway, subs, last_event_id=last) as again:
        greeted(again)
        replayed = [json.loads(again.recv()) for _ in range(2)]
        assert [e["data"]["n"] for e in replayed] == [2, 3]
        assert all(e[ID] for e in replayed)
        gateway.publish(ce("wsr.a", {"n": 4}))
        live = json.loads(again.recv())
        assert live["data"] == {"n": 4}
        assert len({last, replayed[0][ID], replayed[1][ID], live[ID]}) == 4
        expect_silence(again)


def test_the_ws_id_of_an_event_is_its_sse_id(gateway):
    subs = [{"eventType": "wsr.same"}]
    with gateway.sse(subs) as sse, ws_client(gateway, subs) as ws:
        sse.events(2)
        greeted(ws)
        gateway.publish(ce("wsr.same", {"n": 1}))
        assert json.loads(ws.recv())[ID] == sse.next_event().id


def test_a_producers_own_rigeventid_is_kept_not_duplicated(gateway):
    with ws_client(gateway, [{"eventType": "wsr.own"}]) as ws:
        greeted(ws)
        raw = '{"specversion":"1.0","type":"wsr.own","source":"t","id":"o1","rigeventid":"mine"}'
        publish_raw(gateway, raw)
        assert ws.recv() == raw


def test_a_ws_reconnect_with_an_unknown_id_is_told_of_the_gap(gateway):
    with ws_client(gateway, [{"eventType": "wsr.u"}], last_event_id="deadbeef-12") as ws:
        greeted(ws)
        gap = json.loads(ws.recv())
        assert gap["type"] == "rig.replay_gap"
        assert gap["data"]["reason"].startswith("unknown id")
        assert ID not in gap


def test_with_ws_event_ids_off_frames_are_the_published_bytes_and_sse_keeps_its_ids(
    gateway_factory,
):
    gateway = gateway_factory(WS_EVENT_IDS="false")
    subs = [{"eventType": "wsr.off"}]
    raw = '{"specversion":"0.2","type":"wsr.off","source":"t","id":"x1","data":{"k":[1,2]}}'
    with gateway.sse(subs) as sse, ws_client(gateway, subs) as ws:
        sse.events(2)
        greeted(ws)
        publish_raw(gateway, raw)
        assert ws.recv() == raw
        event = sse.next_event()
        assert event.data == raw and event.id
    # Replay still works for a client that got its id elsewhere (here: SSE).
    gateway.publish(ce("wsr.off", {"n": 2}))
    with ws_client(gateway, subs, last_event_id=event.id) as again:
        greeted(again)
        text = again.recv()
        assert json.loads(text)["data"] == {"n": 2}
        assert ID not in json.loads(text)


@pytest.mark.kafka
def test_with_kafka_a_ws_client_resumes_on_another_node_from_its_rigeventid(
    broker, gateway_factory
):
    env = {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": broker.new_topic("ws-replay", partitions=1),
        "KAFKA_CONTROL_TOPIC": broker.new_topic("ws-replay-control"),
    }
    a, b = gateway_factory(**env), gateway_factory(**env)
    wait_until(lambda: kafka_ready(a) and kafka_ready(b), timeout=30)
    subs = [{"eventType": "wsr.k"}]
    with ws_client(a, subs) as ws:
        greeted(ws)
        a.publish(ce("wsr.k", {"n": 1}))
        ws.settimeout(10)
        last = json.loads(ws.recv())[ID]
        assert last.startswith("k1.")  # a Kafka position: valid on every node
    for n in (2, 3):
        b.publish(ce("wsr.k", {"n": n}))
    b.publish(ce("wsr.other", {"n": 0}))
    time.sleep(0.5)  # let node B's live stream move past them
    with ws_client(b, subs, last_event_id=last) as again:
        greeted(again)
        again.settimeout(10)
        assert [json.loads(again.recv())["data"]["n"] for _ in range(2)] == [2, 3]
        b.publish(ce("wsr.k", {"n": 4}))
        assert json.loads(again.recv())["data"] == {"n": 4}
        expect_silence(again)


def test_sse_ids_are_unchanged_by_the_ws_attribute(gateway):
    """The attribute lives in the WebSocket frame only: SSE data stays the producer's bytes."""
    raw = '{"specversion":"1.0","type":"wsr.sse","source":"t","id":"s1"}'
    url = gateway.connect_url("sse", [{"eventType": "wsr.sse"}])
    with SseClient(url) as sse:
        sse.events(2)
        publish_raw(gateway, raw)
        event = sse.next_event()
        assert event.data == raw and event.id
