"""Long-polling (RIG §2.4): a session actor per client, state in two cookies.

The first request (no usable ``connection_token`` cookie) creates a
:class:`~rig_actors.actors.connection.LongPollSession` and answers ``"ok"``;
later requests return the events buffered since the ``last_event_id``
cookie, waiting up to ``longpolling_wait_ms`` for one to arrive. A cookie
that cannot be decoded, or names a session that is gone, starts a new
session (RIG answers 500 to the former).

The cursor in ``last_event_id`` carries the replay id of the newest event
the client was given (:mod:`rig_actors.events.replay_ids`), so a new session
made for a client that still has one (a session that expired, whose worker
died, or whose ``connection_token`` cookie was lost) first replays what the
client missed, like an SSE reconnect with ``Last-Event-ID``. A first request
may pass the id as a ``last_event_id`` query parameter instead.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, request
from gevent.event import AsyncResult

from ..actors.connection import LongPollSession, Poll
from ..actors.connections import Adopt, Lookup
from ..actors.core import ActorDeadError
from ..auth.tokens import TokenClaims, TokenError
from ..events.replay_ids import FIRST_EVENT, parse_lp_cursor
from ..kafka.control import PeerGone, RequestTimeout
from ..kafka.producer import ProduceError
from .connect import ConnectError, prepare_connection

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["longpolling_blueprint"]

log = logging.getLogger(__name__)

_PATH = "/_rig/v1/connection/longpolling"


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
        claims = _claims(gateway, request.cookies.get("connection_token"))
        cursor = _cursor(request.cookies.get("last_event_id"))
        if cursor is None:
            cursor = request.args.get("last_event_id") or FIRST_EVENT
        if claims is None:
            return _new_session(gateway, headers(), cursor)
        if claims.owner == gateway.worker_id:
            result = poll_session(gateway, claims.conn_id, cursor, wait_s)
        else:
            result = _poll_remote(gateway, claims.owner, claims.conn_id, cursor, wait_s)
        if result is None:
            return _new_session(gateway, headers(), cursor)
        if result is _UNREACHABLE:
            # The owner exists but did not answer (Kafka hiccup): the session
            # is not lost, so do not replace it; the client polls again.
            response = Response(
                "The worker that holds the session did not answer; poll again.",
                504,
                headers(),
                content_type="text/plain; charset=utf-8",
            )
            return response
        events, cursor = result
        # The buffered events are JSON text already: embed, don't re-encode.
        body = f'{{"last_event_id":{json.dumps(cursor)},"events":[{",".join(events)}]}}'
        response = Response(body, 200, headers(), content_type="application/json; charset=utf-8")
        _set_cookies(response, request.cookies["connection_token"], cursor)
        return response

    if gateway.control is not None:

        def remote_poll(body: dict[str, Any], sender: str) -> dict[str, Any]:
            result = poll_session(
                gateway, str(body.get("conn_id")), str(body.get("cursor")), wait_s
            )
            if result is None:
                return {"gone": True}
            events, cursor = result
            return {"events": events, "cursor": cursor}

        gateway.control.register("lp_poll", remote_poll)

    return bp


def poll_session(
    gateway: Gateway, conn_id: str, cursor: str, wait_s: float
) -> tuple[list[str], str] | None:
    """Events of this worker's session after ``cursor``, waiting up to ``wait_s``.

    ``None`` when the session does not exist (any more).
    """
    try:
        session = gateway.connections.ask(Lookup(conn_id))
    except (ActorDeadError, gevent.Timeout):
        return None
    if not isinstance(session, LongPollSession):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            answer = session.actor_ref.ask(Poll(cursor))
        except ActorDeadError:
            return None
        if not isinstance(answer, AsyncResult):
            return answer
        remaining = deadline - time.monotonic()
        if remaining > 0:
            answer.wait(remaining)  # the waiter's value is None: check ready()
        if not answer.ready():
            return [], cursor


_UNREACHABLE: Any = ("unreachable",)


def _poll_remote(
    gateway: Gateway, owner: str, conn_id: str, cursor: str, wait_s: float
) -> tuple[list[str], str] | None:
    """Run the poll on the worker that owns the session (over the control channel).

    ``None`` when the session no longer exists anywhere (a new one is made);
    ``_UNREACHABLE`` when its owner is alive but did not answer.
    """
    if gateway.control is None:
        return None
    try:
        reply = gateway.control.request(
            owner, "lp_poll", {"conn_id": conn_id, "cursor": cursor}, timeout=wait_s + 5
        )
    except PeerGone:
        return None
    except (RequestTimeout, ProduceError) as exc:
        log.warning("long-poll session %s on %s did not answer: %s", conn_id, owner, exc)
        return _UNREACHABLE
    events = reply.get("events")
    if reply.get("gone") or not isinstance(events, list):
        return None
    return [str(e) for e in events], str(reply.get("cursor", cursor))


def _claims(gateway: Gateway, token: str | None) -> TokenClaims | None:
    if not token:
        return None
    try:
        return gateway.tokens.decode(token)
    except TokenError:
        return None


def _cursor(cookie: str | None) -> str | None:
    """The cursor in a ``last_event_id`` cookie; ``None`` without a cookie."""
    # Cookie parsers differ on whether they strip the quotes of "17".
    if not cookie:
        return None
    if cookie.startswith('"'):
        try:
            value = json.loads(cookie)
        except ValueError:
            return FIRST_EVENT
        return value if isinstance(value, str) else FIRST_EVENT
    return cookie


def _new_session(gateway: Gateway, headers: dict[str, str], cursor: str) -> Response:
    """A new session; replaying from ``cursor``'s replay id when it has one."""
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
    _, session.replay_from = parse_lp_cursor(cursor)
    gateway.connections.tell(Adopt(session, prepared.expires_at))
    response = Response('"ok"', 200, headers, content_type="application/json; charset=utf-8")
    # As in RIG, whatever the client had: the new session's own cursor starts
    # there, and it carries the replay id from its first poll on.
    _set_cookies(response, token, FIRST_EVENT)
    return response


def _set_cookies(response: Response, token: str, cursor: str) -> None:
    # Written by hand to match RIG byte for byte: the cursor is a JSON
    # string, quotes included, which a cookie library would escape.
    response.headers.add("set-cookie", f"connection_token={token}; path=/; HttpOnly")
    response.headers.add("set-cookie", f"last_event_id={json.dumps(cursor)}; path=/; HttpOnly")
