"""Replay after a reconnect: Last-Event-ID (beyond RIG)."""

from __future__ import annotations

import pytest
from clients import SseClient, ce


@pytest.fixture(scope="module")
def small_history(gateway_factory):
    return gateway_factory(REPLAY_BUFFER_SIZE="3")


def test_events_carry_ids_and_a_reconnect_replays_what_was_missed_then_goes_live(gateway):
    subs = [{"eventType": "replay.a"}]
    with gateway.sse(subs) as first:
        first.events(2)
        gateway.publish(ce("replay.a", {"n": 1}, id_="1"))
        seen = first.next_event()
        assert seen.id, "published events carry an id: line"
    # Disconnected; three more events are published meanwhile, one of another type.
    gateway.publish(ce("replay.a", {"n": 2}, id_="2"))
    gateway.publish(ce("replay.other", {"n": 0}, id_="x"))
    gateway.publish(ce("replay.a", {"n": 3}, id_="3"))
    url = gateway.connect_url("sse", subs)
    with SseClient(url, headers={"Last-Event-ID": seen.id}) as again:
        create, subs_set = again.events(2)
        assert create.type == "rig.connection.create"
        assert subs_set.type == "rig.subscriptions_set"
        replayed = again.events(2)
        assert [e.json["data"]["n"] for e in replayed] == [2, 3]
        gateway.publish(ce("replay.a", {"n": 4}, id_="4"))
        assert again.next_event().json["data"] == {"n": 4}
        again.expect_silence()


def test_last_event_id_query_parameter_replays_too(gateway):
    subs = [{"eventType": "replay.q"}]
    with gateway.sse(subs) as first:
        first.events(2)
        gateway.publish(ce("replay.q", {"n": 1}))
        last = first.next_event().id
    gateway.publish(ce("replay.q", {"n": 2}))
    with SseClient(gateway.connect_url("sse", subs, last_event_id=last)) as again:
        again.events(2)
        assert again.next_event().json["data"] == {"n": 2}


def test_an_id_too_old_to_replay_is_reported_with_a_gap_event(small_history):
    gateway = small_history
    subs = [{"eventType": "replay.old"}]
    with gateway.sse(subs) as first:
        first.events(2)
        gateway.publish(ce("replay.old", {"n": 0}))
        last = first.next_event().id
    for n in range(1, 6):
        gateway.publish(ce("replay.old", {"n": n}))
    with SseClient(gateway.connect_url("sse", subs), headers={"Last-Event-ID": last}) as again:
        again.events(2)
        gap = again.next_event()
        assert gap.type == "rig.replay_gap"
        assert gap.json["data"]["missed"] == 2
        assert gap.json["data"]["last_event_id"] == last
        assert [again.next_event().json["data"]["n"] for _ in range(3)] == [3, 4, 5]


def test_an_unknown_id_is_reported_not_silently_ignored(gateway):
    url = gateway.connect_url("sse", [{"eventType": "replay.u"}])
    with SseClient(url, headers={"Last-Event-ID": "deadbeef-12"}) as sse:
        sse.events(2)
        gap = sse.next_event()
        assert gap.type == "rig.replay_gap"
        assert gap.json["data"]["reason"].startswith("unknown id")
