"""Session blacklist and token expiry on one gateway process (RIG §3.6, §6.5, A.6).

The endpoint's wire contract; kills of SSE (``rig.session_killed`` then EOF),
WebSocket (close frame) and long-polling (the waiting poll returns the kill;
RIG never kills long-polling, §15 item 8); the session name taken from
``JWT_SESSION_FIELD`` for both the kill and the validity check (RIG checks
``jti``, §15 item 7); and connections ending when their token expires
(``rig.session_expired``). The clusters are in ``test_security_cluster.py``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt as pyjwt
import pytest
import requests
from clients import SseClient, ce, ws_close_of, ws_connect, ws_next_frame
from conftest import JWT_SECRET, wait_until
from websocket import ABNF

REJECTED = "could not parse subscriptions: could not decode JWT: "


def token(ttl_s: float = 300, **claims: Any) -> str:
    """An HS256 token; a float ``exp`` so that expiry tests need not wait whole seconds."""
    return pyjwt.encode({"exp": time.time() + ttl_s, **claims}, JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def gw(gateway_factory):
    return gateway_factory(
        JWT_SECRET_KEY=JWT_SECRET,
        SUBMISSION_CHECK="jwt_validation",
        LONGPOLLING_WAIT_MS="3000",
    )


def blacklist(gateway, session: str, validity: Any = 60, version: str = "v3"):
    return requests.post(
        f"{gateway.api}/{version}/session-blacklist",
        json={"sessionId": session, "validityInSeconds": validity},
        timeout=10,
    )


def is_listed(gateway, session: str) -> bool:
    response = requests.get(f"{gateway.api}/v3/session-blacklist/{session}", timeout=10)
    return response.status_code == 200


def open_sse(gateway, jwt: str | None = None, subs=None) -> SseClient:
    params = {"jwt": jwt} if jwt else {}
    sse = gateway.sse(subs if subs is not None else [{"eventType": "bl"}], **params)
    assert sse.status == 200, sse.body()
    create, _ = sse.events(2)
    sse.connection_token = create.json["data"]["connection_token"]
    return sse


def open_ws(gateway, jwt: str):
    ws = ws_connect(gateway.connect_url("ws", [{"eventType": "bl"}], jwt=jwt))
    assert ws_next_frame(ws).opcode == ABNF.OPCODE_TEXT
    assert ws_next_frame(ws).opcode == ABNF.OPCODE_TEXT
    return ws


class LongPoller:
    """A long-polling client that keeps one poll waiting, in a thread."""

    def __init__(self, gateway, jwt: str) -> None:
        self.session = requests.Session()
        self.url = gateway.connect_url("longpolling", [{"eventType": "bl"}], jwt=jwt)
        assert self.session.get(self.url, timeout=10).json() == "ok"
        first = self.session.get(self.url, timeout=10).json()
        assert [e["type"] for e in first["events"]] == [
            "rig.connection.create",
            "rig.subscriptions_set",
        ]
        self.answer: dict[str, Any] | None = None
        self.answered_at = 0.0
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        time.sleep(0.2)  # the poll is now waiting on the gateway

    def _poll(self) -> None:
        self.answer = self.session.get(self.url, timeout=15).json()
        self.answered_at = time.monotonic()

    def last_answer(self, timeout: float = 5.0) -> dict[str, Any]:
        self.thread.join(timeout)
        assert self.answer is not None, "the waiting poll did not return"
        return self.answer


# --------------------------------------------------------------------------- #
# The endpoint (RIG §3.6, Appendix A.6)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_blacklisting_answers_201_with_location_and_the_entry_reads_200(gw, version):
    response = blacklist(gw, f"a6-{version}", 60, version)
    assert response.status_code == 201
    assert response.text == "{}"
    assert response.headers["location"] == f"/{version}/session-blacklist/a6-{version}"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"
    entry = requests.get(f"{gw.api}{response.headers['location']}", timeout=10)
    assert (entry.status_code, entry.text) == (200, "{}")
    assert entry.headers["content-type"] == "application/json; charset=utf-8"
    other = requests.get(f"{gw.api}/{version}/session-blacklist/other", timeout=10)
    assert (other.status_code, other.text) == (404, "Not found.")


def ask(session: Any = "s", validity: Any = 60) -> dict[str, Any]:
    """A request body; ``...`` leaves a field out."""
    body = {"sessionId": session, "validityInSeconds": validity}
    return {k: v for k, v in body.items() if v is not ...}


BAD_BODIES: dict[str, tuple[Any, str]] = {
    "no sessionId": (ask(...), 'Missing value for "sessionId"'),
    "empty sessionId": (ask(""), 'Expected non-empty string, got ""'),
    "numeric sessionId": (ask(12), "Expected non-empty string, got 12"),
    "null sessionId": (ask(None), "Expected non-empty string, got nil"),
    "no validity": (ask(validity=...), 'Missing value for "validityInSeconds"'),
    "word": (ask(validity="abc"), 'Expected a number, got "abc"'),
    "decimal string": (ask(validity="1.5"), 'Expected a number, got "1.5"'),
    "zero": (ask(validity=0), "Expected a positive number, got 0"),
    "negative": (ask(validity=-5), "Expected a positive number, got -5"),
    "negative string": (ask(validity="-5"), "Expected a positive number, got -5"),
    "empty string": (ask(validity=""), 'Expected a positive number, got ""'),
    "null": (ask(validity=None), "Expected a positive number, got nil"),
    "boolean": (ask(validity=True), "Expected a positive number, got true"),
    "list body": ([{"sessionId": "s"}], 'Missing value for "sessionId"'),
}


@pytest.mark.parametrize("case", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_invalid_blacklist_requests_get_rigs_400_texts(gw, case):
    body, text = BAD_BODIES[case]
    response = requests.post(f"{gw.api}/v3/session-blacklist", json=body, timeout=10)
    assert (response.status_code, response.text) == (400, text)
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("validity", ["60", "+60", 1.5, 1e9])
def test_validity_may_be_a_positive_number_or_integer_string(gw, validity):
    assert blacklist(gw, f"valid-{validity}", validity).status_code == 201


def test_a_form_body_works_too(gw):
    response = requests.post(
        f"{gw.api}/v3/session-blacklist",
        data={"sessionId": "from-a-form", "validityInSeconds": "60"},
        timeout=10,
    )
    assert response.status_code == 201
    assert is_listed(gw, "from-a-form")


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "application/json"}, b"{not json", 400),
        ({"content-type": "text/plain"}, b"sessionId=x", 415),
    ],
)
def test_unparseable_bodies_get_rigs_framework_errors(gw, headers, body, status):
    response = requests.post(
        f"{gw.api}/v3/session-blacklist", data=body, headers=headers, timeout=10
    )
    assert response.status_code == status
    assert response.json() == {"errors": {"detail": "Bad request"}}


def test_body_over_the_limit_is_413(gw):
    body = json.dumps({"sessionId": "x" * 2_000_000, "validityInSeconds": 60})
    response = requests.post(
        f"{gw.api}/v3/session-blacklist",
        data=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413


def test_preflight(gw):
    response = requests.options(f"{gw.api}/v3/session-blacklist", timeout=10)
    assert response.status_code == 204
    assert response.headers["access-control-allow-methods"] == "POST"
    assert response.headers["access-control-allow-headers"] == "content-type"


def test_the_location_of_an_odd_session_name_is_escaped_and_works(gw):
    response = blacklist(gw, "user/42 ü")
    location = response.headers["location"]
    assert location == "/v3/session-blacklist/user%2F42%20%C3%BC"
    assert requests.get(f"{gw.api}{location}", timeout=10).status_code == 200


def test_an_entry_lapses_after_its_validity_and_the_token_works_again(gw):
    jwt = token(jti="brief")
    assert blacklist(gw, "brief", 1).status_code == 201
    assert requests.get(gw.connect_url("sse", jwt=jwt), timeout=10).status_code == 400
    wait_until(lambda: not is_listed(gw, "brief"), timeout=3)
    with open_sse(gw, jwt) as sse:
        assert sse.status == 200


def test_re_adding_keeps_the_later_expiry(gw):
    assert blacklist(gw, "twice", 60).status_code == 201
    assert blacklist(gw, "twice", 1).status_code == 201
    time.sleep(1.2)
    assert is_listed(gw, "twice")


# --------------------------------------------------------------------------- #
# Killing live connections
# --------------------------------------------------------------------------- #


def test_blacklisting_kills_every_transport_of_the_session_and_nothing_else(gw):
    victim, bystander = token(jti="victim"), token(jti="bystander")
    sse_a, sse_b = open_sse(gw, victim), open_sse(gw, victim)
    ws = open_ws(gw, victim)
    poller = LongPoller(gw, victim)
    other = open_sse(gw, bystander)
    try:
        assert blacklist(gw, "victim").status_code == 201
        for sse in (sse_a, sse_b):
            assert sse.next_event(2).type == "rig.session_killed"
            assert sse.is_closed(2)
        assert ws_close_of(ws, 2) == (1000, "Session killed.")
        events = poller.last_answer()["events"]
        assert events[-1]["type"] == "rig.session_killed"
        assert events[-1]["source"] == "rig" and "data" not in events[-1]
        # The bystander's stream is untouched.
        gw.publish(ce("bl", {"n": 1}))
        assert other.next_event(2).json["data"] == {"n": 1}
    finally:
        for client in (sse_a, sse_b, other, ws):
            client.close()


def test_the_kill_event_is_the_last_thing_an_sse_client_reads(gw):
    jwt = token(jti="last-words")
    with open_sse(gw, jwt) as sse:
        assert blacklist(gw, "last-words").status_code == 201
        killed = sse.next_event(2)
        assert killed.type == "rig.session_killed"
        assert set(killed.json) == {"id", "source", "specversion", "time", "type"}
        assert sse.is_closed(2)


def test_a_killed_long_polling_session_is_gone_and_its_token_refused(gw):
    jwt = token(jti="lp-victim")
    poller = LongPoller(gw, jwt)
    assert blacklist(gw, "lp-victim").status_code == 201
    poller.last_answer()
    # The next poll (same cookies, same URL with the blacklisted jwt) cannot
    # find the session and may not start a new one with that token.
    again = poller.session.get(poller.url, timeout=10)
    assert again.status_code == 400
    assert again.text.startswith(REJECTED)


def test_a_connection_that_joined_the_session_by_put_is_killed(gw):
    with open_sse(gw) as sse:
        response = requests.put(
            f"{gw.inbound}/_rig/v1/connection/sse/{sse.connection_token}/subscriptions",
            json={"subscriptions": [{"eventType": "bl"}]},
            headers={"authorization": f"Bearer {token(jti='joined-later')}"},
            timeout=10,
        )
        assert response.status_code == 204
        assert sse.next_event(2).type == "rig.subscriptions_set"
        assert blacklist(gw, "joined-later").status_code == 201
        assert sse.next_event(2).type == "rig.session_killed"


def test_a_blacklisted_token_is_refused_everywhere(gw):
    jwt = token(jti="banned")
    with open_sse(gw) as anonymous:
        assert blacklist(gw, "banned").status_code == 201
        for transport in ("sse", "longpolling"):
            response = requests.get(gw.connect_url(transport, jwt=jwt), timeout=10)
            assert response.status_code == 400, transport
            assert response.text == REJECTED + "session is blacklisted"
        ws = ws_connect(gw.connect_url("ws", jwt=jwt))
        assert ws_close_of(ws) == (1000, "Bad request.")
        ws.close()
        # Also from an Authorization header on connect.
        bearer = {"authorization": f"Bearer {jwt}"}
        assert requests.get(gw.connect_url("sse"), headers=bearer, timeout=10).status_code == 400
        put = requests.put(
            f"{gw.inbound}/_rig/v1/connection/sse/{anonymous.connection_token}/subscriptions",
            json={"subscriptions": []},
            headers=bearer,
            timeout=10,
        )
        assert put.status_code == 400
        assert put.text.endswith("could not decode JWT: session is blacklisted")
        event = requests.post(f"{gw.inbound}/_rig/v1/events", json=ce("x"), headers=bearer)
        assert (event.status_code, event.text) == (403, "Submission denied.")


def test_the_configured_session_field_is_used_for_kill_and_check(gateway_factory):
    # RIG kills by JWT_SESSION_FIELD but checks new tokens by jti only (§15 item 7).
    gateway = gateway_factory(JWT_SECRET_KEY=JWT_SECRET, JWT_SESSION_FIELD="/user/id")
    alice = token(jti="one", user={"id": "alice"})
    with open_sse(gateway, alice) as sse:
        assert blacklist(gateway, "alice").status_code == 201
        assert sse.next_event(2).type == "rig.session_killed"
    assert requests.get(gateway.connect_url("sse", jwt=alice), timeout=10).status_code == 400
    other_token_same_user = token(jti="two", user={"id": "alice"})
    response = requests.get(gateway.connect_url("sse", jwt=other_token_same_user), timeout=10)
    assert response.status_code == 400
    # The jti is not the session here: a jti equal to the name is irrelevant.
    with open_sse(gateway, token(jti="alice", user={"id": "bob"})) as bob:
        assert bob.status == 200


# --------------------------------------------------------------------------- #
# Token expiry on live connections
# --------------------------------------------------------------------------- #


def test_sse_ends_with_session_expired_when_its_token_expires(gw):
    opened = time.monotonic()
    with open_sse(gw, token(ttl_s=1.5, jti="exp-sse")) as sse:
        event = sse.next_event(4)
        elapsed = time.monotonic() - opened
        assert event.type == "rig.session_expired"
        assert sse.is_closed(2)
        assert 1.2 < elapsed < 2.5, elapsed


def test_websocket_is_closed_when_its_token_expires(gw):
    ws = open_ws(gw, token(ttl_s=1.5, jti="exp-ws"))
    try:
        assert ws_close_of(ws, 4) == (1000, "Session expired.")
    finally:
        ws.close()


def test_long_polling_session_ends_when_its_token_expires(gw):
    poller = LongPoller(gw, token(ttl_s=1.5, jti="exp-lp"))
    assert poller.last_answer(5)["events"][-1]["type"] == "rig.session_expired"


def test_a_put_with_a_fresh_token_extends_the_connection(gw):
    with open_sse(gw, token(ttl_s=1.5, jti="renewed")) as sse:
        response = requests.put(
            f"{gw.inbound}/_rig/v1/connection/sse/{sse.connection_token}/subscriptions",
            json={"subscriptions": [{"eventType": "bl"}]},
            headers={"authorization": f"Bearer {token(ttl_s=60, jti='renewed')}"},
            timeout=10,
        )
        assert response.status_code == 204
        assert sse.next_event(2).type == "rig.subscriptions_set"
        time.sleep(2.0)
        gw.publish(ce("bl", {"still": "open"}))
        assert sse.next_event(2).json["data"] == {"still": "open"}


def test_a_put_with_a_shorter_token_shortens_the_connection(gw):
    with open_sse(gw, token(ttl_s=60, jti="shortened")) as sse:
        requests.put(
            f"{gw.inbound}/_rig/v1/connection/sse/{sse.connection_token}/subscriptions",
            json={"subscriptions": []},
            headers={"authorization": f"Bearer {token(ttl_s=1.0, jti='shortened')}"},
            timeout=10,
        )
        assert sse.next_event(2).type == "rig.subscriptions_set"
        assert sse.next_event(3).type == "rig.session_expired"


def test_many_connections_expire_each_at_its_own_time(gw):
    # One timer for the earliest deadline, re-armed: each connection ends
    # close to its own exp, in order.
    start = time.time()
    deadlines = [start + 1.0 + 0.1 * i for i in range(8)]
    clients = []
    for i, exp in reversed(list(enumerate(deadlines))):  # opened latest-first
        jwt = pyjwt.encode({"exp": exp, "jti": f"many-{i}"}, JWT_SECRET, algorithm="HS256")
        clients.append((exp, open_sse(gw, jwt)))
    try:
        for exp, sse in sorted(clients, key=lambda c: c[0]):
            assert sse.next_event(4).type == "rig.session_expired"
            late = time.time() - exp
            assert -0.05 < late < 0.5, late
    finally:
        for _, sse in clients:
            sse.close()
