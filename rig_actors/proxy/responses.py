"""Correlated responses: ``response_from: kafka`` and ``http_async`` (RIG §7.7, §3.4).

A request that waits for a correlated response registers a :class:`Waiter`
under a *correlation id*: a signed token (itsdangerous, salt
``rig-correlation``, key ``NODE_COOKIE``) naming the worker that waits and
a random request id. The backend gets the id (query parameter
``correlation``, or ``rig.correlation`` in the produced event) and sends
its answer back with the headers ``rig-correlation`` and
``rig-response-code``:

- to ``POST /v3/responses`` on any worker of any node: when that worker is
  not the one waiting, it forwards the answer over the control channel
  (kind ``proxy_reply``) to the worker named in the id;
- to a topic of ``PROXY_KAFKA_RESPONSE_TOPICS``: every worker reads those
  topics in full (like the control and event topics: no consumer group),
  so the waiting worker reads the answer itself and the others drop it.
  This costs no more reads than a consumer group plus forwarding would
  (the control topic is read by every worker too), adds no hop, and never
  pauses for a group rebalance when a worker restarts.

A tampered or foreign id is rejected (``{:error, :invalid_term}``); an
answer for a request that has stopped waiting is dropped.

Example::

    >>> router = ReplyRouter("w1", "cookie")
    >>> waiter = router.waiter()
    >>> owner, correlation, reply = router.parse(
    ...     [("rig-correlation", waiter.correlation), ("rig-response-code", "201"),
    ...      ("content-type", "application/json")], b'{"ok":true}')
    >>> router.deliver(owner, correlation, reply, forward=False)
    True
    >>> waiter.wait(1.0).status
    201
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult
from kafka.consumer.fetcher import ConsumerRecord

from ..auth.tokens import TokenCodec, TokenError
from ..config import Settings
from ..kafka.reader import TopicReader
from .forward import HOP_BY_HOP

if TYPE_CHECKING:
    from ..kafka.control import ControlBus

__all__ = [
    "CORRELATION_SALT",
    "PROXY_REPLY",
    "Reply",
    "ReplyError",
    "ReplyRouter",
    "ResponseReader",
    "Waiter",
]

log = logging.getLogger(__name__)

#: itsdangerous salt of correlation ids: a connection token is never one.
CORRELATION_SALT = "rig-correlation"
#: Control-channel kind carrying an answer to the worker that waits for it.
PROXY_REPLY = "proxy_reply"

# Request headers of a POST /v3/responses (or Kafka headers) that describe
# that message, not the answer: RIG copies them into the client's response
# (its §15.13, e.g. a wrong content-length); we leave them out.
_NOT_FOR_THE_CLIENT = HOP_BY_HOP | {
    "rig-correlation",
    "rig-response-code",
    "host",
    "content-length",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "authorization",
    "proxy-authorization",
    "cookie",
    "origin",
    "referer",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "traceparent",
    "tracestate",
}
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.=-]+")


@dataclass(frozen=True, slots=True)
class Reply:
    """A correlated answer: status, extra headers (WSGI latin-1 strings), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ReplyError(ValueError):
    """An answer that cannot be delivered; ``term`` is RIG's inspected error.

    Example::

        >>> str(ReplyError(":error"))
        'Failed to parse request body: :error'
    """

    def __init__(self, term: str) -> None:
        super().__init__(f"Failed to parse request body: {term}")
        self.term = term


def _inspect(text: str) -> str:
    # Elixir's inspect/1 of a string; JSON's escaping matches it for ASCII.
    return json.dumps(text, ensure_ascii=False)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    # latin-1 keeps every byte: WSGI writes the same bytes back out.
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value


class Waiter:
    """One request waiting for its answer; use :meth:`wait` exactly once."""

    __slots__ = ("_result", "_router", "correlation")

    def __init__(self, router: ReplyRouter, correlation: str) -> None:
        self._router = router
        self._result: AsyncResult = AsyncResult()
        self.correlation = correlation

    def wait(self, timeout_s: float) -> Reply | None:
        """The answer, or None after ``timeout_s``; the waiter is closed either way."""
        try:
            return self._result.get(timeout=timeout_s)
        except gevent.Timeout:
            return None
        finally:
            self.close()

    def close(self) -> None:
        self._router._waiting.pop(self.correlation, None)


