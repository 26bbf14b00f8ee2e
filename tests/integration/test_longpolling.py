"""Long-polling against the real gateway (RIG §2.4, Appendix A.5)."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlencode

import pytest
import requests
from clients import ce, put_subscriptions, sign_jwt, wait_until
from conftest import EXTRACTORS, JWT_SECRET

WAIT_S = 0.5


@pytest.fixture(scope="module")
def lp_gateway(gateway_factory):
    """Default settings, but a 500 ms long-poll wait to keep the tests fast."""
    return gateway_factory(
        EXTRACTORS=json.dumps(EXTRACTORS),
        JWT_SECRET_KEY=JWT_SECRET,
        LONGPOLLING_WAIT_MS=str(int(WAIT_S * 1000)),
    )


def lp_url(gw, subscriptions=None, **params) -> str:
    return gw.connect_url("longpolling", subscriptions, **params)


def lp_raw_url(gw, **params: str) -> str:
    """The long-polling URL with query parameters taken as they are."""
    return f"{gw.inbound}/_rig/v1/connection/longpolling?{urlencode(params)}"


def set_cookies(response: requests.Response) -> list[str]:
    return response.raw.headers.getlist("set-cookie")


def start_session(gw, subscriptions=None, **params) -> tuple[requests.Session, str]:
    """A new long-polling session and its connection token, from the first GET."""
    client = requests.Session()
    response = client.get(lp_url(gw, subscriptions, **params), timeout=5)
    assert response.status_code == 200, response.text
    assert response.json() == "ok"
    return client, client.cookies["connection_token"]


def poll(gw, client: requests.Session) -> requests.Response:
    response = client.get(lp_url(gw), timeout=10)
    assert response.status_code == 200, response.text
    return response


def poll_past_greeting(gw, client: requests.Session) -> dict:
    """Poll until both greeting events are consumed; return the last body."""
    body = poll(gw, client).json()
    types = [e["type"] for e in body["events"]]
    if types == ["rig.connection.create"]:
        body = poll(gw, client).json()
        types += [e["type"] for e in body["events"]]
    assert types == ["rig.connection.create", "rig.subscriptions_set"]
    return body


def test_first_get_creates_a_session_and_answers_ok(lp_gateway):
    response = requests.get(lp_url(lp_gateway, [{"eventType": "greeting"}]), timeout=5)
    assert response.status_code == 200
    assert response.text == '"ok"'
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-credentials"] == "true"
    cookies = set_cookies(response)
    tokens = [c for c in cookies if c.startswith("connection_token=")]
    assert len(tokens) == 1
    token = tokens[0].split(";")[0].removeprefix("connection_token=")
    assert token and not set(token) & set("#/?;, ")
    assert any(c.split(";")[0] == 'last_event_id="first_event"' for c in cookies)
    for cookie in cookies:
        attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert "path=/" in attributes and "httponly" in attributes


def test_second_get_returns_connection_create_and_subscriptions_set(lp_gateway):
    subs = [{"eventType": "greeting"}]
    client, token = start_session(lp_gateway, subs)
    response = poll(lp_gateway, client)
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-credentials"] == "true"
    body = response.json()
    assert list(body) == ["last_event_id", "events"]
    create, subs_set = body["events"]
    assert create["type"] == "rig.connection.create"
    assert create["data"] == {"connection_token": token}
    assert subs_set["type"] == "rig.subscriptions_set"
    assert subs_set["data"] == [{"eventType": "greeting", "oneOf": []}]
    assert isinstance(body["last_event_id"], str)
    cookie = {c.split(";")[0].split("=", 1)[0]: c.split(";")[0] for c in set_cookies(response)}
    assert cookie["last_event_id"] == f"last_event_id={json.dumps(body['last_event_id'])}"
    assert cookie["connection_token"] == f"connection_token={token}"


def test_empty_poll_waits_then_returns_no_events_and_the_same_cursor(lp_gateway):
    client, _ = start_session(lp_gateway)
    cursor = poll_past_greeting(lp_gateway, client)["last_event_id"]
    started = time.monotonic()
    body = poll(lp_gateway, client).json()
    waited = time.monotonic() - started
    assert body == {"last_event_id": cursor, "events": []}
    assert waited >= WAIT_S - 0.1
    assert waited < WAIT_S + 1.5


def test_waiting_poll_returns_as_soon_as_a_matching_event_is_published(lp_gateway):
    client, _ = start_session(lp_gateway, [{"eventType": "greeting"}])
    poll_past_greeting(lp_gateway, client)

    def publish_soon() -> None:
        time.sleep(0.1)
        lp_gateway.publish(ce("greeting", {"name": "x"}, id_="soon"))

    publisher = threading.Thread(target=publish_soon)
    started = time.monotonic()
    publisher.start()
    body = poll(lp_gateway, client).json()
    elapsed = time.monotonic() - started
    publisher.join()
    assert [e["id"] for e in body["events"]] == ["soon"]
    assert elapsed < WAIT_S - 0.15


def test_events_buffered_between_polls_are_returned_in_order_exactly_once(lp_gateway):
    client, _ = start_session(lp_gateway, [{"eventType": "greeting"}])
    poll_past_greeting(lp_gateway, client)
    raw = '{"specversion":"0.2","type":"greeting","source":"lp","id":"raw","data":{"k":[1,2]}}'
    for i in range(3):
        lp_gateway.publish(ce("greeting", {"i": i}, id_=f"e{i}"))
    response = requests.post(
        f"{lp_gateway.api}/v3/messages",
        data=raw,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 202
    response = poll(lp_gateway, client)
    body = response.json()
    assert [e["id"] for e in body["events"]] == ["e0", "e1", "e2", "raw"]
    assert raw in response.text  # embedded verbatim, not re-encoded
    started = time.monotonic()
    assert poll(lp_gateway, client).json()["events"] == []
    assert time.monotonic() - started >= WAIT_S - 0.1


def test_put_subscriptions_appends_subscriptions_set_and_changes_filtering(lp_gateway):
    client, token = start_session(lp_gateway, [{"eventType": "greeting"}])
    poll_past_greeting(lp_gateway, client)
    new = [{"eventType": "person", "oneOf": [{"name": "carol"}]}]
    response = put_subscriptions(lp_gateway.inbound, token, new, "longpolling")
    assert response.status_code == 204, response.text
    lp_gateway.publish(ce("greeting", {"name": "carol"}, id_="old-type"))
    lp_gateway.publish(ce("person", {"name": "dave"}, id_="other-name"))
    lp_gateway.publish(ce("person", {"name": "carol", "age": 3}, id_="match"))
    body = poll(lp_gateway, client).json()
    subs_set, *events = body["events"]
    assert subs_set["type"] == "rig.subscriptions_set"
    assert subs_set["data"] == new
    assert [e["id"] for e in events] == ["match"]


def test_undecodable_connection_token_cookie_starts_a_new_session(lp_gateway):
    for garbage in ("%%%not-a-token", "a.b.c", "x" * 600):
        client = requests.Session()
        client.cookies.set("connection_token", garbage)
        response = client.get(lp_url(lp_gateway), timeout=5)
        assert response.status_code == 200, response.text
        assert response.json() == "ok"
        assert response.cookies["connection_token"] != garbage


def test_cookie_of_a_session_that_ended_starts_a_new_session(lp_gateway):
    client, token = start_session(lp_gateway)
    poll_past_greeting(lp_gateway, client)
    # End the session (fault injection is on in the test gateways).
    crashed = requests.post(
        f"{lp_gateway.api}/_rig/faults", json={"actor": "connection", "token": token}, timeout=5
    )
    assert crashed.status_code == 202
    wait_until(
        lambda: put_subscriptions(lp_gateway.inbound, token, [], "longpolling").status_code == 410
    )
    response = client.get(lp_url(lp_gateway), timeout=5)
    assert response.status_code == 200
    assert response.json() == "ok"
    assert response.cookies["connection_token"] != token
    assert response.cookies["last_event_id"] == '"first_event"'


def test_token_of_a_non_longpolling_connection_starts_a_new_session(lp_gateway):
    with lp_gateway.sse() as sse:
        sse_token = sse.next_event().json["data"]["connection_token"]
        client = requests.Session()
        client.cookies.set("connection_token", sse_token)
        response = client.get(lp_url(lp_gateway), timeout=5)
        assert response.status_code == 200
        assert response.json() == "ok"
        assert response.cookies["connection_token"] != sse_token


def test_preflight_allows_get_with_credentials(lp_gateway):
    response = requests.options(lp_url(lp_gateway), timeout=5)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == "GET"
    assert response.headers["access-control-allow-headers"] == "*"


def test_jwt_query_parameter_gives_automatic_subscriptions(lp_gateway):
    jwt = sign_jwt(JWT_SECRET, username="alice")
    client, _ = start_session(lp_gateway, jwt=jwt)
    body = poll(lp_gateway, client).json()
    assert body["events"][-1]["data"] == [
        {"eventType": "greeting.jwt", "oneOf": [{"name": "alice"}]}
    ]
    lp_gateway.publish(ce("greeting.jwt", {"name": "bob"}, id_="bob"))
    lp_gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="alice"))
    assert [e["id"] for e in poll(lp_gateway, client).json()["events"]] == ["alice"]


def test_invalid_jwt_query_parameter_is_rejected_with_400(lp_gateway):
    response = requests.get(lp_url(lp_gateway, jwt="not-a-token"), timeout=5)
    assert response.status_code == 400
    assert response.text.startswith("could not parse subscriptions: could not decode JWT:")
    assert "connection_token" not in response.headers.get("set-cookie", "")


def test_subscriptions_query_parameter_may_be_a_wrapped_object(lp_gateway):
    wrapped = {"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "w"}]}]}
    client = requests.Session()
    response = client.get(lp_raw_url(lp_gateway, subscriptions=json.dumps(wrapped)), timeout=5)
    assert response.status_code == 200
    body = poll_past_greeting(lp_gateway, client)
    assert body["events"][-1]["data"] == wrapped["subscriptions"]
    lp_gateway.publish(ce("greeting", {"name": "v"}, id_="no"))
    lp_gateway.publish(ce("greeting", {"name": "w"}, id_="yes"))
    assert [e["id"] for e in poll(lp_gateway, client).json()["events"]] == ["yes"]


@pytest.mark.parametrize(
    ("subscriptions", "message"),
    [
        ("{nope", "Failed to decode subscription list:"),
        ('[{"oneOf":[]}]', "could not parse subscriptions:"),
    ],
)
def test_invalid_subscriptions_query_parameter_is_rejected_with_400(
    lp_gateway, subscriptions, message
):
    response = requests.get(lp_raw_url(lp_gateway, subscriptions=subscriptions), timeout=5)
    assert response.status_code == 400
    assert response.text.startswith(message)


def test_each_session_is_counted_once_as_a_longpolling_connection(lp_gateway):
    before = lp_gateway.stats()["connections"]["longpolling"]
    client, _ = start_session(lp_gateway)
    poll_past_greeting(lp_gateway, client)
    assert lp_gateway.stats()["connections"]["longpolling"] == before + 1
