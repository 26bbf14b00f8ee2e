"""rig_actors.kafka.peers: who is alive on the control channel, across a broker outage."""

from __future__ import annotations

from rig_actors.kafka.peers import Peers

TTL, DEAF = 10.0, 5.0


def hearing_everyone(until: float, start: float = 0.0) -> Peers:
    """Worker "me" and its peer "b" say hello every 2 s from ``start`` to ``until``."""
    peers = Peers("me", TTL, DEAF)
    t = start
    while t <= until:
        peers.heard("me", t)
        peers.heard("b", t + 0.1)
        t += 2.0
    return peers


def test_a_peer_silent_for_the_ttl_while_we_hear_ourselves_is_gone() -> None:
    peers = hearing_everyone(until=10.0)
    for t in (12.0, 14.0, 16.0, 18.0, 20.0, 22.0):  # "b" stopped, we still hear ourselves
        peers.heard("me", t)
    assert peers.alive("b", 20.0)
    assert not peers.alive("b", 20.2)
    assert set(peers.recent(22.0)) == {"me"}


def test_nobody_is_declared_gone_while_we_hear_nobody_either() -> None:
    peers = hearing_everyone(until=10.0)  # the broker goes away after t=10.1
    for now in (15.0, 25.0, 60.0, 600.0):
        assert peers.alive("b", now), now
        assert "b" in peers.recent(now)


def test_after_an_outage_peers_get_a_fresh_ttl_even_if_we_are_heard_first() -> None:
    peers = hearing_everyone(until=10.0)
    assert peers.heard("me", 40.0) == 30.0  # our hello is back (the spell began at 10)
    for t in (42.0, 44.0, 46.0, 48.0, 50.0):  # and b's is not, yet
        peers.heard("me", t)
    assert peers.alive("b", 49.9)
    assert not peers.alive("b", 50.1), "silent for a whole TTL since the outage"


def test_a_peer_heard_after_the_outage_stays_alive() -> None:
    peers = hearing_everyone(until=10.0)
    peers.heard("me", 40.0)
    peers.heard("b", 41.0)
    for t in (42.0, 44.0, 46.0, 48.0, 50.0):
        peers.heard("me", t)
    assert peers.alive("b", 50.5)


def test_a_peer_that_was_already_gone_before_the_outage_stays_gone() -> None:
    peers = hearing_everyone(until=4.0)
    for t in (6.0, 8.0, 10.0, 12.0, 14.0, 16.0):  # "b" last heard at 4.1
        peers.heard("me", t)
    assert not peers.alive("b", 16.0)
    peers.heard("me", 60.0)  # back after a deaf spell
    assert not peers.alive("b", 60.0)


def test_before_hearing_itself_a_worker_uses_plain_time() -> None:
    peers = Peers("me", TTL, DEAF)
    peers.heard("b", 0.0)
    assert peers.alive("b", 9.9)
    assert not peers.alive("b", 10.1)
    assert peers.alive("me", 100.0), "a worker is always alive to itself"
