"""rig-actors: a Reactive Interaction Gateway on gevent actors.

Clients hold SSE, WebSocket or long-polling connections; backends publish
CloudEvents (HTTP or Kafka); each event goes to the connections whose
subscriptions match it. Wire-compatible with Accenture's RIG.

The public entry points::

    >>> from rig_actors import Gateway, load_settings, create_app
    >>> gateway = Gateway(load_settings())
    >>> gateway.start()
    >>> app = create_app(gateway)   # a WSGI app for GatewayHandler servers

They are imported on first use: ``python -m rig_actors`` must be able to
monkey-patch with gevent before ``ssl`` and ``socket`` users are imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ConfigError", "Gateway", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "rig_actors.config",
    "Settings": "rig_actors.config",
    "load_settings": "rig_actors.config",
    "Gateway": "rig_actors.gateway",
    "create_app": "rig_actors.web.app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rig_actors' has no attribute {name!r}")
    return getattr(import_module(module), name)
