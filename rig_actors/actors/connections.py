"""The supervisor of client connection actors, and their timers.

Connection actors are ``temporary`` children in OTP terms: when one ends
(the client left, or it crashed) its socket is gone and there is nothing to
restart; only that connection ends. This supervisor keeps the table of live
connections by id (O(1) to add, find and remove, whatever the number of
connections) and runs the two periodic jobs that concern all of them: the
heartbeat (an SSE comment / a WebSocket ping; a dead peer shows up as a
failed write) and the expiry of long-polling sessions nobody polls.

If this supervisor itself stops or crashes, every connection it holds is
closed, as a supervisor's children die with it on the BEAM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent

from .connection import ClientActor, LongPollSession
from .core import Actor, ActorRef, ExitNotice

__all__ = ["Adopt", "ConnectionSupervisor", "Count", "Lookup"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Adopt:
    """Start ``conn`` as a child of this supervisor."""

    conn: ClientActor


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask for the live connection with this id, or ``None``."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Count:
    """Ask for ``{"sse": n, "ws": n, "longpolling": n}``."""


@dataclass(frozen=True, slots=True)
class _Tick:
    job: str


class ConnectionSupervisor(Actor):
    """See the module docstring."""

    def __init__(
        self,
        *,
        heartbeat_s: float,
        lp_session_ttl_s: float,
    ) -> None:
        super().__init__()
        self.table: dict[str, ClientActor] = {}
        self._heartbeat_s = heartbeat_s
        self._lp_ttl_s = lp_session_ttl_s
        self._timers: list[Any] = []

    @classmethod
    def start_linked(cls, exit_to: Callable[[ExitNotice], None], **kwargs: Any) -> ActorRef:
        return cls(**kwargs)._begin(exit_to)

    def live(self) -> Iterable[ClientActor]:
        """Live connections; for same-hub readers such as a restarted registry."""
        return self.table.values()

    def on_start(self) -> None:
        loop = gevent.get_hub().loop
        for job, every in (("heartbeat", self._heartbeat_s), ("sweep", min(60.0, self._lp_ttl_s))):
            timer = loop.timer(every, every)
            timer.start(self._tick, job)
            self._timers.append(timer)

    def _tick(self, job: str) -> None:
        if self.actor_ref.is_alive():
            self.actor_ref.tell(_Tick(job))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Adopt):
            conn = message.conn
            self.table[conn.conn_id] = conn
            conn.begin()
            return None
        if isinstance(message, ExitNotice):
            conn = message.ref._actor
            if self.table.get(conn.conn_id) is conn:  # type: ignore[attr-defined]
                del self.table[conn.conn_id]  # type: ignore[attr-defined]
            return None
        if isinstance(message, Lookup):
            conn = self.table.get(message.conn_id)
            return conn if conn is not None and not conn.closed else None
        if isinstance(message, Count):
            counts = {"sse": 0, "ws": 0, "longpolling": 0}
            for conn in self.table.values():
                counts[conn.transport] += 1
            return counts
        if isinstance(message, _Tick):
            if message.job == "heartbeat":
                self._heartbeat()
            else:
                self._sweep()
            return None
        return super().on_receive(message)

    def _heartbeat(self) -> None:
        for conn in list(self.table.values()):
            conn.heartbeat()  # type: ignore[attr-defined]

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self._lp_ttl_s
        for conn in list(self.table.values()):
            if isinstance(conn, LongPollSession) and conn.last_poll < cutoff:
                conn.close("session idle")

    def on_stop(self) -> None:
        self._shutdown("supervisor stopped")

    def on_failure(self, exc: BaseException) -> None:
        self._shutdown("supervisor crashed")

    def _shutdown(self, reason: str) -> None:
        for timer in self._timers:
            timer.close()
        self._timers.clear()
        table, self.table = self.table, {}
        for conn in table.values():
            conn.close(reason)
