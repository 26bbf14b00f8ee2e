"""Replacing a connection's subscriptions with PUT (RIG §2.5, Appendix A.4)."""

from __future__ import annotations

import pytest
import requests
from clients import SseClient, ce, put_subscriptions, sign_jwt, wait_until
from conftest import JWT_SECRET

CHARLIE = {"eventType": "greeting", "oneOf": [{"name": "charlie"}]}
ALICE_JWT = {"eventType": "greeting.jwt", "oneOf": [{"name": "alice"}]}


def put_url(gw, token: str, transport: str = "sse") -> str:
    return f"{gw.inbound}/_rig/v1/connection/{transport}/{token}/subscriptions"


def open_sse(gw, subscriptions=None, **params) -> tuple[SseClient, str]:
    """An SSE connection past its greeting, and its connection token."""
    sse = gw.sse(subscriptions, **params)
    create, _ = sse.events(2)
    return sse, create.json["data"]["connection_token"]


@pytest.fixture
def connection(gateway):
    sse, token = open_sse(gateway, [{"eventType": "greeting"}])
    yield sse, token
    sse.close()


def flip_one_char(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def test_put_answers_204_and_the_stream_emits_the_new_set(gateway, connection):
    sse, token = connection
    response = put_subscriptions(gateway.inbound, token, [CHARLIE])
    assert response.status_code == 204
    assert response.content == b""
    subs_set = sse.next_event()
    assert subs_set.type == "rig.subscriptions_set"
    assert subs_set.json["data"] == [CHARLIE]


def test_put_changes_filtering_immediately(gateway, connection):
    sse, token = connection
    gateway.publish(ce("greeting", {"name": "bob"}, id_="before"))
    assert sse.next_event().json["id"] == "before"
    assert put_subscriptions(gateway.inbound, token, [CHARLIE]).status_code == 204
    gateway.publish(ce("greeting", {"name": "bob"}, id_="bob"))
    gateway.publish(ce("greeting", {"name": "charlie"}, id_="charlie"))
    assert sse.next_event().type == "rig.subscriptions_set"
    assert sse.next_event().json["id"] == "charlie"
    sse.expect_silence()


def test_put_with_bearer_jwt_adds_the_automatic_subscriptions(gateway, connection):
    # Appendix A.4: the set is the JWT's automatic subscription plus the body's.
    sse, token = connection
    jwt = sign_jwt(JWT_SECRET, username="alice")
    response = put_subscriptions(
        gateway.inbound, token, [CHARLIE], headers={"authorization": f"Bearer {jwt}"}
    )
    assert response.status_code == 204, response.text
    subs_set = sse.next_event()
    assert subs_set.type == "rig.subscriptions_set"
    data = subs_set.json["data"]
    assert len(data) == 2 and ALICE_JWT in data and CHARLIE in data
    gateway.publish(ce("greeting", {"name": "alice"}, id_="greeting-alice"))
    gateway.publish(ce("greeting.jwt", {"name": "charlie"}, id_="jwt-charlie"))
    gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="jwt-alice"))
    gateway.publish(ce("greeting", {"name": "charlie"}, id_="greeting-charlie"))
    assert [e.json["id"] for e in sse.events(2)] == ["jwt-alice", "greeting-charlie"]
    sse.expect_silence()


def test_put_without_the_jwt_drops_the_automatic_subscriptions(gateway):
    jwt = sign_jwt(JWT_SECRET, username="alice")
    sse, token = open_sse(gateway, jwt=jwt)
    with sse:
        assert put_subscriptions(gateway.inbound, token, [CHARLIE]).status_code == 204
        assert sse.next_event().json["data"] == [CHARLIE]
        gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="dropped"))
        gateway.publish(ce("greeting", {"name": "charlie"}, id_="kept"))
        assert sse.next_event().json["id"] == "kept"
        sse.expect_silence()


def test_put_with_an_empty_list_unsubscribes_everything(gateway, connection):
    sse, token = connection
    assert put_subscriptions(gateway.inbound, token, []).status_code == 204
    assert sse.next_event().json["data"] == []
    gateway.publish(ce("greeting", {"name": "x"}, id_="nobody"))
    sse.expect_silence()


@pytest.mark.parametrize("transport", ["ws", "longpolling"])
def test_transport_segment_of_the_path_is_irrelevant(gateway, connection, transport):
    sse, token = connection
    response = put_subscriptions(gateway.inbound, token, [CHARLIE], transport)
    assert response.status_code == 204
    assert sse.next_event().json["data"] == [CHARLIE]


def test_accept_without_json_is_406(gateway, connection):
    _, token = connection
    response = put_subscriptions(gateway.inbound, token, [CHARLIE], headers={"accept": "text/html"})
    assert response.status_code == 406
    assert "text/html" in response.text and "application/json" in response.text


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html, application/json"])
def test_accept_with_json_or_any_is_fine(gateway, connection, accept):
    _, token = connection
    response = put_subscriptions(gateway.inbound, token, [], headers={"accept": accept})
    assert response.status_code == 204


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain"}, {"content-type": "application/jsonx"}, {}],
    ids=["text-plain", "near-miss", "missing"],
)
def test_body_that_is_not_declared_json_is_400(gateway, connection, headers):
    _, token = connection
    response = requests.put(
        put_url(gateway, token), data=b'{"subscriptions":[]}', headers=headers, timeout=5
    )
    assert response.status_code == 400
    assert response.text.startswith("Expected JSON encoded body.")


