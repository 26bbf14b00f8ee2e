"""The subscription registry: one actor that owns the subscription index.

It answers "which connections want this event" and delivers: for each
published event it matches once, builds the frames at most once per
transport (:class:`EventFrames`) and offers them to every matching
connection actor. Messages to it are processed in order, so a connection
whose ``rig.subscriptions_set`` event has been queued (the registry queues it
right after indexing) receives every matching event published after it.

The index lives only here; connection actors own their subscriptions and
send them again when a restarted registry asks (:class:`Reregister`), so a
crash of the registry loses no subscription.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent

from ..events.cloudevent import CloudEvent, new_rig_event
from ..events.replay_ids import replay_id
from ..kafka.positions import decode as decode_positions
from ..kafka.positions import encode as encode_positions
from ..subscriptions import Extractors, Subscription, SubscriptionIndex
from .connection import ClientActor, Crash, EventFrames, Reregister
from .core import Actor, ActorDeadError, ActorRef
from .outbox import Outbox

# (start positions, stop positions, wants(event)) -> (found (id, event), gap)
KafkaReplay = Callable[
    [dict[tuple[int, int], int], dict[tuple[int, int], int], Callable[[CloudEvent], bool]],
    tuple[list[tuple[str, CloudEvent]], "dict[str, Any] | None"],
]

__all__ = [
    "History",
    "Publish",
    "ReplayDone",
    "Stats",
    "Subscribe",
    "SubscriptionRegistry",
    "Unsubscribe",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Index ``conn``'s subscriptions (replacing its previous set)."""

    conn: ClientActor
    subscriptions: tuple[Subscription, ...]
    announce: bool = True
    replay_from: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    conn: ClientActor


@dataclass(frozen=True, slots=True)
class Publish:
    """Deliver these events, in order (a Kafka poll hands over a batch).

    Events from Kafka come with their ids (Kafka positions, valid on every
    worker) and the positions after the batch; others get local ids.
    """

    events: tuple[CloudEvent, ...]
    ids: tuple[str, ...] = ()
    positions: dict[tuple[int, int], int] | None = None
    # Per event: ((topic index, partition), offset) it was read at.
    origins: tuple[tuple[tuple[int, int], int], ...] = ()


@dataclass(frozen=True, slots=True)
class ReplayDone:
    """The Kafka replay for ``conn`` finished: release it, replay first."""

    conn: ClientActor
    found: list[tuple[str, CloudEvent]]
    gap: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Stats:
    """Ask for counts: ``{"connections": ..., "subscriptions": ..., ...}``."""


class History:
    """The last events this registry delivered, for replay after a reconnect.

    Bounded in count and in age. Ids are ``<epoch>-<seq>``: the epoch is new
    with every registry (a restart, another worker), so an id from elsewhere
    is recognised as unknown instead of being mistaken for a local one.

    >>> h = History(size=2, max_age_s=60)
    >>> first = h.add("a"); second = h.add("b"); third = h.add("c")
    >>> missed, gap = h.since(first)
    >>> [event for _, event in missed], gap is None
    (['b', 'c'], True)
    """

    __slots__ = ("_events", "_seq", "epoch", "max_age_s")

    def __init__(self, size: int, max_age_s: float) -> None:
        self.epoch = secrets.token_hex(4)
        self.max_age_s = max_age_s
        self._events: deque[tuple[int, float, Any]] = deque(maxlen=size)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: Any) -> str:
        self._seq += 1
        now = time.monotonic()
        events = self._events
        events.append((self._seq, now, event))
        while events and now - events[0][1] > self.max_age_s:
            events.popleft()
        return self.last_id

    @property
    def last_id(self) -> str:
        """The id a client stands at once it has every event added so far."""
        return f"{self.epoch}-{self._seq}"

    def since(self, last_id: str) -> tuple[list[tuple[str, Any]], dict[str, Any] | None]:
        """Events after ``last_id`` (with their ids), and a gap report or None."""
        epoch, _, seq_text = last_id.rpartition("-")
        events = self._events
        now = time.monotonic()
        while events and now - events[0][1] > self.max_age_s:
            events.popleft()
        if epoch != self.epoch or not seq_text.isdigit() or int(seq_text) > self._seq:
            return [], {
                "last_event_id": last_id,
                "reason": "unknown id: issued by another worker or before a restart",
                "resumed_at": f"{self.epoch}-{self._seq}",
            }
        after = int(seq_text)
        oldest = events[0][0] if events else self._seq + 1
        gap = None
        if after + 1 < oldest:
            gap = {
                "last_event_id": last_id,
                "reason": "too old: the missed events are no longer held",
                "missed": oldest - after - 1,
                "resumed_at": f"{self.epoch}-{oldest - 1}",
            }
        return [(f"{self.epoch}-{seq}", e) for seq, _, e in events if seq > after], gap


