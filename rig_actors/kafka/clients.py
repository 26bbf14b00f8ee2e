"""Kafka client settings and the connection state every Kafka actor reports.

kafka-python options are derived from :class:`~rig_actors.config.Settings`
in one place (brokers, TLS, SASL, acks) so that the event consumer, the
control channel and the producer connect the same way (RIG §10.4).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings

__all__ = ["Backoff", "KafkaState", "common_options", "consumer_options", "producer_options"]


def common_options(settings: Settings, client_id: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": list(settings.kafka_brokers),
        "client_id": client_id,
        "request_timeout_ms": 10000,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 2000,
        "bootstrap_timeout_ms": 5000,
    }
    sasl = settings.kafka_sasl_credentials
    if settings.kafka_ssl_enabled:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_certfile or None)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile or None,
                settings.kafka_ssl_keyfile_pass or None,
            )
        options["ssl_context"] = context
        options["security_protocol"] = "SASL_SSL" if sasl else "SSL"
    elif sasl:
        options["security_protocol"] = "SASL_PLAINTEXT"
    if sasl:
        mechanism, user, password = sasl
        options["sasl_mechanism"] = mechanism
        options["sasl_plain_username"] = user
        options["sasl_plain_password"] = password
    return options


def consumer_options(settings: Settings, client_id: str) -> dict[str, Any]:
    return {
        **common_options(settings, client_id),
        # No consumer group: every worker reads every partition (assign()),
        # so each sees every event; nothing to join, nothing to rebalance.
        "group_id": None,
        "enable_auto_commit": False,
        # Only used when a position is out of range, e.g. the broker lost its
        # data: read what is there rather than skip to the end.
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "max_poll_records": 1000,
    }


def producer_options(settings: Settings, client_id: str) -> dict[str, Any]:
    return {
        **common_options(settings, client_id),
        "acks": "all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
        # An idempotent producer is fatally broken once the broker forgets its
        # producer id (a restarted broker); a plain one recovers.
        "enable_idempotence": False,
        "linger_ms": 1,
        "retries": 3,
        "max_block_ms": 5000,
    }


@dataclass
class KafkaState:
    """What a Kafka actor last saw of the brokers, for ``GET /health``."""

    state: str = "starting"  # starting | connecting | ready | disconnected
    since: float = field(default_factory=time.time)
    error: str = ""

    def set(self, state: str, error: str = "") -> None:
        if state != self.state or error != self.error:
            self.state = state
            self.since = time.time()
            self.error = error

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": round(self.since, 3), "error": self.error}


class Backoff:
    """Exponential back-off with a cap, reset on success."""

    __slots__ = ("cap", "current", "initial")

    def __init__(self, initial: float = 0.2, cap: float = 5.0) -> None:
        self.initial = initial
        self.cap = cap
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.initial
