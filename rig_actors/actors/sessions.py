"""Which connections belong to which session, and when their tokens expire.

The connection supervisor owns one :class:`SessionIndex` (it is only used
from the supervisor's greenlet, so it needs no locking):

- **Sessions.** A connection opened with a JWT, or given one by a
  subscriptions PUT, belongs to the session its ``JWT_SESSION_FIELD`` claim
  names. Blacklisting a session takes its members out in O(members)
  (:meth:`SessionIndex.take`), whatever the number of connections.
- **Expiry.** A connection opened with a JWT lives until that token's
  ``exp`` (the latest PUT's token replaces it). The deadlines sit in one
  heap; the supervisor runs a single timer for the earliest one and, when
  it fires, pops what is due (:meth:`SessionIndex.pop_due`). No timer per
  connection, no periodic scan of all connections. Entries whose deadline
  was replaced, or whose connection ended, are skipped when they surface
  and swept out when they outnumber the live ones.

Example::

    >>> index = SessionIndex()
    >>> index.join(conn, ("alice",))
    >>> index.expire_at(conn, time.time() + 60)
    >>> index.take("alice") == [conn]
    True
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["SESSION_EXPIRED", "SESSION_KILLED", "SessionIndex"]

#: Event type (SSE, long-polling) and WebSocket close reason of a blacklisted session.
SESSION_KILLED = "rig.session_killed"
SESSION_KILLED_REASON = "Session killed."
#: The same for a connection whose token expired (not in RIG).
SESSION_EXPIRED = "rig.session_expired"
SESSION_EXPIRED_REASON = "Session expired."


class SessionIndex:
    """Session membership and token deadlines of connections (any hashable objects)."""

    def __init__(self) -> None:
        self._members: dict[str, dict[Any, None]] = {}
        self._sessions_of: dict[Any, tuple[str, ...]] = {}
        self._deadline: dict[Any, float] = {}
        # (deadline, tie-breaker, connection): the counter keeps connections
        # from ever being compared.
        self._heap: list[tuple[float, int, Any]] = []
        self._counter = itertools.count()

    # -- sessions -------------------------------------------------------------------

    def join(self, conn: Hashable, sessions: Iterable[str]) -> None:
        """Add ``conn`` to each of ``sessions``."""
        joined = self._sessions_of.get(conn, ())
        for name in sessions:
            self._members.setdefault(name, {})[conn] = None
            if name not in joined:
                joined += (name,)
        if joined:
            self._sessions_of[conn] = joined

    def take(self, name: str) -> list[Any]:
        """Remove session ``name`` and return its members."""
        members = list(self._members.pop(name, ()))
        for conn in members:
            rest = tuple(n for n in self._sessions_of.get(conn, ()) if n != name)
            if rest:
                self._sessions_of[conn] = rest
            else:
                self._sessions_of.pop(conn, None)
        return members

    def members(self, name: str) -> list[Any]:
        return list(self._members.get(name, ()))

    # -- deadlines ------------------------------------------------------------------

    def expire_at(self, conn: Hashable, deadline: float) -> None:
        """``conn``'s token expires at ``deadline`` (epoch seconds); replaces an earlier one."""
        self._deadline[conn] = deadline
        heapq.heappush(self._heap, (deadline, next(self._counter), conn))

    def next_due(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap and self._deadline.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # replaced, or its connection left
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Any]:
        """Connections whose deadline is at or before ``now``; they are forgotten."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, conn = heapq.heappop(heap)
            if self._deadline.get(conn) == deadline:
                del self._deadline[conn]
                due.append(conn)
        return due

    # -- leaving --------------------------------------------------------------------

    def leave(self, conn: Hashable) -> None:
        """Forget ``conn`` (it ended)."""
        for name in self._sessions_of.pop(conn, ()):
            members = self._members.get(name)
            if members is not None:
                members.pop(conn, None)
                if not members:
                    del self._members[name]
        if self._deadline.pop(conn, None) is not None and len(self._heap) > 64 + 2 * len(
            self._deadline
        ):
            # Mostly stale entries: rebuild, O(live) amortised over the leaves.
            self._heap = [e for e in self._heap if self._deadline.get(e[2]) == e[0]]
            heapq.heapify(self._heap)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def stats(self) -> dict[str, int]:
        return {"sessions": len(self._members), "deadlines": len(self._deadline)}
