"""Long-polling (RIG §2.4): a session actor per client, state in two cookies.

The first request (no usable ``connection_token`` cookie) creates a
:class:`~rig_actors.actors.connection.LongPollSession` and answers ``"ok"``;
later requests return the events buffered since the ``last_event_id``
cookie, waiting up to ``longpolling_wait_ms`` for one to arrive. A cookie
that cannot be decoded, or names a session that is gone, starts a new
session (RIG answers 500 to the former).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import gevent
from flask import Blueprint, Response, request
from gevent.event import AsyncResult

from ..actors.connection import LongPollSession, Poll
from ..actors.connections import Adopt, Lookup
from ..actors.core import ActorDeadError
from ..auth.tokens import TokenError
from .connect import ConnectError, prepare_connection

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["longpolling_blueprint"]

_PATH = "/_rig/v1/connection/longpolling"
_FIRST = "first_event"


def longpolling_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("longpolling", __name__)
    cors = gateway.settings.cors
    wait_s = gateway.settings.longpolling_wait_ms / 1000

    def headers() -> dict[str, str]:
        return {
            "cache-control": "no-cache",
            "access-control-allow-origin": cors,
            "access-control-allow-credentials": "true",
        }

    @bp.route(_PATH, methods=["OPTIONS"])
    def preflight() -> Response:
        response = Response(status=204)
        response.headers["access-control-allow-origin"] = cors
        response.headers["access-control-allow-credentials"] = "true"
        response.headers["access-control-allow-methods"] = "GET"
        response.headers["access-control-allow-headers"] = "*"
        return response

    @bp.route(_PATH, methods=["GET"])
    def poll() -> Response:
        session = _existing_session(gateway, request.cookies.get("connection_token"))
        if session is None:
            return _new_session(gateway, headers())
        cursor = _cursor(request.cookies.get("last_event_id"))
        deadline = time.monotonic() + wait_s
        while True:
            try:
                answer = session.actor_ref.ask(Poll(cursor))
            except ActorDeadError:
                return _new_session(gateway, headers())
            if not isinstance(answer, AsyncResult):
                events, cursor = answer
                break
            remaining = deadline - time.monotonic()
            if remaining > 0:
                answer.wait(remaining)  # the waiter's value is None: check ready()
            if not answer.ready():
                events = []
                break
        # The buffered events are JSON text already: embed, don't re-encode.
        body = f'{{"last_event_id":{json.dumps(cursor)},"events":[{",".join(events)}]}}'
        response = Response(body, 200, headers(), content_type="application/json; charset=utf-8")
        _set_cookies(response, session.token, cursor)
        return response

    return bp


def _existing_session(gateway: Gateway, token: str | None) -> LongPollSession | None:
    if not token:
        return None
    try:
        claims = gateway.tokens.decode(token)
    except TokenError:
        return None
    if claims.owner != gateway.worker_id:
        return None
    try:
        conn = gateway.connections.ask(Lookup(claims.conn_id))
    except (ActorDeadError, gevent.Timeout):
        return None
    return conn if isinstance(conn, LongPollSession) else None


def _cursor(cookie: str | None) -> str:
    # Cookie parsers differ on whether they strip the quotes of "17".
    if not cookie:
        return _FIRST
    if cookie.startswith('"'):
        try:
            value = json.loads(cookie)
        except ValueError:
            return _FIRST
        return value if isinstance(value, str) else _FIRST
    return cookie


def _new_session(gateway: Gateway, headers: dict[str, str]) -> Response:
    try:
        prepared = prepare_connection(
            gateway, request.args, request.headers.getlist("Authorization"), allow_wrapped=True
        )
    except ConnectError as exc:
        return Response(exc.message, exc.status, content_type="text/plain; charset=utf-8")
    context = gateway.context
    assert context is not None
    conn_id = gateway.new_connection_id()
    token = gateway.tokens.encode(gateway.worker_id, conn_id)
    session = LongPollSession(context, conn_id, token, prepared.subscriptions, prepared.sessions)
    gateway.connections.tell(Adopt(session))
    response = Response('"ok"', 200, headers, content_type="application/json; charset=utf-8")
    _set_cookies(response, token, _FIRST)
    return response


def _set_cookies(response: Response, token: str, cursor: str) -> None:
    # Written by hand to match RIG byte for byte: the cursor is a JSON
    # string, quotes included, which a cookie library would escape.
    response.headers.add("set-cookie", f"connection_token={token}; path=/; HttpOnly")
    response.headers.add("set-cookie", f"last_event_id={json.dumps(cursor)}; path=/; HttpOnly")
