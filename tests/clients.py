"""Real clients for the tests: a raw-socket SSE reader and small helpers.

Nothing here fakes the server: every helper speaks HTTP over a loopback
socket to a gateway process started by the fixtures in ``conftest.py``.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import websocket


@dataclass
class SseEvent:
    type: str
    data: str
    id: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseClient:
    """Reads an SSE stream over a plain socket, frame by frame."""

    def __init__(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
    ) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n", timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.comments: list[str] = []
        self.retry: int | None = None

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} within {timeout} s; have {self.buffer[:200]!r}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed; have {self.buffer[:200]!r}")
            self.buffer += data
        chunk, self.buffer = self.buffer.split(marker, 1)
        return chunk

    def body(self, timeout: float = 5.0) -> str:
        """Read an error response's body (the server closes after it)."""
        deadline = time.monotonic() + timeout
        length = int(self.headers.get("content-length", "-1"))
        while len(self.buffer) < length or length < 0:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                break
            self.buffer += data
        return self.buffer.decode()

    def next_event(self, timeout: float = 5.0) -> SseEvent:
        """The next event, skipping comments (heartbeats are kept in ``comments``)."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._read_until(b"\n\n", max(0.0, deadline - time.monotonic())).decode()
            event_type, data, event_id = "message", [], None
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("event:"):
                    event_type = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("retry:"):
                    self.retry = int(line[6:].strip())
            if data:
                return SseEvent(event_type, "\n".join(data), event_id)

    def events(self, count: int, timeout: float = 5.0) -> list[SseEvent]:
        return [self.next_event(timeout) for _ in range(count)]

    def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert that no event arrives for ``seconds``."""
        try:
            event = self.next_event(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {event}")

    def is_closed(self, timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.buffer += data
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscriptions_param(subscriptions: list[dict[str, Any]]) -> str:
    return quote(json.dumps(subscriptions))


def ce(type_: str, data: Any = None, *, id_: str = "1", version: str = "0.2", **extra: Any) -> dict:
    """A structured CloudEvent of the given version."""
    if version == "0.1":
        event = {"cloudEventsVersion": "0.1", "eventType": type_, "source": "test", "eventID": id_}
    else:
        event = {"specversion": version, "type": type_, "source": "test", "id": id_}
    if data is not None:
        event["data"] = data
    event.update(extra)
    return event


def ws_connect(url: str, **kwargs: Any) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=5, **kwargs)


def ws_next_event(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


# -- helpers added for the WebSocket, long-polling and PUT tests ---------------------


def ws_next_frame(ws: websocket.WebSocket, timeout: float = 5.0) -> websocket.ABNF:
    """The next raw frame (text, ping, close ...), without any automatic reply."""
    ws.settimeout(timeout)
    return ws.recv_frame()


def ws_close_of(ws: websocket.WebSocket, timeout: float = 5.0) -> tuple[int, str]:
    """Read frames until the server's close frame; return its code and reason."""
    deadline = time.monotonic() + timeout
    while True:
        frame = ws_next_frame(ws, max(0.01, deadline - time.monotonic()))
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            return code, data[2:].decode("utf-8")


def sign_jwt(secret: str, algorithm: str = "HS256", ttl_s: int = 300, **claims: Any) -> str:
    """An HS* JWT with the given claims and an ``exp`` ``ttl_s`` seconds ahead."""
    import jwt as pyjwt

    return pyjwt.encode({"exp": int(time.time()) + ttl_s, **claims}, secret, algorithm=algorithm)


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def put_subscriptions(
    inbound: str,
    token: str,
    subscriptions: list[dict[str, Any]],
    transport: str = "sse",
    headers: dict[str, str] | None = None,
) -> Any:
    """PUT ``{"subscriptions": [...]}`` for a connection token; the response."""
    import requests

    return requests.put(
        f"{inbound}/_rig/v1/connection/{transport}/{token}/subscriptions",
        json={"subscriptions": subscriptions},
        headers=headers,
        timeout=5,
    )
