#!/usr/bin/env python3
"""Soak test for rig-actors: gunicorn workers + Kafka under churn for a long time.

Run from the repository root, with the project's virtualenv active::

    python loadtest/soak.py                       # 30 minutes, 2 workers, ~2,000 SSE
    python loadtest/soak.py --minutes 3 --warmup-min 1 --sse 400   # a short try
    python loadtest/soak.py --analyse loadtest/out/soak-<stamp>.csv  # re-plot, re-judge

What it does (see ``docs/soak.rst`` for a run and ``loadtest/README.rst``):

1. starts a Tansu broker with fresh topics and the Procfile's gunicorn command
   with ``--workers`` workers and ``KAFKA_*`` (``bench.py``'s helpers), pinned
   like the benchmark (gunicorn on CPU 0, everything else on CPU 1);
2. client processes hold ``--sse`` SSE connections from 127.0.0.x source
   addresses; every second each closes 2-5 % of its connections and opens as
   many new ones (``--replay-share`` of them with the ``Last-Event-ID`` of a
   closed one), and PUTs new subscriptions on a few; a thread process keeps
   WebSocket and long-polling clients coming and going;
3. a publisher process POSTs ``--http-rate`` events/s to ``/v3/messages`` and
   produces ``--kafka-rate`` events/s to the source topic directly;
4. "canary" clients (SSE, WebSocket, long-polling) subscribe to every event
   type and never disconnect: at the end each must have received exactly the
   events that were confirmed (HTTP 202, or the broker's acknowledgement);
5. every ``--sample-s`` seconds it reads, per worker process (the gunicorn
   master's children in /proc): VmRSS, open fds, CPU time, and from the
   worker's own ``/_rig/stats?greenlets=1`` (repeated on new connections until
   every worker answered) greenlets, actors, connections and the registry's
   counts; rows go to ``loadtest/out/soak-<stamp>.csv``;
6. at the end: the clients leave, the workers must drop back to their idle
   counts, the server and broker are stopped, and it prints a verdict (after
   the warm-up, the mean of the first and last quarter of the samples per
   metric; growth above ``--flag-pct`` is flagged), draws ``docs/soak.png``
   and writes a JSON summary next to the CSV.

Only loopback addresses are used; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # loadtest/bench.py: the server, broker and /proc helpers

REPO = bench.REPO
EVENT_PREFIX = "soak."
# The ids the publisher gives its events: h-<n> (HTTP) and k-<n> (Kafka).
ID_RE = re.compile(rb'"id"\s*:\s*"([hk])-(\d+)"')
TOKEN_RE = re.compile(rb'"connection_token"\s*:\s*"([^"]+)"')
READY = b"rig.subscriptions_set"
METRICS = (
    ("rss_mb", "RSS (MB)"),
    ("fds", "open fds"),
    ("greenlets", "greenlets"),
    ("actors", "actors"),
    ("connections", "connections (/_rig/stats)"),
    ("registry_subscriptions", "registry subscriptions"),
)
# Judged for growth; connections and subscriptions follow the load. A growth is
# flagged when it is above --flag-pct *and* above the metric's noise floor (the
# absolute change that the churn alone makes from one sample to the next).
JUDGED = {
    "rss_mb": 5.0,
    "fds": 50.0,
    "greenlets": 20.0,
    "actors": 50.0,
    "registry_subscriptions": 100.0,
    "subscriptions_per_connection": 0.0,
}


class SoakTimeout(Exception):
    """The overall bound expired."""


def event_types(n: int) -> list[str]:
    return [f"{EVENT_PREFIX}{i}" for i in range(n)]


def subs_json(types: list[str]) -> str:
    return json.dumps([{"eventType": t} for t in types], separators=(",", ":"))


def worker_of(token: str | None) -> str | None:
    """The worker id in a connection token ``<worker>.<connection>.<signature>``."""
    return token.split(".", 1)[0] if token and "." in token else None


def ids_in(data: bytes, seen: dict[str, set[int]]) -> int:
    """Add the publisher ids found in ``data`` to ``seen``; return the duplicates."""
    dups = 0
    for kind, num in ID_RE.findall(data):
        bucket = seen[kind.decode()]
        n = int(num)
        if n in bucket:
            dups += 1
        else:
            bucket.add(n)
    return dups


# --------------------------------------------------------------------------------------
# SSE client processes: epoll, churn, canaries, subscription PUTs
# --------------------------------------------------------------------------------------


@dataclass
class SseSpec:
    index: int
    population: int
    canaries: int
    sources: list[str]
    host: str
    port: int
    types: list[str]
    subs_per_conn: int
    churn_min: float
    churn_max: float
    replay_share: float
    puts_per_s: float
    window: int
    deadline: float
    cpu: int | None
    seed: int


class _Conn:
    __slots__ = (
        "buf",
        "canary",
        "dups",
        "fd",
        "opened",
        "ready",
        "replay",
        "seen",
        "sock",
        "state",
        "tail",
        "token",
        "types",
    )

    def __init__(self, sock: socket.socket, types: list[str], canary: bool, replay: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.types = types
        self.canary = canary
        self.replay = replay
        self.state = 0  # 0 connecting, 1 request sent, 2 subscribed
        self.tail = b""  # the last bytes of the stream (for the last id) or the head
        self.buf = b""  # canaries: bytes after the last complete frame
        self.token: str | None = None
        self.opened = time.time()
        self.ready = 0.0
        self.seen: dict[str, set[int]] = {"h": set(), "k": set()} if canary else {}
        self.dups = 0


def last_event_id(tail: bytes) -> str | None:
    """The id of the last complete ``id:`` line in the stream's last bytes."""
    end = len(tail)
    while True:
        i = tail.rfind(b"id: ", 0, end)
        if i < 0:
            return None
        if i == 0 or tail[i - 1 : i] == b"\n":
            j = tail.find(b"\n", i)
            if j > 0:
                return tail[i + 4 : j].decode("latin-1")
        end = i


