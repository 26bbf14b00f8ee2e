"""Event intake over HTTP (RIG §2.6, §3.3, §4.2).

``POST /_rig/v1/events`` (inbound, with CORS) and ``POST /v2|v3/messages``
(internal API) take one CloudEvent in structured or binary mode and answer
202 with RIG's body: the event's JSON encoded once more as a JSON string.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from flask import Request, Response

from ..events.cloudevent import CloudEvent, CloudEventError, from_http
from ..kafka.producer import ProduceError

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["IntakeError", "accepted", "publish", "read_event", "submission_denied"]

log = logging.getLogger(__name__)


class IntakeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_event(gateway: Gateway, request: Request) -> CloudEvent:
    """Parse the request's CloudEvent; raises :class:`IntakeError`."""
    limit = gateway.settings.max_event_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise IntakeError(413, f"Request body too large: the limit is {limit} bytes.")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise IntakeError(413, f"Request body too large: the limit is {limit} bytes.")
    headers = {name.lower(): _utf8(value) for name, value in request.headers.items()}
    try:
        return from_http(headers, body)
    except CloudEventError as exc:
        log.info("event rejected (%d): %s", exc.status, exc)
        raise IntakeError(exc.status, str(exc)) from None


def submission_denied(gateway: Gateway, request: Request, event: CloudEvent) -> Response | None:
    """``SUBMISSION_CHECK`` for ``POST /_rig/v1/events``: a 403 to send, or None to go on.

    The external checker gets the event as structured JSON (whatever mode it
    came in) and the request's ``Authorization`` header (RIG §6.4, which RIG
    itself never managed: §15 item 4).
    """
    check = gateway.submission_check
    if not check.enabled or check.allows(
        body=event.json.encode("utf-8"),
        content_type="application/json; charset=utf-8",
        authorization=request.headers.getlist("Authorization"),
    ):
        return None
    return Response("Submission denied.", 403, content_type="text/plain; charset=utf-8")


def publish(gateway: Gateway, event: CloudEvent) -> Response:
    """Publish ``event`` and answer 202, or 502 when Kafka did not take it."""
    try:
        gateway.publish(event)
    except ProduceError as exc:
        log.warning("event %s not published: %s", event.id, exc)
        return Response(
            # A timeout does not prove the record was lost: it may still be
            # written. The client learns it was not confirmed, not that it
            # is safe to assume nothing happened.
            "The event could not be confirmed as published: the Kafka brokers did not "
            "acknowledge it in time.",
            502,
            content_type="text/plain; charset=utf-8",
        )
    return accepted(event)


def accepted(event: CloudEvent) -> Response:
    # RIG's body is the event JSON as a JSON string (its §15.24 quirk, kept
    # because clients parse it).
    return Response(
        json.dumps(event.json, ensure_ascii=False),
        202,
        content_type="application/json; charset=utf-8",
    )


def _utf8(value: str) -> str:
    # WSGI hands header values over as latin-1; ce-* values may be UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value
