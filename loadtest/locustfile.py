"""Locust users for rig-actors: SSE and WebSocket subscribers, and a publisher.

Start the gateway first (high connection limit so the spawn rate is not refused)::

    MAX_CONNECTIONS_PER_MINUTE=1000000 LOG_LEVEL=warn python -m rig_actors

Then a bounded headless run, e.g. 100 SSE subscribers and one publisher for
20 s (``--stop-timeout`` is needed because a subscriber's task never returns
while its stream is open; Locust then kills it)::

    locust -f loadtest/locustfile.py SSESubscriber Publisher --headless -u 101 -r 100 \\
        -t 20s --host http://127.0.0.1:4000 --only-summary --stop-timeout 2

``Publisher`` has ``fixed_count = 1``: exactly one is spawned, the other
users are subscribers. Use ``WSSubscriber`` instead of (or with)
``SSESubscriber`` for WebSocket clients. Options of this file (after the
Locust ones): ``--rig-event-type`` (default ``bench``), ``--rig-pacing``
(seconds between two publishes of one Publisher, default 0.1),
``--rig-pad`` (event body size in bytes, default 200) and
``--rig-publish-delay`` (seconds a Publisher waits before its first event,
so that subscribers are connected, default 2).

What the statistics mean:

- ``SSE connect`` / ``WS connect``: time from opening the TCP connection to
  having read ``rig.subscriptions_set`` (the subscription is live);
- ``SSE event`` / ``WS event``: one row per delivered event; its "response
  time" is the delivery latency, receive time minus the ``ts`` the publisher
  put into the event just before posting it (Locust rounds it to whole ms);
- ``POST publish``: the publisher's request to ``POST /_rig/v1/events``
  (202 expected);
- failures named ``stream``: a stream that the server closed or that broke.

Only loopback hosts should be used. Locust already runs under gevent, so the
raw sockets and websocket-client here are cooperative.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from typing import Any

import websocket
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from locust.user.wait_time import constant_pacing

DEFAULTS: dict[str, Any] = {
    "rig_event_type": "bench",
    "rig_pacing": 0.1,
    "rig_pad": 200,
    "rig_publish_delay": 2.0,
}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--rig-event-type", default=DEFAULTS["rig_event_type"], help="CloudEvent type used"
    )
    parser.add_argument(
        "--rig-pacing",
        type=float,
        default=DEFAULTS["rig_pacing"],
        help="seconds between two events of one Publisher",
    )
    parser.add_argument(
        "--rig-pad", type=int, default=DEFAULTS["rig_pad"], help="event body size in bytes"
    )
    parser.add_argument(
        "--rig-publish-delay",
        type=float,
        default=DEFAULTS["rig_publish_delay"],
        help="seconds a Publisher waits before its first event",
    )


def option(environment: Environment, name: str) -> Any:
    parsed = environment.parsed_options
    return getattr(parsed, name, DEFAULTS[name]) if parsed is not None else DEFAULTS[name]


def subscriptions_query(event_type: str) -> str:
    subs = json.dumps([{"eventType": event_type}], separators=(",", ":"))
    return "subscriptions=" + urllib.parse.quote(subs, safe="")


def event_body(event_type: str, seq: int, size: int) -> bytes:
    head = (
        f'{{"specversion":"1.0","type":"{event_type}","source":"locust","id":"{seq}",'
        f'"data":{{"seq":{seq},"ts":{time.time():.6f},"pad":"'
    )
    tail = '"}}'
    return (head + "x" * max(0, size - len(head) - len(tail)) + tail).encode()


def latency_ms(event: dict[str, Any]) -> float | None:
    """Receive time minus the event's ``data.ts`` in ms (None without a ts)."""
    data = event.get("data")
    ts = data.get("ts") if isinstance(data, dict) else None
    if not isinstance(ts, int | float):
        return None
    return max(0.0, (time.time() - ts) * 1000.0)


class _Subscriber(User):
    """Shared reporting for the two subscriber kinds."""

    abstract = True
    wait_time = between(0.5, 1.5)  # before reconnecting after a stream ended
    kind = ""

    def report(self, name: str, elapsed_ms: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=self.kind,
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exc,
            context={},
        )


