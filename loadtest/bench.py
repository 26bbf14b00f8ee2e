#!/usr/bin/env python3
"""Fan-out benchmark for rig-actors: N SSE connections, M published events.

Run from the repository root, with the project's virtualenv active::

    python loadtest/bench.py -n 1000 --events 200              # burst
    python loadtest/bench.py -n 1000 --events 200 --rate 20    # paced
    python loadtest/bench.py -n 10000 --events 100 --clients 2 --json loadtest/out/10k.json

What it does, in order (see ``loadtest/README.rst`` for what each figure means):

1. starts the gateway (``python -m rig_actors``, pinned to CPU 0 with
   ``taskset`` when there are two CPUs) on ``--port-base`` / ``--port-base + 10``;
2. reads the server's idle RSS, then lets ``--clients`` processes (pinned to
   CPU 1) open the N SSE connections with non-blocking sockets and epoll. Each
   client process binds its own source addresses (127.0.0.2, .3, ...) with
   ``IP_BIND_ADDRESS_NO_PORT`` so ephemeral ports never run out;
3. waits until every connection has seen ``rig.subscriptions_set``, then reads
   the RSS again (RSS per connection) and the connect time;
4. publishes M timestamped CloudEvents over one keep-alive HTTP connection to
   ``POST /v3/messages`` (as fast as possible, or at ``--rate`` events/s), while
   the clients count deliveries on every connection and measure the latency
   (receive time - ``ts``) on an evenly spread sample of connections;
5. stops everything (SIGTERM to the server) and prints a table, also written
   as JSON with ``--json``.

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
import json
import math
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
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
            if delivered:
                if not self.first_delivery:
                    self.first_delivery = now
                self.last_delivery = now
            # The pipe is in the epoll set: no extra syscall per round when it is quiet.
            while control and self.ctl.poll():
                msg = self.ctl.recv()
                if msg[0] == "go":
                    started = True
                    self.connect_started = time.time()
                    self.fill_window()
                elif msg[0] == "progress":
                    self.ctl.send(("progress", self.progress()))
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
        # PRELUDE: until the end of the rig.subscriptions_set event.
        pos = buf.find(READY_TOKEN)
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
        received = time.time()
        buf = self.buf[fd] + data
        *frames, rest = buf.split(b"\n\n")
        self.buf[fd] = rest
        n = 0
        for frame in frames:
            if not frame.startswith(LIVE_TOKEN):
                continue  # heartbeat comments, other event types
            n += 1
            try:
                line = frame[frame.index(b"\ndata: ") + 7 :]
                ts = json.loads(line)["data"]["ts"]
                self.latencies.append(round((received - float(ts)) * 1000.0, 3))
            except (ValueError, KeyError, TypeError):
                self.bad_samples += 1
        if n:
            self.counts_by_index[self.fd_index[fd]] += n
            return True
        return False


# --------------------------------------------------------------------------------------
# Parent: server, publisher, orchestration
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    deadline: float
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    clients: list[mp.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    client_pids: list[int] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        left = self.deadline - time.time()
        if left <= 0:
            raise BenchTimeout(f"--timeout {self.args.timeout:g} s expired")
        return left


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_json(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


def start_server(run: Run) -> None:
    args = run.args
    inbound, internal = args.port_base, args.port_base + 10
    for port in (inbound, internal):
        if port_in_use(args.host, port):
            raise SystemExit(f"bench: port {port} is already in use; choose --port-base")
    out_dir = REPO / "loadtest" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    run.server_log = out_dir / f"server-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    env = dict(os.environ)
    env.update(
        INBOUND_PORT=str(inbound),
        API_HTTP_PORT=str(internal),
        BIND_ADDRESS=args.host,
        MAX_CONNECTIONS_PER_MINUTE=str(args.max_connections_per_minute),
        LOG_LEVEL=args.log_level,
        PYTHONUNBUFFERED="1",
    )
    if args.coalesce_ms is not None:
        env["COALESCE_MS"] = str(args.coalesce_ms)
    cmd = [sys.executable, "-m", "rig_actors"]
    taskset = shutil.which("taskset")
    pinned = bool(taskset) and (os.cpu_count() or 1) >= 2 and not args.no_pin
    if pinned and taskset:
        cmd = [taskset, "-c", "0", *cmd]
    run.result["server_cmd"] = " ".join(cmd)
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
                    return
            finally:
                conn.close()
        time.sleep(0.1)
    raise RuntimeError("the server did not answer /health within 30 s")


def stop_server(run: Run) -> None:
    server = run.server
    if server is None or server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        run.result.setdefault("problems", []).append("server ignored SIGTERM for 10 s; killed")
        server.kill()
        server.wait(timeout=5)


def start_clients(run: Run) -> None:
    args = run.args
    ctx = mp.get_context("fork")
    per = math.ceil(args.connections / args.clients)
    cpu = 1 if (os.cpu_count() or 1) >= 2 and not args.no_pin else None
    path = "/_rig/v1/connection/sse?subscriptions=" + urllib.parse.quote(
        json.dumps([{"eventType": EVENT_TYPE}], separators=(",", ":")), safe=""
    )
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
            path=path,
            window=args.window,
            sample=args.sample,
            connect_timeout=args.connect_timeout,
            deadline=run.deadline + 5,
            poll_ms=args.poll_ms,
            cpu=cpu,
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


def recv_kind(run: Run, kind: str, timeout: float) -> list[Any]:
    """One message of ``kind`` from every client (None for a client that gave none)."""
    got: dict[int, Any] = {}
    until = time.time() + timeout
    while len(got) < len(run.pipes):
        left = min(until, run.deadline) - time.time()
        if left <= 0:
            break
        pending = [p for i, p in enumerate(run.pipes) if i not in got]
        for pipe in wait(pending, timeout=left):
            index = run.pipes.index(pipe)  # type: ignore[arg-type]
            try:
                msg = pipe.recv()  # type: ignore[union-attr]
            except EOFError:
                got[index] = None
                continue
            if msg[0] == kind:
                got[index] = msg[1]
            elif msg[0] == "final":  # a client that hit its own deadline
                got[index] = None
    return [got.get(i) for i in range(len(run.pipes))]


def broadcast(run: Run, msg: tuple[Any, ...]) -> None:
    for pipe in run.pipes:
        with contextlib.suppress(OSError):
            pipe.send(msg)


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

    def __init__(self, host: str, port: int, quickack: bool) -> None:
        self.addr = (host, port)
        self.quickack = quickack and hasattr(socket, "TCP_QUICKACK")
        self.sock: socket.socket | None = None
        self.head = (
            f"POST /v3/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
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


def publish(run: Run) -> dict[str, Any]:
    args = run.args
    publisher = KeepAlivePublisher(args.host, args.port_base + 10, not args.no_quickack)
    errors: Counter[str] = Counter()
    sent = 0
    post_times: list[float] = []
    started = time.time()
    for seq in range(1, args.events + 1):
        if args.rate:
            due = started + (seq - 1) / args.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        run.remaining()
        body = make_body(seq, args.pad)
        t = time.time()
        try:
            status = publisher.post(body)
        except (OSError, ValueError, IndexError) as exc:
            errors[type(exc).__name__] += 1
            publisher.close()
            continue
        post_times.append(time.time() - t)
        if status == 202:
            sent += 1
        else:
            errors[f"HTTP {status}"] += 1
    ended = time.time()
    publisher.close()
    post_times.sort()
    return {
        "started": started,
        "ended": ended,
        "accepted": sent,
        "errors": dict(errors),
        "duration_s": ended - started,
        "post_p50_ms": (percentile(post_times, 50) or 0) * 1000,
        "post_max_ms": (percentile(post_times, 100) or 0) * 1000,
    }


def drain(run: Run, expected: int, started: float) -> dict[str, Any]:
    """Poll the clients until every delivery arrived or nothing moved for a while."""
    args = run.args
    last_total = -1
    last_change = time.time()
    total = 0
    while True:
        broadcast(run, ("progress",))
        reports = recv_kind(run, "progress", 10.0)
        total = sum(r["received"] for r in reports if r)
        now = time.time()
        if total != last_total:
            last_total, last_change = total, now
        if total >= expected:
            break
        if now - last_change > args.drain_timeout or now >= run.deadline - 5:
            break
        time.sleep(0.05)
    return {"received": total, "waited_s": time.time() - started}


def wait_cleanup(run: Run, limit_s: float) -> dict[str, Any]:
    """After the clients closed everything: does the server forget every connection?"""
    args = run.args
    started = time.time()
    stats: Any = None
    while True:
        with contextlib.suppress(Exception):
            stats = http_json(args.host, args.port_base + 10, "/_rig/stats")
        left = None
        if stats is not None:
            left = sum(stats.get("connections", {}).values()) + stats.get("registry", {}).get(
                "connections", 0
            )
        waited = time.time() - started
        if left == 0 or waited >= limit_s or time.time() >= run.deadline - 3:
            return {"clean": left == 0, "waited_s": round(waited, 2), "stats": stats}
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


def scan_log(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {"lines": 0, "error_lines": 0, "warning_lines": 0, "excerpt": []}
    lines = path.read_text(errors="replace").splitlines()
    bad = [
        ln
        for ln in lines
        if any(w in ln for w in ("ERROR", "CRITICAL", "Traceback", "Exception", "Error:"))
    ]
    warn = [ln for ln in lines if "WARNING" in ln or "Warning" in ln]
    return {
        "lines": len(lines),
        "error_lines": len(bad),
        "warning_lines": len(warn),
        "excerpt": bad[:15],
    }


def bench(run: Run) -> None:
    args = run.args
    res = run.result
    res["config"] = {
        "connections": args.connections,
        "events": args.events,
        "rate": args.rate,
        "mode": f"rate {args.rate:g}/s" if args.rate else "burst",
        "clients": args.clients,
        "event_bytes": args.pad,
        "coalesce_ms": args.coalesce_ms,
        "sample_per_client": args.sample,
        "window": args.window,
        "poll_ms": args.poll_ms,
        "no_quickack": args.no_quickack,
    }
    res["source"] = source_state(args.server_dir)
    if args.wait_idle > 0:
        res["phase"] = "wait for an idle machine"
        res["wait_idle"] = wait_idle(min(args.wait_idle, run.remaining() - 10))
    res["phase"] = "start server"
    start_server(run)
    assert run.server is not None
    spid = run.server.pid
    if not args.no_pin:
        res["bench_pinned_cpu1"] = pin(1) if (os.cpu_count() or 1) >= 2 else False
    time.sleep(1.0)
    rss_idle = proc_rss_kb(spid)
    res["server_rss_idle_kb"] = rss_idle

    res["phase"] = "connect"
    start_clients(run)
    cpu_server_0 = proc_cpu_s(spid)
    t0 = time.time()
    broadcast(run, ("go",))
    connected = recv_kind(run, "connected", args.connect_timeout + 30)
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
    res["server_cpu_connect_s"] = proc_cpu_s(spid) - cpu_server_0
    res["server_cpu_per_connect_ms"] = res["server_cpu_connect_s"] * 1000 / live if live else None
    time.sleep(1.0)
    rss_conn = proc_rss_kb(spid)
    res["server_rss_connected_kb"] = rss_conn
    res["server_rss_per_connection_kb"] = (rss_conn - rss_idle) / live if live else None
    with contextlib.suppress(Exception):
        res["stats_connected"] = http_json(args.host, args.port_base + 10, "/_rig/stats")
    if live == 0:
        raise RuntimeError("no client connection got subscribed; nothing to measure")

    res["phase"] = "publish"
    expected = live * args.events
    cpu_s0 = proc_cpu_s(spid)
    cpu_c0 = sum(proc_cpu_s(p) for p in run.client_pids)
    cpu_b0 = proc_cpu_s(os.getpid())
    busy0 = machine_busy_s()
    pub = publish(run)
    res["drain"] = drain(run, expected, pub["started"])
    cpu_s1 = proc_cpu_s(spid)
    cpu_c1 = sum(proc_cpu_s(p) for p in run.client_pids)
    cpu_b1 = proc_cpu_s(os.getpid())
    busy1 = machine_busy_s()
    phase_wall = time.time() - pub["started"]
    res["publish_phase_wall_s"] = phase_wall
    res["publish"] = pub
    res["publish_rate_achieved"] = (
        pub["accepted"] / pub["duration_s"] if pub["duration_s"] else None
    )
    server_cpu = cpu_s1 - cpu_s0
    client_cpu = cpu_c1 - cpu_c0
    res["server_cpu_publish_s"] = server_cpu
    res["client_cpu_publish_s"] = client_cpu
    res["server_cpu_share_publish"] = server_cpu / phase_wall
    res["client_cpu_share_publish"] = client_cpu / phase_wall
    res["bench_cpu_publish_s"] = cpu_b1 - cpu_b0
    res["other_cpu_publish_s"] = max(
        0.0, (busy1 - busy0) - server_cpu - client_cpu - (cpu_b1 - cpu_b0)
    )
    res["server_rss_after_publish_kb"] = proc_rss_kb(spid)

    res["phase"] = "collect"
    with contextlib.suppress(Exception):
        res["stats_end"] = http_json(args.host, args.port_base + 10, "/_rig/stats")
    broadcast(run, ("stop",))
    finals = recv_kind(run, "final", 30.0)
    res["cleanup"] = wait_cleanup(run, 10.0)
    counts: list[int] = []
    latencies: list[float] = []
    closed = 0
    last = 0.0
    client_cpu_total = 0.0
    bad_samples = 0
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
    wall = (last - pub["started"]) if last > pub["started"] else None
    res["delivery_wall_s"] = wall
    res["deliveries_per_s"] = received / wall if wall else None
    res["deliveries_per_server_cpu_s"] = received / server_cpu if server_cpu > 0 else None
    res["server_cpu_us_per_delivery"] = server_cpu * 1e6 / received if received else None
    latencies.sort()
    res["latency_samples"] = len(latencies)
    res["latency_sample_connections"] = sample_conns
    res["latency_bad_samples"] = bad_samples
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


def table(res: dict[str, Any]) -> str:
    cfg = res.get("config", {})
    pub = res.get("publish", {})
    rows: list[tuple[str, str]] = [
        (
            "mode",
            f"{cfg.get('mode')}, {cfg.get('events')} events of {cfg.get('event_bytes')} B, "
            f"{cfg.get('clients')} client processes, COALESCE_MS={cfg.get('coalesce_ms')}",
        ),
        (
            "connections held / asked",
            f"{fmt(res.get('connections_held'))} / {fmt(cfg.get('connections'))}",
        ),
        (
            "connect failures",
            ", ".join(f"{k}: {v}" for k, v in res.get("connect_failures", {}).items()) or "none",
        ),
        ("connect time (all subscribed)", fmt(res.get("connect_time_s"), ".2f", " s")),
        ("connect rate", fmt(res.get("connect_rate_per_s"), ",.0f", " conn/s")),
        ("server CPU per connect", fmt(res.get("server_cpu_per_connect_ms"), ".3f", " ms")),
        (
            "server RSS idle / connected",
            f"{fmt(res.get('server_rss_idle_kb'), ',', ' KB')} / "
            f"{fmt(res.get('server_rss_connected_kb'), ',', ' KB')}",
        ),
        ("server RSS per connection", fmt(res.get("server_rss_per_connection_kb"), ".1f", " KB")),
        ("server RSS after publish", fmt(res.get("server_rss_after_publish_kb"), ",", " KB")),
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
            "POST /v3/messages p50 / max",
            f"{fmt(pub.get('post_p50_ms'), '.2f')} / {fmt(pub.get('post_max_ms'), '.1f')} ms"
            + (" (no TCP_QUICKACK)" if cfg.get("no_quickack") else ""),
        ),
        (
            "publish errors",
            ", ".join(f"{k}: {v}" for k, v in pub.get("errors", {}).items()) or "none",
        ),
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
            f"{fmt(res.get('publish_phase_wall_s'), '.2f', ' s')})",
        ),
        ("deliveries per server CPU-s", fmt(res.get("deliveries_per_server_cpu_s"))),
        ("server CPU per delivery", fmt(res.get("server_cpu_us_per_delivery"), ".2f", " µs")),
        (
            "latency p50 / p99 / max",
            f"{fmt(res.get('latency_p50_ms'), '.1f')} / {fmt(res.get('latency_p99_ms'), '.1f')} / "
            f"{fmt(res.get('latency_max_ms'), '.1f')} ms "
            f"({fmt(res.get('latency_samples'))} samples on "
            f"{fmt(res.get('latency_sample_connections'))} connections)",
        ),
        (
            "client CPU publish / total",
            f"{fmt(res.get('client_cpu_publish_s'), '.2f', ' s')} / "
            f"{fmt(res.get('client_cpu_total_s'), '.2f', ' s')} "
            f"({fmt(pct(res.get('client_cpu_share_publish')), '.0f', ' %')} of a core "
            "while publishing)",
        ),
        ("other processes' CPU (publish)", fmt(res.get("other_cpu_publish_s"), ".2f", " s")),
    ]
    log = res.get("server_log_scan", {})
    rows.append(
        (
            "server log",
            f"{log.get('error_lines', 0)} error lines, "
            f"{log.get('warning_lines', 0)} warnings ({res.get('server_log')})",
        )
    )
    cleanup = res.get("cleanup")
    if cleanup:
        st = cleanup.get("stats") or {}
        rows.append(
            (
                "server state after clients closed",
                ("clean" if cleanup["clean"] else "NOT clean")
                + f" after {cleanup['waited_s']:g} s (connections {st.get('connections')}, "
                f"registry connections {st.get('registry', {}).get('connections')}, "
                f"actors {st.get('actors')})",
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
    p.add_argument("-n", "--connections", type=int, default=1000, help="SSE connections (1000)")
    p.add_argument("--events", type=int, default=100, help="events to publish (100)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s; 0 = burst, as fast as the server accepts (0)",
    )
    p.add_argument("--clients", type=int, default=2, help="client processes (2)")
    p.add_argument("--pad", type=int, default=200, help="size of each event body in bytes (200)")
    p.add_argument(
        "--coalesce-ms",
        type=int,
        default=None,
        help="passed to the server as COALESCE_MS (server default when omitted)",
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
        run.result.setdefault("problems", []).append(
            f"aborted in phase {run.result.get('phase')}: {exc}"
        )
        status = 1
    except KeyboardInterrupt:
        run.result.setdefault("problems", []).append("interrupted")
        status = 130
    finally:
        signal.alarm(0)
        broadcast(run, ("stop",))
        for proc in run.clients:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        stop_server(run)
        if run.server is not None and run.server.returncode not in (0, None, -signal.SIGTERM):
            run.result.setdefault("problems", []).append(
                f"server exit status {run.server.returncode}"
            )
        run.result["server_exit_status"] = run.server.returncode if run.server else None
        run.result["server_log_scan"] = scan_log(run.server_log)
        before = run.result.get("source", {}).get("rig_actors_sha256")
        if before and source_state(args.server_dir)["rig_actors_sha256"] != before:
            run.result.setdefault("problems", []).append(
                "rig_actors sources changed while the benchmark ran"
            )
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
