"""The inbound (client-facing) Flask app: connections, events, health.

Everything under ``/_rig`` that is not one of RIG's endpoints, and every
other path, falls through to the API gateway's router, which answers 404
``{"message":"Not Found"}`` for unknown routes (RIG §1, §7.3).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, request
from werkzeug.routing import Rule

from ..transports.longpolling import longpolling_blueprint
from ..transports.streams import streams_blueprint
from ..transports.subscriptions import subscriptions_blueprint
from .demo import demo_blueprint
from .intake import IntakeError, publish, read_event, submission_denied
from .observability import count_proxy_request

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["create_inbound_app"]

log = logging.getLogger(__name__)


def create_inbound_app(gateway: Gateway) -> Flask:
    app = Flask("rig_actors.inbound")
    app.config["MAX_CONTENT_LENGTH"] = None  # limits are per endpoint
    app.register_blueprint(streams_blueprint(gateway))
    app.register_blueprint(longpolling_blueprint(gateway))
    app.register_blueprint(subscriptions_blueprint(gateway))
    app.register_blueprint(_events_blueprint(gateway))
    app.register_blueprint(demo_blueprint())  # GET /_rig/demo

    @app.get("/_rig/health")
    def health() -> Response:
        return Response("OK", 200, content_type="text/plain; charset=utf-8")

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(_: Exception) -> Response:
        return Response(
            '{"message":"Not Found"}', 404, content_type="application/json; charset=utf-8"
        )

    @app.errorhandler(400)
    def bad_request(exc: Exception) -> Response:
        log.info("bad request %s %s: %s", request.method, request.path, exc)
        return Response("Bad request.", 400, content_type="text/plain; charset=utf-8")

    def proxy(path: str = "") -> Response:
        started = time.perf_counter()
        response = gateway.proxy.handle(request.environ)
        count_proxy_request(request.environ, response, started)  # rig_proxy_requests_total
        return response or not_found(None)

    # The API gateway takes every request no route above took. Plain rules
    # without a method list match any method (RIG allows e.g. BADMETHOD),
    # and without merge_slashes a path reaches the route table as sent.
    app.url_map.add(Rule("/", endpoint="proxy", defaults={"path": ""}, merge_slashes=False))
    app.url_map.add(Rule("/<path:path>", endpoint="proxy", merge_slashes=False))
    app.view_functions["proxy"] = proxy

    return app


def _events_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("events", __name__)
    cors = gateway.settings.cors

    @bp.route("/_rig/v1/events", methods=["OPTIONS"])
    def preflight() -> Response:
        response = Response(status=204)
        response.headers["access-control-allow-origin"] = cors
        response.headers["access-control-allow-methods"] = "POST"
        # RIG lists only content-type; authorization is needed for
        # SUBMISSION_CHECK=jwt_validation from a browser.
        response.headers["access-control-allow-headers"] = "content-type,authorization"
        return response

    @bp.route("/_rig/v1/events", methods=["POST"])
    def post_event() -> Response:
        try:
            event = read_event(gateway, request)
        except IntakeError as exc:
            response = Response(exc.message, exc.status, content_type="text/plain; charset=utf-8")
        else:
            response = submission_denied(gateway, request, event) or publish(gateway, event)
        response.headers["access-control-allow-origin"] = cors
        return response

    return bp