def test_content_type_parameters_are_allowed(gateway, connection):
    _, token = connection
    response = requests.put(
        put_url(gateway, token),
        data=b'{"subscriptions":[]}',
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert response.status_code == 204


@pytest.mark.parametrize("body", [b"{nope", b"", b"\xff\xfe"])
def test_malformed_json_body_is_400(gateway, connection, body):
    _, token = connection
    response = requests.put(
        put_url(gateway, token),
        data=body,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.text.startswith("Expected JSON encoded body.")


@pytest.mark.parametrize("payload", [{}, {"subscription": []}, [], "subscriptions"])
def test_body_without_subscriptions_field_is_400(gateway, connection, payload):
    _, token = connection
    response = requests.put(put_url(gateway, token), json=payload, timeout=5)
    assert response.status_code == 400
    assert response.text == 'Expected field "subscriptions" is not present.'


@pytest.mark.parametrize(
    "subscriptions", [{"eventType": "greeting"}, "greeting", 1, None], ids=repr
)
def test_subscriptions_that_are_not_a_list_is_400_not_500(gateway, connection, subscriptions):
    # RIG crashes with 500 here (§15.2 item 18).
    _, token = connection
    response = requests.put(
        put_url(gateway, token), json={"subscriptions": subscriptions}, timeout=5
    )
    assert response.status_code == 400
    assert response.text.startswith(
        "cannot accept subscription request: could not parse given subscriptions"
    )


def test_invalid_subscription_in_the_list_is_400(gateway, connection):
    sse, token = connection
    response = put_subscriptions(gateway.inbound, token, [CHARLIE, {"oneOf": []}])
    assert response.status_code == 400
    assert response.text.startswith(
        "cannot accept subscription request: could not parse given subscriptions: "
        "invalid subscription"
    )
    # Nothing changed: the old subscription still delivers.
    gateway.publish(ce("greeting", {"name": "bob"}, id_="still"))
    assert sse.next_event().json["id"] == "still"


def test_garbage_connection_token_is_400(gateway):
    for token in ("garbage", "a.b.c", "not%20base64", "x" * 600):
        response = put_subscriptions(gateway.inbound, token, [])
        assert response.status_code == 400, token
        assert response.text == "Invalid connection token."


def test_forged_connection_token_is_400(gateway, connection):
    sse, token = connection
    for index in (0, len(token) // 2, len(token) - 2):
        response = put_subscriptions(gateway.inbound, flip_one_char(token, index), [CHARLIE])
        assert response.status_code == 400
        assert response.text == "Invalid connection token."
    sse.expect_silence(0.1)  # the real connection was not touched


def test_token_of_a_disconnected_client_is_410(gateway):
    before = gateway.stats()["connections"]["sse"]
    sse, token = open_sse(gateway)
    sse.close()
    wait_until(lambda: gateway.stats()["connections"]["sse"] <= before)
    response = put_subscriptions(gateway.inbound, token, [])
    assert response.status_code == 410
    assert response.text == "Connection no longer exists."


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        f"Bearer {sign_jwt('another-secret-0123456789abcdef-xyz', username='alice')}",
        f"Bearer {sign_jwt(JWT_SECRET, ttl_s=-60, username='alice')}",
    ],
    ids=["garbage", "wrong-key", "expired"],
)
def test_bad_bearer_jwt_is_400(gateway, connection, authorization):
    sse, token = connection
    response = put_subscriptions(
        gateway.inbound, token, [CHARLIE], headers={"authorization": authorization}
    )
    assert response.status_code == 400
    assert response.text.startswith(
        "cannot accept subscription request: invalid authorization header: could not decode JWT:"
    )
    sse.expect_silence(0.1)


def test_every_response_carries_access_control_allow_origin(gateway, connection):
    _, token = connection
    gone_sse, gone = open_sse(gateway)
    gone_sse.close()
    wait_until(lambda: put_subscriptions(gateway.inbound, gone, []).status_code == 410)
    responses = [
        put_subscriptions(gateway.inbound, token, []),  # 204
        put_subscriptions(gateway.inbound, token, [], headers={"accept": "text/html"}),  # 406
        requests.put(put_url(gateway, token), data=b"x", timeout=5),  # 400
        put_subscriptions(gateway.inbound, "garbage", []),  # 400
        put_subscriptions(gateway.inbound, gone, []),  # 410
        put_subscriptions(gateway.inbound, token, [], headers={"authorization": "Bearer x"}),  # 400
    ]
    assert [r.status_code for r in responses] == [204, 406, 400, 400, 410, 400]
    for response in responses:
        assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("transport", ["sse", "ws", "longpolling"])
def test_preflight_allows_put_with_content_type_and_authorization(gateway, transport):
    response = requests.options(put_url(gateway, "any-token", transport), timeout=5)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "PUT"
    assert response.headers["access-control-allow-headers"] == "content-type,authorization"


def test_every_bearer_credential_in_the_header_is_checked(gateway, connection):
    _, token = connection
    good = sign_jwt(JWT_SECRET, username="alice")
    response = put_subscriptions(
        gateway.inbound, token, [], headers={"authorization": f"Bearer {good}, Bearer nope"}
    )
    assert response.status_code == 400
    assert "invalid authorization header" in response.text


def test_several_bearer_credentials_merge_their_claims(gateway, connection):
    sse, token = connection
    named = sign_jwt(JWT_SECRET, username="alice")
    other = sign_jwt(JWT_SECRET, role="reader")
    response = put_subscriptions(
        gateway.inbound, token, [], headers={"authorization": f"Bearer {other}, Bearer {named}"}
    )
    assert response.status_code == 204, response.text
    assert sse.next_event().json["data"] == [ALICE_JWT]
