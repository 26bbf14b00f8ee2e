"""The Kafka producer shared by the fabric, the API gateway and the request log.

Keyed records with headers; ``acks`` from ``KAFKA_ACKS``. Every send waits
for the broker's answer and raises :class:`ProduceError` when there is
none: callers report failures (a 502 to an HTTP client) instead of losing
records silently (RIG hides them behind a 202).
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer

from .. import metrics
from ..config import Settings
from .clients import KafkaState, producer_options

__all__ = ["ProduceError", "Producer"]

log = logging.getLogger(__name__)


class ProduceError(Exception):
    """The record was not acknowledged by the brokers."""


class Producer:
    """A lazily connected KafkaProducer that reports its errors."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.state = KafkaState()
        self._producer: KafkaProducer | None = None
        self.sent = 0
        self.failed = 0

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 5.0,
    ) -> Any:
        """Produce one record and wait for its acknowledgement (metadata)."""
        try:
            producer = self._connect()
            future = producer.send(topic, value=value, key=key, headers=headers or [])
            metadata = future.get(timeout=timeout)
        except Exception as exc:  # every client failure is a ProduceError
            self.failed += 1
            if topic != self.settings.kafka_control_topic:
                metrics.PRODUCED_EVENTS_FAILED.labels("kafka", topic).inc()
            error = f"{type(exc).__name__}: {exc}"
            self.state.set("disconnected", error)
            self._reset_after(exc)
            raise ProduceError(f"could not produce to {topic}: {error}") from exc
        self.sent += 1
        # The control channel is the workers' own chatter, not events (RIG's
        # metric counts what the gateway produces for others).
        if topic != self.settings.kafka_control_topic:
            metrics.PRODUCED_EVENTS.labels("kafka", topic).inc()
        self.state.set("ready")
        return metadata

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**producer_options(self.settings, self.client_id))
        return self._producer

    def _reset_after(self, exc: BaseException) -> None:
        if isinstance(exc, (ValueError, TypeError)):
            return  # this record was wrong (a bad topic name): the producer is fine
        # A producer that could not even bootstrap, or whose broker forgot it,
        # is rebuilt on the next send; one that timed out keeps its buffer.
        if type(exc).__name__ in {"NoBrokersAvailable", "KafkaTimeoutError"} and self._producer:
            return
        self.close()

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # closing is best effort
                log.debug("closing the producer failed", exc_info=True)
