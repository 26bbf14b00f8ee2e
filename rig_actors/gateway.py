"""The composition root: one :class:`Gateway` per worker process.

It builds the supervision tree and holds what the HTTP layer needs::

    root (one-for-one, max 3 restarts in 5 s, escalates by exiting)
     ├── connections    ConnectionSupervisor: one temporary child per client
     ├── registry       SubscriptionRegistry: the subscription index
     ├── kafka-events   EventConsumer: KAFKA_SOURCE_TOPICS -> registry  (with Kafka)
     ├── kafka-control  ControlReader: the control channel               (with Kafka)
     ├── kafka-blacklist BlacklistReader: the session blacklist topic   (with Kafka)
     └── proxy-responses ResponseReader: PROXY_KAFKA_RESPONSE_TOPICS     (with Kafka)

With ``KAFKA_BROKERS`` set, Kafka is the fabric that makes many workers and
nodes one gateway: every event goes through the source topic, so every
worker delivers it to the connections it owns, and requests about a
connection another worker owns travel over the control channel.

Actors are created when :meth:`Gateway.start` runs, in the process that
serves requests (after gunicorn forks a worker), never at import time.

Example::

    >>> gateway = Gateway(load_settings(env={}))
    >>> gateway.start()
    >>> gateway.publish(parse_json_event(b'{"specversion":"1.0","id":"1","source":"s","type":"t"}'))
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from . import metrics, tracing
from .actors.connection import ConnectionContext
from .actors.connections import ConnectionSupervisor, Count, Drain, KillSession
from .actors.core import ActorDeadError, ActorRef, ExitNotice
from .actors.outbox import Outbox
from .actors.registry import Publish, SubscriptionRegistry
from .actors.supervisor import ChildSpec, Names, Supervisor
from .auth.blacklist import Blacklisting, BlacklistReader
from .auth.checks import AuthorizationCheck
from .auth.http import HttpPool
from .auth.jwks import JwksKeys
from .auth.jwt import JwtVerifier, session_names
from .auth.tokens import TokenCodec
from .config import Settings
from .events.cloudevent import CloudEvent, to_kafka_structured
from .kafka.control import ControlBus, ControlReader
from .kafka.events import EventConsumer
from .kafka.producer import Producer
from .kafka.replay import replay as kafka_replay
from .proxy.responses import ResponseReader
from .proxy.service import ProxyService
from .sampler import MetricsSampler
from .subscriptions import Extractors

__all__ = ["ConnectionRateLimit", "Gateway"]

log = logging.getLogger(__name__)


class ConnectionRateLimit:
    """A fixed 60-second window counter of new connections (RIG §2.8)."""

    __slots__ = ("_clock", "_count", "_window_start", "limit", "window_s")

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._count = 0

    def allow(self) -> bool:
        """Count one new connection; False once the window's limit is reached."""
        now = self._clock()
        if now - self._window_start >= self.window_s:
            self._window_start = now
            self._count = 0
        if self._count >= self.limit:
            return False
        self._count += 1
        return True


