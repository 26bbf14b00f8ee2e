"""The session blacklist (RIG §3.6, §6.5): revoke a session everywhere, at once.

A *session name* is the value at ``JWT_SESSION_FIELD`` (default ``/jti``)
in a token's claims. Blacklisting a name for ``validityInSeconds``:

1. adds ``name -> expiry`` to this worker's :class:`SessionBlacklist`;
2. kills every connection of that session this worker holds (SSE gets
   ``rig.session_killed`` then EOF, WebSocket a close frame, a long-polling
   session its last answer), through the connection supervisor's session
   index (O(connections of that session), no scan);
3. with Kafka, tells every other worker and node the same: a record on the
   compacted ``KAFKA_BLACKLIST_TOPIC`` (key = name, value = the expiry) and
   a ``session_blacklist`` broadcast on the control channel. Both lead to
   steps 1-2 on every worker. The broadcast is the fast path; the topic is
   the memory: every worker reads it *from the beginning* when it starts
   (:class:`BlacklistReader`), so a worker or node that starts later, or
   restarts, knows every live entry.

While the entry lives, :meth:`Blacklisting.check` rejects the session's
tokens: :meth:`~rig_actors.gateway.Gateway.verify_jwt` calls it, so new
connects, subscription PUTs, ``jwt_validation`` checks and secured proxy
endpoints all refuse them. The same configured field names the session
for the kill and for the check (RIG checks ``jti`` only, §15 item 7).

A worker with Kafka has not seen the blacklist until its reader has read
the topic to the end it had at start; until then every token is refused
("session blacklist not loaded yet"). Start-up waits for that (normally a
few milliseconds), so only a worker that starts while Kafka is unreachable
refuses tokens, until Kafka is back.

Record value on the topic (UTF-8 JSON; a record with a later expiry for the
same key replaces the earlier one, so compaction keeps the right one)::

    {"v": 1, "sessionId": "<name>", "expiresAt": <epoch seconds>}

Example::

    >>> blacklist = SessionBlacklist()
    >>> blacklist.add("alice", time.time() + 60) > time.time()
    True
    >>> "alice" in blacklist, "bob" in blacklist
    (True, False)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.socket
from gevent.event import Event
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ..config import Settings
from ..kafka.clients import common_options
from ..kafka.control import ControlBus
from ..kafka.producer import ProduceError, Producer
from ..kafka.reader import TopicReader
from .jwt import JwtError

__all__ = ["BlacklistReader", "Blacklisting", "SessionBlacklist"]

log = logging.getLogger(__name__)

CONTROL_KIND = "session_blacklist"


class SessionBlacklist:
    """Session name -> expiry (epoch seconds); an entry counts while its expiry is ahead.

    Re-adding a name keeps the later expiry (RIG: re-adding extends). Expired
    entries are dropped as the table grows, so its size follows the live
    entries, not the history.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, float] = {}
        self._clock = clock
        self._purge_at = 1024
        self.added = 0  # entries ever added or extended (RIG's _total metric)

    def add(self, name: str, expires_at: float) -> float:
        """Add or extend an entry; returns the entry's expiry."""
        expires_at = max(expires_at, self._entries.get(name, 0.0))
        self._entries[name] = expires_at
        self.added += 1
        if len(self._entries) >= self._purge_at:
            self.purge()
            self._purge_at = max(1024, 2 * len(self._entries))
        return expires_at

    def expiry(self, name: str) -> float | None:
        """The entry's expiry, or None if ``name`` is not blacklisted (now)."""
        expires_at = self._entries.get(name)
        if expires_at is None:
            return None
        if expires_at <= self._clock():
            del self._entries[name]
            return None
        return expires_at

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.expiry(name) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def live(self) -> int:
        """Entries whose expiry is still ahead."""
        now = self._clock()
        return sum(1 for expires_at in self._entries.values() if expires_at > now)

    def purge(self) -> None:
        now = self._clock()
        self._entries = {n: e for n, e in self._entries.items() if e > now}


