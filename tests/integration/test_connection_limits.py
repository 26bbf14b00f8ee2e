"""Connection rate limit, CORS origin and our subscription limits (RIG §2.8, §7.11)."""

from __future__ import annotations

import pytest
import requests
from clients import ce, put_subscriptions, ws_close_of, ws_connect, ws_next_event

LIMIT = 5
ORIGIN = "http://example.test"
MAX_SUBS = 3
MAX_CONSTRAINTS = 2


@pytest.fixture
def limited_gateway(gateway_factory):
    """A fresh gateway (so a fresh 60 s window) allowing five connections a minute."""
    gw = gateway_factory(MAX_CONNECTIONS_PER_MINUTE=str(LIMIT), LONGPOLLING_WAIT_MS="200")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def custom_gateway(gateway_factory):
    return gateway_factory(
        CORS=ORIGIN,
        MAX_SUBSCRIPTIONS_PER_CONNECTION=str(MAX_SUBS),
        MAX_CONSTRAINTS_PER_SUBSCRIPTION=str(MAX_CONSTRAINTS),
    )


def lp_url(gw, subscriptions=None) -> str:
    return gw.connect_url("longpolling", subscriptions)


def many(n: int) -> list[dict]:
    return [{"eventType": f"type-{i}"} for i in range(n)]


# -- MAX_CONNECTIONS_PER_MINUTE ----------------------------------------------------------


def test_sixth_sse_connection_within_a_minute_is_refused_with_429(limited_gateway):
    streams = [limited_gateway.sse() for _ in range(LIMIT)]
    try:
        for sse in streams:
            assert sse.status == 200
            sse.events(2)
        refused = limited_gateway.sse()
        with refused:
            assert refused.status == 429
            assert refused.body() == "Reached maximum number of connections"
    finally:
        for sse in streams:
            sse.close()


def test_sixth_ws_connection_within_a_minute_gets_a_close_frame(limited_gateway):
    sockets = [ws_connect(limited_gateway.connect_url("ws")) for _ in range(LIMIT)]
    try:
        for ws in sockets:
            assert ws_next_event(ws)["type"] == "rig.connection.create"
        refused = ws_connect(limited_gateway.connect_url("ws"))
        try:
            assert ws_close_of(refused) == (1000, "Bad request.")
        finally:
            refused.shutdown()
    finally:
        for ws in sockets:
            ws.close()


def test_sixth_new_longpolling_session_within_a_minute_is_refused_with_429(limited_gateway):
    clients = []
    for _ in range(LIMIT):
        client = requests.Session()
        response = client.get(lp_url(limited_gateway, [{"eventType": "greeting"}]), timeout=5)
        assert response.status_code == 200
        assert response.json() == "ok"
        clients.append(client)
    refused = requests.get(lp_url(limited_gateway), timeout=5)
    assert refused.status_code == 429
    assert refused.text == "Reached maximum number of connections"
    assert "set-cookie" not in refused.headers

    # Polls and subscription updates of existing sessions do not count.
    for client in clients + clients[:1]:
        response = client.get(lp_url(limited_gateway), timeout=10)
        assert response.status_code == 200
        assert isinstance(response.json(), dict)
    token = clients[0].cookies["connection_token"]
    for _ in range(3):
        response = put_subscriptions(limited_gateway.inbound, token, [], "longpolling")
        assert response.status_code == 204


def test_transports_share_one_connection_budget(limited_gateway):
    sse = [limited_gateway.sse() for _ in range(2)]
    ws = [ws_connect(limited_gateway.connect_url("ws")) for _ in range(2)]
    try:
        assert requests.get(lp_url(limited_gateway), timeout=5).status_code == 200
        with limited_gateway.sse() as refused:
            assert refused.status == 429
        assert requests.get(lp_url(limited_gateway), timeout=5).status_code == 429
    finally:
        for client in sse:
            client.close()
        for socket_ in ws:
            socket_.close()


def test_puts_do_not_count_against_the_connection_limit(limited_gateway):
    sse = limited_gateway.sse([{"eventType": "greeting"}])
    with sse:
        token = sse.next_event().json["data"]["connection_token"]
        for _ in range(LIMIT + 2):
            response = put_subscriptions(limited_gateway.inbound, token, [])
            assert response.status_code == 204
        others = [limited_gateway.sse() for _ in range(LIMIT - 1)]
        try:
            assert all(other.status == 200 for other in others)
        finally:
            for other in others:
                other.close()


