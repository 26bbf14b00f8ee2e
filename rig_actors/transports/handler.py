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
"""

from __future__ import annotations

import _socket
import logging
from collections.abc import Callable
from typing import Any

from geventwebsocket.handler import WebSocketHandler

from ..events import framing

__all__ = ["TAKEOVER", "GatewayHandler", "close_with_frame"]

log = logging.getLogger(__name__)

TAKEOVER = "rig.takeover"

Takeover = Callable[[_socket.socket], None]


class GatewayHandler(WebSocketHandler):
    """pywsgi handler with socket takeover; see the module docstring."""

    def handle(self) -> None:
        # pywsgi writes a response's head and body in two sends; with Nagle
        # on, the body waits for the client's delayed ACK (~40 ms per
        # kept-alive request). Streams inherit the option: small frames go
        # out at once.
        try:
            self.socket.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a unix socket): nothing to tune
        super().handle()

    def run_application(self) -> None:
        environ = self.environ
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # gevent-websocket handshakes, then calls run_websocket().
            super().run_application()
            return
        self.result = self.application(environ, self.start_response)
        takeover: Takeover | None = environ.get(TAKEOVER)
        if takeover is None:
            self.process_result()
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
        if self.environ.get(TAKEOVER) is None:
            super().log_request()


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
