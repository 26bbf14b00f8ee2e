"""gunicorn settings for rig-actors: ``gunicorn -c python:rig_actors.gunicorn_conf``.

The Procfile passes ``--bind`` (``$PORT``, else ``INBOUND_PORT``) and
``--workers`` (``WEB_CONCURRENCY``); this module adds the internal API's
listener, the gateway's worker class and the limits a push gateway needs.

It also makes one ``/metrics`` scrape show the whole box: prometheus_client's
multiprocess mode, with ``PROMETHEUS_MULTIPROC_DIR`` set here, in the master,
before any worker exists or imports prometheus_client (see
:mod:`rig_actors.metrics`).
"""

from __future__ import annotations

import gc
import glob
import logging
import os
import shutil
import tempfile
from typing import Any

from rig_actors.config import ConfigError, load_settings
from rig_actors.logs import RedactSecrets, configure_logging

try:
    _settings = load_settings()
except ConfigError as exc:
    raise SystemExit(f"rig-actors: configuration error: {exc}") from None

# Set by the master that created the metrics directory: a master re-executed
# by SIGUSR2 inherits the environment but must not share its predecessor's
# files (the old workers still write there), so it makes a fresh one.
_METRICS_DIR_OWNER = "RIG_METRICS_DIR_OWNER"


def _metrics_dir() -> tuple[str, bool]:
    """The multiprocess directory, and whether this master made it (and removes it)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given and _METRICS_DIR_OWNER not in os.environ:
        return given, False
    path = tempfile.mkdtemp(prefix=f"rig-metrics-{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ[_METRICS_DIR_OWNER] = str(os.getpid())
    return path, True


_metrics_path, _metrics_owned = _metrics_dir()

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
# gunicorn's control socket lives at one fixed path per user: several
# gateways on one box (workers of different nodes, tests) would fight over it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Refuse several workers without Kafka, then add the internal API listener."""
    # A directory the operator chose may hold a previous run's files: counters
    # of dead processes would be added to ours.
    os.makedirs(_metrics_path, exist_ok=True)
    for stale in glob.glob(os.path.join(_metrics_path, "*.db")):
        os.remove(stale)
    if server.cfg.workers > 1 and not _settings.kafka_enabled:
        raise SystemExit(
            f"rig-actors: {server.cfg.workers} workers need KAFKA_BROKERS: without Kafka "
            "each worker would be a separate gateway (the embedded default is one process)"
        )
    api = f"{_settings.bind_address}:{_settings.api_http_port}"
    if api not in server.cfg.bind:
        server.cfg.set("bind", [*server.cfg.bind, api])


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_path)


def on_exit(server: Any) -> None:
    if _metrics_owned:
        shutil.rmtree(_metrics_path, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    configure_logging(_settings.log_level, _settings.log_fmt)
    # gunicorn's own lines (an access log, if an operator enables one, shows
    # query strings with ?jwt=) go through the same masking as ours.
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(RedactSecrets())
    from rig_actors.wsgi import application

    application.start()
    gc.collect()
    gc.freeze()