# -- CORS ----------------------------------------------------------------------------------


def test_sse_stream_carries_the_configured_origin(custom_gateway):
    with custom_gateway.sse() as sse:
        assert sse.status == 200
        assert sse.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in sse.headers


def test_longpolling_responses_carry_the_configured_origin(custom_gateway):
    client = requests.Session()
    first = client.get(lp_url(custom_gateway), timeout=5)
    second = client.get(lp_url(custom_gateway), timeout=5)
    preflight = requests.options(lp_url(custom_gateway), timeout=5)
    for response in (first, second, preflight):
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"


def test_put_responses_carry_the_configured_origin(custom_gateway):
    with custom_gateway.sse() as sse:
        token = sse.next_event().json["data"]["connection_token"]
        ok = put_subscriptions(custom_gateway.inbound, token, [])
        bad = put_subscriptions(custom_gateway.inbound, "garbage", [])
        preflight = requests.options(
            f"{custom_gateway.inbound}/_rig/v1/connection/sse/{token}/subscriptions", timeout=5
        )
    assert [ok.status_code, bad.status_code, preflight.status_code] == [204, 400, 204]
    for response in (ok, bad, preflight):
        assert response.headers["access-control-allow-origin"] == ORIGIN


def test_events_responses_carry_the_configured_origin(custom_gateway):
    url = f"{custom_gateway.inbound}/_rig/v1/events"
    accepted = requests.post(url, json=ce("greeting", {"name": "x"}), timeout=5)
    preflight = requests.options(url, timeout=5)
    assert accepted.status_code == 202
    assert preflight.status_code == 204
    for response in (accepted, preflight):
        assert response.headers["access-control-allow-origin"] == ORIGIN


# -- MAX_SUBSCRIPTIONS_PER_CONNECTION / MAX_CONSTRAINTS_PER_SUBSCRIPTION -------------------


def test_sse_with_too_many_subscriptions_is_400(custom_gateway):
    with custom_gateway.sse(many(MAX_SUBS)) as sse:
        assert sse.status == 200
        assert len(sse.events(2)[1].json["data"]) == MAX_SUBS
    with custom_gateway.sse(many(MAX_SUBS + 1)) as refused:
        assert refused.status == 400
        assert "too many subscriptions" in refused.body()


def test_duplicates_count_once_toward_the_subscription_limit(custom_gateway):
    with custom_gateway.sse(many(MAX_SUBS) + many(MAX_SUBS)) as sse:
        assert sse.status == 200


def test_ws_with_too_many_subscriptions_is_closed(custom_gateway):
    ws = ws_connect(custom_gateway.connect_url("ws", many(MAX_SUBS + 1)))
    try:
        assert ws_close_of(ws) == (1000, "Bad request.")
    finally:
        ws.shutdown()


def test_longpolling_with_too_many_subscriptions_is_400(custom_gateway):
    response = requests.get(lp_url(custom_gateway, many(MAX_SUBS + 1)), timeout=5)
    assert response.status_code == 400
    assert "too many subscriptions" in response.text


def test_put_with_too_many_subscriptions_is_400_and_keeps_the_old_set(custom_gateway):
    with custom_gateway.sse([{"eventType": "greeting"}]) as sse:
        token = sse.events(2)[0].json["data"]["connection_token"]
        response = put_subscriptions(custom_gateway.inbound, token, many(MAX_SUBS + 1))
        assert response.status_code == 400
        assert "too many subscriptions" in response.text
        assert response.headers["access-control-allow-origin"] == ORIGIN
        custom_gateway.publish(ce("greeting", {"name": "x"}, id_="kept"))
        assert sse.next_event().json["id"] == "kept"


def test_subscription_with_too_many_constraints_is_400(custom_gateway):
    sub = {"eventType": "greeting", "oneOf": [{"name": str(i)} for i in range(MAX_CONSTRAINTS)]}
    with custom_gateway.sse([sub]) as sse:
        assert sse.status == 200
        token = sse.events(2)[0].json["data"]["connection_token"]
        sub["oneOf"].append({"name": "one-too-many"})
        response = put_subscriptions(custom_gateway.inbound, token, [sub])
        assert response.status_code == 400
        assert "too many constraints" in response.text
    with custom_gateway.sse([sub]) as refused:
        assert refused.status == 400
        assert "too many constraints" in refused.body()
