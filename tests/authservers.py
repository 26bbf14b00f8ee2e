"""Real HTTP servers the security tests point the gateway at: a checker and a JWKS host.

Both are threaded HTTP/1.1 servers on a free loopback port, run in the test
process. The gateway talks to them over real sockets exactly as it would to
an authorization service or an identity provider.

- :class:`Checker` answers ``POST`` requests (the external
  ``SUBSCRIPTION_CHECK``/``SUBMISSION_CHECK``) with the status the test
  chose (:attr:`Checker.status`), after :attr:`Checker.delay_s`, and
  records what it was asked (:attr:`Checker.requests`). With
  ``status=None`` it decides by the credentials: ``Bearer good`` anywhere
  in the Authorization header allows (200), anything else denies (403).
- :class:`JwksHost` serves ``GET /jwks.json`` from :attr:`JwksHost.keys`
  (a list of JWK dicts the test may change) and counts the fetches.

Example::

    >>> with Checker() as checker:
    ...     checker.status = 403
    ...     url = checker.url  # SUBSCRIPTION_CHECK=<url>
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Asked:
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Httpd(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 refuses bursts of parallel checks


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Httpd(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> _Server:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _CheckerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway pools its connections

    def do_POST(self) -> None:  # http.server's name
        checker: Checker = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        checker.requests.append(Asked(self.path, headers, body, self.client_address[1]))
        if checker.delay_s:
            time.sleep(checker.delay_s)
        status = checker.status
        if status is None:
            status = 200 if "Bearer good" in headers.get("authorization", "") else 403
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Checker(_Server):
    """The external authorization service; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(_CheckerHandler)
        self.status: int | None = 200
        self.delay_s = 0.0
        self.requests: list[Asked] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/check"

    def reset(self, status: int | None = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.requests.clear()


class _JwksHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's name
        host: JwksHost = self.server.owner  # type: ignore[attr-defined]
        host.fetches += 1
        body = json.dumps({"keys": host.keys}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class JwksHost(_Server):
    """An identity provider's key set endpoint; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(_JwksHandler)
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"