class Gateway:
    """Everything one worker process runs; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        on_escalate: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        # Says which worker owns a connection; goes into its token.
        self.worker_id = worker_id or f"{os.getpid():x}{secrets.token_hex(3)}"
        self.tokens = TokenCodec(settings.effective_node_cookie)
        # Outgoing HTTP of the auth layer (external checks, JWKS): pooled, bounded.
        self.http = HttpPool()
        check_timeout_s = settings.authorization_check_timeout_ms / 1000
        jwks = (
            JwksKeys(settings.jwt_jwks_url, settings.jwt_alg, self.http, timeout_s=check_timeout_s)
            if settings.jwt_jwks_url
            else None
        )
        self.jwt = JwtVerifier(
            settings.jwt_secret_key,
            settings.jwt_alg,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            jwks=jwks,
        )
        self.extractors = (
            Extractors.parse(settings.extractors) if settings.extractors else Extractors.empty()
        )
        self.rate_limit = ConnectionRateLimit(settings.max_connections_per_minute)
        self.names = Names()
        self.started_at = time.time()
        self._ids = itertools.count(1)
        self._on_escalate = on_escalate or _exit_process
        self.restarts = 0
        self.kafka_counters = {"consumed": 0, "failed": 0}
        self.producer: Producer | None = None
        self.control: ControlBus | None = None
        if settings.kafka_enabled:
            self.producer = Producer(settings, f"rig-{self.worker_id}")
            self.control = ControlBus(settings, self.worker_id, self.producer)
        self.blacklisting = Blacklisting(
            settings, self._kill_session, producer=self.producer, control=self.control
        )
        self.subscription_check = AuthorizationCheck(
            "subscription",
            settings.subscription_check,
            self.verify_jwt,
            http=self.http,
            timeout_s=check_timeout_s,
        )
        self.submission_check = AuthorizationCheck(
            "submission",
            settings.submission_check,
            self.verify_jwt,
            http=self.http,
            timeout_s=check_timeout_s,
        )
        self.outbox: Outbox | None = None
        self.context: ConnectionContext | None = None
        self.root: ActorRef | None = None
        self.sampler: MetricsSampler | None = None
        # The API gateway: route table (validated here: an invalid one stops
        # start-up with a ConfigError), reverse proxy, correlated responses.
        self.proxy = ProxyService(self)

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        if self.root is not None:
            return
        settings = self.settings
        self.outbox = Outbox(settings.coalesce_ms)
        self.context = ConnectionContext(
            names=self.names,
            outbox=self.outbox,
            cors=settings.cors,
            max_pending=settings.outbound_buffer_max_bytes,
            on_exit=self._connection_exited,
            lp_buffer_size=settings.longpolling_buffer_size,
            slow_policy=settings.slow_consumer_policy,
        )
        children = (
            ChildSpec(
                "connections",
                lambda exit_to: ConnectionSupervisor.start_linked(
                    exit_to,
                    heartbeat_s=settings.heartbeat_interval_ms / 1000,
                    lp_session_ttl_s=settings.longpolling_session_ttl_ms / 1000,
                    blacklisted=self.blacklisting.is_blacklisted,
                ),
            ),
            ChildSpec(
                "registry",
                lambda exit_to: SubscriptionRegistry.start_linked(
                    exit_to,
                    extractors=self.extractors,
                    live_connections=self._live_connections,
                    history_size=settings.replay_buffer_size,
                    history_age_s=settings.replay_max_age_ms / 1000,
                    outbox=self.outbox,
                    kafka_replay=self._kafka_replay if self.producer is not None else None,
                    ws_event_ids=settings.ws_event_ids,
                ),
            ),
        )
        if self.control is not None:
            control = self.control
            children += (
                ChildSpec(
                    "kafka-events",
                    lambda exit_to: EventConsumer.start_linked(
                        exit_to,
                        settings=settings,
                        client_id=f"rig-events-{self.worker_id}",
                        deliver=self._deliver,
                        counters=self.kafka_counters,
                    ),
                ),
                ChildSpec(
                    "kafka-control",
                    lambda exit_to: ControlReader.start_linked(
                        exit_to,
                        settings=settings,
                        client_id=f"rig-control-{self.worker_id}",
                        bus=control,
                    ),
                ),
                ChildSpec(
                    "kafka-blacklist",
                    lambda exit_to: BlacklistReader.start_linked(
                        exit_to,
                        settings=settings,
                        client_id=f"rig-blacklist-{self.worker_id}",
                        blacklisting=self.blacklisting,
                    ),
                ),
                ChildSpec(
                    "proxy-responses",
                    lambda exit_to: ResponseReader.start_linked(
                        exit_to,
                        settings=settings,
                        client_id=f"rig-proxy-{self.worker_id}",
                        router=self.proxy.replies,
                    ),
                ),
            )
        self.root = Supervisor.start(
            names=self.names,
            max_restarts=3,
            max_seconds=5.0,
            children=children,
            on_escalate=self._on_escalate,
            on_restart=self._count_restart,
        )
        # on_start of the root runs in its greenlet; wait until the tree exists.
        self.names_ready()
        if self.producer is not None:
            # Serve only once the session blacklist is known (normally a few
            # ms), unless Kafka is unreachable: then tokens are refused until
            # it is (Blacklisting.check).
            self.blacklisting.wait_loaded(10.0, self._blacklist_reader_state)
        self.proxy.start()
        self.sampler = MetricsSampler(self)
        self.sampler.start()

    def names_ready(self, timeout: float = 5.0) -> None:
        import gevent

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.names.get("registry")
                self.names.get("connections")
                return
            except ActorDeadError:
                if time.monotonic() > deadline:
                    raise
                gevent.sleep(0.001)

    def drain(self) -> None:
        """Graceful shutdown: goodbyes, then wait for buffers to drain (bounded).

        SSE clients get a ``retry:`` hint (``reconnect_retry_ms`` plus up to
        ``reconnect_jitter_ms``), WebSockets a 1001 close; whatever is still
        open after ``shutdown_timeout_ms`` is closed by :meth:`stop`.
        """
        import gevent

        settings = self.settings
        try:
            left = self.connections.ask(
                Drain(settings.reconnect_retry_ms, settings.reconnect_jitter_ms)
            )
        except (ActorDeadError, gevent.Timeout):
            return
        log.info("draining %d connections", left)
        deadline = time.monotonic() + settings.shutdown_timeout_ms / 1000
        while time.monotonic() < deadline:
            try:
                if not sum(self.connections.ask(Count()).values()):
                    return
            except (ActorDeadError, gevent.Timeout):
                return
            gevent.sleep(0.05)
        log.warning("shutdown timeout: closing the connections still open")

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.proxy.stop()
        if self.control is not None:
            self.control.stop()
        if self.root is not None:
            self.root.stop()
            self.root = None
        if self.producer is not None:
            self.producer.close()

    # -- what the HTTP layer uses -------------------------------------------------

    @property
    def registry(self) -> ActorRef:
        return self.names.get("registry")

    @property
    def connections(self) -> ActorRef:
        return self.names.get("connections")

    def verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises :class:`~rig_actors.auth.jwt.JwtError`.

        The one place every JWT the gateway accepts goes through (connects,
        subscription PUTs, checks, secured proxy endpoints). A token whose
        session (``JWT_SESSION_FIELD``) is blacklisted is not valid.
        """
        claims = self.jwt.verify(token)
        self.blacklisting.check(session_names(claims, self.settings.jwt_session_field))
        return claims

    def new_connection_id(self) -> str:
        return f"{next(self._ids):x}"

    def publish(self, event: CloudEvent) -> None:
        """Deliver ``event`` to every matching connection, on every worker.

        With Kafka the event is produced to the first source topic and every
        worker's consumer delivers it; raises
        :class:`~rig_actors.kafka.producer.ProduceError` when the brokers do
        not acknowledge it. Without Kafka it is delivered here directly.
        """
        if self.producer is not None:
            headers, value = to_kafka_structured(event)
            headers = [*headers, *tracing.kafka_headers()]  # the publishing request's trace
            # Keyed by the event's source: one publisher's events share a
            # partition, so they keep their order across workers.
            key = str(event.attrs.get("source", "")).encode("utf-8") or None
            self.producer.send(
                self.settings.kafka_source_topics[0], value, key=key, headers=headers
            )
            return
        self.registry.tell(Publish((event,)))

    def kafka_health(self) -> dict[str, Any]:
        """The Kafka clients' states for ``GET /health``."""
        if self.producer is None:
            return {"state": "disabled"}
        readers = {}
        for name in ("kafka-events", "kafka-control", "kafka-blacklist"):
            try:
                readers[name] = self.names.get(name)._actor.state.as_dict()
            except ActorDeadError:
                readers[name] = {"state": "restarting"}
        states = {r["state"] for r in readers.values()}
        overall = "ready" if states == {"ready"} else "degraded"
        # Reported, but not part of the overall state: a deployment that does
        # not use response_from kafka need not create the response topics.
        try:
            readers["proxy-responses"] = self.names.get("proxy-responses")._actor.state.as_dict()
        except ActorDeadError:
            readers["proxy-responses"] = {"state": "restarting"}
        return {"state": overall, **readers, "producer": self.producer.state.as_dict()}

    # -- internals ----------------------------------------------------------------

    def _kafka_replay(
        self,
        start: dict[tuple[int, int], int],
        stop: dict[tuple[int, int], int],
        wants: Callable[[CloudEvent], bool],
    ) -> tuple[list[tuple[str, CloudEvent]], dict[str, Any] | None]:
        return kafka_replay(self.settings, f"rig-replay-{self.worker_id}", start, stop, wants)

    def _deliver(self, message: Publish) -> None:
        try:
            self.registry.tell(message)
        except ActorDeadError:
            log.warning("registry restarting: %d events not delivered", len(message.events))
            metrics.DROPPED_EVENTS.labels("registry_restarting").inc(len(message.events))

    def _live_connections(self) -> Any:
        try:
            sup = self.names.get("connections")
        except ActorDeadError:
            return ()
        return sup._actor.live()

    def _connection_exited(self, notice: ExitNotice) -> None:
        try:
            self.names.get("connections").tell(notice)
        except ActorDeadError:
            pass  # the supervisor is restarting; its table went with it

    def _kill_session(self, name: str) -> None:
        try:
            self.connections.tell(KillSession(name))
        except ActorDeadError:
            # Restarting: it comes back empty, and new connects check the blacklist.
            log.warning("connection supervisor restarting during a session kill")

    def _blacklist_reader_state(self) -> str:
        try:
            return self.names.get("kafka-blacklist")._actor.state.state
        except ActorDeadError:
            return "restarting"

    def _count_restart(self, name: str, error: BaseException | None) -> None:
        self.restarts += 1
        metrics.ACTOR_RESTARTS.labels(name).inc()


def _exit_process(exc: BaseException) -> None:
    """The root gave up: let the process manager start a fresh worker."""
    log.critical("supervision tree gave up (%s: %s); exiting", type(exc).__name__, exc)
    logging.shutdown()
    os._exit(70)
