"""Writes coalesce under load only: a burst shares sends, a trickle is written at once.

The kernel's cost is per send, not per event (issue 6): when the gateway
writes more than it waits, a write pass waits a little so that the events
arriving meanwhile go out in one send per connection. A lightly loaded
gateway must not add that wait.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import requests
from clients import SseClient, ce

CONNECTIONS = 800
BURST = 60


def outbox(gateway) -> dict[str, int]:
    return gateway.stats()["outbox"]


def open_subscribers(gateway, stack: ExitStack, count: int) -> list[SseClient]:
    clients = []
    for _ in range(count):
        client = stack.enter_context(gateway.sse([{"eventType": "coalesce.tick"}]))
        clients.append(client)
    for client in clients:
        assert [e.type for e in client.events(2)][1] == "rig.subscriptions_set"
    return clients


def publish_serially(gateway, count: int, pause_s: float = 0.0) -> None:
    with requests.Session() as session:
        for n in range(count):
            response = session.post(
                f"{gateway.api}/v3/messages",
                data=json.dumps(ce("coalesce.tick", {"n": n}, id_=f"t{n}")),
                headers={"content-type": "application/json"},
                timeout=10,
            )
            assert response.status_code == 202
            if pause_s:
                time.sleep(pause_s)


def received_in_order(client: SseClient, count: int) -> list[int]:
    return [client.next_event(timeout=20).json["data"]["n"] for _ in range(count)]


def test_a_burst_to_many_subscribers_shares_sends_and_loses_nothing(gateway_factory):
    gateway = gateway_factory(COALESCE_MS="20")
    with ExitStack() as stack:
        clients = open_subscribers(gateway, stack, CONNECTIONS)
        before = outbox(gateway)
        publish_serially(gateway, BURST)
        for client in clients[:: CONNECTIONS // 10]:  # every event, in order, on a sample
            assert received_in_order(client, BURST) == list(range(BURST))
        after = outbox(gateway)
    passes = after["flush_passes"] - before["flush_passes"]
    assert after["coalesced_passes"] > before["coalesced_passes"]
    assert passes < BURST, f"{passes} write passes for {BURST} events: nothing was coalesced"


def test_a_trickle_is_written_at_once(gateway_factory):
    gateway = gateway_factory(COALESCE_MS="20")
    with ExitStack() as stack:
        clients = open_subscribers(gateway, stack, 20)
        time.sleep(0.2)  # the connects' own write passes are well over
        before = outbox(gateway)
        publish_serially(gateway, 5, pause_s=0.2)
        assert received_in_order(clients[0], 5) == list(range(5))
        after = outbox(gateway)
    assert after["coalesced_passes"] == before["coalesced_passes"]


def test_coalescing_can_be_turned_off(gateway_factory):
    gateway = gateway_factory(COALESCE_MS="0")
    with ExitStack() as stack:
        clients = open_subscribers(gateway, stack, CONNECTIONS)
        publish_serially(gateway, 20)
        assert received_in_order(clients[-1], 20) == list(range(20))
        assert outbox(gateway)["coalesced_passes"] == 0
