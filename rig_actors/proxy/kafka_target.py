"""Target ``kafka``: the request body, a CloudEvent, is produced to the endpoint's topic (RIG §7.8).

- ``OPTIONS`` -> 204 with the CORS headers, nothing produced;
- the body must be a JSON CloudEvent 0.2 or 1.0 (``specversion``), else 400
  with RIG's first line (``Bad request: the body does not look like a
  CloudEvent.`` or ``Bad request: expected a JSON encoded request body.``)
  followed by the reason and a usage text;
- RIG's ``rig`` extension replaces any ``rig`` attribute sent: correlation
  id, client IP, host, port, scheme, headers, method, (rewritten) path and
  query; ``traceparent``/``tracestate`` are set to a span of ours;
- the record key is the client's ``rig.target_partition`` (none: the
  producer picks a partition);
- the record is produced synchronously. If the brokers do not acknowledge
  it the client gets **502** (RIG answers 202 and loses it, §15.14);
- ``response_from: kafka`` waits for the correlated answer
  (``PROXY_KAFKA_RESPONSE_TIMEOUT``, then 504); otherwise **202**
  ``Accepted.``.

Example::

    >>> event = rig_event({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
    ...                    "rig": {"target_partition": "k"}},
    ...                   rig={"correlation": "C"}, traceparent="00-ab-cd-01", tracestate=None)
    >>> event["rig"], event["traceparent"]
    ({'correlation': 'C'}, '00-ab-cd-01')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from ..events.cloudevent import CloudEventError, parse_json_event
from ..kafka.producer import ProduceError
from .forward import ClientBodyError, request_trace
from .responses import ReplyRouter
from .routes import RouteMatch
from .web import RawResponse, cors_headers, reply_response, text_response

if TYPE_CHECKING:
    from ..kafka.producer import Producer

__all__ = ["BAD_JSON", "NOT_A_CLOUDEVENT", "KafkaTarget", "rig_event"]

log = logging.getLogger(__name__)

NOT_A_CLOUDEVENT = "Bad request: the body does not look like a CloudEvent."
BAD_JSON = "Bad request: expected a JSON encoded request body."

_USAGE = """# Usage

Send one CloudEvent (specversion 0.2 or 1.0) as JSON in the request body.
The gateway produces it to the endpoint's Kafka topic and answers 202, or,
with response_from kafka, the correlated response.

To choose the record key (and so the partition), add

    "rig": {"target_partition": "<key>"}

to the event; the gateway replaces "rig" with its request metadata.
"""


def rig_event(
    event: dict[str, Any], *, rig: dict[str, Any], traceparent: str, tracestate: str | None
) -> dict[str, Any]:
    """``event`` with RIG's ``rig`` metadata and our trace context (a new dict)."""
    out = {k: v for k, v in event.items() if k not in ("rig", "traceparent", "tracestate")}
    out["rig"] = rig
    out["traceparent"] = traceparent
    if tracestate:
        out["tracestate"] = tracestate
    return out


def _partition_key(event: dict[str, Any]) -> bytes | None:
    rig = event.get("rig")
    key = rig.get("target_partition") if isinstance(rig, dict) else None
    if key is None or key == "":
        return None
    return (key if isinstance(key, str) else json.dumps(key)).encode("utf-8")


def _host_and_port(environ: Mapping[str, Any]) -> tuple[str, int]:
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
    port = str(environ.get("SERVER_PORT") or "0")
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
        host = name
    elif host.count(":") == 1:
        host, port = host.split(":", 1)
    try:
        return host, int(port)
    except ValueError:
        return host, 0


class KafkaTarget:
    """Handles requests of endpoints with ``target: kafka``; see the module docstring."""

    def __init__(
        self,
        producer: Producer | None,
        router: ReplyRouter,
        *,
        cors: str,
        max_body_bytes: int,
        response_timeout_s: float,
    ) -> None:
        self.producer = producer
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.response_timeout_s = response_timeout_s
        self.cors = cors_headers(cors, "content-type,authorization")

    def handle(
        self, environ: Mapping[str, Any], match: RouteMatch, headers: list[tuple[str, str]]
    ) -> tuple[Response, str | None]:
        """The answer and its outcome for metrics (RIG's status label; None: not counted).

        ``headers`` are the client's after ``transform_request_headers``.
        """
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            return RawResponse(b"", status=204, headers=self.cors), "ok"
        try:
            body = self._read_body(environ)
        except ClientBodyError as exc:
            return text_response(400, f"Bad request: {exc}.", self.cors), None
        if body is None:
            limit = self.max_body_bytes
            return text_response(413, f"Request body too large: the limit is {limit} bytes."), None
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._bad_request(BAD_JSON, None), "bad_request"
        if not isinstance(decoded, dict) or decoded.get("specversion") not in ("0.2", "1.0"):
            return self._bad_request(NOT_A_CLOUDEVENT, None), "bad_request"
        try:
            parse_json_event(body)  # required attributes and names, as for any event we take
        except CloudEventError as exc:
            return self._bad_request(NOT_A_CLOUDEVENT, str(exc)), "bad_request"

        waiter = self.router.waiter() if match.response_from == "kafka" else None
        correlation = waiter.correlation if waiter else self.router.correlation_id()
        host, port = _host_and_port(environ)
        traceparent, tracestate, _ = request_trace(environ)
        rig = {
            "correlation": correlation,
            "remoteip": environ.get("REMOTE_ADDR") or "",
            "host": host,
            "port": port,
            "scheme": environ.get("wsgi.url_scheme") or "http",
            "headers": [[name, value] for name, value in headers],
            "method": method,
            "path": match.path,
            "query": environ.get("QUERY_STRING") or "",
        }
        event = rig_event(decoded, rig=rig, traceparent=traceparent, tracestate=tracestate)
        value = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        topic = str(match.endpoint.get("topic"))
        try:
            if self.producer is None:
                raise ProduceError("Kafka is not configured (KAFKA_BROKERS is empty)")
            self.producer.send(
                topic,
                value,
                key=_partition_key(decoded),
                headers=[("content-type", b"application/cloudevents+json")],
            )
        except ProduceError as exc:
            if waiter is not None:
                waiter.close()
            log.warning(
                "proxy %s: event not produced to %s: %s", match.endpoint.get("id"), topic, exc
            )
            text = "Bad gateway: the Kafka brokers did not acknowledge the event."
            return text_response(502, text, self.cors), "unreachable"
        if waiter is None:
            return text_response(202, "Accepted.", self.cors), "ok"
        reply = waiter.wait(self.response_timeout_s)
        if reply is None:
            return RawResponse(b"", status=504, headers=self.cors), "response_timeout"
        return reply_response(reply, self.cors), "ok"

    def _read_body(self, environ: Mapping[str, Any]) -> bytes | None:
        """The whole body, or None if it is larger than the limit (events are small)."""
        stream = environ.get("wsgi.input")
        if stream is None:
            return b""
        limit = self.max_body_bytes
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > limit:
            return None
        try:
            body = stream.read(limit + 1) if length != 0 else b""
        except (OSError, ValueError) as exc:
            raise ClientBodyError(str(exc)) from exc
        return None if len(body) > limit else body

    def _bad_request(self, first_line: str, reason: str | None) -> Response:
        text = first_line + "\n\n" + (f"{reason}\n\n" if reason else "") + _USAGE
        return text_response(400, text, self.cors)
