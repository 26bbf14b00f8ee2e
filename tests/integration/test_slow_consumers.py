"""Slow consumers: bounded buffers, a visible policy, nobody else slowed down."""

from __future__ import annotations

import socket

import pytest
from clients import ce
from conftest import wait_until

# Large events: a stalled client's kernel buffers (up to tcp_wmem's 4 MB on the
# server side) fill first, then the gateway's own 64 KB bound.
PAD = "x" * 32000


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_client(gateway, event_type: str) -> socket.socket:
    """An SSE client that subscribes, then never reads again."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", gateway.inbound_port))
    target = gateway.connect_url("sse", [{"eventType": event_type}]).split(
        f":{gateway.inbound_port}", 1
    )[1]
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


@pytest.fixture(scope="module")
def disconnecting(gateway_factory):
    # A stalled client is given one heartbeat to read its last words.
    return gateway_factory(OUTBOUND_BUFFER_MAX_BYTES="65536", HEARTBEAT_INTERVAL_MS="1000")


@pytest.fixture(scope="module")
def dropping(gateway_factory):
    return gateway_factory(OUTBOUND_BUFFER_MAX_BYTES="65536", SLOW_CONSUMER_POLICY="drop_oldest")


def test_stalled_clients_are_disconnected_memory_stays_bounded_others_get_everything(
    disconnecting,
):
    gateway = disconnecting
    stalled = [stalled_client(gateway, "slow.d") for _ in range(50)]
    wait_until(lambda: gateway.stats()["connections"]["sse"] >= 50)
    before = rss_kb(gateway.proc.pid)
    with gateway.sse([{"eventType": "slow.d"}]) as fast:
        fast.events(2)
        for n in range(300):
            gateway.publish(ce("slow.d", {"n": n, "pad": PAD}))
            assert fast.next_event().json["data"]["n"] == n
        wait_until(
            lambda: (st := gateway.stats())["counters"]["slow_consumer_disconnects"] >= 50 and st
        )
        # Only the fast client is left once the stalled ones missed a heartbeat.
        wait_until(lambda: gateway.stats()["connections"]["sse"] == 1)
    # 300 events x 32 KB x 50 clients would be 480 MB if buffers grew unbounded.
    assert rss_kb(gateway.proc.pid) - before < 30_000
    for s in stalled:
        s.close()


def test_drop_oldest_keeps_the_connection_and_says_how_many_were_dropped(dropping):
    gateway = dropping
    total = 400  # 12.8 MB: more than the kernel buffers hold for a client that is not reading
    with gateway.sse([{"eventType": "slow.o"}]) as slow:
        slow.events(2)
        for n in range(total):
            gateway.publish(ce("slow.o", {"n": n, "pad": PAD}))
        wait_until(lambda: gateway.stats()["counters"]["slow_consumer_drops"] > 0)
        seen, notices = [], []
        while not seen or seen[-1] != total - 1:
            event = slow.next_event(10)
            if event.type == "rig.events_dropped":
                notices.append(event.json["data"]["dropped"])
            else:
                seen.append(event.json["data"]["n"])
        assert notices and sum(notices) > 0
        assert seen == sorted(seen), "what arrives stays in order"
        # Every event either arrived or was counted as dropped.
        assert len(seen) + sum(notices) == total
        assert gateway.stats()["connections"]["sse"] >= 1
