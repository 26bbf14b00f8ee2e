"""Request ids and W3C Trace Context for one request (RIG §11.3).

Every HTTP request the gateway answers gets a :class:`RequestContext`:

- a request id: the client's ``x-request-id`` when it is a sane value (1 to
  200 characters of ``A-Z a-z 0-9 - _ . : + / =``), else a new one (the
  trace id, so that logs and traces join on one value);
- a span of ours in a trace: the client's ``traceparent`` names the trace
  and our parent (its ``tracestate`` is kept for the next hop); without a
  valid one a new trace starts.

:mod:`rig_actors.web.context` sets it for the request's greenlet and puts
``x-request-id`` and ``traceparent`` on the response; log lines of the
request carry the id (:mod:`rig_actors.logs`). Code that calls out on
behalf of the request propagates the context with the helpers below:

- HTTP backends (the reverse proxy): :func:`propagation_headers`;
- Kafka records: :func:`kafka_headers` (record headers: a message carries
  its context in headers) and :func:`ce_attributes` (top-level CloudEvent
  attributes: an event carries it inside, as RIG's proxy does).

Nothing is exported to a tracing backend; the ids only travel.

Example::

    >>> ctx = RequestContext.start(
    ...     request_id=None,
    ...     traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ...     tracestate="vendor=1")
    >>> ctx.trace_id, ctx.parent_id, ctx.flags
    ('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', '01')
    >>> ctx.request_id == ctx.trace_id     # none given: the trace id
    True
    >>> token = activate(ctx)
    >>> propagation_headers()["traceparent"] == ctx.traceparent
    True
    >>> deactivate(token)
    >>> propagation_headers()
    {}
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = [
    "RequestContext",
    "activate",
    "ce_attributes",
    "current",
    "deactivate",
    "kafka_headers",
    "parse_traceparent",
    "propagation_headers",
    "valid_request_id",
]

_REQUEST_ID = re.compile(r"[A-Za-z0-9\-_.:+/=]{1,200}")
# version - trace id - parent id - flags; later versions may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_current: ContextVar[RequestContext | None] = ContextVar("rig_request", default=None)


def valid_request_id(value: str | None) -> bool:
    """Whether a client's ``x-request-id`` is kept (else a new one is made)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` of a valid header, else ``None``.

    Follows the W3C rules: version ``ff`` and all-zero ids are invalid; a
    version 00 header has exactly four fields; a later version may have more.

    Example::

        >>> parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        ('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', '01')
        >>> parse_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
        True
    """
    if not value:
        return None
    matched = _TRACEPARENT.fullmatch(value.strip())
    if matched is None:
        return None
    version, trace_id, parent_id, flags, rest = matched.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request id and our span of the trace; see the module docstring."""

    request_id: str
    trace_id: str
    span_id: str
    flags: str
    parent_id: str | None = None
    tracestate: str | None = None

    @classmethod
    def start(
        cls,
        *,
        request_id: str | None,
        traceparent: str | None,
        tracestate: str | None = None,
    ) -> RequestContext:
        """A context for a new request, from its headers (any may be absent or bad)."""
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            trace_id, parent_id, flags = parsed
            state = tracestate.strip() if tracestate else None
        else:
            # A new trace. Sampled: we record nothing ourselves, and a
            # backend that does should not drop what we started.
            trace_id, parent_id, flags, state = secrets.token_hex(16), None, "01", None
        if not valid_request_id(request_id):
            request_id = trace_id
        assert request_id is not None
        return cls(request_id, trace_id, secrets.token_hex(8), flags, parent_id, state or None)

    @property
    def traceparent(self) -> str:
        """Our span as a ``traceparent`` value: for responses and the next hop."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def activate(context: RequestContext) -> Token[RequestContext | None]:
    """Make ``context`` the current one of this greenlet; returns the reset token."""
    return _current.set(context)


def deactivate(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def current() -> RequestContext | None:
    """The context of the request this greenlet is serving, if any."""
    return _current.get()


def propagation_headers() -> dict[str, str]:
    """HTTP headers for a call made on behalf of the current request.

    ``traceparent`` names our span as the callee's parent, ``tracestate``
    passes on what the client sent, ``x-request-id`` lets the backend log
    the same id. Empty outside a request.
    """
    context = _current.get()
    if context is None:
        return {}
    headers = {"traceparent": context.traceparent, "x-request-id": context.request_id}
    if context.tracestate:
        headers["tracestate"] = context.tracestate
    return headers


def kafka_headers() -> list[tuple[str, bytes]]:
    """Kafka record headers carrying the current trace context (empty outside a request)."""
    context = _current.get()
    if context is None:
        return []
    headers = [("traceparent", context.traceparent.encode())]
    if context.tracestate:
        headers.append(("tracestate", context.tracestate.encode()))
    return headers


def ce_attributes() -> dict[str, str]:
    """CloudEvent extension attributes carrying the current trace context."""
    context = _current.get()
    if context is None:
        return {}
    attributes = {"traceparent": context.traceparent}
    if context.tracestate:
        attributes["tracestate"] = context.tracestate
    return attributes
