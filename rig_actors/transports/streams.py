"""SSE and WebSocket connect endpoints (RIG §2.2, §2.3).

Both validate the request (:mod:`.connect`), then hand the socket over to a
new connection actor (:mod:`.handler`); the actor writes the response head,
``rig.connection.create`` and, once the registry has indexed the
subscriptions, ``rig.subscriptions_set``.
"""

from __future__ import annotations

import _socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from ..actors.connection import SseConnection, WsConnection
from ..actors.connections import Adopt
from ..events import framing
from .connect import ConnectError, prepare_connection
from .handler import TAKEOVER, Takeover, close_with_frame

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["SSE_PATH", "open_sse", "streams_blueprint"]

SSE_PATH = "/_rig/v1/connection/sse"

_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def streams_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("streams", __name__)

    @bp.route(SSE_PATH, methods=_ANY_METHOD)
    def sse() -> Response:
        # EventSource sends Last-Event-ID when it reconnects; a first request
        # (or a client that kept the id elsewhere) may pass it as a parameter.
        try:
            takeover = open_sse(
                gateway,
                request.args,
                request.headers.getlist("Authorization"),
                request.headers.get("Last-Event-ID") or request.args.get("last_event_id"),
            )
        except ConnectError as exc:
            return Response(exc.message, exc.status, content_type="text/plain; charset=utf-8")
        request.environ[TAKEOVER] = takeover
        return Response(status=200)

    @bp.route("/_rig/v1/connection/ws", websocket=True)
    def ws() -> Response:
        environ = request.environ
        if not environ.get("wsgi.websocket"):
            return Response(
                "Expected a WebSocket upgrade request.",
                400,
                content_type="text/plain; charset=utf-8",
            )
        try:
            prepared = prepare_connection(
                gateway, request.args, request.headers.getlist("Authorization")
            )
        except ConnectError as exc:
            frame = framing.ws_close(1000, exc.ws_reason)
            environ[TAKEOVER] = lambda sock: close_with_frame(sock, frame)
            return Response(status=101)
        conn_id = gateway.new_connection_id()
        token = gateway.tokens.encode(gateway.worker_id, conn_id)
        context = gateway.context
        assert context is not None
        max_frame = gateway.settings.ws_max_frame_bytes
        last_event_id = request.args.get("last_event_id")

        def takeover(sock: _socket.socket) -> None:
            conn = WsConnection(
                context,
                conn_id,
                token,
                prepared.subscriptions,
                prepared.sessions,
                sock,
                max_frame=max_frame,
            )
            conn.replay_from = last_event_id
            gateway.connections.tell(Adopt(conn, prepared.expires_at))

        environ[TAKEOVER] = takeover
        return Response(status=101)

    return bp


def open_sse(
    gateway: Gateway,
    args: Mapping[str, str],
    authorization: Iterable[str],
    last_event_id: str | None,
) -> Takeover:
    """Validate an SSE connect; the takeover that makes the socket a stream.

    Raises :class:`ConnectError`. Shared by the Flask view above and the
    connect fast path (:mod:`.fastpath`), so both answer alike.
    """
    prepared = prepare_connection(gateway, args, authorization)
    conn_id = gateway.new_connection_id()
    token = gateway.tokens.encode(gateway.worker_id, conn_id)
    context = gateway.context
    assert context is not None

    def takeover(sock: _socket.socket) -> None:
        conn = SseConnection(
            context, conn_id, token, prepared.subscriptions, prepared.sessions, sock
        )
        conn.replay_from = last_event_id
        gateway.connections.tell(Adopt(conn, prepared.expires_at))

    return takeover
