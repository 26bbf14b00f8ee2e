"""gunicorn settings for rig-actors: ``gunicorn -c python:rig_actors.gunicorn_conf``.

The Procfile passes ``--bind`` (``$PORT``, else ``INBOUND_PORT``) and
``--workers`` (``WEB_CONCURRENCY``); this module adds the internal API's
listener, the gateway's worker class and the limits a push gateway needs.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from rig_actors.config import ConfigError, load_settings
from rig_actors.logs import configure_logging

try:
    _settings = load_settings()
except ConfigError as exc:
    raise SystemExit(f"rig-actors: configuration error: {exc}") from None

bind = [f"{_settings.bind_address}:{os.environ.get('PORT') or _settings.inbound_port}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "rig_actors.transports.worker.GatewayWorker"
# gunicorn's default of 1000 silently parks further clients in the backlog.
# Streams are handed to actors and leave the pool, but a reconnect storm
# passes through it.
worker_connections = 20000
backlog = 4096
graceful_timeout = 10
timeout = 30
keepalive = 5
loglevel = _settings.log_level


def on_starting(server: Any) -> None:
    """Refuse several workers without Kafka, then add the internal API listener."""
    if server.cfg.workers > 1 and not _settings.kafka_enabled:
        raise SystemExit(
            f"rig-actors: {server.cfg.workers} workers need KAFKA_BROKERS: without Kafka "
            "each worker would be a separate gateway (the embedded default is one process)"
        )
    api = f"{_settings.bind_address}:{_settings.api_http_port}"
    if api not in server.cfg.bind:
        server.cfg.set("bind", [*server.cfg.bind, api])


def post_worker_init(worker: Any) -> None:
    configure_logging(_settings.log_level, _settings.log_fmt)
    from rig_actors.wsgi import application

    application.start()
    gc.collect()
    gc.freeze()