class ReplyRouter:
    """Correlation ids, waiting requests, and the way answers reach them."""

    def __init__(self, worker_id: str, secret: str, control: ControlBus | None = None) -> None:
        self.worker_id = worker_id
        self.control = control
        self._codec = TokenCodec(secret, salt=CORRELATION_SALT)
        self._waiting: dict[str, Waiter] = {}
        # delivered here / forwarded to the owner / for nobody waiting / malformed /
        # read from Kafka but for another worker (which reads it too)
        self.counters = {"delivered": 0, "forwarded": 0, "late": 0, "rejected": 0, "others": 0}
        if control is not None:
            control.register(PROXY_REPLY, self._on_forwarded)

    def correlation_id(self) -> str:
        """A fresh id naming this worker; nobody waits for it yet."""
        return self._codec.encode(self.worker_id, uuid.uuid4().hex)

    def waiter(self) -> Waiter:
        """Register a request that will wait; close it (or wait on it) in every case."""
        waiter = Waiter(self, self.correlation_id())
        self._waiting[waiter.correlation] = waiter
        return waiter

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def parse(
        self, headers: Iterable[tuple[str, str | bytes | None]], body: bytes
    ) -> tuple[str, str, Reply]:
        """``(owner, correlation, reply)`` from a response message (RIG §7.7.1).

        Checks in RIG's order and raises :class:`ReplyError` with RIG's
        texts: a missing header is ``:error``, a bad id ``{:error,
        :not_base64}`` or ``{:error, :invalid_term}``, a bad code
        ``{:error, {:not_an_integer, "abc"}}``.
        """
        fields: dict[str, str] = {}
        extra: list[tuple[str, str]] = []
        for name, value in headers:
            lower = name.lower()
            fields.setdefault(lower, _text(value))
            if lower not in _NOT_FOR_THE_CLIENT:
                extra.append((lower, _text(value)))
        correlation = fields.get("rig-correlation")
        if correlation is None:
            raise ReplyError(":error")
        if not _TOKEN_CHARS.fullmatch(correlation):
            raise ReplyError("{:error, :not_base64}")
        try:
            owner = self._codec.decode(correlation).owner
        except TokenError:
            raise ReplyError("{:error, :invalid_term}") from None
        raw_code = fields.get("rig-response-code")
        if raw_code is None:
            raise ReplyError(":error")
        if not _DECIMAL.fullmatch(raw_code):
            raise ReplyError(f"{{:error, {{:not_an_integer, {_inspect(raw_code)}}}}}")
        status = int(raw_code)
        if not 100 <= status <= 599:
            raise ReplyError(f"{{:error, {{:invalid_status_code, {status}}}}}")
        return owner, correlation, Reply(status, tuple(extra), bytes(body))

    def deliver(self, owner: str, correlation: str, reply: Reply, *, forward: bool) -> bool:
        """Hand ``reply`` to its waiter; True if a waiter here took it.

        With ``forward`` an answer for another worker is sent to it over
        the control channel (raises
        :class:`~rig_actors.kafka.producer.ProduceError`).
        """
        if owner == self.worker_id:
            waiter = self._waiting.get(correlation)
            if waiter is None:
                self.counters["late"] += 1
                log.info("dropping a response nobody waits for (any more)")
                return False
            waiter._result.set(reply)
            self.counters["delivered"] += 1
            return True
        if forward and self.control is not None:
            self.control.send(
                owner,
                PROXY_REPLY,
                {
                    "correlation": correlation,
                    "status": reply.status,
                    "headers": [list(h) for h in reply.headers],
                    "body": base64.b64encode(reply.body).decode("ascii"),
                },
            )
            self.counters["forwarded"] += 1
        return False

    def _on_forwarded(self, body: dict[str, Any], sender: str) -> None:
        try:
            reply = Reply(
                int(body["status"]),
                tuple((str(n), str(v)) for n, v in body.get("headers") or ()),
                base64.b64decode(body.get("body") or ""),
            )
            correlation = str(body["correlation"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("malformed %s from %s: %s", PROXY_REPLY, sender, exc)
            return None
        self.deliver(self.worker_id, correlation, reply, forward=False)
        return None


class ResponseReader(TopicReader):
    """Reads ``PROXY_KAFKA_RESPONSE_TOPICS``; answers for this worker reach their waiters."""

    def __init__(self, settings: Settings, client_id: str, router: ReplyRouter) -> None:
        super().__init__(settings, settings.proxy_kafka_response_topics, client_id)
        self.router = router

    def handle(self, records: list[ConsumerRecord]) -> None:
        router = self.router
        for record in records:
            try:
                owner, correlation, reply = router.parse(record.headers or (), record.value or b"")
            except ReplyError as exc:
                router.counters["rejected"] += 1
                log.warning(
                    "ignoring response %s/%d@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc.term,
                )
                continue
            if owner == router.worker_id:
                router.deliver(owner, correlation, reply, forward=False)
            else:
                router.counters["others"] += 1