class SubscriptionRegistry(Actor):
    """See the module docstring."""

    def __init__(
        self,
        extractors: Extractors,
        live_connections: Callable[[], Iterable[ClientActor]],
        history_size: int = 10000,
        history_age_s: float = 300.0,
        outbox: Outbox | None = None,
        kafka_replay: KafkaReplay | None = None,
        ws_event_ids: bool = True,
    ) -> None:
        super().__init__()
        self.index = SubscriptionIndex(extractors)
        self.extractors = extractors
        self.history = History(history_size, history_age_s)
        # With Kafka: ids are Kafka positions, replay reads Kafka, and
        # ``positions`` is where the live stream stands.
        self._kafka_replay = kafka_replay
        self.positions: dict[tuple[int, int], int] = {}
        self._live_connections = live_connections
        self.events = 0
        self.deliveries = 0
        self.replayed = 0
        # Plain ints, read by the metrics sampler (no metric call per event).
        self.forwarded: dict[str, int] = {}
        self.outbox = outbox
        # ws_event_ids: WebSocket frames carry the replay id (rigeventid).
        self.ws_event_ids = ws_event_ids

    @classmethod
    def start_linked(cls, exit_to: Callable[..., None], **kwargs: Any) -> ActorRef:
        return cls(**kwargs)._begin(exit_to)

    def on_start(self) -> None:
        # A fresh registry (first start or restart) starts empty: every live
        # connection sends its subscriptions again.
        for conn in list(self._live_connections()):
            try:
                conn.actor_ref.tell(Reregister())
            except ActorDeadError:
                pass

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Publish):
            if message.positions is not None:
                self.positions = message.positions
            if message.ids:
                return sum(map(self._publish, message.events, message.ids, message.origins))
            return sum(self._publish(event) for event in message.events)
        if isinstance(message, ReplayDone):
            ws_id = self.ws_event_ids
            first = [EventFrames(event, event_id, ws_id=ws_id) for event_id, event in message.found]
            if message.gap is not None:
                first.insert(0, EventFrames(new_rig_event("rig.replay_gap", message.gap)))
            self.replayed += len(message.found)
            message.conn.release(first)
            return None
        if isinstance(message, Subscribe):
            self._subscribe(message)
            return None
        if isinstance(message, Unsubscribe):
            self.index.remove(message.conn)
            return None
        if isinstance(message, Stats):
            return {
                "connections": self.index.owners(),
                "subscriptions": self.index.rows(),
                "event_types": self.index.event_types(),
                "events": self.events,
                "deliveries": self.deliveries,
                "replayed": self.replayed,
                "history": len(self.history),
            }
        if isinstance(message, Crash):
            raise RuntimeError("crash injected into the registry")
        return super().on_receive(message)

    def _subscribe(self, message: Subscribe) -> None:
        conn = message.conn
        if conn.closed:
            return  # it ended while the message was queued; don't resurrect it
        self.index.replace(conn, message.subscriptions)
        if message.announce:
            data = [sub.to_json() for sub in message.subscriptions]
            # Every later event reaches the connection, so the stream's position
            # now is a resume point (for the long-polling cursor). Not while a
            # replay is owed: that position is ahead of what the client has.
            resume_id = self._position() if message.replay_from is None else None
            event = new_rig_event("rig.subscriptions_set", data)
            conn.offer_event(EventFrames(event, resume_id=resume_id))
        if message.replay_from is not None:
            self._replay(conn, message.subscriptions, replay_id(message.replay_from))

    def _replay(
        self, conn: ClientActor, subscriptions: tuple[Subscription, ...], last_id: str
    ) -> None:
        """Offer ``conn`` the events after ``last_id`` it subscribes to, in order.

        Runs inside the registry's turn, before any later event, so the
        replayed events and the live ones that follow join without a gap or
        a duplicate. What cannot be replayed is said, never skipped silently:
        a ``rig.replay_gap`` event tells what was lost.
        """
        start = decode_positions(last_id)
        if start is not None and self._kafka_replay is not None:
            self._replay_kafka(conn, subscriptions, last_id, start)
            return
        missed, gap = self.history.since(last_id)
        if gap is not None:
            # The client stands where the gap ends.
            notice = EventFrames(new_rig_event("rig.replay_gap", gap), resume_id=gap["resumed_at"])
            conn.offer_event(notice)
        if not missed:
            return
        wants = self._wants(conn, subscriptions)
        ws_id = self.ws_event_ids
        for event_id, event in missed:
            if wants(event):
                conn.offer_event(EventFrames(event, event_id, ws_id=ws_id))
                self.replayed += 1

    def _position(self) -> str | None:
        """The id of where the live stream stands: the newest event delivered.

        ``None`` with Kafka before the events reader has reported a position.
        """
        if self._kafka_replay is None:
            return self.history.last_id
        return encode_positions(self.positions) if self.positions else None

    def _wants(
        self, conn: ClientActor, subscriptions: tuple[Subscription, ...]
    ) -> Callable[[CloudEvent], bool]:
        """Whether ``conn`` (with these subscriptions) wants an event, by the same
        matching as live delivery: an index holding just this connection."""
        solo = SubscriptionIndex(self.extractors)
        solo.replace(conn, subscriptions)
        return lambda event: bool(solo.match(event.type, event.attrs))

    def _replay_kafka(
        self,
        conn: ClientActor,
        subscriptions: tuple[Subscription, ...],
        last_id: str,
        start: dict[tuple[int, int], int],
    ) -> None:
        """Replay from Kafka in a greenlet; live events wait on the connection.

        The connection holds what is delivered live from now on; the replay
        reads up to where the live stream stands now; then the replayed
        events go out first and the held ones after: no gap, no duplicate.
        """
        assert self._kafka_replay is not None
        kafka_replay = self._kafka_replay
        wants = self._wants(conn, subscriptions)
        stop = dict(self.positions)
        # This worker's live stream may be behind the client (another worker
        # was ahead, or a fresh worker started before the true end): what the
        # client already has must not come again.
        conn.skip_until(start)
        conn.hold()
        me = self.actor_ref

        def run() -> None:
            try:
                found, gap = kafka_replay(start, stop, wants)
            except Exception as exc:  # the broker, a timeout: tell the client
                log.warning("replay for %r failed: %s", conn, exc)
                found, gap = [], {"last_event_id": last_id, "reason": f"replay failed: {exc}"}
            try:
                me.tell(ReplayDone(conn, found, gap))
            except ActorDeadError:
                conn.release([])  # the registry is restarting; go live at least

        gevent.spawn(run)

    def _publish(
        self,
        event: CloudEvent,
        event_id: str | None = None,
        origin: tuple[tuple[int, int], int] | None = None,
    ) -> int:
        self.events += 1
        if event_id is None:
            event_id = self.history.add(event)
        owners = self.index.match(event.type, event.attrs)
        if not owners:
            return 0
        frames = EventFrames(event, event_id, origin, ws_id=self.ws_event_ids)
        for conn in owners:
            conn.offer_event(frames)
        self.deliveries += len(owners)
        forwarded = self.forwarded
        forwarded[event.type] = forwarded.get(event.type, 0) + 1
        if self.outbox is not None:
            self.outbox.carried_event()  # the flush pass measures delivery latency
        return len(owners)
