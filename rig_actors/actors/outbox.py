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

The pass also measures delivery latency without per-delivery work: the
first ``mark`` of a pass takes the time, the registry says when the pass
carries an event (:meth:`Outbox.carried_event`, once per event), and the
flush adds "first mark to last write" to a bounded uniform sample
(:class:`LatencySamples`) that the metrics sampler drains once a second.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Protocol

import gevent

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...

    def crash(self, exc: BaseException) -> None: ...


class LatencySamples:
    """A uniform sample of at most ``cap`` values between two drains.

    Reservoir sampling: whatever the number of flush passes per second, the
    sampler folds at most ``cap`` values into the latency histogram, and
    each pass had the same chance to be among them.
    """

    __slots__ = ("cap", "seen", "values")

    def __init__(self, cap: int = 500) -> None:
        self.cap = cap
        self.seen = 0
        self.values: list[float] = []

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.cap:
            self.values.append(value)
        else:
            slot = random.randrange(self.seen)
            if slot < self.cap:
                self.values[slot] = value

    def drain(self) -> list[float]:
        values, self.values = self.values, []
        self.seen = 0
        return values


class Outbox:
    """Connections with bytes waiting, flushed together."""

    __slots__ = (
        "_carries_event",
        "_delay",
        "_dirty",
        "_loop",
        "_scheduled",
        "_since",
        "flush_passes",
        "latency",
    )

    def __init__(self, coalesce_ms: int = 0) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._delay = coalesce_ms / 1000.0
        self._loop = gevent.get_hub().loop
        self.flush_passes = 0
        self._since = 0.0
        self._carries_event = False
        self.latency = LatencySamples()

    def mark(self, conn: Flushable) -> None:
        """Queue ``conn`` for the next flush pass (the caller dedupes)."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._since = time.perf_counter()
            if self._delay:
                timer = self._loop.timer(self._delay)
                timer.start(self._flush_timer, timer)
            else:
                self._loop.run_callback(self.flush)

    def carried_event(self) -> None:
        """The registry offered an event in this pass: measure the pass."""
        if self._scheduled:  # an event only for long-polling sessions writes nothing
            self._carries_event = True

    def _flush_timer(self, timer: object) -> None:
        timer.close()  # type: ignore[attr-defined]
        self.flush()

    def flush(self) -> None:
        """Write out every marked connection; runs in the hub, never blocks."""
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self.flush_passes += 1
        measured, self._carries_event = self._carries_event, False
        since = self._since
        for conn in dirty:
            try:
                conn.flush()
            except Exception as exc:
                conn.crash(exc)
        if measured:
            self.latency.add(time.perf_counter() - since)
