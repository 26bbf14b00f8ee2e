"""``REQUEST_LOG``: a line or a Kafka event per proxied request (RIG §7.12).

Called for every matched and authenticated request, before it is
forwarded:

- ``console`` prints ``CALL: [<endpoint id>] <METHOD> <path_regex> => <target_url>``
  to standard output;
- ``kafka`` produces a CloudEvent 0.2 of type ``com.rig.proxy.api.call`` to
  ``KAFKA_LOG_TOPIC`` with key ``partition`` (RIG's literal key). It is sent
  from a bounded pool of greenlets so the request does not wait for the
  broker; when the pool is full (Kafka slower than the traffic) records
  are dropped and counted rather than piling up.

Example::

    >>> log_call = RequestLog(("console",), producer=None, topic="rig-request-log")
    >>> log_call(endpoint={"id": "e", "method": "GET", "path_regex": "/x"},
    ...          api={"proxy": {"target_url": "backend"}}, request_path="/x",
    ...          remote_ip="127.0.0.1", traceparent=None)
    CALL: [e] GET /x => backend
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gevent.pool import Pool

from ..kafka.producer import ProduceError, Producer

__all__ = ["RequestLog"]

log = logging.getLogger(__name__)

_POOL_SIZE = 256


class RequestLog:
    """The configured request loggers; a no-op when none is configured."""

    def __init__(self, loggers: Iterable[str], producer: Producer | None, topic: str) -> None:
        loggers = set(loggers)
        self.console = "console" in loggers
        # Settings refuse "kafka" without brokers; no producer means no Kafka.
        self.kafka = "kafka" in loggers and producer is not None
        self.producer = producer
        self.topic = topic
        self.dropped = 0
        self._pool = Pool(_POOL_SIZE)

    @property
    def enabled(self) -> bool:
        return self.console or self.kafka

    def __call__(
        self,
        *,
        endpoint: dict[str, Any],
        api: dict[str, Any],
        request_path: str,
        remote_ip: str,
        traceparent: str | None,
    ) -> None:
        if self.console:
            target = (api.get("proxy") or {}).get("target_url")
            line = (
                f"CALL: [{endpoint.get('id')}] {endpoint.get('method')} "
                f"{endpoint.get('path_regex')} => {target}"
            )
            print(line, file=sys.stdout, flush=True)
        if self.kafka:
            if self._pool.full():
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("request log: Kafka is behind, %d records dropped", self.dropped)
                return
            event = {
                "id": str(uuid.uuid4()),
                "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "source": "/rig",
                "type": "com.rig.proxy.api.call",
                "contenttype": "application/json",
                "specversion": "0.2",
                "data": {
                    "endpoint": endpoint,
                    "request_path": request_path,
                    "remote_ip": remote_ip,
                },
            }
            if traceparent:
                event["traceparent"] = traceparent
            self._pool.spawn(self._produce, json.dumps(event, separators=(",", ":")).encode())

    def _produce(self, value: bytes) -> None:
        assert self.producer is not None
        try:
            self.producer.send(
                self.topic,
                value,
                key=b"partition",
                headers=[("ce_contenttype", b"application/json")],
            )
        except ProduceError as exc:
            log.warning("request log record not produced: %s", exc)

    def close(self) -> None:
        self._pool.kill(block=False)
