"""Which workers are alive, from when each was last heard on the control topic.

Pure bookkeeping (the caller passes the time), used by
:class:`~rig_actors.kafka.control.ControlBus`. A worker hears its own
hellos come back through Kafka too; when they stop, it hears nobody (the
broker is away), and the others' silence proves nothing. So silence is
measured on a clock that stops while this worker is deaf, and the peers
that were alive when it went deaf get a fresh TTL when it hears again:
their hellos come back at about the same time as its own, not necessarily
first.

Without this, a broker outage longer than the TTL made every worker declare
the others gone: a long-poll through another worker started a new session
(the old one's events lost), a forwarded subscriptions PUT answered 410.
"""

from __future__ import annotations

__all__ = ["Peers"]


class Peers:
    """Last heard times (epoch s) of the workers, this one included."""

    def __init__(self, me: str, ttl_s: float, deaf_after_s: float) -> None:
        self.me = me
        self.ttl_s = ttl_s
        self.deaf_after_s = deaf_after_s
        self.seen: dict[str, float] = {}

    def heard(self, worker: str, now: float) -> float | None:
        """``worker`` was just heard. When it is this worker after a deaf
        spell, returns how long the spell lasted (else ``None``)."""
        spell = None
        heard_me = self.seen.get(self.me)
        if worker == self.me and heard_me is not None and now - heard_me > self.deaf_after_s:
            spell = now - heard_me
            went_deaf = heard_me + self.deaf_after_s
            for peer, seen in self.seen.items():
                if went_deaf - seen < self.ttl_s:
                    self.seen[peer] = now
        self.seen[worker] = now
        return spell

    def clock(self, now: float) -> float:
        """``now``, or the moment this worker went deaf while it is."""
        heard_me = self.seen.get(self.me)
        if heard_me is None:  # not heard itself yet (starting): plain time
            return now
        return min(now, heard_me + self.deaf_after_s)

    def alive(self, worker: str, now: float) -> bool:
        if worker == self.me:
            return True
        seen = self.seen.get(worker)
        return seen is not None and self.clock(now) - seen < self.ttl_s

    def recent(self, now: float) -> dict[str, float]:
        """The workers heard from within the TTL (this one too, once heard)."""
        clock = self.clock(now)
        return {w: t for w, t in self.seen.items() if clock - t < self.ttl_s}
