"""The API gateway of one worker: route table, replication and request handling (RIG §7).

:class:`ProxyService` is what the HTTP layer uses: the inbound app hands it
every request no other route took (:meth:`ProxyService.handle`), the
management API calls :meth:`~ProxyService.create`,
:meth:`~ProxyService.update` and :meth:`~ProxyService.deactivate`, and
``POST /v3/responses`` goes to :attr:`~ProxyService.replies`.

A request goes through these steps:

1. match (``routes.py``): no match -> None, the inbound app answers 404;
2. ``auth_type: jwt`` + ``secured: true``: tokens from the configured
   header (``Authorization: Bearer ...`` or, for any other name such as
   ``x-token``, the raw value) and/or the query parameter (comma-separated
   raw tokens); at least one must pass ``Gateway.verify_jwt`` (signature,
   expiry and, with the security work, the session blacklist), else 401
   ``Authentication failed.``;
3. ``transform_request_headers``: the API's ``add_headers`` replace or add
   request headers (names compared case-insensitively);
4. the request log, if configured;
5. the target: ``http`` (``forward.py``, maybe waiting for a correlated
   answer, ``responses.py``) or ``kafka`` (``kafka_target.py``); ``kinesis``
   and ``nats`` are not supported here (501).

Example::

    >>> proxy = ProxyService(gateway)          # built by Gateway.__init__
    >>> proxy.create({"id": "books", "name": "books", ...})
    >>> proxy.handle(environ)                   # a werkzeug Response, or None
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from werkzeug.wrappers import Response

from ..actors.core import ActorDeadError
from ..auth.jwt import JwtVerifier, any_verifies
from ..config import ConfigError
from .forward import (
    Backend,
    BackendError,
    ClientBodyError,
    HttpForwarder,
    client_headers,
    raw_path,
    request_trace,
    with_correlation,
)
from .kafka_target import KafkaTarget
from .request_log import RequestLog
from .responses import ReplyRouter
from .routes import SUPPORTED_HTTP_METHODS, ApiValidationError, RouteMatch, RouteTable
from .sync import RouteSync
from .web import RawResponse, cors_headers, reply_response, text_response

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["MATCH_KEY", "OUTCOME_KEY", "ProxyService"]

log = logging.getLogger(__name__)

_ASYNC_SOURCES = ("kafka", "http_async")

#: environ keys :meth:`ProxyService.handle` sets for the request's metrics: the
#: :class:`~rig_actors.proxy.routes.RouteMatch`, and RIG's ``status`` label of
#: the outcome (``ok``, ``unreachable``, ``request_timeout``, ``response_timeout``,
#: ``bad_request``; None when RIG does not count it, e.g. a 405).
MATCH_KEY = "rig.proxy.match"
OUTCOME_KEY = "rig.proxy.outcome"


class ProxyService:
    """See the module docstring. Built from the gateway's settings and Kafka clients."""

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.worker_id = gateway.worker_id
        self.routes = RouteTable()
        try:
            self.routes.load(settings.apis, node_name=self.worker_id)
        except ApiValidationError as err:
            label = "PROXY_CONFIG_FILE" if settings.proxy_config_file.strip() else "apis"
            position = (err.position or 0) + 1
            errors = json.dumps(err.errors, separators=(",", ":"))
            log.critical("invalid API definition #%d in %s: %s", position, label, errors)
            raise ConfigError(label, f"API definition #{position} is invalid: {errors}") from None
        self.replies = ReplyRouter(self.worker_id, settings.effective_node_cookie, gateway.control)
        self.forwarder = HttpForwarder(
            settings.proxy_recv_timeout / 1000, by=_address_of(settings.host)
        )
        self.kafka = KafkaTarget(
            gateway.producer,
            self.replies,
            cors=settings.cors,
            max_body_bytes=settings.max_event_body_bytes,
            response_timeout_s=settings.proxy_kafka_response_timeout / 1000,
        )
        self.request_log = RequestLog(
            settings.request_log, gateway.producer, settings.kafka_log_topic
        )
        self.sync: RouteSync | None = None
        if gateway.control is not None:
            self.sync = RouteSync(
                self.routes, gateway.control, self.worker_id, self._control_reader
            )
        self._timeouts = {
            "kafka": settings.proxy_kafka_response_timeout / 1000,
            "http_async": settings.proxy_http_async_response_timeout / 1000,
        }
        # RIG's CORS sets (§7.11): the 401 and the http wait path list content-type only.
        self._cors = cors_headers(settings.cors, "content-type")
        self._verify = gateway.verify_jwt

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        if self.sync is not None:
            self.sync.start()

    def stop(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        self.request_log.close()
        self.forwarder.close()

    def _control_reader(self) -> tuple[int, str] | None:
        try:
            ref = self.gateway.names.get("kafka-control")
        except ActorDeadError:
            return None
        return id(ref), ref._actor.state.state

    # -- management (the /v2|v3/apis endpoints) --------------------------------------

    def create(self, body: Any) -> None:
        """``POST /apis``; raises ApiValidationError, ApiConflict or ProduceError."""
        self._commit(self.routes.prepare_create(body, node_name=self.worker_id))

    def update(self, api_id: str, body: Any) -> None:
        """``PUT /apis/<id>``; raises ApiValidationError, ApiNotFound or ProduceError."""
        self._commit(self.routes.prepare_update(api_id, body, node_name=self.worker_id))

    def deactivate(self, api_id: str) -> None:
        """``DELETE /apis/<id>``; raises ApiNotFound or ProduceError."""
        self._commit(self.routes.prepare_deactivate(api_id, node_name=self.worker_id))

    def _commit(self, api: dict[str, Any]) -> None:
        # Replicate first: if Kafka does not take the change, nothing changes
        # anywhere and the caller says so, instead of one worker diverging.
        if self.sync is not None:
            self.sync.publish(api)
        self.routes.merge(api)

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.worker_id,
            "apis": len(self.routes),
            "table_version": self.routes.version,
            "waiting": self.replies.waiting,
            "replies": dict(self.replies.counters),
            "sync": {"received": self.sync.received, "peers_answered": self.sync.answered}
            if self.sync
            else None,
            "request_log_dropped": self.request_log.dropped,
        }

    # -- requests -------------------------------------------------------------------

    def handle(self, environ: dict[str, Any]) -> Response | None:
        """Answer a request no other route took; None when no endpoint matches.

        Leaves the match and the outcome in ``environ`` (:data:`MATCH_KEY`,
        :data:`OUTCOME_KEY`) for the metrics of the web layer.
        """
        method = environ["REQUEST_METHOD"]
        path = raw_path(environ)
        match = self.routes.match(method, path)
        if match is None:
            return None
        # For the web layer's rig_proxy_requests_total (web/observability.py).
        environ[MATCH_KEY] = match
        api, endpoint = match.api, match.endpoint
        if api.get("auth_type") == "jwt" and endpoint.get("secured") is True:
            if not self._authenticated(environ, api):
                return text_response(401, "Authentication failed.", self._cors)
        headers = client_headers(environ)
        if endpoint.get("transform_request_headers") is True:
            headers = _transform(headers, api)
        if self.request_log.enabled:
            self.request_log(
                endpoint=endpoint,
                api=api,
                request_path=path,
                remote_ip=environ.get("REMOTE_ADDR") or "",
                traceparent=request_trace(environ)[0],
            )
        target = match.target
        if target == "http":
            response, outcome = self._forward(environ, match, headers)
        elif target == "kafka":
            response, outcome = self.kafka.handle(environ, match, headers)
        else:
            return text_response(501, f"Not implemented: target {target} is not supported.")
        # RIG's status label of this outcome (None: RIG does not count it).
        environ[OUTCOME_KEY] = outcome
        return response

    def _authenticated(self, environ: Mapping[str, Any], api: dict[str, Any]) -> bool:
        auth = api.get("auth") if isinstance(api.get("auth"), dict) else {}
        tokens: list[str] = []
        query_name = auth.get("query_name")
        if auth.get("use_query") is True and isinstance(query_name, str) and query_name:
            query = parse_qs(environ.get("QUERY_STRING") or "", keep_blank_values=True)
            for value in query.get(query_name, ()):
                tokens += [token for token in value.split(",") if token]
        header_name = auth.get("header_name")
        if auth.get("use_header") is True and isinstance(header_name, str) and header_name:
            name = header_name.lower()
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if value and name == "authorization":
                tokens += JwtVerifier.bearer_tokens([value])
            elif value:
                # Any other header (RIG: x-... only) carries raw tokens; several
                # headers of one name arrive joined with commas.
                tokens += [token.strip() for token in value.split(",") if token.strip()]
        return any_verifies(self._verify, tokens)

    def _forward(
        self, environ: Mapping[str, Any], match: RouteMatch, headers: list[tuple[str, str]]
    ) -> tuple[Response, str | None]:
        method = environ["REQUEST_METHOD"]
        if method not in SUPPORTED_HTTP_METHODS:
            return text_response(405, "Method not allowed."), None
        backend = Backend.from_proxy(match.api.get("proxy") or {})
        waiting_for = match.response_from if match.response_from in _ASYNC_SOURCES else None
        waiter = self.replies.waiter() if waiting_for else None
        query = environ.get("QUERY_STRING") or ""
        if waiter is not None:
            query = with_correlation(query, waiter.correlation)
        target = (match.path if match.path.startswith("/") else "/" + match.path) + (
            f"?{query}" if query else ""
        )
        try:
            response = self.forwarder.send(
                environ,
                method,
                backend,
                target,
                self.forwarder.backend_headers(environ, headers, backend),
            )
        except (BackendError, ClientBodyError) as exc:
            if waiter is not None:
                waiter.close()
            endpoint_id = match.endpoint.get("id")
            if isinstance(exc, ClientBodyError):
                log.info("proxy %s: client request body unreadable: %s", endpoint_id, exc)
                return text_response(400, "Bad request."), None
            log.warning("proxy %s: %s %s failed: %s", endpoint_id, method, backend.url(target), exc)
            if exc.status == 504:
                return text_response(504, "Gateway timeout."), "request_timeout"
            return text_response(502, "Bad gateway."), "unreachable"
        if waiter is not None and waiting_for is not None:
            if response.status != 202:
                waiter.close()  # an immediate answer (a cached one, an error) goes straight back
            else:
                response.discard()
                reply = waiter.wait(self._timeouts[waiting_for])
                if reply is None:
                    return RawResponse(b"", status=504, headers=self._cors), "response_timeout"
                return reply_response(reply, self._cors), "ok"
        streamed = RawResponse(
            response,
            status=response.status_line,
            headers=response.headers,
            direct_passthrough=True,
        )
        return streamed, "ok"


def _transform(headers: list[tuple[str, str]], api: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers merged with the API's ``add_headers`` (RIG §7.5)."""
    default = (api.get("version_data") or {}).get("default") or {}
    settings = default.get("transform_request_headers") if isinstance(default, dict) else None
    add = settings.get("add_headers") if isinstance(settings, dict) else None
    if not isinstance(add, dict) or not add:
        return headers
    merged: dict[str, str] = {}
    for name, value in headers:
        merged[name] = value  # RIG keeps one value per name
    for name, value in add.items():
        merged[str(name).lower()] = value if isinstance(value, str) else json.dumps(value)
    return list(merged.items())


def _address_of(host: str) -> str:
    """The IP address of ``HOST``: the ``by=`` of the ``forwarded`` header."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):
        log.warning("HOST %r does not resolve; forwarded headers say by=unknown", host)
        return ""
