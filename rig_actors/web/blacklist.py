"""The session blacklist endpoints of the internal API (RIG §3.6, Appendix A.6).

``POST /v2|v3/session-blacklist`` with ``{"sessionId": ..., "validityInSeconds": ...}``
(JSON or a form) blacklists a session on every worker and node and ends
its connections (:mod:`rig_actors.auth.blacklist`)::

    POST /v3/session-blacklist  {"sessionId":"johndoe","validityInSeconds":60}
    -> 201  location: /v3/session-blacklist/johndoe  {}

    GET /v3/session-blacklist/johndoe  -> 200 {}
    GET /v3/session-blacklist/other    -> 404 Not found.

Validation and its texts are RIG's: ``sessionId`` a non-empty string;
``validityInSeconds`` a positive number, or a string holding a positive
integer. Where RIG would crash or take anything we answer a clear 4xx: a
body over ``max_event_body_bytes`` is 413, a non-finite number is not
positive, and a value echoed in an error is cut at 256 characters. With
Kafka, a blacklisting the brokers did not store is a 502 (it is in force on
the worker that answered, maybe not on the others).
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from flask import Blueprint, Request, Response, request

from ..kafka.producer import ProduceError

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["blacklist_blueprint", "inspect"]

log = logging.getLogger(__name__)

_PATHS = ("/v2/session-blacklist", "/v3/session-blacklist")
_JSON = "application/json; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_ECHO_MAX = 256
# Elixir's Integer.parse/1 on the whole string: optional sign, digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")


class _BadBody(Exception):
    def __init__(self, status: int, response: Response) -> None:
        super().__init__(status)
        self.response = response


def blacklist_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("session_blacklist", __name__)

    @bp.route(_PATHS[0], methods=["OPTIONS"])
    @bp.route(_PATHS[1], methods=["OPTIONS"])
    def preflight() -> Response:
        response = Response(status=204)
        response.headers["access-control-allow-origin"] = "*"
        response.headers["access-control-allow-methods"] = "POST"
        response.headers["access-control-allow-headers"] = "content-type"
        return response

    @bp.route(_PATHS[0], methods=["POST"])
    @bp.route(_PATHS[1], methods=["POST"])
    def blacklist() -> Response:
        try:
            params = _params(request, gateway.settings.max_event_body_bytes)
        except _BadBody as exc:
            return exc.response
        problem, session_id, validity_s = _validate(params)
        if problem:
            return _text(400, problem)
        assert session_id is not None and validity_s is not None
        try:
            gateway.blacklisting.blacklist(session_id, validity_s)
        except ProduceError as exc:
            log.warning("blacklisting of a session not stored in Kafka: %s", exc)
            return _text(
                502,
                "The session is blacklisted on this worker, but Kafka did not store the entry; "
                "retry.",
            )
        log.info("session %r blacklisted for %g s", session_id, validity_s)
        response = Response("{}", 201, content_type=_JSON)
        response.headers["location"] = f"{request.path}/{quote(session_id, safe='')}"
        response.headers["access-control-allow-origin"] = "*"
        return response

    @bp.get(f"{_PATHS[0]}/<path:session_id>")
    @bp.get(f"{_PATHS[1]}/<path:session_id>")
    def status(session_id: str) -> Response:
        if gateway.blacklisting.is_blacklisted(session_id):
            return Response("{}", 200, content_type=_JSON)
        return Response("Not found.", 404, content_type=_TEXT)

    return bp


def _text(status: int, text: str) -> Response:
    response = Response(text, status, content_type=_TEXT)
    response.headers["access-control-allow-origin"] = "*"
    return response


def _framework_error(status: int, detail: str) -> _BadBody:
    # RIG's body parser answers before the controller, in its JSON error shape.
    body = json.dumps({"errors": {"detail": detail}})
    return _BadBody(status, Response(body, status, content_type=_JSON))


def _params(req: Request, limit: int) -> dict[str, Any]:
    """The body's parameters: JSON object, urlencoded or multipart form; none without a body."""
    mimetype = req.mimetype
    if req.content_length is not None and req.content_length > limit:
        raise _BadBody(413, _text(413, f"Request body too large: the limit is {limit} bytes."))
    if mimetype == "multipart/form-data":
        if req.content_length is None:
            raise _BadBody(411, _text(411, "A multipart body needs a content-length."))
        return {key: values[0] for key, values in req.form.lists() if values}
    body = req.stream.read(limit + 1)
    if len(body) > limit:
        raise _BadBody(413, _text(413, f"Request body too large: the limit is {limit} bytes."))
    if not mimetype or not body:
        return {}
    if mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _framework_error(400, "Bad request") from None
        # Phoenix puts a non-object JSON body under "_json".
        return document if isinstance(document, dict) else {"_json": document}
    if mimetype == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _framework_error(400, "Bad request") from None
        return dict(parse_qsl(text, keep_blank_values=True))
    raise _framework_error(415, "Bad request")


def _validate(params: dict[str, Any]) -> tuple[str | None, str | None, float | None]:
    """``(problem, session_id, validity_s)`` with RIG's messages, in RIG's order."""
    if "sessionId" not in params:
        return 'Missing value for "sessionId"', None, None
    session_id = params["sessionId"]
    if not isinstance(session_id, str) or not session_id:
        return f"Expected non-empty string, got {inspect(session_id)}", None, None
    if "validityInSeconds" not in params:
        return 'Missing value for "validityInSeconds"', None, None
    value = params["validityInSeconds"]
    if isinstance(value, str) and value:
        if not _INTEGER.fullmatch(value):
            return f"Expected a number, got {inspect(value)}", None, None
        value = int(value)
    if _is_number(value) and value > 0:
        return None, session_id, float(value)
    return f"Expected a positive number, got {inspect(value)}", None, None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def inspect(value: Any) -> str:
    """A value the way RIG's error texts show it (Elixir's ``inspect``), cut when long.

    Example::

        >>> inspect(""), inspect(None), inspect([1, "a"]), inspect({"k": True})
        ('""', 'nil', '[1, "a"]', '%{"k" => true}')
    """
    text = _inspect(value)
    return text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "..."


def _inspect(value: Any, depth: int = 0) -> str:
    if depth > 20:
        return "..."
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value[: _ECHO_MAX + 1], ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        items = [_inspect(v, depth + 1) for v in value[:50]]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = [f"{_inspect(k, depth + 1)} => {_inspect(v, depth + 1)}" for k, v in value.items()]
        return "%{" + ", ".join(pairs[:50]) + "}"
    return repr(value)
