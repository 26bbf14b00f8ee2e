"""The connect fast path: SSE streams opened without pywsgi's parser or Flask.

Profiled at 10k connects (py-spy, ``docs/benchmarks.rst``), pywsgi's
:mod:`email`-based header parsing and Flask's request context and routing
took over half of the server's time per new stream, for a request whose
answer is written by the connection actor anyway. So the handler peeks at
the request head and offers it here first: a plain ``GET`` of
``/_rig/v1/connection/sse`` on the inbound port is validated with the same
:func:`~.streams.open_sse` the Flask view uses and taken over at once.

Every other request, and every connect that is refused (a bad JWT, too
many subscriptions, the rate limit) or needs an external subscription
check, goes the full way, so each error is answered and logged in one
place, exactly as before.

Example::

    >>> fast = ConnectFastPath(gateway)
    >>> fast.accept(b"GET /_rig/v1/connection/sse HTTP/1.1\\r\\n\\r\\n", 4000)
    (40, <function open_sse.<locals>.takeover ...>)
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from .connect import ConnectError
from .handler import MAX_HEADERS, Takeover
from .head import parse_head
from .streams import SSE_PATH, open_sse

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["ConnectFastPath"]


class ConnectFastPath:
    """Decides whether a request head can skip pywsgi and Flask; see the module docstring."""

    __slots__ = ("_api_port", "_gateway", "_max_head")

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._api_port = gateway.settings.api_http_port
        # Request line and headers together within the header limit: a head
        # the full path might answer 431 is left to it.
        self._max_head = gateway.settings.max_header_bytes

    def accept(self, data: bytes, port: int) -> tuple[int, Takeover] | None:
        """For a fast-path request at the start of ``data``: its head's size and takeover.

        ``None`` means: let the full path handle it (nothing was counted).
        """
        if port == self._api_port:
            return None
        head = parse_head(data, self._max_head, MAX_HEADERS)
        if head is None or head.method != "GET" or head.path != SSE_PATH:
            return None
        if head.get("upgrade") is not None:
            return None
        args: dict[str, str] = {}
        # Werkzeug's request.args: blank values kept, the first of repeated
        # names wins, undecodable bytes replaced.
        for name, value in urllib.parse.parse_qsl(head.query, keep_blank_values=True):
            args.setdefault(name, value)
        if "subscriptions" in args and self._gateway.subscription_check.enabled:
            return None  # an external call with its own logging: done once, in full
        authorization = head.get("authorization")
        try:
            takeover = open_sse(
                self._gateway,
                args,
                [] if authorization is None else [authorization],
                head.get("last-event-id") or args.get("last_event_id"),
            )
        except ConnectError:
            return None  # refused: the full path answers it (and logs it) once
        context = self._gateway.context
        if context is not None:  # GET /_rig/stats shows how many took this path
            counters = context.counters
            counters["fast_connects"] = counters.get("fast_connects", 0) + 1
        return head.size, takeover
