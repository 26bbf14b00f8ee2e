"""The flush queue behind the delivery fast path.

Delivering an event hands prepared bytes to each matching connection actor
(:meth:`Connection.offer`), which only appends them to its outbound buffer
and marks itself here. The writes happen in one pass after the dispatching
greenlet yields: by then every event that was queued in the meantime has
been offered too, so a connection that received ten events makes one
``send`` of ten frames. The kernel's cost is per ``send``, not per event,
which is why this pass (and not a greenlet or a queue per connection) is
the hot path.

``coalesce_ms`` > 0 widens the window on purpose: writes wait up to that
long so that bursts from several publishers share a ``send`` too, at that
much added latency.
"""

from __future__ import annotations

import logging
from typing import Protocol

import gevent

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...

    def crash(self, exc: BaseException) -> None: ...


class Outbox:
    """Connections with bytes waiting, flushed together."""

    __slots__ = ("_delay", "_dirty", "_loop", "_scheduled", "flush_passes")

    def __init__(self, coalesce_ms: int = 0) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._delay = coalesce_ms / 1000.0
        self._loop = gevent.get_hub().loop
        self.flush_passes = 0

    def mark(self, conn: Flushable) -> None:
        """Queue ``conn`` for the next flush pass (the caller dedupes)."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            if self._delay:
                timer = self._loop.timer(self._delay)
                timer.start(self._flush_timer, timer)
            else:
                self._loop.run_callback(self.flush)

    def _flush_timer(self, timer: object) -> None:
        timer.close()  # type: ignore[attr-defined]
        self.flush()

    def flush(self) -> None:
        """Write out every marked connection; runs in the hub, never blocks."""
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self.flush_passes += 1
        for conn in dirty:
            try:
                conn.flush()
            except Exception as exc:
                conn.crash(exc)
