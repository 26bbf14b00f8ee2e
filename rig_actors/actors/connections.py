"""The supervisor of client connection actors, and their timers.

Connection actors are ``temporary`` children in OTP terms: when one ends
(the client left, or it crashed) its socket is gone and there is nothing to
restart; only that connection ends. This supervisor keeps the table of live
connections by id (O(1) to add, find and remove, whatever the number of
connections) and runs the two periodic jobs that concern all of them: the
heartbeat (an SSE comment / a WebSocket ping; a dead peer shows up as a
failed write) and the expiry of long-polling sessions nobody polls.

It also indexes connections by session and by token expiry
(:class:`~rig_actors.actors.sessions.SessionIndex`): ``KillSession`` ends
every connection of a blacklisted session without a scan, and one timer,
for the earliest token ``exp``, ends connections whose JWT has expired
(``rig.session_expired``).

If this supervisor itself stops or crashes, every connection it holds is
closed, as a supervisor's children die with it on the BEAM.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent

from .connection import ClientActor, Goodbye, Kill, LongPollSession
from .core import Actor, ActorDeadError, ActorRef, ExitNotice
from .sessions import (
    SESSION_EXPIRED,
    SESSION_EXPIRED_REASON,
    SESSION_KILLED,
    SESSION_KILLED_REASON,
    SessionIndex,
)

__all__ = [
    "Adopt",
    "Associate",
    "ConnectionSupervisor",
    "Count",
    "Drain",
    "KillSession",
    "Lookup",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Adopt:
    """Start ``conn`` as a child of this supervisor.

    ``expires_at``: the ``exp`` of the JWT it was opened with (epoch s), if any.
    """

    conn: ClientActor
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Associate:
    """A subscriptions PUT carried JWTs: join their sessions, expire with them."""

    conn_id: str
    sessions: tuple[str, ...]
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class KillSession:
    """End every connection of session ``name`` (it was blacklisted)."""

    name: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask for the live connection with this id, or ``None``."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Count:
    """Ask for ``{"sse": n, "ws": n, "longpolling": n}``."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Shutdown: every connection says goodbye (retry after base + jitter ms)."""

    retry_ms: int
    jitter_ms: int


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
        blacklisted: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.table: dict[str, ClientActor] = {}
        # Kept as connections come and go, so that the metrics sampler reads
        # them without a pass over the table.
        self.open_by_transport = {"sse": 0, "ws": 0, "longpolling": 0}
        self.opened_by_transport = {"sse": 0, "ws": 0, "longpolling": 0}
        self._heartbeat_s = heartbeat_s
        self._lp_ttl_s = lp_session_ttl_s
        self._timers: list[Any] = []
        self.sessions = SessionIndex()
        self._blacklisted = blacklisted
        self._expiry_timer: Any = None
        self._expiry_due: float | None = None

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
            self.open_by_transport[conn.transport] += 1
            self.opened_by_transport[conn.transport] += 1
            log.info("connection %s (%s) opened", conn.conn_id, conn.transport)
            conn.begin()
            self._authenticated(conn, conn.sessions, message.expires_at)
            return None
        if isinstance(message, ExitNotice):
            conn = message.ref._actor
            if self.table.get(conn.conn_id) is conn:  # type: ignore[attr-defined]
                del self.table[conn.conn_id]  # type: ignore[attr-defined]
                self.open_by_transport[conn.transport] -= 1  # type: ignore[attr-defined]
            self.sessions.leave(conn)
            return None
        if isinstance(message, KillSession):
            for conn in self.sessions.take(message.name):
                self._end(conn, SESSION_KILLED, SESSION_KILLED_REASON)
            return None
        if isinstance(message, Associate):
            conn = self.table.get(message.conn_id)
            if conn is not None and not conn.closed:
                self._authenticated(conn, message.sessions, message.expires_at)
            return None
        if isinstance(message, Lookup):
            conn = self.table.get(message.conn_id)
            return conn if conn is not None and not conn.closed else None
        if isinstance(message, Count):
            counts = {"sse": 0, "ws": 0, "longpolling": 0}
            for conn in self.table.values():
                counts[conn.transport] += 1
            return counts
        if isinstance(message, Drain):
            for conn in list(self.table.values()):
                retry = message.retry_ms + random.randint(0, message.jitter_ms)
                try:
                    conn.actor_ref.tell(Goodbye(retry))
                except ActorDeadError:
                    pass
            return len(self.table)
        if isinstance(message, _Tick):
            if message.job == "heartbeat":
                self._heartbeat()
            elif message.job == "expiry":
                self._expire()
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
            elif isinstance(conn, LongPollSession) and conn.killed:
                conn.close(conn.killed)  # killed, and its client did not poll for the news

    # -- sessions and token expiry --------------------------------------------------

    def _authenticated(
        self, conn: ClientActor, sessions: tuple[str, ...], expires_at: float | None
    ) -> None:
        if sessions:
            self.sessions.join(conn, sessions)
        if expires_at is not None:
            self.sessions.expire_at(conn, expires_at)
            self._arm_expiry()
        # The blacklisting may have happened after the request's token was
        # checked and before this message: it must not miss the connection.
        if self._blacklisted is not None and any(self._blacklisted(s) for s in sessions):
            self._end(conn, SESSION_KILLED, SESSION_KILLED_REASON)

    def _end(self, conn: ClientActor, event_type: str, ws_reason: str) -> None:
        try:
            conn.actor_ref.tell(Kill(event_type, ws_reason))
        except ActorDeadError:
            pass  # it is ending anyway

    def _expire(self) -> None:
        if self._expiry_timer is not None:  # it fired; a new one is armed below
            self._expiry_timer.close()
            self._expiry_timer = None
        self._expiry_due = None
        for conn in self.sessions.pop_due(time.time()):
            if not conn.closed:
                self._end(conn, SESSION_EXPIRED, SESSION_EXPIRED_REASON)
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        """One timer, for the earliest deadline; re-armed only when that changes."""
        due = self.sessions.next_due()
        if due == self._expiry_due:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.close()
            self._expiry_timer = None
        self._expiry_due = due
        if due is None:
            return
        loop = gevent.get_hub().loop
        loop.update_now()  # the loop's cached time may be stale after a busy turn
        self._expiry_timer = loop.timer(max(0.0, due - time.time()))
        self._expiry_timer.start(self._tick, "expiry")

    def on_stop(self) -> None:
        self._shutdown("supervisor stopped")

    def on_failure(self, exc: BaseException) -> None:
        self._shutdown("supervisor crashed")

    def _shutdown(self, reason: str) -> None:
        for timer in self._timers:
            timer.close()
        self._timers.clear()
        if self._expiry_timer is not None:
            self._expiry_timer.close()
            self._expiry_timer = None
        self.sessions.clear()
        table, self.table = self.table, {}
        self.open_by_transport = dict.fromkeys(self.open_by_transport, 0)
        for conn in table.values():
            conn.close(reason)
