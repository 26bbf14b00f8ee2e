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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..events.cloudevent import CloudEvent, new_rig_event
from ..subscriptions import Extractors, Subscription, SubscriptionIndex
from .connection import ClientActor, Crash, EventFrames, Reregister
from .core import Actor, ActorDeadError, ActorRef

__all__ = ["Publish", "Stats", "Subscribe", "SubscriptionRegistry", "Unsubscribe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Index ``conn``'s subscriptions (replacing its previous set)."""

    conn: ClientActor
    subscriptions: tuple[Subscription, ...]
    announce: bool = True


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    conn: ClientActor


@dataclass(frozen=True, slots=True)
class Publish:
    """Deliver these events, in order (a Kafka poll hands over a batch)."""

    events: tuple[CloudEvent, ...]


@dataclass(frozen=True, slots=True)
class Stats:
    """Ask for counts: ``{"connections": ..., "subscriptions": ..., ...}``."""


class SubscriptionRegistry(Actor):
    """See the module docstring."""

    def __init__(
        self,
        extractors: Extractors,
        live_connections: Callable[[], Iterable[ClientActor]],
    ) -> None:
        super().__init__()
        self.index = SubscriptionIndex(extractors)
        self._live_connections = live_connections
        self.events = 0
        self.deliveries = 0

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
            return sum(self._publish(event) for event in message.events)
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
            conn.offer_event(EventFrames(new_rig_event("rig.subscriptions_set", data)))

    def _publish(self, event: CloudEvent) -> int:
        self.events += 1
        owners = self.index.match(event.type, event.attrs)
        if not owners:
            return 0
        frames = EventFrames(event)
        for conn in owners:
            conn.offer_event(frames)
        self.deliveries += len(owners)
        return len(owners)
