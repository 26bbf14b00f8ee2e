"""Which connections an event reaches, against the real gateway (RIG §5.1, §5.4, §15.17).

The shared gateway's extractors (see ``conftest.EXTRACTORS``) give ``person`` the
fields ``name`` (/data/name) and ``age`` (/data/age), and ``greeting`` the field
``name``; every other event type has no fields.

Each test publishes a series of events, some matching and some not, and asserts
the exact sequence of event ids a client receives, then that nothing else comes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from clients import SseClient, ce, ws_connect


def person(id_: str, **data: Any) -> dict[str, Any]:
    return ce("person", data, id_=id_)


def receive_ids(sse: SseClient, count: int) -> list[str]:
    return [sse.next_event().json["id"] for _ in range(count)]


def subscribed(gateway: Any, subscriptions: list[dict[str, Any]]) -> SseClient:
    sse = gateway.sse(subscriptions)
    create, subs_set = sse.events(2)
    assert (create.type, subs_set.type) == ("rig.connection.create", "rig.subscriptions_set")
    return sse


# --------------------------------------------------------------------------- #
# The worked example of §5.4
# --------------------------------------------------------------------------- #

WORKED_EXAMPLE = [
    person("joe-20", name="joe", age=20),
    person("bob-20", name="bob", age=20),
    person("joe-30", name="joe", age=30),
    person("Joe-30", name="Joe", age=30),
    person("joe-null", name="joe", age=None),
    person("bob-30", name="bob", age=30),
    person("joe-no-age", name="joe"),
    person("joe-str-30", name="joe", age="30"),
    ce("person", id_="no-data"),
]


def test_name_constraint_matches_joe_at_every_age_but_not_bob(gateway):
    with subscribed(gateway, [{"eventType": "person", "oneOf": [{"name": "joe"}]}]) as sse:
        for event in WORKED_EXAMPLE:
            gateway.publish(event)
        assert receive_ids(sse, 5) == ["joe-20", "joe-30", "joe-null", "joe-no-age", "joe-str-30"]
        sse.expect_silence()


def test_name_and_age_constraint_matches_only_joe_aged_30(gateway):
    subs = [{"eventType": "person", "oneOf": [{"name": "joe", "age": 30}]}]
    with subscribed(gateway, subs) as sse:
        for event in WORKED_EXAMPLE:
            gateway.publish(event)
        assert receive_ids(sse, 1) == ["joe-30"]
        sse.expect_silence()


def test_unconstrained_subscription_receives_every_event_of_the_type(gateway):
    with subscribed(gateway, [{"eventType": "person"}]) as sse:
        for event in WORKED_EXAMPLE:
            gateway.publish(event)
        assert receive_ids(sse, len(WORKED_EXAMPLE)) == [e["id"] for e in WORKED_EXAMPLE]
        sse.expect_silence()


# --------------------------------------------------------------------------- #
# Value equality
# --------------------------------------------------------------------------- #


def test_integer_constraint_matches_equal_float_and_vice_versa(gateway):
    int_sub = [{"eventType": "person", "oneOf": [{"age": 30}]}]
    float_sub = [{"eventType": "person", "oneOf": [{"age": 30.0}]}]
    with subscribed(gateway, int_sub) as ints, subscribed(gateway, float_sub) as floats:
        gateway.publish(person("float-30", name="x", age=30.0))
        gateway.publish(person("float-30.5", name="x", age=30.5))
        gateway.publish(person("int-31", name="x", age=31))
        gateway.publish(person("string-30", name="x", age="30"))
        gateway.publish(person("int-30", name="x", age=30))
        assert receive_ids(ints, 2) == ["float-30", "int-30"]
        assert receive_ids(floats, 2) == ["float-30", "int-30"]
        ints.expect_silence()
        floats.expect_silence(0.05)


def test_booleans_do_not_equal_numbers(gateway):
    one = [{"eventType": "person", "oneOf": [{"age": 1}]}]
    true = [{"eventType": "person", "oneOf": [{"age": True}]}]
    zero = [{"eventType": "person", "oneOf": [{"age": 0}]}]
    with (
        subscribed(gateway, one) as ones,
        subscribed(gateway, true) as trues,
        subscribed(gateway, zero) as zeros,
    ):
        gateway.publish(person("true", age=True))
        gateway.publish(person("false", age=False))
        gateway.publish(person("one", age=1))
        gateway.publish(person("one-float", age=1.0))
        gateway.publish(person("zero", age=0))
        assert receive_ids(ones, 2) == ["one", "one-float"]
        assert receive_ids(trues, 1) == ["true"]
        assert receive_ids(zeros, 1) == ["zero"]
        ones.expect_silence()
        trues.expect_silence(0.05)
        zeros.expect_silence(0.05)


def test_object_values_never_match(gateway):
    subs = [{"eventType": "person", "oneOf": [{"name": {"first": "joe"}}]}]
    with subscribed(gateway, subs) as sse:
        gateway.publish(person("object-name", name={"first": "joe"}))
        gateway.publish(person("string-name", name="joe"))
        sse.expect_silence()


def test_string_comparison_is_case_sensitive_and_exact(gateway):
    with subscribed(gateway, [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]) as sse:
        for id_, name in [
            ("upper", "Alice"),
            ("space", "alice "),
            ("prefix", "ali"),
            ("ok", "alice"),
        ]:
            gateway.publish(ce("greeting", {"name": name}, id_=id_))
        assert receive_ids(sse, 1) == ["ok"]
        sse.expect_silence()


# --------------------------------------------------------------------------- #
# Which constraints count
# --------------------------------------------------------------------------- #


def test_constraint_on_unknown_field_is_ignored(gateway):
    unknown_only = [{"eventType": "person", "oneOf": [{"color": "red"}]}]
    with_known = [{"eventType": "person", "oneOf": [{"name": "joe", "color": "red"}]}]
    with subscribed(gateway, unknown_only) as everything, subscribed(gateway, with_known) as joes:
        gateway.publish(person("bob", name="bob", color="blue"))
        gateway.publish(person("joe-blue", name="joe", color="blue"))
        gateway.publish(person("no-color", name="ann"))
        assert receive_ids(everything, 3) == ["bob", "joe-blue", "no-color"]
        assert receive_ids(joes, 1) == ["joe-blue"]
        everything.expect_silence()
        joes.expect_silence(0.05)


def test_type_without_extractor_fields_delivers_every_event_regardless_of_one_of(gateway):
    subs = [{"eventType": "matching.nofields", "oneOf": [{"name": "joe"}]}]
    with subscribed(gateway, subs) as sse:
        gateway.publish(ce("matching.nofields", {"name": "bob"}, id_="bob"))
        gateway.publish(ce("matching.nofields", {"name": "joe"}, id_="joe"))
        gateway.publish(ce("matching.nofields", id_="no-data"))
        assert receive_ids(sse, 3) == ["bob", "joe", "no-data"]
        sse.expect_silence()


def test_one_of_is_a_disjunction_and_an_event_matching_both_arrives_once(gateway):
    subs = [{"eventType": "person", "oneOf": [{"name": "joe"}, {"age": 40}]}]
    with subscribed(gateway, subs) as sse:
        gateway.publish(person("bob-20", name="bob", age=20))
        gateway.publish(person("joe-20", name="joe", age=20))
        gateway.publish(person("bob-40", name="bob", age=40))
        gateway.publish(person("joe-40", name="joe", age=40))
        gateway.publish(person("ann-41", name="ann", age=41))
        assert receive_ids(sse, 3) == ["joe-20", "bob-40", "joe-40"]
        sse.expect_silence()


def test_event_matching_several_subscriptions_of_one_connection_arrives_once(gateway):
    subs = [
        {"eventType": "person", "oneOf": [{"name": "joe"}]},
        {"eventType": "person", "oneOf": [{"age": 20}, {"name": "joe", "age": 20}]},
        {"eventType": "person"},
    ]
    with subscribed(gateway, subs) as sse:
        gateway.publish(person("joe-20", name="joe", age=20))
        gateway.publish(person("bob-21", name="bob", age=21))
        assert receive_ids(sse, 2) == ["joe-20", "bob-21"]
        sse.expect_silence()


def test_event_type_match_is_exact(gateway):
    subs = [{"eventType": "person"}, {"eventType": "greet"}]
    with subscribed(gateway, subs) as sse:
        for type_ in ["person.created", "persons", "Person", "perso", "greeting", "greet.x"]:
            gateway.publish(ce(type_, {"name": "joe"}, id_=type_))
        gateway.publish(ce("person", {"name": "joe"}, id_="person"))
        gateway.publish(ce("greet", {"name": "joe"}, id_="greet"))
        assert receive_ids(sse, 2) == ["person", "greet"]
        sse.expect_silence()


@pytest.mark.parametrize(
    "attrs",
    [
        {"specversion": "0.2", "contenttype": "application/json"},
        {"specversion": "0.2", "contenttype": "application/json; charset=utf-8"},
        {"specversion": "1.0", "datacontenttype": "application/json"},
    ],
    ids=["0.2 contenttype", "0.2 contenttype with charset", "1.0 datacontenttype"],
)
def test_declared_json_content_type_does_not_prevent_filtering_on_data(gateway, attrs):
    # RIG's §15.17: with a lowercase "contenttype", /data/... extraction yields
    # nothing, so only unconstrained subscribers got such events.
    alice = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    bob = [{"eventType": "greeting", "oneOf": [{"name": "bob"}]}]
    with subscribed(gateway, alice) as alices, subscribed(gateway, bob) as bobs:
        for id_, name in [("to-bob", "bob"), ("to-alice", "alice")]:
            raw = json.dumps(
                {**attrs, "type": "greeting", "source": "t", "id": id_, "data": {"name": name}}
            )
            response = requests.post(
                f"{gateway.inbound}/_rig/v1/events",
                data=raw,
                headers={"content-type": "application/cloudevents+json"},
                timeout=5,
            )
            assert response.status_code == 202, response.text
        assert alices.next_event().data == raw
        assert receive_ids(bobs, 1) == ["to-bob"]
        alices.expect_silence()
        bobs.expect_silence(0.05)


# --------------------------------------------------------------------------- #
# All transports
# --------------------------------------------------------------------------- #


class LongPollClient:
    """A long-polling session driven with cookies, like a browser."""

    def __init__(self, gateway: Any, subscriptions: list[dict[str, Any]]) -> None:
        self.gateway = gateway
        self.http = requests.Session()
        first = self.http.get(gateway.connect_url("longpolling", subscriptions), timeout=5)
        assert first.status_code == 200 and first.json() == "ok", first.text
        self.pending: list[dict[str, Any]] = []

    def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.pending:
            assert time.monotonic() < deadline, "no long-polling event in time"
            url = f"{self.gateway.inbound}/_rig/v1/connection/longpolling"
            response = self.http.get(url, timeout=timeout + 10)
            assert response.status_code == 200, response.text
            self.pending.extend(response.json()["events"])
        return self.pending.pop(0)


def test_sse_ws_and_longpolling_clients_each_receive_an_event_exactly_once(gateway):
    subs = [{"eventType": "person", "oneOf": [{"name": "joe"}]}]
    lp = LongPollClient(gateway, subs)
    assert [lp.next_event()["type"] for _ in range(2)] == [
        "rig.connection.create",
        "rig.subscriptions_set",
    ]
    ws = ws_connect(gateway.connect_url("ws", subs))
    try:
        assert [json.loads(ws.recv())["type"] for _ in range(2)] == [
            "rig.connection.create",
            "rig.subscriptions_set",
        ]
        with subscribed(gateway, subs) as sse:
            gateway.publish(person("bob", name="bob"))
            gateway.publish(person("joe", name="joe"))
            # A matching end marker: a duplicate of "joe" would arrive before it.
            gateway.publish(person("end", name="joe", age=99))
            assert receive_ids(sse, 2) == ["joe", "end"]
            assert [json.loads(ws.recv())["id"] for _ in range(2)] == ["joe", "end"]
            assert [lp.next_event()["id"] for _ in range(2)] == ["joe", "end"]
            sse.expect_silence()
            ws.settimeout(0.05)
            with pytest.raises(Exception, match="timed out"):
                ws.recv()
            assert lp.pending == []
    finally:
        ws.close()
