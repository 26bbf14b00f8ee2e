"""rig_actors.events.replay_ids: the WebSocket id attribute and the long-polling cursor."""

from __future__ import annotations

import doctest
import json

import pytest

from rig_actors.events import replay_ids
from rig_actors.events.replay_ids import (
    lp_cursor,
    parse_lp_cursor,
    replay_id,
    with_id_attribute,
)


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(replay_ids)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "text",
    [
        '{"specversion":"1.0","type":"t","source":"s","id":"1"}',
        '{ "eventType" : "t",\n  "cloudEventsVersion":"0.1", "data":{"a":"}"} }\n',
        '{"type":"t","data":"\\"}\\"","x":[{}]}\t',
    ],
)
def test_the_spliced_attribute_is_the_last_key_and_the_rest_is_untouched(text: str) -> None:
    spliced = with_id_attribute(text, json.loads(text), "k1.0.0.7_0.1.42")
    decoded = json.loads(spliced)
    assert decoded == {**json.loads(text), "rigeventid": "k1.0.0.7_0.1.42"}
    assert list(decoded)[-1] == "rigeventid"
    assert spliced.replace(',"rigeventid":"k1.0.0.7_0.1.42"', "") == text


def test_an_id_that_needs_escaping_stays_valid_json() -> None:
    spliced = with_id_attribute('{"type":"t"}', {"type": "t"}, 'a"\\\n\u2028b')
    assert json.loads(spliced)["rigeventid"] == 'a"\\\n\u2028b'


@pytest.mark.parametrize(
    ("seq", "replay"),
    [(0, None), (7, None), (12, "ab12cd34-9"), (3, "k1.0.0.7_0.1.42"), (5, "x:y")],
)
def test_a_cursor_round_trips(seq: int, replay: str | None) -> None:
    assert parse_lp_cursor(lp_cursor(seq, replay)) == (seq, replay)


@pytest.mark.parametrize(
    "text",
    ["", "first_event", "-1", '"', "9" * 5000, "²", "¹:x", "12:", ":x", "k1.0.0.7"],
)
def test_whatever_a_client_sends_parses_without_error(text: str) -> None:
    seq, replay = parse_lp_cursor(text)
    assert seq >= 0
    assert replay is None or replay
    assert replay_id(text) in (text, text.partition(":")[2])


def test_a_cursor_names_the_same_replay_id_on_every_transport() -> None:
    assert replay_id(lp_cursor(4, "ab12cd34-9")) == "ab12cd34-9"
    assert replay_id("ab12cd34-9") == "ab12cd34-9"
    assert replay_id("k1.0.0.7") == "k1.0.0.7"
