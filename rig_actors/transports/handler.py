"""The pywsgi request handler that hands long-lived sockets to actors.

A WSGI request greenlet lives as long as its response. For a stream that
would mean one parked greenlet (and a Flask request context) per idle
connection. Instead a stream view validates the request, then sets
``environ["rig.takeover"]`` to a callable and returns; this handler then
detaches the socket from pywsgi (no response is written by pywsgi, the
socket is not closed) and gives the bare socket to that callable, which
makes it a connection actor's. The request greenlet ends.

WebSocket upgrades go through gevent-websocket's handshake (it writes the
``101``); its frame reader and writer are not used: the connection actor
frames and unframes itself (close codes kept, frame size bounded).

The same handler serves the embedded server and gunicorn (see
:class:`GatewayWorker`).

It also bounds the *request phase* against slow, idle or oversized
clients (not the streams: a taken-over socket is no longer read here):

- the request line and headers must arrive within ``request_timeout_s``
  (``REQUEST_TIMEOUT_MS``) of the handler starting to wait for them (an
  idle keep-alive connection counts: it is closed), and the body within
  the same time again, counted while it is being read; late head -> 408,
  late body -> 408, silence -> the connection is closed;
- the request line is at most 8 KiB (pywsgi: 414), the header block at
  most ``MAX_HEADER_BYTES`` (:data:`MAX_HEADER_BYTES` unless configured) in
  at most :data:`MAX_HEADERS` lines (431).
"""

from __future__ import annotations

import _socket
import base64
import binascii
import logging
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any, Protocol

import gevent
from geventwebsocket.handler import WebSocketHandler
from werkzeug.exceptions import RequestTimeout as _HttpRequestTimeout

from ..events import framing

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "TAKEOVER",
    "GatewayHandler",
    "RequestTimeout",
    "Takeover",
    "close_with_frame",
]

log = logging.getLogger(__name__)

TAKEOVER = "rig.takeover"

#: Largest header block accepted (all header lines together), and most lines.
MAX_HEADER_BYTES = 32768
MAX_HEADERS = 100


