"""Long-polling keeps its cursor like SSE's Last-Event-ID (beyond RIG).

A long-polling session lives on one worker; when it is gone (it expired,
its worker died or restarted, the client lost its ``connection_token``
cookie) the next request makes a new one. The ``last_event_id`` cookie
carries the replay id of the newest event the client was given, so the new
session first replays what the client missed, in order, without duplicates.

The clients here poll with their subscriptions in the URL, as a client that
keeps one URL does: a new session takes its subscriptions from the request
that creates it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from clients import SseClient, ce, put_subscriptions
from conftest import kafka_ready, wait_until

WAIT_S = 0.5


@pytest.fixture(scope="module")
def lp_gateway(gateway_factory):
    return gateway_factory(LONGPOLLING_WAIT_MS=str(int(WAIT_S * 1000)))


class LpClient:
    """A long-polling client: a cookie jar and one URL (subscriptions included)."""

    def __init__(self, gateway, subscriptions: list[dict[str, Any]], **params: str) -> None:
        self.gateway = gateway
        self.subscriptions = subscriptions
        self.http = requests.Session()
        self.url = gateway.connect_url("longpolling", subscriptions, **params)

    def get(self) -> requests.Response:
        response = self.http.get(self.url, timeout=10)
        assert response.status_code == 200, response.text
        return response

    def start(self) -> str:
        """The first request: a new session ("ok"); returns its token."""
        assert self.get().json() == "ok"
        return self.http.cookies["connection_token"]

    def poll(self) -> dict[str, Any]:
        body = self.get().json()
        assert body != "ok", "the session was replaced unexpectedly"
        return body

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until ``count`` events have arrived; exactly those."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            assert time.monotonic() < deadline, f"only {events} arrived"
            events += self.poll()["events"]
        assert len(events) == count, events
        return events

    def expect_nothing(self) -> None:
        assert self.poll()["events"] == []

    def greeted(self) -> None:
        types = [e["type"] for e in self.events(2)]
        assert types == ["rig.connection.create", "rig.subscriptions_set"]

    @property
    def token(self) -> str:
        return self.http.cookies["connection_token"]


def end_session(gateway, token: str) -> None:
    """End a session as a crash of its actor would (fault injection is on in tests)."""
    response = requests.post(
        f"{gateway.api}/_rig/faults", json={"actor": "connection", "token": token}, timeout=5
    )
    assert response.status_code == 202
    wait_until(
        lambda: put_subscriptions(gateway.inbound, token, [], "longpolling").status_code == 410
    )


def numbers(events: list[dict[str, Any]]) -> list[Any]:
    return [e["data"]["n"] if e["type"].startswith("lpr") else e["type"] for e in events]


def test_a_session_that_ended_is_replaced_by_one_that_replays_the_missed_events_in_order(
    lp_gateway,
):
    client = LpClient(lp_gateway, [{"eventType": "lpr.ended"}])
    old_token = client.start()
    client.greeted()
    lp_gateway.publish(ce("lpr.ended", {"n": 1}))
    assert numbers(client.events(1)) == [1]
    end_session(lp_gateway, old_token)
    lp_gateway.publish(ce("lpr.ended", {"n": 2}))
    lp_gateway.publish(ce("lpr.other", {"n": 0}))
    lp_gateway.publish(ce("lpr.ended", {"n": 3}))

    assert client.start() != old_token  # RIG's answer for a new session
    assert client.http.cookies["last_event_id"] == '"first_event"'
    assert numbers(client.events(4)) == ["rig.connection.create", "rig.subscriptions_set", 2, 3]
    lp_gateway.publish(ce("lpr.ended", {"n": 4}))
    assert numbers(client.events(1)) == [4]
    client.expect_nothing()


def test_events_published_after_subscribing_are_replayed_even_if_none_had_arrived(lp_gateway):
    client = LpClient(lp_gateway, [{"eventType": "lpr.quiet"}])
    token = client.start()
    client.greeted()  # the last event seen is rig.subscriptions_set: no replay id of its own
    end_session(lp_gateway, token)
    lp_gateway.publish(ce("lpr.quiet", {"n": 1}))
    lp_gateway.publish(ce("lpr.quiet", {"n": 2}))
    client.start()
    assert numbers(client.events(4)) == ["rig.connection.create", "rig.subscriptions_set", 1, 2]
    client.expect_nothing()


def test_a_client_that_lost_its_token_cookie_resumes_from_its_last_event_id_cookie(lp_gateway):
    client = LpClient(lp_gateway, [{"eventType": "lpr.token"}])
    old_token = client.start()
    client.greeted()
    lp_gateway.publish(ce("lpr.token", {"n": 1}))
    assert numbers(client.events(1)) == [1]
    client.http.cookies.pop("connection_token")
    lp_gateway.publish(ce("lpr.token", {"n": 2}))
    assert client.start() != old_token
    assert numbers(client.events(3)) == ["rig.connection.create", "rig.subscriptions_set", 2]
    client.expect_nothing()


def test_a_poll_within_a_session_returns_each_event_once(lp_gateway):
    client = LpClient(lp_gateway, [{"eventType": "lpr.live"}])
    client.start()
    client.greeted()
    seen: list[Any] = []
    for n in range(6):
        lp_gateway.publish(ce("lpr.live", {"n": n}))
        if n % 2:
            body = client.poll()
            seen += numbers(body["events"])
            cookie = client.http.cookies["last_event_id"]
            assert cookie == json.dumps(body["last_event_id"])  # RIG's shape: a JSON string
    while len(seen) < 6:
        seen += numbers(client.poll()["events"])
    assert seen == list(range(6))
    client.expect_nothing()


def test_a_fresh_client_gets_the_rig_first_event_cookie_and_only_the_greeting(lp_gateway):
    client = LpClient(lp_gateway, [{"eventType": "lpr.fresh"}])
    response = client.get()
    assert response.text == '"ok"'
    assert 'last_event_id="first_event"; path=/; HttpOnly' in response.headers["set-cookie"]
    client.greeted()
    client.expect_nothing()


def test_a_first_request_may_name_an_sse_id_to_replay_from(lp_gateway):
    subs = [{"eventType": "lpr.query"}]
    with lp_gateway.sse(subs) as sse:
        sse.events(2)
        lp_gateway.publish(ce("lpr.query", {"n": 1}))
        last = sse.next_event().id
    lp_gateway.publish(ce("lpr.query", {"n": 2}))
    lp_gateway.publish(ce("lpr.query", {"n": 3}))
    client = LpClient(lp_gateway, subs, last_event_id=last)
    client.start()
    assert numbers(client.events(4)) == ["rig.connection.create", "rig.subscriptions_set", 2, 3]
    client.expect_nothing()


def test_a_long_polling_cursor_resumes_an_sse_stream(lp_gateway):
    subs = [{"eventType": "lpr.fallback"}]
    client = LpClient(lp_gateway, subs)
    client.start()
    client.greeted()
    lp_gateway.publish(ce("lpr.fallback", {"n": 1}))
    body = client.poll()
    assert numbers(body["events"]) == [1]
    lp_gateway.publish(ce("lpr.fallback", {"n": 2}))
    url = lp_gateway.connect_url("sse", subs, last_event_id=body["last_event_id"])
    with SseClient(url) as sse:
        sse.events(2)
        assert sse.next_event().json["data"] == {"n": 2}
        sse.expect_silence()


def test_a_session_that_expired_is_replaced_by_one_that_replays(gateway_factory):
    gateway = gateway_factory(LONGPOLLING_WAIT_MS="300", LONGPOLLING_SESSION_TTL_MS="1000")
    client = LpClient(gateway, [{"eventType": "lpr.ttl"}])
    token = client.start()
    client.greeted()
    gateway.publish(ce("lpr.ttl", {"n": 1}))
    assert numbers(client.events(1)) == [1]
    # The client stops polling; the idle sweep ends the session after the TTL.
    wait_until(
        lambda: put_subscriptions(gateway.inbound, token, [], "longpolling").status_code == 410
    )
    gateway.publish(ce("lpr.ttl", {"n": 2}))
    client.start()
    assert numbers(client.events(3)) == ["rig.connection.create", "rig.subscriptions_set", 2]


def test_a_cursor_from_a_gateway_that_restarted_without_kafka_gets_a_gap_event(gateway_factory):
    """Without Kafka the history is in memory: after a restart the loss is said, not hidden."""
    first = gateway_factory(LONGPOLLING_WAIT_MS="300")
    client = LpClient(first, [{"eventType": "lpr.restart"}])
    client.start()
    client.greeted()
    first.publish(ce("lpr.restart", {"n": 1}))
    assert numbers(client.events(1)) == [1]
    first.stop()
    second = gateway_factory(LONGPOLLING_WAIT_MS="300")
    client.url = second.connect_url("longpolling", client.subscriptions)
    client.start()
    *greeting, gap = client.events(3)
    assert [e["type"] for e in greeting] == ["rig.connection.create", "rig.subscriptions_set"]
    assert gap["type"] == "rig.replay_gap"
    assert gap["data"]["reason"].startswith("unknown id")
    second.publish(ce("lpr.restart", {"n": 2}))
    assert numbers(client.events(1)) == [2]


@pytest.mark.kafka
def test_with_kafka_a_session_whose_node_is_gone_is_replayed_on_another_node(
    broker, gateway_factory
):
    env = {
        "KAFKA_BROKERS": broker.bootstrap,
        "KAFKA_SOURCE_TOPICS": broker.new_topic("lp-replay", partitions=1),
        "KAFKA_CONTROL_TOPIC": broker.new_topic("lp-replay-control"),
        "LONGPOLLING_WAIT_MS": "300",
    }
    a = gateway_factory(**env)
    wait_until(lambda: kafka_ready(a), timeout=30)
    client = LpClient(a, [{"eventType": "lpr.k"}])
    client.start()
    client.greeted()
    a.publish(ce("lpr.k", {"n": 1}))
    assert numbers(client.events(1)) == [1]
    a.stop()  # the session goes with its node
    b = gateway_factory(**env)
    wait_until(lambda: kafka_ready(b), timeout=30)
    for n in (2, 3):
        b.publish(ce("lpr.k", {"n": n}))
    b.publish(ce("lpr.other", {"n": 0}))
    # The cookie names a worker node B never heard of: a new session, replayed from Kafka.
    client.url = b.connect_url("longpolling", client.subscriptions)
    client.start()
    assert numbers(client.events(4)) == ["rig.connection.create", "rig.subscriptions_set", 2, 3]
    b.publish(ce("lpr.k", {"n": 4}))
    assert numbers(client.events(1)) == [4]
    client.expect_nothing()


@pytest.mark.kafka
def test_with_kafka_a_replay_under_live_traffic_joins_the_live_stream_without_a_gap_or_duplicate(
    broker, gateway_factory
):
    gateway = gateway_factory(
        KAFKA_BROKERS=broker.bootstrap,
        KAFKA_SOURCE_TOPICS=broker.new_topic("lp-live", partitions=1),
        KAFKA_CONTROL_TOPIC=broker.new_topic("lp-live-control"),
        LONGPOLLING_WAIT_MS="300",
    )
    wait_until(lambda: kafka_ready(gateway), timeout=30)
    client = LpClient(gateway, [{"eventType": "lpr.flow"}])
    token = client.start()
    client.greeted()
    gateway.publish(ce("lpr.flow", {"n": 0}))
    assert numbers(client.events(1)) == [0]
    end_session(gateway, token)
    total = 40
    published = threading.Event()

    def publish() -> None:
        for n in range(1, total + 1):
            gateway.publish(ce("lpr.flow", {"n": n}))
            time.sleep(0.02)
        published.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        time.sleep(0.2)  # the new session's replay starts while events keep coming
        client.start()
        events = client.events(total + 2, timeout=20)
    finally:
        publisher.join()
    assert published.is_set()
    greeting = ["rig.connection.create", "rig.subscriptions_set"]
    assert numbers(events) == [*greeting, *range(1, total + 1)]
    client.expect_nothing()
