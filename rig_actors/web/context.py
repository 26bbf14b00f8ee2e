"""WSGI middleware: the request id and trace context of every request.

Wraps each of the two Flask apps (inbound and internal API). For every
request it builds a :class:`~rig_actors.tracing.RequestContext` from the
``x-request-id``, ``traceparent`` and ``tracestate`` headers, makes it the
greenlet's current one while the app runs (so log lines and outgoing calls
carry it) and puts ``x-request-id`` and ``traceparent`` on the response.

Streams get neither header, as in RIG: a WebSocket upgrade (``101``) and
an ``text/event-stream`` response. SSE and WebSocket connections never pass
here with a response anyway (their actor writes the head), but the status
page's stream does. Proxied responses do get both (RIG drops them, §15.15):
the gateway's values replace any a backend sent.

Example::

    >>> app = with_request_context(flask_app)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..tracing import RequestContext, activate, deactivate

__all__ = ["ENVIRON_KEY", "with_request_context"]

#: Where the request's :class:`RequestContext` is kept in the WSGI environ.
ENVIRON_KEY = "rig.request"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_OURS = frozenset({"x-request-id", "traceparent", "x-rig-worker"})


def with_request_context(app: WsgiApp, worker_id: str) -> WsgiApp:
    """``app`` with request ids and trace context; see the module docstring.

    Responses also say which worker answered (``x-rig-worker``): behind one
    port, operators (and the tests) can tell gunicorn workers and nodes apart.
    """

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        context = RequestContext.start(
            request_id=environ.get("HTTP_X_REQUEST_ID"),
            traceparent=environ.get("HTTP_TRACEPARENT"),
            tracestate=environ.get("HTTP_TRACESTATE"),
        )
        environ[ENVIRON_KEY] = context

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not _is_stream(status, headers):
                headers = [(n, v) for n, v in headers if n.lower() not in _OURS]
                headers.append(("x-request-id", context.request_id))
                headers.append(("traceparent", context.traceparent))
                headers.append(("x-rig-worker", worker_id))
            return start_response(status, headers, exc_info)

        token = activate(context)
        try:
            return app(environ, start)
        finally:
            deactivate(token)

    return wrapped


def _is_stream(status: str, headers: list[tuple[str, str]]) -> bool:
    if status.startswith("101"):
        return True
    return any(
        name.lower() == "content-type" and value.lower().startswith("text/event-stream")
        for name, value in headers
    )