def _plain(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


_TIMEOUT_TEXT = "Request timeout: the request was not received in time."
_TIMEOUT_RESPONSE = _plain("408 Request Timeout", _TIMEOUT_TEXT)


def _headers_too_large(max_bytes: int) -> bytes:
    return _plain(
        "431 Request Header Fields Too Large",
        f"Request headers too large: at most {MAX_HEADERS} lines and {max_bytes} bytes.",
    )


class RequestTimeout(OSError, _HttpRequestTimeout):
    """The client did not send its request (head or body) in time.

    An ``OSError`` for pywsgi (a lost client: it closes the connection) and
    an HTTP 408 for Flask (a view reading the body ends with an answer,
    not a logged crash); the handler then sends its own 408.
    """

    response = None  # werkzeug's HTTPException sets it in an __init__ OSError's replaces


class _HeadersTooLarge(ValueError):
    pass


class _DeadlineReader:
    """The connection's reader; while ``deadline`` is set, reads must finish by then.

    A read that would outlive the deadline raises :class:`RequestTimeout`
    (an ``OSError``, which pywsgi treats as a lost client) and closes the
    reader, so the connection is not used for another request.
    """

    __slots__ = ("_raw", "deadline", "expired", "idle")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.deadline: float | None = None
        # Body phase: each read gets this long (an idle timeout, like nginx's
        # client_body_timeout), so a steady 100 MB upload is not cut off
        # while a client that stops sending is.
        self.idle: float | None = None
        self.expired = False

    def _bounded(self, method: Callable[..., Any], *args: Any) -> Any:
        if self.expired:
            raise RequestTimeout("request timeout")  # the reader is closed already
        deadline = self.deadline
        if self.idle is not None:
            deadline = time.monotonic() + self.idle
        if deadline is None:
            return method(*args)
        remaining = deadline - time.monotonic()
        timer = gevent.Timeout(max(remaining, 0.0), RequestTimeout("request timeout"))
        timer.start()
        try:
            if remaining <= 0:
                raise RequestTimeout("request timeout")
            return method(*args)
        except RequestTimeout:
            self.expired = True
            self._raw.close()
            raise
        finally:
            timer.close()

    def read(self, *args: Any) -> Any:
        return self._bounded(self._raw.read, *args)

    def read1(self, *args: Any) -> Any:
        return self._bounded(self._raw.read1, *args)

    def readinto(self, *args: Any) -> Any:
        return self._bounded(self._raw.readinto, *args)

    def readline(self, *args: Any) -> Any:
        return self._bounded(self._raw.readline, *args)

    def readlines(self, *args: Any) -> Any:
        return self._bounded(self._raw.readlines, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


Takeover = Callable[[_socket.socket], None]

# A connect request's head fits easily (a long JWT included); a longer one
# is not the fast path's plain case anyway.
_PEEK_BYTES = 8192


class FastPath(Protocol):
    """What the application may offer as ``fast_path`` (:mod:`.fastpath`)."""

    def accept(self, data: bytes, port: int) -> tuple[int, Takeover] | None: ...


class GatewayHandler(WebSocketHandler):
    """pywsgi handler with socket takeover; see the module docstring."""

    #: ``REQUEST_TIMEOUT_MS`` in seconds; set by :func:`~rig_actors.web.app.create_app`.
    request_timeout_s: float = 10.0
    #: ``MAX_HEADER_BYTES``; set by :func:`~rig_actors.web.app.create_app`.
    max_header_bytes: int = MAX_HEADER_BYTES
    _first_deadline: float | None = None

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        super().__init__(sock, address, server, rfile)
        self.rfile = _DeadlineReader(self.rfile)

    # -- the request phase: bounded in time and size ------------------------------------

    def read_requestline(self) -> str:
        # Waiting for a request (including on an idle keep-alive connection);
        # the first one's time started when the connection was accepted.
        self.rfile.idle = None
        first, self._first_deadline = self._first_deadline, None
        self.rfile.deadline = first or time.monotonic() + self.request_timeout_s
        return super().read_requestline()

    def read_request(self, raw_requestline: str) -> bool:
        result = super().read_request(raw_requestline)
        # The head is in; the body must keep arriving: each read gets the
        # same allowance again.
        self.rfile.deadline = None
        self.rfile.idle = self.request_timeout_s
        return result

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # pywsgi names it so
        if fp is not self.rfile:
            return super().MessageClass(fp, *args)
        # Read the header block ourselves, bounded, then let pywsgi parse it.
        lines: list[bytes] = []
        size = 0
        limit = self.max_header_bytes
        while True:
            line = fp.readline(limit + 1 - size)
            size += len(line)
            if line in (b"\r\n", b"\n", b""):
                break
            if size > limit or len(lines) >= MAX_HEADERS:
                raise _HeadersTooLarge(f"headers over {limit} bytes or {MAX_HEADERS}")
            lines.append(line)
        lines.append(b"\r\n")
        return super().MessageClass(BytesIO(b"".join(lines)), *args)

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, RequestTimeout):
            self.close_connection = True
            return ("408", _TIMEOUT_RESPONSE)
        if isinstance(ex, _HeadersTooLarge):
            self.close_connection = True
            log.info("431 to %s: %s", self.client_address, ex)
            return ("431", _headers_too_large(self.max_header_bytes))
        return super()._handle_client_error(ex)

    def upgrade_websocket(self) -> Any:
        # gevent-websocket answers a bad handshake with str bodies (a crash
        # and a 500 on Python 3), a 402, or an uncaught binascii.Error: check
        # the request here and answer those cases with a clear 4xx.
        problem = _handshake_problem(self.environ, self.request_version)
        if problem is None:
            return super().upgrade_websocket()
        status, text, headers = problem
        self.start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
        return [text.encode()]

    def _answer_timeout(self) -> None:
        """The application ran out of time reading the body: 408, then close."""
        self._discard_result()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
        # Replaces the application's answer (which saw a lost client): not sent yet.
        self.start_response("408 Request Timeout", headers, (None, None, None))
        self.result = [_TIMEOUT_TEXT.encode()]
        self.process_result()
        self.close_connection = True

    def handle(self) -> None:
        # TCP_NODELAY comes from the listening socket (Linux hands it down to
        # accepted ones; gunicorn sets it, so does rig_actors.server): one
        # syscall per listener rather than per connection.
        self._first_deadline = time.monotonic() + self.request_timeout_s
        fast = getattr(self.server.application, "fast_path", None)
        if fast is not None and self._fast_connect(fast):
            return
        super().handle()

    def _fast_connect(self, fast: FastPath) -> bool:
        """Offer the first request's head to the connect fast path; True if it took it.

        The head is peeked, not read: whatever the fast path declines is
        still in the socket for pywsgi, and costs one extra ``recv``.
        """
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(max(self._first_deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(_PEEK_BYTES, _socket.MSG_PEEK)
        except OSError:
            return False  # silent or gone: pywsgi's deadline and EOF handling apply
        finally:
            sock.settimeout(timeout)
        taken = fast.accept(data, self.server.server_port)
        if taken is None:
            return False
        size, takeover = taken
        sock.recv(size)  # consume the head: it is in the socket, as peeked
        takeover(self._detach())
        return True

    def run_application(self) -> None:
        environ = self.environ
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # gevent-websocket handshakes, then calls run_websocket().
            super().run_application()
            return
        self.result = self.application(environ, self.start_response)
        if self.rfile.expired and not self.headers_sent and environ.get(TAKEOVER) is None:
            self._answer_timeout()
            return
        takeover: Takeover | None = environ.get(TAKEOVER)
        if takeover is None:
            try:
                self.process_result()
            finally:
                self._discard_result()  # WSGI: the server calls close() when done
            return
        self._discard_result()
        takeover(self._detach())

    def run_websocket(self) -> None:
        # The 101 has been written; the view decides what the socket becomes.
        self.result = self.application(self.environ, _no_start_response)
        self._discard_result()
        takeover: Takeover | None = self.environ.get(TAKEOVER)
        # gevent-websocket's object writes an empty close frame when it is
        # garbage-collected (its __del__ calls close()); the socket is ours
        # now, so mark it closed and it writes nothing.
        if self.websocket is not None:
            self.websocket.closed = True
        self.environ["wsgi.websocket"] = None
        self.websocket = None
        sock = self._detach()
        if takeover is None:
            close_with_frame(sock, framing.ws_close(1011, "Unexpected condition."))
            return
        takeover(sock)

    def _discard_result(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
        self.result = None

    def _detach(self) -> _socket.socket:
        """Take the socket away from pywsgi without closing it."""
        self.close_connection = True
        fd = self.socket.detach()
        return _socket.socket(fileno=fd)

    def log_request(self) -> None:
        # Streams are logged by their actors (open and close, with reason).
        # No environ: the request was refused before it was parsed (400, 408, 414, 431).
        if self.environ is None or self.environ.get(TAKEOVER) is None:
            super().log_request()


def _handshake_problem(
    environ: dict[str, Any], request_version: str | None
) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Why a WebSocket upgrade request cannot be accepted (RFC 6455 4.2.1), or None."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None  # not an upgrade request at all: the application answers
    if "upgrade" not in environ.get("HTTP_CONNECTION", "").lower():
        return None
    versions = [("Sec-WebSocket-Version", "13")]
    if request_version != "HTTP/1.1":
        return "400 Bad Request", "A WebSocket upgrade needs HTTP/1.1.", []
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if not version:
        return "426 Upgrade Required", "No WebSocket protocol version given.", versions
    if version.strip() not in ("13", "8", "7"):
        return "400 Bad Request", "Unsupported WebSocket version.", versions
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return "400 Bad Request", "Missing or invalid Sec-WebSocket-Key.", []
    return None


def _no_start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def close_with_frame(sock: _socket.socket, data: bytes) -> None:
    """Write a last small frame (a close frame or an error) and close."""
    try:
        sock.setblocking(False)
        sock.send(data)
    except OSError:
        pass
    finally:
        sock.close()
