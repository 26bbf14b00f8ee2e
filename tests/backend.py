"""A real HTTP backend for the API gateway tests: a threaded HTTP/1.1 server on loopback.

By default it echoes the request as JSON: method, path, query, headers
(lower-case names, in order), body length, SHA-256 and (when short) the
body. Request headers change what it does, so that a test drives it
through the gateway:

- ``x-test-status: 202``: answer with that status;
- ``x-test-delay-ms: 1500``: wait before answering;
- ``x-test-download: 209715200``: answer with that many bytes of
  :func:`pattern` (``x-test-chunked: 1``: chunked instead of Content-Length);
- ``x-test-hop: 1``: add hop-by-hop headers to the answer (``connection:
  x-hop``, ``x-hop``, ``keep-alive``) besides ``x-backend: yes``.

Every request is recorded in :attr:`Backend.requests` and put on
:attr:`Backend.seen` (a queue), so a test can wait for the request the
gateway forwarded.
"""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BLOCK = 64 * 1024
_PATTERN = bytes(range(256)) * (BLOCK // 256)


def pattern(size: int) -> bytes:
    """The first ``size`` bytes of the download pattern (for small sizes)."""
    return (_PATTERN * (size // BLOCK + 1))[:size]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    full, rest = divmod(size, BLOCK)
    for _ in range(full):
        digest.update(_PATTERN)
    digest.update(_PATTERN[:rest])
    return digest.hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: list[tuple[str, str]]
    body_len: int
    body_sha256: str
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body in one write, without Nagle: no 40 ms delayed-ACK stalls.
    wbufsize = BLOCK
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> tuple[int, str, bytes]:
        digest = hashlib.sha256()
        kept = bytearray()
        total = 0

        def take(data: bytes) -> None:
            nonlocal total
            digest.update(data)
            total += len(data)
            if len(kept) < BLOCK:
                kept.extend(data[: BLOCK - len(kept)])

        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    data = self.rfile.read(min(BLOCK, left))
                    take(data)
                    left -= len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("content-length") or 0)
            while left:
                data = self.rfile.read(min(BLOCK, left))
                if not data:
                    break
                take(data)
                left -= len(data)
        return total, digest.hexdigest(), bytes(kept)

    def _handle(self) -> None:
        length, sha, body = self._read_body()
        parts = urlsplit(self.path)
        headers = [(n.lower(), v) for n, v in self.headers.items()]
        seen = Seen(
            self.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            parts.query,
            headers,
            length,
            sha,
            body if length <= BLOCK else b"",
            {"peer": self.client_address[1]},
        )
        self.server.backend.record(seen)
        delay = int(self.headers.get("x-test-delay-ms") or 0)
        if delay:
            time.sleep(delay / 1000)
        status = int(self.headers.get("x-test-status") or 200)
        extra = [("x-backend", "yes")]
        if self.headers.get("x-test-hop"):
            extra += [("connection", "x-hop"), ("x-hop", "secret"), ("keep-alive", "timeout=5")]
        download = self.headers.get("x-test-download")
        if download is not None:
            self._download(status, int(download), bool(self.headers.get("x-test-chunked")), extra)
            return
        payload = json.dumps(
            {
                "method": seen.method,
                "path": seen.path,
                "query": seen.raw_query,
                "headers": seen.headers,
                "body_len": length,
                "body_sha256": sha,
                "body": body.decode("utf-8", "replace") if length <= BLOCK else None,
            }
        ).encode()
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(payload)

    def _download(
        self, status: int, size: int, chunked: bool, extra: list[tuple[str, str]]
    ) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("content-type", "application/octet-stream")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        left = size
        while left:
            block = _PATTERN[: min(BLOCK, left)]
            if chunked:
                self.wfile.write(b"%x\r\n" % len(block) + block + b"\r\n")
            else:
                self.wfile.write(block)
            left -= len(block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend


class Backend:
    """The server; ``with Backend() as backend: backend.port``."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.backend = self
        self.port: int = self.server.server_address[1]
        self.requests: list[Seen] = []
        self.seen: queue.Queue[Seen] = queue.Queue()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, seen: Seen) -> None:
        self.requests.append(seen)
        self.seen.put(seen)

    def next_request(self, timeout: float = 10.0) -> Seen:
        return self.seen.get(timeout=timeout)

    def drain(self) -> None:
        while not self.seen.empty():
            self.seen.get_nowait()

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
