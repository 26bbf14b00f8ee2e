"""The flush queue behind the delivery fast path.

Delivering an event hands prepared bytes to each matching connection actor
(:meth:`Connection.offer`), which only appends them to its outbound buffer
and marks itself here. The writes happen in one pass after the dispatching
greenlet yields: by then every event that was queued in the meantime has
been offered too, so a connection that received ten events makes one
``send`` of ten frames. The kernel's cost is per ``send``, not per event,
which is why this pass (and not a greenlet or a queue per connection) is
the hot path.

Under load the window widens on its own, up to ``coalesce_ms``: when a
pass is due again sooner after the last one ended than that pass took (the
gateway is writing more than it is waiting), the writes wait for half the
last pass's duration, at most ``coalesce_ms``, so the events arriving
meanwhile share one ``send`` per connection. The kernel's cost is per
``send``; a serial publisher bursting to 10k subscribers makes one event
per pass without this, a handful with it. A lightly loaded gateway (the
next event comes after the last pass had long ended) writes at once, so
its latency does not change. ``coalesce_ms`` 0 turns it off.

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
        "_dirty",
        "_last_cost",
        "_last_end",
        "_loop",
        "_max_delay",
        "_scheduled",
        "_since",
        "coalesced_passes",
        "flush_passes",
        "latency",
    )

    def __init__(self, coalesce_ms: int = 0) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._max_delay = coalesce_ms / 1000.0
        self._loop = gevent.get_hub().loop
        self.flush_passes = 0
        self.coalesced_passes = 0  # passes that waited for more events
        self._since = 0.0
        self._last_end = 0.0
        self._last_cost = 0.0
        self._carries_event = False
        self.latency = LatencySamples()

    def mark(self, conn: Flushable) -> None:
        """Queue ``conn`` for the next flush pass (the caller dedupes)."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            now = self._since = time.perf_counter()
            if self.delay_at(now):
                # The wait starts once the dispatching greenlet yields: a
                # registry turn offering one event to 10k connections takes
                # longer than the window, which would then have closed
                # before the next event could be read.
                self._loop.run_callback(self._start_window)
            else:
                self._loop.run_callback(self.flush)

    def _start_window(self) -> None:
        delay = self.delay_at(time.perf_counter())
        if not delay:
            self.flush()
            return
        self.coalesced_passes += 1
        timer = self._loop.timer(delay)
        timer.start(self._flush_timer, timer)

    def delay_at(self, now: float) -> float:
        """How long a pass scheduled at ``now`` waits (seconds); see the module docstring.

        Example::

            >>> outbox = Outbox(coalesce_ms=10)
            >>> outbox.delay_at(1.0)  # nothing written yet: no load
            0.0
            >>> outbox._last_end, outbox._last_cost = 1.0, 0.008
            >>> outbox.delay_at(1.001), outbox.delay_at(1.05)  # busy, then idle
            (0.004, 0.0)
        """
        cost = self._last_cost
        if not self._max_delay or now - self._last_end >= cost:
            return 0.0
        return min(self._max_delay, cost / 2)

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
        start = time.perf_counter()
        for conn in dirty:
            try:
                conn.flush()
            except Exception as exc:
                conn.crash(exc)
        end = self._last_end = time.perf_counter()
        self._last_cost = end - start
        if measured:
            self.latency.add(end - since)
