"""Route replication between workers and nodes over the control channel (RIG §7.14).

Each worker holds the whole route table in memory, as RIG's nodes do;
nothing is written to disk or to a topic (RIG does not persist API
changes either: the config file is the source at start-up).

- A change (create, update, deactivate) is sent to every worker as kind
  ``routes`` carrying the complete new definition with its
  ``ref_number``. Each worker, the sender included, merges it with the
  rule of :meth:`~rig_actors.proxy.routes.RouteTable.merge`: the higher
  ``ref_number`` wins, then the newer ``timestamp``. Messages that arrive
  late, twice or out of order therefore change nothing.
- A worker whose control reader becomes ready (at start, after a restart
  of that reader, after a Kafka outage) asks peers for their tables:
  kind ``routes_sync`` to each peer it hears from during the next
  :data:`SYNC_WINDOW_S` seconds, until :data:`SYNC_PEERS` have answered.
  The answer (a control ``reply``) holds every stored definition,
  deactivated ones included, and is merged the same way. So a worker that
  restarts gets the changes made while it was away, as long as one other
  worker of the cluster lived through them.

The table travels as one control record: with Kafka's default 1 MB record
limit that is room for a few thousand definitions.

Example (two buses wired to one another)::

    >>> sync = RouteSync(table, bus, "w1", reader_status=lambda: (1, "ready"))
    >>> sync.start()
    >>> sync.publish(table.prepare_create(body, node_name="w1"))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent

from ..kafka.control import ControlBus, PeerGone, RequestTimeout
from ..kafka.producer import ProduceError
from .routes import RouteTable, validate_api

__all__ = ["ROUTES", "ROUTES_SYNC", "SYNC_PEERS", "SYNC_WINDOW_S", "RouteSync"]

log = logging.getLogger(__name__)

ROUTES = "routes"
ROUTES_SYNC = "routes_sync"
#: Peers asked for their table after the control reader became ready.
SYNC_PEERS = 3
#: How long after that newly heard peers are asked (hellos come every 2 s).
SYNC_WINDOW_S = 30.0
_CHECK_EVERY_S = 0.25
_ASK_TIMEOUT_S = 5.0

#: ``(identity of the control reader, its state)``, or None while it restarts.
ReaderStatus = Callable[[], "tuple[int, str] | None"]


class RouteSync:
    """Keeps one worker's :class:`RouteTable` in step with its peers; see the module docstring."""

    def __init__(
        self, table: RouteTable, bus: ControlBus, worker_id: str, reader_status: ReaderStatus
    ) -> None:
        self.table = table
        self.bus = bus
        self.worker_id = worker_id
        self._reader_status = reader_status
        self._watcher: gevent.Greenlet | None = None
        self._synced_reader: int | None = None
        self._window_until = 0.0
        self._asked: set[str] = set()
        self.answered = 0
        self.received = 0
        bus.register(ROUTES, self._on_change)
        bus.register(ROUTES_SYNC, self._on_sync)

    def publish(self, api: dict[str, Any]) -> None:
        """Send a changed definition to every worker; raises ProduceError."""
        self.bus.send("*", ROUTES, {"api": api})

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
            self._watcher = None

    # -- receiving ------------------------------------------------------------------

    def _adopt(self, api: Any, sender: str) -> bool:
        if not isinstance(api, dict) or validate_api(api):
            log.warning("ignoring an invalid API definition from %s", sender)
            return False
        return self.table.merge(api)

    def _on_change(self, body: dict[str, Any], sender: str) -> None:
        self.received += 1
        if self._adopt(body.get("api"), sender):
            log.info("API %s changed by %s", body["api"].get("id"), sender)
        return None

    def _on_sync(self, body: dict[str, Any], sender: str) -> dict[str, Any]:
        return {"apis": self.table.snapshot()}

    # -- catching up ----------------------------------------------------------------

    def _watch(self) -> None:
        was_ready = False
        while True:
            try:
                self._check(was_ready)
                status = self._reader_status()
                was_ready = status is not None and status[1] == "ready"
            except Exception:  # the watcher must outlive one bad round
                log.exception("route sync check failed")
            gevent.sleep(_CHECK_EVERY_S)

    def _check(self, was_ready: bool) -> None:
        status = self._reader_status()
        if status is None or status[1] != "ready":
            return
        reader, _ = status
        if reader != self._synced_reader or not was_ready:
            # A (re)positioned reader missed whatever was sent before: catch up.
            self._synced_reader = reader
            self._window_until = time.monotonic() + SYNC_WINDOW_S
            self._asked = set()
            self.answered = 0
        if time.monotonic() > self._window_until or self.answered >= SYNC_PEERS:
            return
        for peer in self.bus.peers():
            if peer != self.worker_id and peer not in self._asked:
                self._asked.add(peer)
                gevent.spawn(self._ask, peer)

    def _ask(self, peer: str) -> None:
        try:
            answer = self.bus.request(peer, ROUTES_SYNC, {}, timeout=_ASK_TIMEOUT_S)
        except (PeerGone, RequestTimeout, ProduceError) as exc:
            log.info("route table not received from %s: %s", peer, exc)
            # Ask again on the next check (a busy peer or broker is no reason
            # to start without the table); a peer gone silent is not listed.
            self._asked.discard(peer)
            return
        apis = answer.get("apis")
        adopted = sum(self._adopt(api, peer) for api in apis) if isinstance(apis, list) else 0
        self.answered += 1
        log.info("route table from %s: %d definitions, %d adopted", peer, len(apis or ()), adopted)
