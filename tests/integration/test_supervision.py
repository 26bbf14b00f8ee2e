"""Supervision over the real server: crashes end only what crashed."""

from __future__ import annotations

import socket
import time

import requests
from clients import ce


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


def crash(gateway, actor: str, **extra: str) -> None:
    response = requests.post(
        f"{gateway.api}/_rig/faults", json={"actor": actor, **extra}, timeout=5
    )
    assert response.status_code == 202, response.text


def test_crash_of_one_connection_actor_ends_only_that_connection(gateway):
    subs = [{"eventType": "crash.one"}]
    with gateway.sse(subs) as victim, gateway.sse(subs) as bystander:
        token = victim.next_event().json["data"]["connection_token"]
        victim.next_event()
        bystander.events(2)
        crash(gateway, "connection", token=token)
        assert victim.is_closed()
        gateway.publish(ce("crash.one", {"n": 1}))
        assert bystander.next_event().json["data"] == {"n": 1}


def test_registry_crash_is_restarted_and_keeps_every_subscription(gateway):
    restarts = gateway.stats()["restarts"]
    with (
        gateway.sse([{"eventType": "crash.reg"}]) as sse,
        gateway.sse([{"eventType": "crash.reg.other"}]) as other,
    ):
        sse.events(2)
        other.events(2)
        crash(gateway, "registry")
        wait_for(lambda: gateway.stats()["restarts"] == restarts + 1)
        # The restarted registry asked every live connection to re-register.
        wait_for(lambda: gateway.stats()["registry"]["connections"] >= 2)
        gateway.publish(ce("crash.reg", {"n": 2}))
        gateway.publish(ce("crash.reg.other", {"n": 3}))
        assert sse.next_event().json["data"] == {"n": 2}
        assert other.next_event().json["data"] == {"n": 3}
        sse.expect_silence()


def test_closing_a_thousand_connections_leaves_no_actor_greenlet_or_subscription(
    gateway_factory,
):
    gateway = gateway_factory()  # its own process: no other test's connections come and go
    baseline = wait_for(lambda: _quiet(gateway))
    port = gateway.inbound_port
    socks = []
    request = (
        b"GET /_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22many%22%7D%5D "
        b"HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        socks.append(s)
    stats = wait_for(
        lambda: (
            (st := gateway.stats())["connections"]["sse"] >= 1000
            and st["registry"]["connections"] >= 1000
            and st
        )
    )
    assert stats["actors"] >= baseline["actors"] + 1000
    for s in socks:
        s.close()
    after = wait_for(lambda: _quiet(gateway, baseline))
    assert after["connections"] == baseline["connections"]
    assert after["registry"]["subscriptions"] == baseline["registry"]["subscriptions"]
    assert after["actors"] == baseline["actors"]
    assert after["greenlets"] <= baseline["greenlets"]


def _quiet(gateway, baseline=None):
    stats = gateway.stats(greenlets=1)
    if baseline is None:
        return stats
    done = (
        stats["connections"] == baseline["connections"]
        and stats["actors"] == baseline["actors"]
        and stats["registry"]["subscriptions"] == baseline["registry"]["subscriptions"]
        and stats["greenlets"] <= baseline["greenlets"]
    )
    return stats if done else None
