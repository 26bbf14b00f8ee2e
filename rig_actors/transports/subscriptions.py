"""Replacing a connection's subscriptions (RIG §2.5).

``PUT /_rig/v1/connection/{sse|ws|longpolling}/<token>/subscriptions``: the
transport segment is irrelevant, the token names the connection. The
checks run in RIG's order with RIG's status codes and texts; where RIG
crashes (no ``content-type``, ``subscriptions`` not a list) we answer 400.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, request

from ..actors.connection import SetSubscriptions
from ..actors.connections import Lookup
from ..actors.core import ActorDeadError
from ..auth.jwt import JwtError, JwtVerifier
from ..auth.tokens import TokenError
from ..subscriptions import SubscriptionError, dedupe, parse_subscription_list
from .connect import session_names, subscription_limits

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
        body = request.get_data(cache=False)
        if len(body) > gateway.settings.max_event_body_bytes:
            return answer(413, "Request body too large.")
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError):
            return answer(400, "Expected JSON encoded body.")
        if not isinstance(payload, dict) or "subscriptions" not in payload:
            return answer(400, 'Expected field "subscriptions" is not present.')

        try:
            claims_token = gateway.tokens.decode(token)
        except TokenError:
            return answer(400, "Invalid connection token.")
        conn = None
        if claims_token.owner == gateway.worker_id:
            try:
                conn = gateway.connections.ask(Lookup(claims_token.conn_id))
            except (ActorDeadError, gevent.Timeout):
                conn = None
        if conn is None:
            return answer(410, "Connection no longer exists.")

        claims: dict[str, Any] = {}
        for jwt in JwtVerifier.bearer_tokens(request.headers.getlist("Authorization")):
            try:
                claims.update(gateway.jwt.verify(jwt))
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
        try:
            conn.actor_ref.ask(SetSubscriptions(subscriptions, session_names(gateway, claims)))
        except ActorDeadError:
            return answer(410, "Connection no longer exists.")
        return answer(204)

    return bp