class SseClient:
    def __init__(self, spec: SseSpec, ctl: Connection) -> None:
        self.spec = spec
        self.ctl = ctl
        self.rng = random.Random(spec.seed)
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.churners: set[int] = set()  # fds of churn connections (any state)
        self.canary_fds: list[int] = []
        self.canaries_done: list[_Conn] = []  # canaries that ended (closed by the server)
        self.recent: list[tuple[str, list[str]]] = []  # (last id, types) of closed ones
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.puts: Counter[str] = Counter()
        self.specials: Counter[str] = Counter()
        self.next_src = 0
        self.in_flight = 0
        self.churning = False
        self.filling = False

    # -- sockets ----------------------------------------------------------------------

    def open(self, types: list[str], canary: bool = False, last_id: str | None = None) -> None:
        spec = self.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, bench.IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((spec.sources[self.next_src % len(spec.sources)], 0))
            self.next_src += 1
            sock.setblocking(False)
            rc = sock.connect_ex((spec.host, spec.port))
        except OSError as exc:
            sock.close()
            self.failures[f"connect: {errno.errorcode.get(exc.errno or 0, exc)}"] += 1
            return
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.failures[f"connect: {errno.errorcode.get(rc, rc)}"] += 1
            return
        conn = _Conn(sock, types, canary, last_id is not None)
        path = "/_rig/v1/connection/sse?subscriptions=" + urllib.parse.quote(
            subs_json(types), safe=""
        )
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\nAccept: text/event-stream\r\n"
        )
        if last_id is not None:
            head += f"Last-Event-ID: {last_id}\r\n"
        conn.buf = (head + "\r\n").encode()  # the request, until it is sent
        self.conns[conn.fd] = conn
        if canary:
            self.canary_fds.append(conn.fd)
        else:
            self.churners.add(conn.fd)
        self.in_flight += 1
        self.counts["opened"] += 1
        if last_id is not None:
            self.counts["opened with Last-Event-ID"] += 1
        self.ep.register(conn.fd, select.EPOLLOUT)

    def drop(self, conn: _Conn, reason: str | None) -> None:
        """Forget ``conn``; ``reason`` None = we closed it on purpose."""
        fd = conn.fd
        with contextlib.suppress(OSError):
            self.ep.unregister(fd)
        conn.sock.close()
        self.conns.pop(fd, None)
        self.churners.discard(fd)
        if conn.state < 2:
            self.in_flight -= 1
        if reason is not None:
            key = ("canary " if conn.canary else "") + reason
            if conn.state == 2:
                self.counts[f"closed by server after subscribing: {key}"] += 1
            else:
                self.failures[key] += 1
        if conn.canary:
            self.canary_fds.remove(fd)
            self.canaries_done.append(conn)

    def random_types(self) -> list[str]:
        return self.rng.sample(self.spec.types, min(self.spec.subs_per_conn, len(self.spec.types)))

    # -- events -----------------------------------------------------------------------

    def on_event(self, conn: _Conn, mask: int) -> None:
        if conn.state == 0:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err or mask & (select.EPOLLERR | select.EPOLLHUP):
                self.drop(conn, f"connect: {errno.errorcode.get(err, err or 'hangup')}")
                return
            try:
                conn.sock.send(conn.buf)  # a few hundred bytes: one send
            except OSError as exc:
                self.drop(conn, f"send: {errno.errorcode.get(exc.errno or 0, exc)}")
                return
            conn.buf = b""
            conn.state = 1
            self.ep.modify(conn.fd, select.EPOLLIN)
            return
        try:
            data = conn.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as exc:
            self.drop(conn, f"recv: {errno.errorcode.get(exc.errno or 0, exc)}")
            return
        if not data:
            self.drop(conn, "closed by server")
            return
        if conn.state == 1:
            conn.tail += data
            if not conn.tail.startswith(b"HTTP/1.1 200"):
                if b"\r\n" in conn.tail:
                    status = conn.tail.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                    self.drop(conn, f"answer does not start with HTTP/1.1 200: {status!r}")
                return
            if conn.token is None:
                m = TOKEN_RE.search(conn.tail)
                if m:
                    conn.token = m.group(1).decode()
            if READY in conn.tail:
                conn.state = 2
                conn.ready = time.time()
                self.in_flight -= 1
                self.counts["subscribed"] += 1
                if conn.canary:
                    # Everything after the head counts (replayed events cannot come:
                    # a canary connects without a Last-Event-ID).
                    conn.buf = conn.tail
                    self.canary_feed(conn, b"")
                conn.tail = conn.tail[-1024:]
            elif len(conn.tail) > 65536:
                self.drop(conn, "no rig.subscriptions_set in the first 64 KB")
            return
        if conn.canary:
            self.canary_feed(conn, data)
            return
        conn.tail = (conn.tail + data)[-1024:]
        if b"event: rig." in data:
            for name in (b"rig.replay_gap", b"rig.events_dropped", b"rig.slow_consumer"):
                n = data.count(b"event: " + name)
                if n:
                    self.specials[name.decode()] += n

    def canary_feed(self, conn: _Conn, data: bytes) -> None:
        buf = conn.buf + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            conn.buf = buf
            return
        conn.dups += ids_in(buf[: cut + 2], conn.seen)
        conn.buf = buf[cut + 2 :]

    # -- churn ------------------------------------------------------------------------

    def fill(self) -> None:
        spec = self.spec
        want = spec.population - len(self.churners)
        room = spec.window - self.in_flight
        for _ in range(max(0, min(want, room))):
            if self.churning and self.recent and self.rng.random() < spec.replay_share:
                last_id, types = self.recent.pop(self.rng.randrange(len(self.recent)))
                self.open(types, last_id=last_id)
            else:
                self.open(self.random_types())

    def churn(self) -> None:
        spec = self.spec
        live = [fd for fd in self.churners if self.conns[fd].state == 2]
        k = round(spec.population * self.rng.uniform(spec.churn_min, spec.churn_max))
        for fd in self.rng.sample(live, min(k, len(live))):
            conn = self.conns[fd]
            last = last_event_id(conn.tail)
            if last:
                self.recent.append((last, conn.types))
            self.drop(conn, None)
            self.counts["closed by us"] += 1
        del self.recent[:-200]  # only recent ids: replays of the last few seconds
        self.fill()

    def put_subscriptions(self) -> None:
        spec = self.spec
        live = [
            fd
            for fd in self.churners
            if self.conns[fd].state == 2 and self.conns[fd].token is not None
        ]
        if not live:
            return
        conn = self.conns[self.rng.choice(live)]
        types = self.random_types()
        body = json.dumps({"subscriptions": [{"eventType": t} for t in types]})
        hc = http.client.HTTPConnection(spec.host, spec.port, timeout=5)
        try:
            hc.request(
                "PUT",
                f"/_rig/v1/connection/sse/{conn.token}/subscriptions",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            resp = hc.getresponse()
            resp.read()
            self.puts[str(resp.status)] += 1
            if resp.status == 204:
                conn.types = types
        except (OSError, http.client.HTTPException) as exc:
            self.puts[type(exc).__name__] += 1
        finally:
            hc.close()

    # -- reports ----------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        live = sum(1 for fd in self.churners if self.conns[fd].state == 2)
        canaries = [self.conns[fd] for fd in self.canary_fds]
        return {
            "index": self.spec.index,
            "live": live,
            "in_flight": self.in_flight,
            "canaries_ready": sum(1 for c in canaries if c.state == 2),
            "canaries": len(canaries),
            "canary_events": [sum(len(s) for s in c.seen.values()) for c in canaries],
            "counts": dict(self.counts),
            "failures": dict(self.failures),
            "puts": dict(self.puts),
            "specials": dict(self.specials),
        }

    def final(self, note: str | None) -> dict[str, Any]:
        report = self.progress()
        report["note"] = note
        report["canary_reports"] = [
            {
                "transport": "sse",
                "client": f"sse-{self.spec.index}",
                "worker": worker_of(c.token),
                "ready": c.state == 2,
                "open_at_end": c.fd in self.conns,
                "seen": {k: sorted(v) for k, v in c.seen.items()},
                "duplicates": c.dups,
            }
            for c in [*(self.conns[fd] for fd in self.canary_fds), *self.canaries_done]
        ]
        return report

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()

    # -- loop -------------------------------------------------------------------------

    def run(self) -> None:
        spec = self.spec
        ctl_fd = self.ctl.fileno()
        self.ep.register(ctl_fd, select.EPOLLIN)
        for _ in range(spec.canaries):
            self.open(list(spec.types), canary=True)
        self.filling = True
        next_tick = time.time() + 1.0
        put_credit = 0.0
        while True:
            now = time.time()
            if now >= spec.deadline:
                self.ctl.send(("final", self.final("client deadline reached")))
                return
            control = False
            for fd, mask in self.ep.poll(0.05, 4096):
                if fd == ctl_fd:
                    control = True
                    continue
                conn = self.conns.get(fd)
                if conn is not None:
                    self.on_event(conn, mask)
            now = time.time()
            if now >= next_tick:
                next_tick = now + 1.0
                if self.churning:
                    self.churn()
                    put_credit += spec.puts_per_s
                    while put_credit >= 1.0:
                        put_credit -= 1.0
                        self.put_subscriptions()
                # Connections that never got subscribed within 30 s: give up on them.
                for conn in [c for c in self.conns.values() if c.state < 2]:
                    if now - conn.opened > 30:
                        self.drop(conn, "not subscribed within 30 s")
            if self.filling:
                self.fill()
            while control and self.ctl.poll():
                msg = self.ctl.recv()
                if msg[0] == "churn":
                    self.churning = True
                elif msg[0] == "progress":
                    self.ctl.send(("progress", self.progress()))
                elif msg[0] == "stop":
                    self.ctl.send(("final", self.final(None)))
                    return


def sse_main(spec: SseSpec, ctl: Connection) -> None:
    if spec.cpu is not None:
        bench.pin(spec.cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    client = SseClient(spec, ctl)
    try:
        client.run()
    except (BrokenPipeError, EOFError):
        pass
    finally:
        client.close_all()


# --------------------------------------------------------------------------------------
# Thread process: WebSocket and long-polling clients (churning, and canaries)
# --------------------------------------------------------------------------------------


@dataclass
class MiscSpec:
    host: str
    port: int
    types: list[str]
    ws_canaries: int
    ws_churners: int
    lp_canaries: int
    lp_churners: int
    hold_min_s: float
    hold_max_s: float
    deadline: float
    cpu: int | None
    seed: int


class Misc:
    def __init__(self, spec: MiscSpec) -> None:
        self.spec = spec
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.canaries: list[dict[str, Any]] = []

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def new_canary(self, transport: str, name: str) -> dict[str, Any]:
        state: dict[str, Any] = {
            "transport": transport,
            "client": name,
            "worker": None,
            "ready": False,
            "open_at_end": False,
            "seen": {"h": set(), "k": set()},
            "duplicates": 0,
            "problems": [],
        }
        with self.lock:
            self.canaries.append(state)
        return state

    # -- WebSocket --------------------------------------------------------------------

    def ws_url(self, types: list[str]) -> str:
        q = "subscriptions=" + urllib.parse.quote(subs_json(types), safe="")
        return f"ws://{self.spec.host}:{self.spec.port}/_rig/v1/connection/ws?{q}"

    def ws_canary(self, i: int) -> None:
        import websocket

        state = self.new_canary("ws", f"ws-canary-{i}")
        try:
            ws = websocket.create_connection(self.ws_url(list(self.spec.types)), timeout=10)
        except Exception as exc:
            state["problems"].append(f"connect: {type(exc).__name__}: {exc}")
            return
        ws.settimeout(1.0)
        try:
            while not self.stop.is_set():
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                data = frame.encode() if isinstance(frame, str) else frame
                if not state["ready"]:
                    m = TOKEN_RE.search(data)
                    if m:
                        state["worker"] = worker_of(m.group(1).decode())
                    if READY in data:
                        state["ready"] = True
                    continue
                state["duplicates"] += ids_in(data, state["seen"])
            state["open_at_end"] = True
        except Exception as exc:
            state["problems"].append(f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                ws.close()

    def ws_churner(self, i: int) -> None:
        """Connect, hold 5-30 s, leave, again (WS frames carry no gateway id: no replay)."""
        import websocket

        rng = random.Random(self.spec.seed * 100 + i)
        while not self.stop.is_set():
            types = rng.sample(self.spec.types, 1)
            try:
                ws = websocket.create_connection(self.ws_url(types), timeout=10)
            except Exception as exc:
                self.count(f"ws connect failed: {type(exc).__name__}")
                self.stop.wait(1.0)
                continue
            self.count("ws opened")
            ws.settimeout(1.0)
            until = time.time() + rng.uniform(self.spec.hold_min_s, self.spec.hold_max_s)
            try:
                while time.time() < until and not self.stop.is_set():
                    try:
                        frame = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    data = frame.encode() if isinstance(frame, str) else frame
                    self.count("ws events", len(ID_RE.findall(data)))
            except Exception as exc:
                self.count(f"ws ended by error: {type(exc).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    ws.close()

    # -- long-polling -----------------------------------------------------------------

    def lp_get(
        self, cookies: dict[str, str], types: list[str] | None
    ) -> tuple[int, bytes, dict[str, str]]:
        path = "/_rig/v1/connection/longpolling"
        if types is not None:
            path += "?subscriptions=" + urllib.parse.quote(subs_json(types), safe="")
        headers = {"Accept": "application/json"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn = http.client.HTTPConnection(self.spec.host, self.spec.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            got: dict[str, str] = {}
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie":
                    k, _, v = value.split(";", 1)[0].partition("=")
                    got[k.strip()] = v.strip()
            return resp.status, body, got
        finally:
            conn.close()

    def lp_session(self, types: list[str], until: float, canary: dict[str, Any] | None) -> None:
        """One long-polling session: create it, poll until ``until``, then abandon it."""
        status, body, cookies = self.lp_get({}, types)
        if status != 200 or "connection_token" not in cookies:
            self.count(f"lp create: HTTP {status}")
            if canary is not None:
                canary["problems"].append(f"create: HTTP {status} {body[:80]!r}")
            self.stop.wait(1.0)
            return
        self.count("lp sessions")
        token = cookies["connection_token"]
        if canary is not None:
            canary["worker"] = worker_of(token)
        while time.time() < until and not self.stop.is_set():
            try:
                status, body, got = self.lp_get(cookies, None)
            except (OSError, http.client.HTTPException) as exc:
                self.count(f"lp poll error: {type(exc).__name__}")
                if canary is not None:
                    canary["problems"].append(f"poll: {type(exc).__name__}: {exc}")
                self.stop.wait(0.5)
                continue
            if status != 200:
                self.count(f"lp poll: HTTP {status}")
                if canary is not None:
                    canary["problems"].append(f"poll: HTTP {status}")
                self.stop.wait(0.5)
                continue
            self.count("lp polls")
            if got.get("connection_token", token) != token or body.strip() == b'"ok"':
                # The session is gone: the gateway started a new one.
                self.count("lp session lost")
                if canary is not None:
                    canary["problems"].append("session lost (a new one was started)")
                    canary["ready"] = False
                return
            cookies.update(got)
            if canary is not None:
                if not canary["ready"]:
                    if READY not in body:
                        continue
                    canary["ready"] = True
                canary["duplicates"] += ids_in(body, canary["seen"])
                if b"rig.events_dropped" in body:
                    canary["problems"].append("rig.events_dropped")
            else:
                self.count("lp events", len(ID_RE.findall(body)))
        if canary is not None and not self.stop.is_set():
            canary["problems"].append("poll loop ended early")

    def lp_canary(self, i: int) -> None:
        state = self.new_canary("longpolling", f"lp-canary-{i}")
        try:
            self.lp_session(list(self.spec.types), self.spec.deadline, state)
            state["open_at_end"] = self.stop.is_set() and state["ready"]
        except Exception as exc:
            state["problems"].append(f"{type(exc).__name__}: {exc}")

    def lp_churner(self, i: int) -> None:
        rng = random.Random(self.spec.seed * 1000 + i)
        while not self.stop.is_set():
            hold = rng.uniform(self.spec.hold_min_s, self.spec.hold_max_s)
            try:
                self.lp_session(rng.sample(self.spec.types, 1), time.time() + hold, None)
            except (OSError, http.client.HTTPException) as exc:
                self.count(f"lp error: {type(exc).__name__}")
                self.stop.wait(1.0)

    def report(self) -> dict[str, Any]:
        with self.lock:
            canaries = []
            for c in self.canaries:
                c2 = dict(c)
                c2["seen"] = {k: sorted(v) for k, v in c["seen"].items()}
                canaries.append(c2)
            return {
                "counts": dict(self.counts),
                "canary_ready": [c["ready"] for c in self.canaries],
                "canary_events": [sum(len(v) for v in c["seen"].values()) for c in self.canaries],
                "canary_reports": canaries,
            }


def misc_main(spec: MiscSpec, ctl: Connection) -> None:
    if spec.cpu is not None:
        bench.pin(spec.cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    misc = Misc(spec)
    threads: list[threading.Thread] = []

    def start(target: Any, i: int) -> None:
        t = threading.Thread(target=target, args=(i,), daemon=True)
        t.start()
        threads.append(t)

    for i in range(spec.ws_canaries):
        start(misc.ws_canary, i)
    for i in range(spec.lp_canaries):
        start(misc.lp_canary, i)
    try:
        while time.time() < spec.deadline:
            if not ctl.poll(0.5):
                continue
            msg = ctl.recv()
            if msg[0] == "churn":
                for i in range(spec.ws_churners):
                    start(misc.ws_churner, i)
                for i in range(spec.lp_churners):
                    start(misc.lp_churner, i)
            elif msg[0] == "progress":
                ctl.send(("progress", misc.report()))
            elif msg[0] == "stop":
                break
        misc.stop.set()
        for t in threads:
            t.join(timeout=25)
        ctl.send(("final", misc.report()))
    except (BrokenPipeError, EOFError):
        misc.stop.set()


# --------------------------------------------------------------------------------------
# Publisher process: POST /v3/messages and produce to Kafka, paced
# --------------------------------------------------------------------------------------


@dataclass
class PubSpec:
    host: str
    api_port: int
    http_rate: float
    kafka_rate: float
    bootstrap: str
    topic: str
    types: list[str]
    pad: int
    reconnect_every: int
    http_threads: int
    deadline: float
    cpu: int | None


def event_body(kind: str, n: int, types: list[str], pad: int) -> bytes:
    head = (
        f'{{"specversion":"1.0","type":"{types[n % len(types)]}","source":"soak",'
        f'"id":"{kind}-{n}","data":{{"ts":{time.time():.6f},"pad":"'
    )
    return (head + "x" * max(0, pad - len(head)) + '"}}').encode()


def pub_main(spec: PubSpec, ctl: Connection) -> None:
    """HTTP in ``spec.http_threads`` paced threads (one keep-alive connection each), Kafka here."""
    if spec.cpu is not None:
        bench.pin(spec.cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    lock = threading.Lock()
    stop = threading.Event()
    acked_h: list[int] = []
    acked_k: list[int] = []
    failed_h: list[int] = []  # answered with an error: not confirmed (may still arrive)
    post_ms: list[float] = []
    errors: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    producer = KafkaProducer(
        bootstrap_servers=spec.bootstrap,
        client_id="rig-soak",
        acks="all",
        linger_ms=0,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )
    producer.partitions_for(spec.topic)
    threads_n = max(1, spec.http_threads)
    started = time.time()

    def http_loop(j: int) -> None:
        # Thread j publishes h-(j+1), h-(j+1+T), ...: ids stay unique and dense.
        rate = spec.http_rate / threads_n
        publisher = bench.KeepAlivePublisher(spec.host, spec.api_port, quickack=True)
        i = 0
        while not stop.is_set() and time.time() < spec.deadline:
            delay = started + i / rate - time.time()
            if delay > 0 and stop.wait(delay):
                break
            n = j + 1 + i * threads_n
            i += 1
            t = time.time()
            try:
                status = publisher.post(event_body("h", n, spec.types, spec.pad))
            except (OSError, ValueError, IndexError) as exc:
                with lock:
                    sent["http"] += 1
                    failed_h.append(n)
                    errors[f"http: {type(exc).__name__}"] += 1
                publisher.close()
                continue
            with lock:
                sent["http"] += 1
                post_ms.append((time.time() - t) * 1000)
                if status == 202:
                    acked_h.append(n)
                else:
                    failed_h.append(n)
                    errors[f"http: HTTP {status}"] += 1
            if spec.reconnect_every and i % spec.reconnect_every == 0:
                publisher.close()  # a new connection: the next requests may go to another worker
        publisher.close()

    def on_ack(n: int, _md: Any) -> None:
        with lock:
            acked_k.append(n)

    def on_err(exc: BaseException) -> None:
        with lock:
            errors[f"kafka: {type(exc).__name__}"] += 1

    threads = []
    if spec.http_rate > 0:
        for j in range(threads_n):
            t = threading.Thread(target=http_loop, args=(j,), daemon=True)
            t.start()
            threads.append(t)
    ctl.send(("ready",))
    nk = 0
    while time.time() < spec.deadline:
        due_k = started + nk / spec.kafka_rate if spec.kafka_rate > 0 else time.time() + 0.5
        if ctl.poll(max(0.0, min(due_k - time.time(), 0.5))):
            msg = ctl.recv()
            if msg[0] == "stop":
                break
            if msg[0] == "progress":
                with lock:
                    ctl.send(
                        (
                            "progress",
                            {"http": len(acked_h), "kafka": len(acked_k), "errors": dict(errors)},
                        )
                    )
            continue
        if spec.kafka_rate <= 0 or time.time() < due_k:
            continue
        nk += 1
        sent["kafka"] += 1
        try:
            fut = producer.send(
                spec.topic,
                value=event_body("k", nk, spec.types, spec.pad),
                key=f"k{nk % 8}".encode(),
            )
            fut.add_callback(on_ack, nk)
            fut.add_errback(on_err)
        except KafkaError as exc:
            with lock:
                errors[f"kafka send: {type(exc).__name__}"] += 1
    ended = time.time()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    try:
        producer.flush(timeout=20)
    except KafkaError as exc:
        errors[f"kafka flush: {type(exc).__name__}"] += 1
    producer.close(timeout=5)
    with lock:
        post_ms.sort()
        ctl.send(
            (
                "final",
                {
                    "started": started,
                    "ended": ended,
                    "sent": dict(sent),
                    "acked_h": sorted(acked_h),
                    "acked_k": sorted(acked_k),
                    "failed_h": sorted(failed_h),
                    "errors": dict(errors),
                    "post_p50_ms": bench.percentile(post_ms, 50),
                    "post_p99_ms": bench.percentile(post_ms, 99),
                    "post_max_ms": bench.percentile(post_ms, 100),
                },
            )
        )


# --------------------------------------------------------------------------------------
# Parent: server, sampling, verdict, plot
# --------------------------------------------------------------------------------------


BASE_COLUMNS = [
    "sample",
    "phase",
    "t_s",
    "time",
    "pid",
    "worker",
    "rss_mb",
    "fds",
    "threads",
    "cpu_s",
    "cpu_pct",
    "greenlets",
    "actors",
    "connections",
    "connections_sse",
    "connections_ws",
    "connections_longpolling",
    "registry_connections",
    "registry_subscriptions",
]


class Child:
    def __init__(self, name: str, proc: mp.process.BaseProcess, pipe: Connection) -> None:
        self.name = name
        self.proc = proc
        self.pipe = pipe
        self.final: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}

    def ask(self, msg: tuple[Any, ...], kind: str, timeout: float) -> Any:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.pipe.send(msg)
        until = time.time() + timeout
        while time.time() < until:
            left = until - time.time()
            try:
                if not self.pipe.poll(max(0.0, left)):
                    break
                got = self.pipe.recv()
            except (EOFError, OSError):
                break
            if got[0] == "final":
                self.final = got[1]
                if kind == "final":
                    return got[1]
            elif got[0] == kind:
                if kind == "progress":
                    self.last = got[1]
                return got[1] if len(got) > 1 else True
        return None


def proc_threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        out = REPO / "loadtest" / "out"
        out.mkdir(parents=True, exist_ok=True)
        self.csv_path = args.csv or out / f"soak-{self.stamp}.csv"
        self.json_path = self.csv_path.with_suffix(".json")
        total = (
            args.setup_timeout
            + args.minutes * 60
            + 2 * args.lp_ttl_ms / 1000
            + args.teardown_timeout
        )
        argv = [
            "--kafka",
            "--workers",
            str(args.workers),
            "--port-base",
            str(args.port_base),
            "--partitions",
            str(args.partitions),
            "--timeout",
            str(total),
            "--log-level",
            args.log_level,
        ]
        if args.no_pin:
            argv.append("--no-pin")
        self.server_dir = REPO
        if not args.no_snapshot:
            # The gateway runs from a copy of the working tree as it is now: edits made
            # to rig_actors/ during the soak cannot reach it (a restarted worker would
            # import them).
            self.server_dir = Path(tempfile.mkdtemp(prefix="rig-soak-src-"))
            shutil.copytree(
                REPO / "rig_actors",
                self.server_dir / "rig_actors",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            for name in ("Procfile", "config.yaml"):
                shutil.copy2(REPO / name, self.server_dir / name)
            argv += ["--server-dir", str(self.server_dir)]
        self.bargs = bench.parse_args(argv)
        self.run = bench.Run(args=self.bargs, deadline=time.time() + total)
        self.total = total
        self.children: list[Child] = []
        self.rows: list[dict[str, Any]] = []
        self.writer: csv.DictWriter[str] | None = None
        self.csv_file: Any = None
        self.sample_no = 0
        self.t0 = time.time()
        self.pids_ever: set[int] = set()
        self.prev_cpu: dict[int, tuple[float, float]] = {}
        self.problems: list[str] = []
        self.result: dict[str, Any] = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "csv": str(self.csv_path),
        }

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            print(f"soak: problem: {text}", file=sys.stderr, flush=True)

    # -- sampling ---------------------------------------------------------------------

    def stats_all(self) -> dict[str, Any]:
        """``/_rig/stats?greenlets=1`` of every live worker (new connection each try)."""
        want = len(bench.server_pids(self.run)) or self.run.expected_workers
        out: dict[str, Any] = {}
        for _ in range(12 * want + 8):
            if len(out) >= want:
                break
            try:
                st = bench.http_json(
                    self.bargs.host, self.run.api_port, "/_rig/stats?greenlets=1", 10.0
                )
            except (OSError, RuntimeError, ValueError):
                time.sleep(0.1)
                continue
            out[str(st.get("worker"))] = st
        return out

    def sample(self, phase: str) -> list[dict[str, Any]]:
        self.sample_no += 1
        now = time.time()
        stats = self.stats_all()
        pids = bench.server_pids(self.run)
        for pid in pids:
            if pid not in self.pids_ever and self.pids_ever:
                self.problem(
                    f"gunicorn started a new worker, pid {pid} (a restart), "
                    f"at t={now - self.t0:.0f} s"
                )
        gone = self.pids_ever - set(pids)
        for pid in sorted(gone):
            if pid in getattr(self, "_reported_gone", set()):
                continue
            self._reported_gone = getattr(self, "_reported_gone", set()) | {pid}
            self.problem(f"worker pid {pid} exited during phase {phase} at t={now - self.t0:.0f} s")
        self.pids_ever |= set(pids)
        by_pid = {bench.worker_pid(w): (w, st) for w, st in stats.items()}
        rows = []
        for pid in pids:
            wid, st = by_pid.get(pid, (None, {}))
            conns = st.get("connections") or {}
            reg = st.get("registry") or {}
            row: dict[str, Any] = {
                "sample": self.sample_no,
                "phase": phase,
                "t_s": round(now - self.t0, 1),
                "time": time.strftime("%H:%M:%S", time.localtime(now)),
                "pid": pid,
                "worker": wid or "",
                "rss_mb": round(bench.proc_rss_kb(pid) / 1024, 2),
                "fds": bench.proc_fd_count(pid),
                "threads": proc_threads(pid),
                "cpu_s": round(bench.proc_cpu_s(pid), 2),
                "greenlets": st.get("greenlets", ""),
                "actors": st.get("actors", ""),
                "connections": sum(conns.values()) if st else "",
                "connections_sse": conns.get("sse", "") if st else "",
                "connections_ws": conns.get("ws", "") if st else "",
                "connections_longpolling": conns.get("longpolling", "") if st else "",
                "registry_connections": reg.get("connections", ""),
                "registry_subscriptions": reg.get("subscriptions", ""),
            }
            for k, v in reg.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    row.setdefault(f"registry_{k}", v)
            if not st:
                self.problem(
                    f"worker pid {pid} did not answer /_rig/stats in sample {self.sample_no}"
                )
            rows.append(row)
        for r in rows:
            prev = self.prev_cpu.get(r["pid"])
            if prev is not None and now > prev[0]:
                r["cpu_pct"] = round((r["cpu_s"] - prev[1]) / (now - prev[0]) * 100, 1)
            self.prev_cpu[r["pid"]] = (now, r["cpu_s"])
        self.write_rows(rows)
        return rows

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if self.writer is None:
            extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
            self.csv_file = open(self.csv_path, "w", newline="")
            self.writer = csv.DictWriter(
                self.csv_file, BASE_COLUMNS + extra, extrasaction="ignore", restval=""
            )
            self.writer.writeheader()
        for r in rows:
            self.writer.writerow(r)
        assert self.csv_file is not None
        self.csv_file.flush()
        self.rows.extend(rows)

    def watch(self) -> None:
        if self.run.server is not None and self.run.server.poll() is not None:
            raise RuntimeError(f"the gunicorn master exited with {self.run.server.returncode}")
        if self.run.broker is not None and self.run.broker.poll() is not None:
            raise RuntimeError(f"the broker exited with {self.run.broker.returncode}")
        avail = bench.mem_available_kb()
        if avail < self.args.min_available_mb * 1024:
            raise RuntimeError(f"MemAvailable {avail // 1024} MB below --min-available-mb")
        if time.time() > self.run.deadline:
            raise SoakTimeout("the overall bound expired")

    # -- phases -----------------------------------------------------------------------

    def start_children(self) -> None:
        args = self.args
        ctx = mp.get_context("fork")
        cpu = 1 if (os.cpu_count() or 1) >= 2 and not args.no_pin else None
        types = event_types(args.types)
        deadline = self.run.deadline - 5
        per = math.ceil(args.sse / args.clients)
        for i in range(args.clients):
            spec = SseSpec(
                index=i,
                population=per,
                canaries=args.sse_canaries,
                sources=[f"127.0.0.{2 + i * 4 + j}" for j in range(4)],
                host=self.bargs.host,
                port=self.bargs.port_base,
                types=types,
                subs_per_conn=args.subs_per_conn,
                churn_min=args.churn_min / 100,
                churn_max=args.churn_max / 100,
                replay_share=args.replay_share,
                puts_per_s=args.puts_per_s / args.clients,
                window=200,
                deadline=deadline,
                cpu=cpu,
                seed=args.seed + i,
            )
            self.spawn(ctx, f"sse-{i}", sse_main, spec)
        misc = MiscSpec(
            host=self.bargs.host,
            port=self.bargs.port_base,
            types=types,
            ws_canaries=args.ws_canaries,
            ws_churners=args.ws_churners,
            lp_canaries=args.lp_canaries,
            lp_churners=args.lp_churners,
            hold_min_s=5,
            hold_max_s=30,
            deadline=deadline,
            cpu=cpu,
            seed=args.seed + 77,
        )
        self.spawn(ctx, "misc", misc_main, misc)

    def spawn(self, ctx: Any, name: str, target: Any, spec: Any) -> Child:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(spec, child), name=f"soak-{name}", daemon=True)
        proc.start()
        child.close()
        c = Child(name, proc, parent)
        self.children.append(c)
        return c

    def clients(self, prefix: str) -> list[Child]:
        return [c for c in self.children if c.name.startswith(prefix)]

    def progress(self) -> dict[str, Any]:
        out = {}
        for c in self.children:
            if c.final is None and c.proc.is_alive():
                got = c.ask(("progress",), "progress", 10.0)
                if got is not None:
                    out[c.name] = got
        return out

    def wait_connected(self) -> None:
        args = self.args
        want = args.sse_canaries * args.clients
        per = math.ceil(args.sse / args.clients)
        until = time.time() + args.connect_timeout
        while True:
            prog = self.progress()
            sse = [prog.get(c.name) or {} for c in self.clients("sse-")]
            live = sum(p.get("live", 0) for p in sse)
            ready = sum(p.get("canaries_ready", 0) for p in sse)
            misc = prog.get("misc") or {}
            misc_ready = sum(1 for r in misc.get("canary_ready", []) if r)
            misc_want = args.ws_canaries + args.lp_canaries
            if ready >= want and misc_ready >= misc_want and live >= 0.98 * per * args.clients:
                return
            if time.time() > until:
                raise RuntimeError(
                    f"not connected within --connect-timeout: {live} SSE live, "
                    f"{ready}/{want} SSE canaries, {misc_ready}/{misc_want} WS/LP canaries; "
                    f"{sse}"
                )
            self.watch()
            time.sleep(1.0)

    def canary_total(self) -> int:
        prog = self.progress()
        total = 0
        for name, rep in prog.items():
            if name.startswith("sse-"):
                total += sum(rep.get("canary_events", []))
            elif name == "misc":
                total += sum(rep.get("canary_events", []))
        return total

    def drain(self) -> float:
        """Wait (>= --drain-s, <= 60 s) until the canaries' counts stop moving."""
        started = time.time()
        last = -1
        while time.time() - started < 60:
            time.sleep(2.0)
            total = self.canary_total()
            if total == last and time.time() - started >= self.args.drain_s:
                break
            last = total
        return round(time.time() - started, 1)

    def wait_idle_again(self) -> dict[str, Any]:
        """After the clients left: do the workers drop every connection and actor?"""
        # Idle long-polling sessions are swept every min(60 s, TTL): up to ~2 TTL.
        limit = 2 * self.args.lp_ttl_ms / 1000 + 45
        started = time.time()
        last: dict[str, Any] = {}
        while True:
            stats = self.stats_all()
            last = {
                w: {
                    "connections": bench.held_by(st),
                    "registry": st.get("registry"),
                    "actors": st.get("actors"),
                    "greenlets": st.get("greenlets"),
                }
                for w, st in stats.items()
            }
            left = sum(
                v["connections"] + (v["registry"] or {}).get("connections", 0)
                for v in last.values()
            )
            if (
                left == 0 and len(last) >= self.run.expected_workers
            ) or time.time() - started > limit:
                return {
                    "clean": left == 0,
                    "waited_s": round(time.time() - started, 1),
                    "workers": last,
                }
            time.sleep(5.0)

    def go(self) -> None:
        args = self.args
        os.environ["LONGPOLLING_SESSION_TTL_MS"] = str(args.lp_ttl_ms)
        self.result["source"] = bench.source_state(REPO)
        self.result["source"]["server_dir"] = str(self.server_dir)
        self.result["source"]["server_dir_sha256"] = bench.source_state(self.server_dir)[
            "rig_actors_sha256"
        ]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.result["source"]["uncommitted"] = subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "status",
                    "--porcelain",
                    "--",
                    "rig_actors",
                    "Procfile",
                    "config.yaml",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.splitlines()
        print(f"soak: broker and {args.workers} gunicorn workers ...", flush=True)
        bench.start_broker(self.run)
        bench.start_server(self.run)
        self.result["kafka_ready"] = bench.wait_kafka_ready(self.run)
        self.result["server_cmd"] = self.run.result.get("server_cmd")
        self.result["server_log"] = str(self.run.server_log)
        self.result["broker_log"] = str(self.run.broker_log)
        self.result["kafka"] = {
            **(self.run.result.get("kafka") or {}),
            "key": "k0 .. k7 (the soak's producer); HTTP events: as the gateway produces them",
        }
        self.pids_ever = set(bench.server_pids(self.run))
        time.sleep(2)
        self.t0 = time.time()
        idle = self.sample("idle")
        self.result["idle"] = idle
        print(f"soak: idle: {fmt_rows(idle)}", flush=True)
        self.start_children()
        self.wait_connected()
        print(f"soak: connected after {time.time() - self.t0:.0f} s; load starts", flush=True)
        ctx = mp.get_context("fork")
        cpu = 1 if (os.cpu_count() or 1) >= 2 and not args.no_pin else None
        pub = self.spawn(
            ctx,
            "publisher",
            pub_main,
            PubSpec(
                host=self.bargs.host,
                api_port=self.run.api_port,
                http_rate=args.http_rate,
                kafka_rate=args.kafka_rate,
                bootstrap=str(self.run.bootstrap),
                topic=str(self.run.source_topic),
                types=event_types(args.types),
                pad=args.pad,
                reconnect_every=500,
                http_threads=args.http_threads,
                deadline=self.run.deadline - 30,
                cpu=cpu,
            ),
        )
        if pub.ask(("noop",), "ready", 30.0) is None:
            raise RuntimeError("the publisher did not start")
        for c in self.children:
            if c.name != "publisher":
                with contextlib.suppress(OSError):
                    c.pipe.send(("churn",))
        load_start = time.time()
        self.result["load_started_t_s"] = round(load_start - self.t0, 1)
        end = load_start + args.minutes * 60
        next_sample = load_start
        while time.time() < end:
            self.watch()
            if time.time() >= next_sample:
                next_sample += args.sample_s
                rows = self.sample("load")
                prog = self.progress()
                self.result["last_progress"] = prog
                live = sum((prog.get(c.name) or {}).get("live", 0) for c in self.clients("sse-"))
                pubp = prog.get("publisher") or {}
                print(
                    f"soak: t={(time.time() - load_start) / 60:5.1f} min  {fmt_rows(rows)}  "
                    f"sse live {live}  published http {pubp.get('http')} kafka {pubp.get('kafka')}",
                    flush=True,
                )
            time.sleep(max(0.0, min(1.0, next_sample - time.time(), end - time.time())))
        self.result["load_ended_t_s"] = round(time.time() - self.t0, 1)
        print("soak: load done; stopping the publisher, draining", flush=True)
        self.result["publisher"] = pub.ask(("stop",), "final", 60.0)
        self.result["drain_s"] = self.drain()
        for c in self.children:
            if c.name != "publisher":
                c.ask(("stop",), "final", 40.0)
        self.result["clients"] = {c.name: c.final for c in self.children}
        for c in self.children:
            c.proc.join(timeout=5)
        self.result["after_clients"] = self.wait_idle_again()
        self.sample("after")

    def shutdown(self) -> None:
        for c in self.children:
            if c.proc.is_alive():
                c.proc.terminate()
                c.proc.join(timeout=3)
            if c.proc.is_alive():
                c.proc.kill()
        note = bench.stop_process(self.run.server, 20.0)
        if note:
            self.problem(f"server {note}")
        status = self.run.server.returncode if self.run.server else None
        if status not in (0, None, -signal.SIGTERM):
            self.problem(f"server exit status {status}")
        self.result["server_exit_status"] = status
        note = bench.stop_process(self.run.broker, 10.0)
        if note:
            self.problem(f"broker {note}")
        self.result["server_log_scan"] = bench.scan_log(self.run.server_log)
        if self.csv_file is not None:
            self.csv_file.close()


def fmt_rows(rows: list[dict[str, Any]]) -> str:
    return " | ".join(
        f"pid {r['pid']}: cpu {r.get('cpu_pct', '-')}% rss {r['rss_mb']:.0f} MB fds {r['fds']} "
        f"gl {r['greenlets']} "
        f"act {r['actors']} conn {r['connections']} subs {r['registry_subscriptions']}"
        for r in rows
    )


# --------------------------------------------------------------------------------------
# Canary check, verdict, plot
# --------------------------------------------------------------------------------------


def canary_check(result: dict[str, Any]) -> list[dict[str, Any]]:
    pub = result.get("publisher") or {}
    want = {"h": set(pub.get("acked_h", [])), "k": set(pub.get("acked_k", []))}
    failed = set(pub.get("failed_h", []))
    rows = []
    for _name, rep in sorted((result.get("clients") or {}).items()):
        for c in (rep or {}).get("canary_reports", []):
            seen = {k: set(v) for k, v in c["seen"].items()}
            missing = sum(len(want[k] - seen.get(k, set())) for k in want)
            extra = sum(len(seen.get(k, set()) - want[k]) for k in want)
            rows.append(
                {
                    "canary": c["client"],
                    "transport": c["transport"],
                    "worker": c.get("worker"),
                    "ready": c.get("ready"),
                    "open_at_end": c.get("open_at_end"),
                    "published": sum(len(v) for v in want.values()),
                    "received": sum(len(v) for v in seen.values()),
                    "missing": missing,
                    "unconfirmed_received": extra,
                    # POSTs answered with an error whose event was delivered all the same.
                    "failed_but_delivered": len(failed & seen.get("h", set())),
                    "duplicates": c.get("duplicates", 0),
                    "problems": c.get("problems", []),
                    "ok": missing == 0 and c.get("duplicates", 0) == 0 and bool(c.get("ready")),
                }
            )
    return rows


def load_csv(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = dict(r)
            for k, v in r.items():
                with contextlib.suppress(TypeError, ValueError):
                    row[k] = float(v)
            out.append(row)
    return out


def quarters(
    rows: list[dict[str, Any]], warmup_s: float, load_start: float | None
) -> dict[str, Any]:
    """Per worker (pid) and metric: mean of the first and last quarter after warm-up."""
    load = [r for r in rows if r["phase"] == "load"]
    if not load:
        return {"workers": {}, "samples": 0}
    start = load_start if load_start is not None else min(float(r["t_s"]) for r in load)
    post = [r for r in load if float(r["t_s"]) - start >= warmup_s]
    times = sorted({float(r["t_s"]) for r in post})
    n = len(times)
    q = max(1, n // 4)
    first, last = set(times[:q]), set(times[-q:])
    out: dict[str, Any] = {
        "samples": n,
        "per_quarter": q,
        "first": [min(first, default=None), max(first, default=None)],
        "last": [min(last, default=None), max(last, default=None)],
        "workers": {},
    }
    pids = sorted({int(r["pid"]) for r in post})
    metrics = [m for m, _ in METRICS] + ["registry_connections", "cpu_pct", "threads"]
    for pid in pids:
        mine = [r for r in post if int(r["pid"]) == pid]
        table = {}
        for m in metrics:
            a = [
                float(r[m]) for r in mine if float(r["t_s"]) in first and r.get(m) not in ("", None)
            ]
            b = [
                float(r[m]) for r in mine if float(r["t_s"]) in last and r.get(m) not in ("", None)
            ]
            if not a or not b:
                continue
            ma, mb = sum(a) / len(a), sum(b) / len(b)
            growth = (mb - ma) / ma * 100 if ma else (0.0 if mb == 0 else math.inf)
            table[m] = {"first": ma, "last": mb, "growth_pct": growth}
        # Subscriptions per registry connection: the load-independent form.
        s, c = table.get("registry_subscriptions"), table.get("registry_connections")
        if s and c and c["first"] and c["last"]:
            a, b = s["first"] / c["first"], s["last"] / c["last"]
            table["subscriptions_per_connection"] = {
                "first": a,
                "last": b,
                "growth_pct": (b - a) / a * 100 if a else 0.0,
            }
        out["workers"][str(pid)] = table
    return out


def verdict(q: dict[str, Any], flag_pct: float) -> tuple[bool, list[str]]:
    lines = []
    flat = True
    for pid, table in q["workers"].items():
        for m, floor in JUDGED.items():
            if m not in table:
                continue
            g = table[m]["growth_pct"]
            if g > flag_pct:
                change = table[m]["last"] - table[m]["first"]
                if change <= floor:
                    lines.append(
                        f"worker pid {pid}: {m} {g:+.1f} % ({table[m]['first']:.1f} -> "
                        f"{table[m]['last']:.1f}) is within the noise floor of {floor:g}: "
                        "not flagged"
                    )
                    continue
                flat = False
                follows = ""
                if m == "registry_subscriptions" and "registry_connections" in table:
                    conn_growth = table["registry_connections"]["growth_pct"]
                    follows = (
                        f" (registry connections {conn_growth:+.1f} %:"
                        " subscriptions follow the load)"
                    )
                lines.append(
                    f"worker pid {pid}: {m} grew {g:+.1f} % "
                    f"({table[m]['first']:.1f} -> {table[m]['last']:.1f}){follows}"
                )
    return flat, lines


def quarter_table(q: dict[str, Any]) -> str:
    metrics = [m for m, _ in METRICS] + ["registry_connections", "subscriptions_per_connection"]
    head = (
        f"{'metric':28} {'worker pid':>10} {'first quarter':>14} {'last quarter':>13} {'growth':>8}"
    )
    lines = [head, "-" * len(head)]
    for m in metrics:
        for pid, table in q["workers"].items():
            if m in table:
                t = table[m]
                lines.append(
                    f"{m:28} {pid:>10} {t['first']:>14.2f} {t['last']:>13.2f}"
                    f" {t['growth_pct']:>+7.1f}%"
                )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], png: Path, warmup_s: float, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib is not installed: no plot (pip install -r requirements-test.txt)")
        return False
    load = [r for r in rows if r["phase"] == "load"]
    if not load:
        return False
    start = min(float(r["t_s"]) for r in load)
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    pids = sorted({int(r["pid"]) for r in load})
    for ax, (m, label) in zip(axes.flat, METRICS, strict=True):
        for i, pid in enumerate(pids):
            pts = [
                ((float(r["t_s"]) - start) / 60, float(r[m]))
                for r in load
                if int(r["pid"]) == pid and r.get(m) not in ("", None)
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker=".",
                    markersize=3,
                    linewidth=1,
                    label=f"worker {i + 1} (pid {pid})",
                )
        ax.axvline(warmup_s / 60, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("minutes of load (dashed: end of warm-up)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return True


def report(result: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    warmup_s = args.warmup_min * 60
    load_start = result.get("load_started_t_s")
    q = quarters(rows, warmup_s, load_start)
    result["quarters"] = q
    flat, flags = verdict(q, args.flag_pct)
    pub = result.get("publisher") or {}
    if "acked_h" in pub:
        result["canaries"] = canary_check(result)
    canaries = result.get("canaries") or []  # --analyse: as the run recorded them
    canaries_ok = bool(canaries) and all(c["ok"] for c in canaries)
    print()
    print(f"samples after warm-up: {q.get('samples', 0)} (quarters of {q.get('per_quarter')})")
    print(quarter_table(q))
    print()
    if flat:
        print(f"VERDICT resources: flat (no judged metric grew more than {args.flag_pct:g} %)")
        for line in flags:
            print("  " + line)
    else:
        print(f"VERDICT resources: growth above {args.flag_pct:g} %:")
        for line in flags:
            print("  " + line)
    if canaries:
        print(
            "VERDICT canaries: "
            + ("every canary got every confirmed event exactly once" if canaries_ok else "MISMATCH")
        )
        for c in canaries:
            print(
                f"  {c['canary']:14} {c['transport']:11} worker {c['worker']}: "
                f"published {c['published']:,} received {c['received']:,} missing {c['missing']:,} "
                f"duplicates {c['duplicates']} unconfirmed {c['unconfirmed_received']}"
                f" (of which POST failed {c.get('failed_but_delivered', '?')})"
                + (f"  problems: {c['problems'][:3]}" if c["problems"] else "")
            )
    if pub:
        ch = pub.get("confirmed_http", len(pub.get("acked_h", [])))
        ck = pub.get("confirmed_kafka", len(pub.get("acked_k", [])))
        print(
            f"publisher: sent {pub['sent']}, confirmed http {ch:,} "
            f"kafka {ck:,}, errors {pub['errors']}, POST p50 "
            f"{(pub['post_p50_ms'] or 0):.1f} ms p99 {(pub['post_p99_ms'] or 0):.1f} ms "
            f"max {(pub['post_max_ms'] or 0):.0f} ms"
        )
    for name, rep in sorted((result.get("clients") or {}).items()):
        if rep and name != "publisher":
            keep = {
                k: rep.get(k)
                for k in ("counts", "failures", "puts", "specials", "note")
                if rep.get(k)
            }
            print(f"{name}: {json.dumps(keep)}")
    after = result.get("after_clients")
    if after:
        print(f"after the clients left (waited {after['waited_s']} s): clean={after['clean']}")
        for w, v in after["workers"].items():
            print(f"  worker {w}: {v}")
    scan = result.get("server_log_scan")
    if scan:
        print(
            f"server log: {scan['lines']} lines, {scan['error_lines']} error lines, "
            f"{scan['warning_lines']} warnings, {scan['worker_timeout_lines']} WORKER TIMEOUT, "
            f"{scan['emfile_lines']} EMFILE"
        )
        for line in scan["excerpt"]:
            print("  " + line[:220])
    for p in result.get("problems", []):
        print(f"problem: {p}")
    result["verdict"] = {"flat": flat, "flags": flags, "canaries_ok": canaries_ok}
    src = result.get("source") or {}
    title = (
        f"rig-actors soak: {args.workers} gunicorn workers + Kafka, "
        f"{args.minutes:g} min, commit {src.get('git_head', '?')}"
        + (" (+ uncommitted rig_actors changes)" if src.get("rig_actors_dirty") else "")
    )
    if args.png and plot(rows, args.png, warmup_s, title):
        print(f"plot written to {args.png}")
    return 0 if flat and (canaries_ok or not canaries) else 1


# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of load (30)")
    p.add_argument("--warmup-min", type=float, default=5.0, help="warm-up, not judged (5)")
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (30)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    p.add_argument("--sse", type=int, default=2000, help="churning SSE connections (2000)")
    p.add_argument("--clients", type=int, default=2, help="SSE client processes (2)")
    p.add_argument(
        "--sse-canaries", type=int, default=3, help="SSE canaries per client process (3)"
    )
    p.add_argument("--ws-canaries", type=int, default=2, help="WebSocket canaries (2)")
    p.add_argument("--lp-canaries", type=int, default=1, help="long-polling canaries (1)")
    p.add_argument("--ws-churners", type=int, default=6, help="churning WebSocket clients (6)")
    p.add_argument("--lp-churners", type=int, default=3, help="churning long-polling clients (3)")
    p.add_argument("--churn-min", type=float, default=2.0, help="%% closed per second, low (2)")
    p.add_argument("--churn-max", type=float, default=5.0, help="%% closed per second, high (5)")
    p.add_argument(
        "--replay-share",
        type=float,
        default=0.05,
        help="share of new SSE connections sent with a closed one's Last-Event-ID (0.05)",
    )
    p.add_argument("--puts-per-s", type=float, default=2.0, help="subscription PUTs per second (2)")
    p.add_argument("--types", type=int, default=10, help="event types soak.0 .. (10)")
    p.add_argument("--subs-per-conn", type=int, default=2, help="types per churning client (2)")
    p.add_argument("--http-rate", type=float, default=45.0, help="events/s POSTed (45)")
    p.add_argument("--http-threads", type=int, default=6, help="publishing connections, paced (6)")
    p.add_argument("--kafka-rate", type=float, default=5.0, help="events/s produced to Kafka (5)")
    p.add_argument("--pad", type=int, default=200, help="event size in bytes (200)")
    p.add_argument("--partitions", type=int, default=4, help="source topic partitions (4)")
    p.add_argument(
        "--lp-ttl-ms",
        type=int,
        default=60000,
        help="LONGPOLLING_SESSION_TTL_MS: abandoned long-polling sessions end (60000)",
    )
    p.add_argument("--port-base", type=int, default=15500, help="inbound port; API +10 (15500)")
    p.add_argument("--log-level", default="warn", help="server LOG_LEVEL (warn)")
    p.add_argument("--drain-s", type=float, default=8.0, help="wait after the last publish (8)")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--setup-timeout", type=float, default=240.0)
    p.add_argument("--teardown-timeout", type=float, default=240.0)
    p.add_argument("--flag-pct", type=float, default=10.0, help="growth flagged above (10)")
    p.add_argument("--min-available-mb", type=int, default=2048)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the gateway from this checkout, not from a copy taken at the start",
    )
    p.add_argument(
        "--csv", type=Path, default=None, help="CSV path (loadtest/out/soak-<stamp>.csv)"
    )
    p.add_argument(
        "--png", type=Path, default=REPO / "docs" / "soak.png", help="plot (docs/soak.png)"
    )
    p.add_argument("--no-png", action="store_true", help="do not draw the plot")
    p.add_argument(
        "--analyse", type=Path, default=None, help="only judge and plot an earlier run's CSV"
    )
    args = p.parse_args(argv)
    if args.no_png:
        args.png = None
    if args.workers < 2:
        p.error("--workers must be >= 2 (the soak runs gunicorn with Kafka)")
    if args.sse < args.clients or args.clients < 1:
        p.error("--sse must be >= --clients >= 1")
    if math.ceil(args.sse / args.clients) > 18_000:
        p.error("at most 18,000 SSE connections per client process")
    if not 0 <= args.churn_min <= args.churn_max <= 50:
        p.error("0 <= --churn-min <= --churn-max <= 50")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.analyse:
        rows = load_csv(args.analyse)
        side = args.analyse.with_suffix(".json")
        result = json.loads(side.read_text()) if side.exists() else {}
        return report(result, rows, args)
    soak = Soak(args)

    def on_alarm(signum: int, frame: Any) -> None:
        raise SoakTimeout("the overall bound expired (alarm)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(soak.total) + 30)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    try:
        soak.go()
    except (SoakTimeout, RuntimeError, OSError) as exc:
        soak.problem(f"aborted: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        soak.problem("interrupted")
    finally:
        signal.alarm(0)
        soak.shutdown()
        left = sorted(p for p in soak.pids_ever if os.path.exists(f"/proc/{p}"))
        if left:
            soak.problem(f"worker pids still present after the server stopped: {left}")
        soak.result["problems"] = soak.problems
        after = bench.source_state(soak.server_dir)["rig_actors_sha256"]
        if after != (soak.result.get("source") or {}).get("server_dir_sha256"):
            soak.problem("the sources the gateway ran from changed while the soak ran")
            soak.result["problems"] = soak.problems
        if soak.server_dir != REPO:
            shutil.rmtree(soak.server_dir, ignore_errors=True)
    status = report(soak.result, soak.rows, args)
    slim = dict(soak.result)
    pub = slim.get("publisher")
    if pub:  # the id lists are long; the counts are kept
        slim["publisher"] = {
            **{k: v for k, v in pub.items() if k not in ("acked_h", "acked_k")},
            "confirmed_http": len(pub["acked_h"]),
            "confirmed_kafka": len(pub["acked_k"]),
        }
    clients = {}
    for name, rep in (slim.get("clients") or {}).items():
        if rep:
            rep = dict(rep)
            rep.pop("canary_reports", None)
        clients[name] = rep
    slim["clients"] = clients
    soak.json_path.write_text(json.dumps(slim, indent=2, default=str) + "\n")
    print(f"samples: {soak.csv_path}; summary: {soak.json_path}")
    return 0 if not soak.problems and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
