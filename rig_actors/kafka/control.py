"""The control channel: workers and nodes talk to each other over Kafka.

Every worker reads the whole control topic (``KAFKA_CONTROL_TOPIC``) and
acts on the messages addressed to it or to everyone. A message is one
record, key = the addressee, value = UTF-8 JSON::

    {"v": 1,                    # format version
     "kind": "put_subscriptions",
     "from": "<worker id>",     # the sender
     "to": "<worker id>" | "*", # the addressee, or every worker
     "id": "<message id>",      # unique; a reply carries it in "re"
     "re": "<message id>",      # only on kind "reply"
     "body": {...}}             # kind-specific

Kinds used so far:

- ``hello`` (to ``*``, every 2 s, body ``{"node": "<host name>"}``): the
  sender is alive. Each worker keeps the set of workers it has heard from
  (:meth:`ControlBus.peers`, with their nodes in
  :meth:`ControlBus.peer_nodes`), which tells "the owner is gone" (410 at
  once) from "the owner is slow". Silence only counts while a worker hears
  its own hellos: during a broker outage nobody is declared gone
  (:mod:`rig_actors.kafka.peers`).
- ``put_subscriptions``: apply a subscriptions PUT on the worker that owns
  the connection; reply ``{"status": 204|410}``.
- ``lp_poll``: run a long-poll on the worker that owns the session; reply
  ``{"events": [...], "cursor": "..."}`` or ``{"gone": true}``.
- ``reply``: the answer to a request.

Later features add kinds (session blacklist, route changes, correlated
proxy replies) with :meth:`ControlBus.register`.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult
from kafka.consumer.fetcher import ConsumerRecord

from ..config import Settings
from .peers import Peers
from .producer import ProduceError, Producer
from .reader import TopicReader

__all__ = ["ControlBus", "ControlReader", "PeerGone", "RequestTimeout"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], str], "dict[str, Any] | None"]

_HELLO_EVERY_S = 2.0
_PEER_TTL_S = 10.0
# Our own hello comes back through Kafka every 2 s; when it is this late, we
# hear nobody.
_DEAF_AFTER_S = 2 * _HELLO_EVERY_S + 1
_NODE = socket.gethostname()


class RequestTimeout(Exception):
    """The addressee did not answer in time."""


class PeerGone(Exception):
    """The addressee has not been heard from recently: it no longer exists."""


class ControlBus:
    """Send and receive control messages; see the module docstring."""

    def __init__(self, settings: Settings, worker_id: str, producer: Producer) -> None:
        self.topic = settings.kafka_control_topic
        self.worker_id = worker_id
        self._producer = producer
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, AsyncResult] = {}
        self._peers = Peers(worker_id, _PEER_TTL_S, _DEAF_AFTER_S)
        self._nodes: dict[str, str] = {}
        self._hello: Any = None
        self.received = 0

    # -- API ------------------------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        """Handle messages of ``kind``; the handler's dict (if any) is the reply.

        Handlers run in their own greenlet and may block.
        """
        self._handlers[kind] = handler

    def send(
        self,
        to: str,
        kind: str,
        body: dict[str, Any],
        *,
        re: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send one message; returns its id. Raises :class:`ProduceError`."""
        message_id = message_id or uuid.uuid4().hex
        message = {
            "v": 1,
            "kind": kind,
            "from": self.worker_id,
            "to": to,
            "id": message_id,
            "body": body,
        }
        if re is not None:
            message["re"] = re
        self._producer.send(self.topic, json.dumps(message).encode(), key=to.encode())
        return message_id

    def request(self, to: str, kind: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send and wait for the reply's body.

        Raises :class:`PeerGone` if ``to`` has not been heard from lately,
        :class:`RequestTimeout` without an answer, :class:`ProduceError`.
        """
        if not self.is_alive(to):
            raise PeerGone(to)
        reply: AsyncResult = AsyncResult()
        message_id = uuid.uuid4().hex
        self._pending[message_id] = reply
        try:
            self.send(to, kind, body, message_id=message_id)
            try:
                return reply.get(timeout=timeout)
            except gevent.Timeout:
                raise RequestTimeout(f"{to} did not answer {kind} within {timeout:g} s") from None
        finally:
            self._pending.pop(message_id, None)

    def peers(self) -> dict[str, float]:
        """Workers heard from in the last few seconds, with when (epoch s)."""
        return self._peers.recent(time.time())

    def peer_nodes(self) -> dict[str, str]:
        """The node (host name) of each worker in :meth:`peers`, as its hello said."""
        return {w: self._nodes.get(w, "?") for w in self.peers()}

    def is_alive(self, worker_id: str) -> bool:
        return self._peers.alive(worker_id, time.time())

    # -- life cycle -----------------------------------------------------------------

    def start_hello(self) -> None:
        if self._hello is None:
            self._hello = gevent.get_hub().loop.timer(0, _HELLO_EVERY_S)
            self._hello.start(self._say_hello)

    def stop(self) -> None:
        if self._hello is not None:
            self._hello.close()
            self._hello = None

    def _say_hello(self) -> None:
        gevent.spawn(self._hello_once)

    def _hello_once(self) -> None:
        try:
            self.send("*", "hello", {"node": _NODE})
        except ProduceError as exc:
            log.debug("hello not sent: %s", exc)

    # -- receiving ------------------------------------------------------------------

    def dispatch(self, message: dict[str, Any]) -> None:
        """Act on one decoded message (called by :class:`ControlReader`)."""
        sender = message.get("from")
        to = message.get("to")
        kind = message.get("kind")
        if not isinstance(sender, str) or not isinstance(kind, str):
            return
        deaf_for = self._peers.heard(sender, time.time())
        if deaf_for is not None:
            log.info("control channel heard again after %.1f s", deaf_for)
        if kind == "hello":
            body = message.get("body")
            node = body.get("node") if isinstance(body, dict) else None
            if isinstance(node, str):
                self._nodes[sender] = node[:255]
        if to not in ("*", self.worker_id) or kind == "hello":
            return
        self.received += 1
        if kind == "reply":
            waiter = self._pending.get(message.get("re", ""))
            if waiter is not None:
                waiter.set(message.get("body") or {})
            return
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("control message of unknown kind %r from %s", kind, sender)
            return
        gevent.spawn(self._run_handler, handler, message)

    def _run_handler(self, handler: Handler, message: dict[str, Any]) -> None:
        try:
            result = handler(message.get("body") or {}, message["from"])
        except Exception:  # one bad request must not stop the bus
            log.exception("control handler for %s failed", message.get("kind"))
            result = {"error": "handler failed"}
        if result is not None and message.get("to") == self.worker_id:
            try:
                self.send(message["from"], "reply", result, re=message.get("id"))
            except ProduceError as exc:
                log.warning("reply to %s not sent: %s", message["from"], exc)


class ControlReader(TopicReader):
    """Reads the control topic and hands each message to the bus."""

    def __init__(self, settings: Settings, client_id: str, bus: ControlBus) -> None:
        super().__init__(settings, (settings.kafka_control_topic,), client_id)
        self.bus = bus

    def on_start(self) -> None:
        super().on_start()
        self.bus.start_hello()

    def handle(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            try:
                message = json.loads(record.value)
            except (TypeError, ValueError):
                log.warning("undecodable control record at offset %d", record.offset)
                continue
            if isinstance(message, dict) and message.get("v") == 1:
                self.bus.dispatch(message)