class Blacklisting:
    """This worker's part of the cluster-wide blacklist; see the module docstring.

    ``kill(name)`` ends this worker's connections of session ``name``.
    Without ``producer``/``control`` (no Kafka) the blacklist is local and
    loaded from the start.
    """

    def __init__(
        self,
        settings: Settings,
        kill: Callable[[str], None],
        *,
        producer: Producer | None = None,
        control: ControlBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.entries = SessionBlacklist(clock)
        self.topic = settings.kafka_blacklist_topic
        self._brokers = settings.kafka_brokers
        self._kill = kill
        self._producer = producer
        self._control = control
        self._clock = clock
        self.loaded = Event()
        if producer is None:
            self.loaded.set()
        if control is not None:
            control.register(CONTROL_KIND, self._on_broadcast)

    # -- what the HTTP layer uses ---------------------------------------------------

    def blacklist(self, name: str, validity_s: float) -> float:
        """Blacklist ``name`` for ``validity_s`` seconds on every worker; returns the expiry.

        Applied here first, so this worker kills and refuses at once. Raises
        :class:`~rig_actors.kafka.producer.ProduceError` when Kafka did not
        store the entry (the other workers may not know it then).
        """
        expires_at = self.apply(name, self._clock() + validity_s)
        if self._producer is None:
            return expires_at
        body = {"v": 1, "sessionId": name, "expiresAt": expires_at}
        # Both sends wait for the brokers; in parallel, the answer waits for
        # the slower one only.
        stored = gevent.spawn(
            self._producer.send, self.topic, json.dumps(body).encode(), key=name.encode()
        )
        told = None
        if self._control is not None:
            told = gevent.spawn(self._control.send, "*", CONTROL_KIND, body)
        gevent.joinall([g for g in (stored, told) if g is not None])
        if told is not None and not told.successful():
            # The record still reaches every worker through its reader.
            log.warning("session blacklist broadcast not sent: %s", told.exception)
        if not stored.successful():
            error = stored.exception
            raise error if isinstance(error, ProduceError) else ProduceError(str(error))
        return expires_at

    def apply(self, name: str, expires_at: float) -> float:
        """Record an entry (from anywhere) and kill this worker's connections of it."""
        if expires_at <= self._clock():
            return expires_at  # an old record read at start: nothing to do
        expires_at = self.entries.add(name, expires_at)
        self._kill(name)
        return expires_at

    def is_blacklisted(self, name: str) -> bool:
        return name in self.entries

    def check(self, sessions: Iterable[str]) -> None:
        """Raise :class:`JwtError` if any of ``sessions`` is blacklisted.

        Also while the blacklist has not been read from Kafka yet: a token
        is not known to be valid until then.
        """
        if not self.loaded.is_set():
            raise JwtError("session blacklist not loaded yet")
        for name in sessions:
            if name in self.entries:
                raise JwtError("session is blacklisted")

    def wait_loaded(self, timeout: float, reader_state: Callable[[], str]) -> bool:
        """Wait (cooperatively) until loaded, Kafka is found unreachable, or ``timeout``."""
        deadline = time.monotonic() + timeout
        # No broker takes a TCP connection: the Kafka clients would only find
        # out after their bootstrap timeouts; start serving now instead.
        if not self.loaded.is_set() and not _any_reachable(self._brokers):
            deadline = 0.0
        while not self.loaded.is_set() and time.monotonic() < deadline:
            if reader_state() == "disconnected":
                break
            self.loaded.wait(0.01)
        if not self.loaded.is_set():
            log.warning(
                "session blacklist not read from Kafka yet: tokens are refused until it is"
            )
        return self.loaded.is_set()

    # -- receiving ------------------------------------------------------------------

    def _on_broadcast(self, body: dict[str, Any], sender: str) -> None:
        entry = _entry(body)
        if entry is not None:
            self.apply(*entry)

    def on_record(self, value: bytes | None) -> None:
        """One record of the blacklist topic (see :class:`BlacklistReader`)."""
        if value is None:
            return  # a tombstone
        try:
            body = json.loads(value)
        except (TypeError, ValueError, RecursionError):
            log.warning("undecodable session blacklist record skipped")
            return
        entry = _entry(body) if isinstance(body, dict) else None
        if entry is not None:
            self.apply(*entry)


def _any_reachable(brokers: Iterable[str], timeout: float = 0.5) -> bool:
    for broker in brokers:
        host, _, port = broker.rpartition(":")
        address = (host.strip("[]") or broker, int(port) if port.isdigit() else 9092)
        try:
            gevent.socket.create_connection(address, timeout).close()
        except (OSError, ValueError):
            continue
        return True
    return False


def _entry(body: dict[str, Any]) -> tuple[str, float] | None:
    name, expires_at = body.get("sessionId"), body.get("expiresAt")
    if not isinstance(name, str) or not name:
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        return None
    return name, float(expires_at)


class BlacklistReader(TopicReader):
    """Reads ``KAFKA_BLACKLIST_TOPIC`` from its beginning, then follows it.

    Creates the topic (``cleanup.policy=compact``, one partition) if it is
    missing, and sets ``blacklisting.loaded`` once it has read up to the end
    offsets the topic had when the reader connected.
    """

    def __init__(self, settings: Settings, client_id: str, blacklisting: Blacklisting) -> None:
        super().__init__(
            settings, (settings.kafka_blacklist_topic,), client_id, from_beginning=True
        )
        self.blacklisting = blacklisting
        self._targets: dict[TopicPartition, int] = {}

    def handle(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            self.blacklisting.on_record(record.value)

    def _connect(self) -> None:
        self._ensure_topic()
        super()._connect()
        consumer = self._consumer
        if consumer is None:
            return  # failed; TopicReader retries later
        self._targets = {}
        self._check_loaded(consumer)

    def _poll(self) -> None:
        super()._poll()
        consumer = self._consumer
        if consumer is not None and not self.blacklisting.loaded.is_set():
            self._check_loaded(consumer)

    def _check_loaded(self, consumer: KafkaConsumer) -> None:
        if self.blacklisting.loaded.is_set() or not self._assigned:
            return
        if not self._targets:
            # Where the topic ended when we started reading: "loaded" means
            # read up to there.
            try:
                self._targets = consumer.end_offsets(list(self._assigned), timeout_ms=5000)
            except Exception as exc:  # asked again after the next poll
                log.warning("blacklist end offsets unavailable: %s", exc)
                return
        if all(consumer.position(tp) >= end for tp, end in self._targets.items()):
            log.info("session blacklist loaded: %d live entries", len(self.blacklisting.entries))
            self.blacklisting.loaded.set()

    def _ensure_topic(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        try:
            admin = KafkaAdminClient(**common_options(self.settings, f"{self.client_id}-admin"))
        except Exception as exc:  # unreachable: the connect below fails and retries
            log.debug("blacklist topic check skipped: %s", exc)
            return
        try:
            if self.topics[0] in admin.list_topics():
                return
            # One partition: the blacklist is small and read whole by every
            # worker. The broker's default replication factor (-1).
            topic = NewTopic(
                self.topics[0],
                num_partitions=1,
                replication_factor=-1,
                topic_configs={"cleanup.policy": "compact"},
            )
            admin.create_topics([topic])
            log.info("created the session blacklist topic %s", self.topics[0])
        except TopicAlreadyExistsError:
            pass  # another worker was faster
        except Exception as exc:  # e.g. no permission: someone else must create it
            log.warning("could not create the blacklist topic %s: %s", self.topics[0], exc)
        finally:
            admin.close()
        # A new topic's partitions take a moment to appear in the metadata.
        deadline = time.monotonic() + 5
        probe = KafkaConsumer(**_probe_options(self.settings, self.client_id))
        try:
            while time.monotonic() < deadline and not probe.partitions_for_topic(self.topics[0]):
                gevent.sleep(0.05)
                probe.topics()  # refresh the metadata
        finally:
            probe.close()


def _probe_options(settings: Settings, client_id: str) -> dict[str, Any]:
    return {**common_options(settings, f"{client_id}-probe"), "group_id": None}
