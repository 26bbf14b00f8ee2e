"""SSE connections against the real gateway (RIG §2.1, §2.2, Appendix A.1-A.2)."""

from __future__ import annotations

import json

import requests
from clients import ce


def test_sse_connect_sends_connection_create_then_subscriptions_set(gateway):
    subs = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    with gateway.sse(subs) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert sse.headers["cache-control"] == "no-cache"
        assert sse.headers["access-control-allow-origin"] == "*"
        create, subs_set = sse.events(2)
        assert create.type == "rig.connection.create"
        body = create.json
        assert body["specversion"] == "0.2" and body["source"] == "rig"
        assert list(body) == sorted(body)
        assert isinstance(body["data"]["connection_token"], str)
        assert subs_set.type == "rig.subscriptions_set"
        assert subs_set.json["data"] == subs


def test_published_event_reaches_matching_sse_subscriber_verbatim(gateway):
    subs = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    with gateway.sse(subs) as sse:
        sse.events(2)
        raw = (
            '{"specversion":"0.2","type":"greeting","source":"test","id":"1",'
            '"data":{"name":"alice"}}'
        )
        response = requests.post(
            f"{gateway.inbound}/_rig/v1/events",
            data=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.json() == raw  # RIG's double-encoded body
        event = sse.next_event()
        assert event.type == "greeting"
        assert event.data == raw


def test_sse_subscriber_does_not_receive_non_matching_events(gateway):
    subs = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    with gateway.sse(subs) as sse:
        sse.events(2)
        gateway.publish(ce("greeting", {"name": "bob"}, id_="bob"))
        gateway.publish(ce("other", {"name": "alice"}, id_="other"))
        gateway.publish(ce("greeting", {"name": "alice"}, id_="alice"))
        assert sse.next_event().json["id"] == "alice"
        sse.expect_silence()


def test_sse_with_invalid_subscriptions_json_is_rejected_with_400(gateway):
    response = requests.get(f"{gateway.inbound}/_rig/v1/connection/sse?subscriptions=%7Bnope")
    assert response.status_code == 400
    assert response.text.startswith("Failed to decode subscription list:")


def test_sse_with_invalid_subscription_is_rejected_with_400(gateway):
    response = requests.get(gateway.connect_url("sse", [{"oneOf": []}]))
    assert response.status_code == 400
    assert "could not parse subscriptions" in response.text
    assert "event-type not found" in response.text


def test_sse_with_invalid_jwt_is_rejected_with_400(gateway):
    response = requests.get(f"{gateway.inbound}/_rig/v1/connection/sse?jwt=not-a-token")
    assert response.status_code == 400
    assert response.text.startswith("could not parse subscriptions: could not decode JWT:")


def test_sse_without_parameters_gets_empty_subscription_set(gateway):
    with gateway.sse() as sse:
        _, subs_set = sse.events(2)
        assert subs_set.json["data"] == []


def test_json_subscriptions_param_is_echoed(gateway):
    subs = [{"eventType": "a"}, {"eventType": "a"}, {"eventType": "b", "oneOf": [{"x": 1}]}]
    with gateway.sse(subs) as sse:
        _, subs_set = sse.events(2)
        assert subs_set.json["data"] == [
            {"eventType": "a", "oneOf": []},
            {"eventType": "b", "oneOf": [{"x": 1}]},
        ]


def test_sse_client_closing_removes_its_connection(gateway):
    before = gateway.stats()["connections"]["sse"]
    sse = gateway.sse()
    sse.events(2)
    assert gateway.stats()["connections"]["sse"] == before + 1
    sse.close()
    import time

    deadline = time.monotonic() + 5
    while gateway.stats()["connections"]["sse"] != before:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_event_json_is_delivered_for_each_ce_version(gateway):
    subs = [{"eventType": "v"}]
    with gateway.sse(subs) as sse:
        sse.events(2)
        for version in ("0.1", "0.2", "1.0"):
            event = ce("v", {"n": version}, id_=version, version=version)
            gateway.publish(event)
            assert json.loads(sse.next_event().data) == event
