"""The WSGI entry point for gunicorn: ``rig_actors.wsgi:application``.

The gateway (its actors, greenlets and timers) must be built in the worker
process, after gunicorn has forked it and gevent has patched it, so it is
created on first use rather than at import. ``post_worker_init`` in
:mod:`rig_actors.gunicorn_conf` makes that first use happen at boot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .config import load_settings
from .gateway import Gateway
from .transports.fastpath import ConnectFastPath
from .web.app import GatewayApp, create_app

__all__ = ["application"]

log = logging.getLogger(__name__)


class _LazyApplication:
    def __init__(self) -> None:
        self._app: GatewayApp | None = None
        self.gateway: Gateway | None = None

    def start(self) -> None:
        if self._app is None:
            gateway = Gateway(load_settings())
            gateway.start()
            self.gateway = gateway
            self._app = create_app(gateway)

    @property
    def fast_path(self) -> ConnectFastPath | None:
        """The connect fast path, once the gateway runs (see ``GatewayHandler``)."""
        return None if self._app is None else self._app.fast_path

    def drain(self) -> None:
        """Graceful shutdown of this worker's connections (gunicorn's SIGTERM)."""
        if self.gateway is not None:
            self.gateway.drain()
            self.gateway.stop()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self._app is None:
            self.start()
        assert self._app is not None
        return self._app(environ, start_response)


application = _LazyApplication()
