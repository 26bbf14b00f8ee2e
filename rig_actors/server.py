"""The embedded server: one process, both listeners, no Kafka needed.

``python -m rig_actors`` runs this. gunicorn runs the same application
through :mod:`rig_actors.gunicorn_conf` instead.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket

import gevent
from gevent.pywsgi import WSGIServer

from .config import Settings
from .gateway import Gateway
from .transports.handler import GatewayHandler
from .web.app import create_app

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Run the gateway until SIGTERM or SIGINT."""
    gateway = Gateway(settings)
    gateway.start()
    app = create_app(gateway)
    servers = [
        WSGIServer(
            (settings.bind_address, port),
            app,
            handler_class=GatewayHandler,
            log=None,
            error_log=logging.getLogger("rig_actors.http"),
            backlog=4096,
        )
        for port in (settings.inbound_port, settings.api_http_port)
    ]
    for server in servers:
        server.start()
        # pywsgi writes a response's head and body in two sends; with Nagle
        # on, the body waits for the client's delayed ACK (~40 ms per
        # kept-alive request). Accepted sockets inherit the option from the
        # listener (as under gunicorn, which sets it too), streams included.
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log.info(
        "rig-actors %s: inbound on %s:%d, internal API on %s:%d",
        gateway.worker_id,
        settings.bind_address,
        settings.inbound_port,
        settings.bind_address,
        settings.api_http_port,
    )
    # Everything alive now lives as long as the process: keep it out of
    # every later collection (a full pass over it would stall the hub).
    gc.collect()
    gc.freeze()

    stopping = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    stopping.wait()
    log.info("shutting down")
    for server in servers:
        server.close()  # stop accepting; streams are the actors' to end
    gateway.drain()
    for server in servers:
        server.stop(timeout=1)
    gateway.stop()
