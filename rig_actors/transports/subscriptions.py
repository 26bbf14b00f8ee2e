"""Replacing a connection's subscriptions (RIG §2.5).

``PUT /_rig/v1/connection/{sse|ws|longpolling}/<token>/subscriptions``: the
transport segment is irrelevant, the token names the connection. The
checks run in RIG's order with RIG's status codes and texts; where RIG
crashes (no ``content-type``, ``subscriptions`` not a list) we answer 400.

A connection held by another worker or node (the token names its owner)
is updated over the Kafka control channel (``put_subscriptions``): the
owner applies the set and answers 204 or 410. An owner not heard from
lately no longer exists: 410 at once.

``SUBSCRIPTION_CHECK`` runs on every PUT (403 ``Subscription denied.``).
Bearer JWTs in the PUT join the connection to their sessions (so that a
blacklisting kills it) and their ``exp`` becomes the connection's: a client
can keep a stream open past its first token's expiry by PUTting a fresh one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, request

from ..actors.connection import ClientActor, SetSubscriptions
from ..actors.connections import Associate, Lookup
from ..actors.core import ActorDeadError
from ..auth.jwt import JwtError, JwtVerifier
from ..auth.tokens import TokenError
from ..kafka.control import PeerGone, RequestTimeout
from ..kafka.producer import ProduceError
from ..subscriptions import Subscription, SubscriptionError, dedupe, parse_subscription_list
from .connect import earliest_exp, session_names, subscription_limits

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["subscriptions_blueprint"]

_PATH = "/_rig/v1/connection/<transport>/<token>/subscriptions"
_TRANSPORTS = ("sse", "ws", "longpolling")


def subscriptions_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("subscriptions", __name__)
    cors = gateway.settings.cors

    def answer(status: int, text: str = "") -> Response:
        response = Response(text, status, content_type="text/plain; charset=utf-8")
        response.headers["access-control-allow-origin"] = cors
        return response

    @bp.route(_PATH, methods=["OPTIONS"])
    def preflight(transport: str, token: str) -> Response:
        response = Response(status=204)
        response.headers["access-control-allow-origin"] = cors
        response.headers["access-control-allow-methods"] = "PUT"
        response.headers["access-control-allow-headers"] = "content-type,authorization"
        return response

    @bp.route(_PATH, methods=["PUT"])
    def put(transport: str, token: str) -> Response:
        if transport not in _TRANSPORTS:
            return answer(404, f"Unknown transport {transport!r}.")
        accept = request.headers.getlist("Accept")
        if accept and not any("application/json" in a or "*/*" in a for a in accept):
            return answer(
                406, f"Accept header {', '.join(accept)} not supported; use application/json."
            )
        if request.mimetype != "application/json":
            return answer(400, "Expected JSON encoded body.")
        # Bounded read: a body over the limit is never held in memory whole.
        limit = gateway.settings.max_event_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return answer(413, "Request body too large.")
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            return answer(413, "Request body too large.")
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError):
            return answer(400, "Expected JSON encoded body.")
        if not isinstance(payload, dict) or "subscriptions" not in payload:
            return answer(400, 'Expected field "subscriptions" is not present.')
        check = gateway.subscription_check
        if check.enabled and not check.allows(
            body=body,
            content_type=request.content_type or "",
            authorization=request.headers.getlist("Authorization"),
        ):
            return answer(403, "Subscription denied.")

        try:
            claims_token = gateway.tokens.decode(token)
        except TokenError:
            return answer(400, "Invalid connection token.")
        owner, conn_id = claims_token.owner, claims_token.conn_id
        local = owner == gateway.worker_id
        if local and _lookup(gateway, conn_id) is None:
            return answer(410, "Connection no longer exists.")
        if not local and (gateway.control is None or not gateway.control.is_alive(owner)):
            return answer(410, "Connection no longer exists.")

        claims: dict[str, Any] = {}
        expires_at: float | None = None
        for jwt in JwtVerifier.bearer_tokens(request.headers.getlist("Authorization")):
            try:
                token_claims = gateway.verify_jwt(jwt)
                claims.update(token_claims)
                expires_at = earliest_exp(expires_at, token_claims)
            except JwtError as exc:
                return answer(
                    400,
                    "cannot accept subscription request: invalid authorization header: "
                    f"could not decode JWT: {exc}",
                )
        try:
            manual = parse_subscription_list(payload["subscriptions"])
        except SubscriptionError as exc:
            return answer(
                400,
                f"cannot accept subscription request: could not parse given subscriptions: {exc}",
            )
        automatic = gateway.extractors.jwt_subscriptions(claims) if claims else []
        subscriptions = tuple(dedupe(automatic + manual))
        problem = subscription_limits(gateway, subscriptions)
        if problem:
            return answer(400, f"cannot accept subscription request: {problem}")
        sessions = session_names(gateway, claims)
        if local:
            status = apply_subscriptions(gateway, conn_id, subscriptions, sessions, expires_at)
        else:
            # Another worker or node owns the connection: it applies the set
            # and answers 204 or 410. Everything that can be checked without
            # the connection was checked here, in RIG's order.
            status = _apply_remote(gateway, owner, conn_id, subscriptions, sessions, expires_at)
        if status == 410:
            return answer(410, "Connection no longer exists.")
        if status == 504:
            return answer(504, "The worker that holds the connection did not answer.")
        if status == 502:
            return answer(502, "The subscription could not be forwarded: Kafka is unavailable.")
        return answer(204)

    if gateway.control is not None:

        def remote_put(body: dict[str, Any], sender: str) -> dict[str, Any]:
            try:
                subscriptions = tuple(parse_subscription_list(body.get("subscriptions")))
            except SubscriptionError:
                return {"status": 400}
            sessions = tuple(str(s) for s in body.get("sessions") or ())
            conn_id = str(body.get("conn_id"))
            expires_at = earliest_exp(None, {"exp": body.get("expires_at")})
            status = apply_subscriptions(gateway, conn_id, subscriptions, sessions, expires_at)
            return {"status": status}

        gateway.control.register("put_subscriptions", remote_put)

    return bp


def apply_subscriptions(
    gateway: Gateway,
    conn_id: str,
    subscriptions: tuple[Subscription, ...],
    sessions: tuple[str, ...],
    expires_at: float | None = None,
) -> int:
    """Replace a local connection's subscriptions: 204, or 410 if it is gone."""
    conn = _lookup(gateway, conn_id)
    if conn is None:
        return 410
    try:
        conn.actor_ref.ask(SetSubscriptions(subscriptions, sessions))
        if sessions or expires_at is not None:
            # The supervisor indexes sessions and token expiry (kills, expiry).
            gateway.connections.tell(Associate(conn_id, sessions, expires_at))
    except ActorDeadError:
        return 410
    return 204


def _lookup(gateway: Gateway, conn_id: str) -> ClientActor | None:
    try:
        return gateway.connections.ask(Lookup(conn_id))
    except (ActorDeadError, gevent.Timeout):
        return None


def _apply_remote(
    gateway: Gateway,
    owner: str,
    conn_id: str,
    subscriptions: tuple[Subscription, ...],
    sessions: tuple[str, ...],
    expires_at: float | None = None,
) -> int:
    assert gateway.control is not None
    body = {
        "conn_id": conn_id,
        "subscriptions": [sub.to_json() for sub in subscriptions],
        "sessions": list(sessions),
        "expires_at": expires_at,
    }
    try:
        reply = gateway.control.request(owner, "put_subscriptions", body, timeout=5.0)
    except PeerGone:
        return 410
    except RequestTimeout:
        return 504
    except ProduceError:
        return 502
    status = reply.get("status")
    return status if status in (204, 410) else 502