class SSESubscriber(_Subscriber):
    """A raw-socket SSE client: reports each delivered event's latency."""

    kind = "SSE"

    @task
    def stream(self) -> None:
        url = urllib.parse.urlsplit(self.host or "http://127.0.0.1:4000")
        host, port = url.hostname or "127.0.0.1", url.port or 80
        event_type = option(self.environment, "rig_event_type")
        wanted = f"event: {event_type}\n".encode()
        request = (
            f"GET /_rig/v1/connection/sse?{subscriptions_query(event_type)} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += self._recv(sock)
            head, buf = buf.split(b"\r\n\r\n", 1)
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status + b" ":
                raise ConnectionError(status.decode("latin-1"))
            while True:
                pos = buf.find(b"event: rig.subscriptions_set\n")
                if pos >= 0 and buf.find(b"\n\n", pos) >= 0:
                    break
                buf += self._recv(sock)
            buf = buf[buf.find(b"\n\n", pos) + 2 :]
        except Exception as exc:
            self.report("connect", (time.perf_counter() - started) * 1000, 0, exc)
            if sock is not None:
                sock.close()
            return
        self.report("connect", (time.perf_counter() - started) * 1000, 0, None)
        sock.settimeout(None)
        try:
            while True:
                *frames, buf = (buf + self._recv(sock)).split(b"\n\n")
                for frame in frames:
                    if frame.startswith(wanted):
                        self._event(frame)
        except Exception as exc:
            self.report("stream", 0, 0, exc)
        finally:
            sock.close()

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("stream closed by the server")
        return data

    def _event(self, frame: bytes) -> None:
        line = frame[frame.find(b"\ndata: ") + 7 :]
        try:
            latency = latency_ms(json.loads(line))
        except ValueError as exc:
            self.report("event", 0, len(frame), exc)
            return
        if latency is not None:
            self.report("event", latency, len(frame), None)


class WSSubscriber(_Subscriber):
    """A websocket-client subscriber: each text frame is one CloudEvent."""

    kind = "WS"

    @task
    def stream(self) -> None:
        url = urllib.parse.urlsplit(self.host or "http://127.0.0.1:4000")
        scheme = "wss" if url.scheme == "https" else "ws"
        event_type = option(self.environment, "rig_event_type")
        target = f"{scheme}://{url.netloc}/_rig/v1/connection/ws?{subscriptions_query(event_type)}"
        started = time.perf_counter()
        ws: websocket.WebSocket | None = None
        try:
            ws = websocket.create_connection(target, timeout=10)
            while True:
                message = json.loads(ws.recv())
                if message.get("type") == "rig.subscriptions_set":
                    break
        except Exception as exc:
            self.report("connect", (time.perf_counter() - started) * 1000, 0, exc)
            if ws is not None:
                ws.close()
            return
        self.report("connect", (time.perf_counter() - started) * 1000, 0, None)
        ws.settimeout(None)
        try:
            while True:
                text = ws.recv()
                if not text:
                    raise ConnectionError("stream closed by the server")
                event = json.loads(text)
                if event.get("type") != event_type:
                    continue
                latency = latency_ms(event)
                if latency is not None:
                    self.report("event", latency, len(text), None)
        except Exception as exc:
            self.report("stream", 0, 0, exc)
        finally:
            ws.close()


class Publisher(HttpUser):
    """Posts timestamped CloudEvents to ``POST /_rig/v1/events`` at a constant pacing."""

    fixed_count = 1

    def on_start(self) -> None:
        self.seq = 0
        time.sleep(option(self.environment, "rig_publish_delay"))

    def wait_time(self) -> float:
        return constant_pacing(option(self.environment, "rig_pacing"))(self)

    @task
    def publish(self) -> None:
        self.seq += 1
        body = event_body(
            option(self.environment, "rig_event_type"),
            self.seq,
            option(self.environment, "rig_pad"),
        )
        with self.client.post(
            "/_rig/v1/events",
            data=body,
            headers={"content-type": "application/json"},
            name="publish",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"HTTP {response.status_code}")
