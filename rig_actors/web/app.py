"""One WSGI callable for both listeners, chosen by the port a request came in on.

The embedded server and gunicorn both bind the inbound port and the
internal API port to the same application; requests that arrive on
``API_HTTP_PORT`` go to the internal API, all others to the inbound app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..transports.fastpath import ConnectFastPath
from ..transports.handler import GatewayHandler
from .context import with_request_context
from .inbound import create_inbound_app
from .internal import create_internal_app

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["GatewayApp", "create_app"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app(gateway: Gateway) -> GatewayApp:
    """The WSGI application for ``gateway``.

    Example::

        >>> app = create_app(gateway)
        >>> WSGIServer(("127.0.0.1", 4000), app, handler_class=GatewayHandler)
    """
    # The handler class serves both listeners (embedded server and gunicorn);
    # its request-phase timeout and header limit are the settings it needs.
    GatewayHandler.request_timeout_s = gateway.settings.request_timeout_ms / 1000
    GatewayHandler.max_header_bytes = gateway.settings.max_header_bytes
    # Request ids and trace context on both apps (RIG §11.3).
    inbound = with_request_context(create_inbound_app(gateway), gateway.worker_id)
    internal = with_request_context(create_internal_app(gateway), gateway.worker_id)
    return GatewayApp(
        inbound, internal, str(gateway.settings.api_http_port), ConnectFastPath(gateway)
    )


class GatewayApp:
    """Both apps behind one WSGI callable, plus the handler's connect fast path."""

    __slots__ = ("_api_port", "_inbound", "_internal", "fast_path")

    def __init__(
        self, inbound: WsgiApp, internal: WsgiApp, api_port: str, fast_path: ConnectFastPath
    ) -> None:
        self._inbound = inbound
        self._internal = internal
        self._api_port = api_port
        #: Read by :class:`GatewayHandler` before pywsgi parses a request.
        self.fast_path = fast_path

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("SERVER_PORT") == self._api_port:
            return self._internal(environ, start_response)
        return self._inbound(environ, start_response)
