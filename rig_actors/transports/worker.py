"""The gunicorn worker: gevent's pywsgi with the gateway's handler.

gunicorn's own gevent worker (``-k gevent``) has no socket takeover and no
WebSocket handshake; gevent-websocket's worker drops gunicorn's access log.
This one keeps gunicorn's request handling and logging and adds both.
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from .handler import GatewayHandler

__all__ = ["GatewayWorker"]


class _Handler(PyWSGIHandler, GatewayHandler):
    """gunicorn's environ and access log, then the gateway's takeover."""


class GatewayWorker(GeventPyWSGIWorker):
    wsgi_handler = _Handler

    def run(self) -> None:
        # gunicorn's loop returns once the worker stops accepting (SIGTERM,
        # a graceful reload) and its request greenlets are done. Streams
        # are not request greenlets: end them gracefully here, bounded by
        # shutdown_timeout_ms (keep it below gunicorn's graceful_timeout).
        super().run()
        drain = getattr(self.wsgi, "drain", None)
        if drain is not None:
            drain()
