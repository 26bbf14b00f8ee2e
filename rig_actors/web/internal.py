"""The internal API Flask app (RIG §3): health, messages, statistics.

No authentication, as in RIG: it belongs on an internal network. Framework
errors use RIG's JSON shapes (``{"errors":{"detail":...}}``).

``GET /_rig/stats`` reports this worker's actors, connections and
subscriptions (what the tests and the benchmark read). With
``fault_injection`` enabled, ``POST /_rig/faults`` crashes an actor on
purpose, to exercise supervision; it is off by default.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import gevent
import greenlet
from flask import Flask, Response, jsonify, request

from ..actors.connection import Crash
from ..actors.connections import Count, Lookup
from ..actors.core import Actor, ActorDeadError
from ..actors.registry import Stats
from ..auth.tokens import TokenError
from .apis import apis_blueprint, responses_blueprint
from .blacklist import blacklist_blueprint
from .intake import IntakeError, publish, read_event
from .observability import observability_blueprint

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["create_internal_app"]

log = logging.getLogger(__name__)


def create_internal_app(gateway: Gateway) -> Flask:
    app = Flask("rig_actors.internal")
    app.register_blueprint(blacklist_blueprint(gateway))
    app.register_blueprint(apis_blueprint(gateway))
    app.register_blueprint(responses_blueprint(gateway))
    app.register_blueprint(observability_blueprint(gateway))  # /metrics, /_rig/status

    @app.get("/health")
    def health() -> Response:
        # RIG's answer is the text "OK"; a client that asks for JSON also gets
        # the state of the Kafka clients. Liveness stays 200 while Kafka is
        # away: the gateway keeps serving and reconnects by itself.
        if request.accept_mimetypes.best == "application/json":
            return jsonify(
                {"status": "ok", "worker": gateway.worker_id, "kafka": gateway.kafka_health()}
            )
        return Response("OK", 200, content_type="text/plain; charset=utf-8")

    @app.post("/v2/messages")
    @app.post("/v3/messages")
    def messages() -> Response:
        try:
            event = read_event(gateway, request)
        except IntakeError as exc:
            return Response(exc.message, exc.status, content_type="text/plain; charset=utf-8")
        return publish(gateway, event)

    @app.get("/_rig/stats")
    def stats() -> Response:
        try:
            registry = gateway.registry.ask(Stats())
            counts = gateway.connections.ask(Count())
        except (ActorDeadError, gevent.Timeout):
            # Restarting, or too busy to answer (a storm of closes): say so.
            return _error(503, "Busy, try again")
        outbox = gateway.outbox
        body = {
            "worker": gateway.worker_id,
            "connections": counts,
            "registry": registry,
            "actors": Actor.live_count(),
            "restarts": gateway.restarts,
            "counters": dict(gateway.context.counters) if gateway.context else {},
            "kafka": dict(gateway.kafka_counters),
            "peers": gateway.control.peers() if gateway.control else {},
            "outbox": {
                "flush_passes": outbox.flush_passes if outbox else 0,
                "coalesced_passes": outbox.coalesced_passes if outbox else 0,
            },
        }
        if request.args.get("greenlets"):
            gc.collect()
            body["greenlets"] = sum(
                1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead
            )
        return jsonify(body)

    @app.post("/_rig/faults")
    def faults() -> Response:
        if not gateway.settings.fault_injection:
            return _error(404, "Not found")
        target = (request.get_json(silent=True) or {}).get("actor")
        if not isinstance(target, str) or not target:
            return _error(400, "Bad request")
        try:
            if target == "connection":
                token = (request.get_json(silent=True) or {}).get("token", "")
                conn = gateway.connections.ask(Lookup(gateway.tokens.decode(token).conn_id))
                if conn is None:
                    return _error(404, "Not found")
                conn.actor_ref.tell(Crash())
            else:
                # Any registered actor: registry, connections, kafka-events,
                # kafka-control, ... (an actor that has no Crash handler
                # crashes on the unexpected message all the same).
                gateway.names.get(target).tell(Crash())
        except (ActorDeadError, TokenError):
            return _error(404, "Not found")
        return Response(status=202)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(_: Exception) -> Response:
        return _error(404, "Not found")

    @app.errorhandler(400)
    def bad_request(_: Exception) -> Response:
        return _error(400, "Bad request")

    return app


def _error(status: int, detail: str) -> Response:
    response = jsonify({"errors": {"detail": detail}})
    response.status_code = status
    return response
