"""rig-actors: a Reactive Interaction Gateway on gevent actors.

Clients hold SSE, WebSocket or long-polling connections; backends publish
CloudEvents (HTTP or Kafka); each event goes to the connections whose
subscriptions match it. Wire-compatible with Accenture's RIG.

The public entry points::

    >>> from rig_actors import Gateway, load_settings, create_app
    >>> gateway = Gateway(load_settings())
    >>> gateway.start()
    >>> app = create_app(gateway)   # a WSGI app for GatewayHandler servers
"""

from .config import ConfigError, Settings, load_settings
from .gateway import Gateway
from .web.app import create_app

__all__ = ["ConfigError", "Gateway", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"
