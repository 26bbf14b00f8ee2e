"""Internal API of the API gateway: ``/v2|v3/apis`` (RIG §3.2) and ``POST /v3/responses`` (§3.4).

Route management, with RIG's status codes and bodies:

- ``GET /apis`` -> 200, the active definitions;
- ``GET /apis/<id>`` -> 200, or 404 ``{"message":"API with id=<id> doesn't exists."}``;
- ``POST /apis`` -> 201 ``{"message":"ok"}``; 400 with the validation error
  map (also for a body without ``id``, where RIG crashes); 409
  ``{"message":"API with id=<id> already exists."}``;
- ``PUT /apis/<id>`` -> 200 ``{"message":"ok"}``; 400; 404;
- ``DELETE /apis/<id>`` -> 204; 404.

With Kafka a change is replicated to every worker before it is answered;
if the brokers do not take it, nothing changes and the answer is 502
``{"message":"..."}``.

``POST /v3/responses`` delivers a backend's answer to the proxied request
waiting for it, on whichever worker or node that is: 202 ``message sent to
correlated reverse proxy request``, or 400 ``Failed to parse request body:
<error>`` with RIG's error terms.

Example::

    $ curl -X POST localhost:4010/v3/apis -H 'content-type: application/json' -d @api.json
    {"message":"ok"}
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Request, Response, request
from werkzeug.formparser import parse_form_data

from ..kafka.producer import ProduceError
from ..proxy.forward import client_headers
from ..proxy.responses import ReplyError
from ..proxy.routes import ApiConflict, ApiNotFound, ApiValidationError

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["apis_blueprint", "responses_blueprint"]

log = logging.getLogger(__name__)

#: Larger management bodies are refused (a definition is a few KiB).
MAX_BODY_BYTES = 4 * 1024 * 1024

_JSON = "application/json; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class _BadBody(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _json(status: int, body: Any) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
        status,
        content_type=_JSON,
    )


def _text(status: int, text: str) -> Response:
    return Response(text, status, content_type=_TEXT)


def _framework_error(exc: _BadBody) -> Response:
    # Phoenix's shapes for body-parser failures (RIG §3).
    return _json(exc.status, {"errors": {"detail": exc.detail}})


def _params(req: Request) -> Any:
    """The request body as Phoenix's parsers give it to RIG's controllers.

    JSON (an object, or ``{"_json": ...}`` for any other value) and forms;
    no body or no content type: ``{}``; another media type: 415.
    """
    if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        raise _BadBody(413, "Request entity too large")
    raw = req.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadBody(413, "Request entity too large")
    media = req.mimetype
    if not media or not raw:
        return {}
    if media == "application/json" or media.endswith("+json"):
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _BadBody(400, "Bad request") from None
        return value if isinstance(value, dict) else {"_json": value}
    if media in _FORMS:
        # Parse the bytes already read (the stream is consumed).
        environ = {**req.environ, "wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw))}
        return parse_form_data(environ)[1].to_dict()
    raise _BadBody(415, "Bad request")


def apis_blueprint(gateway: Gateway) -> Blueprint:
    """``/v2/apis`` and ``/v3/apis`` (identical, as in RIG)."""
    bp = Blueprint("apis", __name__)
    proxy = gateway.proxy

    def not_found(api_id: str) -> Response:
        return _json(404, {"message": f"API with id={api_id} doesn't exists."})

    def replication_failed(exc: ProduceError) -> Response:
        log.warning("API change not replicated: %s", exc)
        return _json(502, {"message": "The change was not applied: Kafka did not acknowledge it."})

    @bp.get("/v2/apis")
    @bp.get("/v3/apis")
    def list_apis() -> Response:
        return _json(200, proxy.routes.list_active())

    @bp.get("/v2/apis/<api_id>")
    @bp.get("/v3/apis/<api_id>")
    def get_api(api_id: str) -> Response:
        api = proxy.routes.get_active(api_id)
        return _json(200, api) if api is not None else not_found(api_id)

    @bp.post("/v2/apis")
    @bp.post("/v3/apis")
    def create_api() -> Response:
        try:
            proxy.create(_params(request))
        except _BadBody as exc:
            return _framework_error(exc)
        except ApiValidationError as exc:
            return _json(400, exc.errors)
        except ApiConflict as exc:
            return _json(409, {"message": str(exc)})
        except ProduceError as exc:
            return replication_failed(exc)
        return _json(201, {"message": "ok"})

    @bp.put("/v2/apis/<api_id>")
    @bp.put("/v3/apis/<api_id>")
    def update_api(api_id: str) -> Response:
        try:
            proxy.update(api_id, _params(request))
        except _BadBody as exc:
            return _framework_error(exc)
        except ApiValidationError as exc:
            return _json(400, exc.errors)
        except ApiNotFound:
            return not_found(api_id)
        except ProduceError as exc:
            return replication_failed(exc)
        return _json(200, {"message": "ok"})

    @bp.delete("/v2/apis/<api_id>")
    @bp.delete("/v3/apis/<api_id>")
    def deactivate_api(api_id: str) -> Response:
        try:
            proxy.deactivate(api_id)
        except ApiNotFound:
            return not_found(api_id)
        except ProduceError as exc:
            return replication_failed(exc)
        return Response(status=204)

    @bp.get("/_rig/proxy")
    def proxy_stats() -> Response:
        # This worker's view: table size and version, waiting requests, replies.
        return _json(200, proxy.stats())

    return bp


def responses_blueprint(gateway: Gateway) -> Blueprint:
    """``POST /v3/responses`` (RIG's v3 contract; the broken v2 one is not offered)."""
    bp = Blueprint("responses", __name__)
    router = gateway.proxy.replies

    @bp.post("/v3/responses")
    def post_response() -> Response:
        try:
            params = _params(request)
        except _BadBody as exc:
            return _framework_error(exc)
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            owner, correlation, reply = router.parse(client_headers(request.environ), body)
        except ReplyError as exc:
            log.info("async response rejected: %s", exc.term)
            return _text(400, str(exc))
        try:
            router.deliver(owner, correlation, reply, forward=True)
        except ProduceError as exc:
            log.warning("async response for %s not forwarded: %s", owner, exc)
            return _text(502, "Failed to forward the response: Kafka did not acknowledge it.")
        return _text(202, "message sent to correlated reverse proxy request")

    return bp
