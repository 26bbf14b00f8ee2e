"""Connection actors: one per client connection (SSE, WebSocket, long-polling).

Each actor owns its connection: the socket (a bare file descriptor under a
gevent io watcher once the HTTP handshake is over), its subscriptions, its
outbound buffer and its session. Control traffic arrives as messages
(``tell``/``ask``): new subscriptions, a kill, readable input, a poll.

Events do not: one actor message per delivered event would cost a greenlet
switch and a queue operation per delivery. The registry instead hands the
actor prepared bytes through :meth:`StreamConnection.offer`, which only
appends to the outbound buffer and marks the actor in the
:class:`~rig_actors.actors.outbox.Outbox`; :meth:`StreamConnection.flush`
then writes everything pending with one non-blocking ``send``. Neither ever
blocks or switches greenlets. An idle connection therefore has no greenlet
at all: its actor greenlet runs only while a control message is pending,
and partial writes are finished by a write watcher.
"""

from __future__ import annotations

import _socket
import errno
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult

from ..events import framing
from ..events.cloudevent import CloudEvent, new_rig_event
from ..events.replay_ids import lp_cursor, parse_lp_cursor, with_id_attribute
from ..subscriptions import Subscription
from .core import Actor, ActorDeadError, ExitNotice

if TYPE_CHECKING:
    from .outbox import Outbox
    from .supervisor import Names

__all__ = [
    "ClientActor",
    "ConnectionContext",
    "EventFrames",
    "Kill",
    "LongPollSession",
    "Poll",
    "Reregister",
    "SetSubscriptions",
    "SseConnection",
    "StreamConnection",
    "WsConnection",
]

log = logging.getLogger(__name__)

_READ, _WRITE = 1, 2
_RECV_CHUNK = 16384
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)

TWO_WAY_REASON = "This WebSocket endpoint cannot be used for two-way communication."


class EventFrames:
    """One event, serialised at most once per transport.

    The registry builds one of these per event and hands the same object
    to every matching connection; each transport takes its frame, built on
    first use and then shared, so 10,000 SSE subscribers cost one
    ``sse_event`` call.
    """

    __slots__ = ("_sse", "_ws", "event", "event_id", "origin", "resume_id", "ws_id")

    def __init__(
        self,
        event: CloudEvent,
        event_id: str | None = None,
        origin: tuple[tuple[int, int], int] | None = None,
        *,
        ws_id: bool = False,
        resume_id: str | None = None,
    ) -> None:
        self.event = event
        # Where a Kafka event was read: ((topic index, partition), offset).
        self.origin = origin
        # The gateway's id for replay (SSE "id:" line); None for per-connection
        # events such as rig.subscriptions_set.
        self.event_id = event_id
        # ws_event_ids: the WebSocket frame carries event_id as an attribute.
        self.ws_id = ws_id
        # For an event without a replay id: where a client that has it stands
        # in the stream (rig.subscriptions_set, for the long-polling cursor).
        self.resume_id = resume_id
        self._sse: bytes | None = None
        self._ws: bytes | None = None

    @property
    def sse(self) -> bytes:
        frame = self._sse
        if frame is None:
            frame = self._sse = framing.sse_event(self.event.type, self.event.json, self.event_id)
        return frame

    @property
    def ws(self) -> bytes:
        frame = self._ws
        if frame is None:
            event = self.event
            text = event.json
            if self.ws_id and self.event_id is not None:
                # A WebSocket client has no id: line; spliced once per event.
                text = with_id_attribute(text, event.attrs, self.event_id)
            frame = self._ws = framing.ws_text(text)
        return frame


@dataclass(frozen=True, slots=True)
class SetSubscriptions:
    """Replace the connection's subscriptions and announce the new set."""

    subscriptions: tuple[Subscription, ...]
    sessions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reregister:
    """The registry restarted: send it our subscriptions again."""


@dataclass(frozen=True, slots=True)
class Kill:
    """End the connection, telling the client why (``rig.session_killed``)."""

    event_type: str
    ws_reason: str


@dataclass(frozen=True, slots=True)
class Poll:
    """Long-polling: events after ``cursor``, or a waiter to block on."""

    cursor: str


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The worker is shutting down: say how to come back, drain, close."""

    retry_ms: int


@dataclass(frozen=True, slots=True)
class Crash:
    """Fault injection: make the actor raise (tests and drills only)."""


_READABLE = object()


class ConnectionContext:
    """What every connection actor of one worker shares."""

    __slots__ = (
        "cors",
        "counters",
        "lp_buffer_size",
        "max_pending",
        "names",
        "on_exit",
        "outbox",
        "slow_policy",
    )

    def __init__(
        self,
        *,
        names: Names,
        outbox: Outbox,
        cors: str,
        max_pending: int,
        on_exit: Callable[[ExitNotice], None],
        lp_buffer_size: int = 200,
        slow_policy: str = "disconnect",
    ) -> None:
        self.names = names
        self.outbox = outbox
        self.cors = cors
        self.max_pending = max_pending
        self.on_exit = on_exit
        self.lp_buffer_size = lp_buffer_size
        self.slow_policy = slow_policy
        # Plain ints bumped on rare paths only; metrics read them.
        self.counters = {"slow_consumer_disconnects": 0, "slow_consumer_drops": 0, "crashes": 0}


class ClientActor(Actor):
    """What all three transports share: identity, subscriptions, session."""

    __slots__ = (
        "_skip",
        "closed",
        "conn_id",
        "ctx",
        "replay_from",
        "sessions",
        "subscriptions",
        "token",
    )

    transport = "?"

    def __init__(
        self,
        ctx: ConnectionContext,
        conn_id: str,
        token: str,
        subscriptions: tuple[Subscription, ...],
        sessions: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.conn_id = conn_id
        self.token = token
        self.subscriptions = subscriptions
        self.sessions = sessions
        self.closed = False
        # Last-Event-ID the client reconnected with: replayed after the
        # subscriptions are indexed, then forgotten.
        self.replay_from: str | None = None
        # Where a Kafka replay left the client, per partition (skip_until).
        self._skip: dict[tuple[int, int], int] | None = None

    def begin(self) -> None:
        """Start the actor linked to the connection supervisor."""
        self._begin(self.ctx.on_exit)

    # -- delivery (called by the registry, never blocks) --------------------

    def offer_event(self, frames: EventFrames) -> None:
        raise NotImplementedError

    def hold(self) -> None:
        """A replay is being read: keep live deliveries back until release."""

    def skip_until(self, positions: dict[tuple[int, int], int]) -> None:
        """Drop live Kafka events below these positions: the client has them."""
        self._skip = dict(positions) or None

    def _already_has(self, frames: EventFrames) -> bool:
        """True for a live Kafka event below the client's resume position."""
        skip = self._skip
        origin = frames.origin
        if skip is None or origin is None:
            return False
        key, offset = origin
        if offset < skip.get(key, 0):
            return True
        skip.pop(key, None)  # this partition has caught up with the client
        if not skip:
            self._skip = None
        return False

    def release(self, first: list[EventFrames]) -> None:
        """The replay is done: deliver ``first`` (replayed events), then the rest."""
        for frames in first:
            self.offer_event(frames)

    # -- messages ---------------------------------------------------------------

    def on_start(self) -> None:
        self._register(announce=True, replay_from=self.replay_from)
        self.replay_from = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SetSubscriptions):
            self.subscriptions = message.subscriptions
            if message.sessions:
                self.sessions = tuple(dict.fromkeys(self.sessions + message.sessions))
            self._register(announce=True)
            return None
        if isinstance(message, Reregister):
            self._register(announce=False)
            return None
        if isinstance(message, Kill):
            self.kill(message)
            return None
        if isinstance(message, Goodbye):
            self.goodbye(message.retry_ms)
            return None
        if isinstance(message, Crash):
            raise RuntimeError(f"crash injected into {self!r}")
        return super().on_receive(message)

    def on_stop(self) -> None:
        self.close("stopped")

    def on_failure(self, exc: BaseException) -> None:
        self.ctx.counters["crashes"] += 1
        self.close(f"crashed: {type(exc).__name__}")

    def _register(self, *, announce: bool, replay_from: str | None = None) -> None:
        from .registry import Subscribe  # the registry imports us

        try:
            registry = self.ctx.names.get("registry")
            registry.tell(Subscribe(self, self.subscriptions, announce, replay_from))
        except ActorDeadError:
            # The registry is restarting; its on_start asks every live
            # connection to re-register, so nothing is lost.
            log.warning("registry unavailable while registering %r", self)

    def _unregister(self) -> None:
        from .registry import Unsubscribe

        try:
            self.ctx.names.get("registry").tell(Unsubscribe(self))
        except ActorDeadError:
            pass  # a restarted registry starts empty and only re-adds live ones

    def kill(self, message: Kill) -> None:
        raise NotImplementedError

    def goodbye(self, retry_ms: int) -> None:
        """Shutdown: tell the client to reconnect (elsewhere), then end."""
        self.close("shutdown")

    def close(self, reason: str) -> None:
        raise NotImplementedError

    def crash(self, exc: BaseException) -> None:
        """Called by the flush pass when this connection's write path failed."""
        log.error("connection %s failed: %s: %s", self.conn_id, type(exc).__name__, exc)
        self.ctx.counters["crashes"] += 1
        self.close("crashed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.conn_id}>"


class StreamConnection(ClientActor):
    """A pushed stream over a socket we own (SSE or WebSocket)."""

    __slots__ = (
        "_closing",
        "_dirty",
        "_drop_notice",
        "_dropped",
        "_held",
        "_pending",
        "_pending_bytes",
        "_rwatch",
        "_wwatch",
        "sock",
    )

    def __init__(
        self,
        ctx: ConnectionContext,
        conn_id: str,
        token: str,
        subscriptions: tuple[Subscription, ...],
        sessions: tuple[str, ...],
        sock: _socket.socket,
    ) -> None:
        super().__init__(ctx, conn_id, token, subscriptions, sessions)
        self.sock = sock
        self._rwatch: Any = None
        self._wwatch: Any = None
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0
        self._dirty = False
        self._closing = ""  # a reason once the connection should end after its last write
        # drop_oldest: the queued notice and the count it reports, so that a
        # later drop replaces it with the running total instead of losing it.
        self._drop_notice: bytes | None = None
        self._dropped = 0
        self._held: list[bytes] | None = None  # live frames kept back during a replay

    def on_start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        loop = gevent.get_hub().loop
        self._rwatch = loop.io(sock.fileno(), _READ)
        self._rwatch.start(self._on_readable)
        # The greeting waits for rig.subscriptions_set, which the registry
        # offers (and so flushes) as soon as it has indexed us: one send per
        # new stream instead of two. A registry that is restarting announces
        # nothing, so a Reregister flushes it (and so would the heartbeat).
        greeting = self.greeting()
        self._pending = [greeting]
        self._pending_bytes = len(greeting)
        super().on_start()

    def greeting(self) -> bytes:
        """Bytes that open the stream: response head and the first event."""
        raise NotImplementedError

    def offer_event(self, frames: EventFrames) -> None:
        if self._skip is not None and self._already_has(frames):
            return
        self.offer(self.framed(frames))

    @staticmethod
    def framed(frames: EventFrames) -> bytes:
        """This transport's frame of the event (built once, shared)."""
        raise NotImplementedError

    def on_receive(self, message: Any) -> Any:
        if message is _READABLE:
            self._read()
            return None
        result = super().on_receive(message)
        if isinstance(message, Reregister):
            self._kick()  # a greeting may still wait for an announcement
        return result

    def _kick(self) -> None:
        """Schedule a flush of whatever is pending (e.g. a held-back greeting)."""
        if self._pending and not self._dirty and not self.closed:
            self._dirty = True
            self.ctx.outbox.mark(self)

    # -- the fast path -------------------------------------------------------------

    def offer(self, data: bytes) -> None:
        """Queue bytes for the next flush pass; never blocks."""
        if self.closed or self._closing:
            return  # ending: only the last words already queued go out
        held = self._held
        if held is not None:
            held.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes > self.ctx.max_pending:
                self.ctx.counters["slow_consumer_disconnects"] += 1
                self.close("slow consumer (live events piled up during a replay)")
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
        else:
            pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > self.ctx.max_pending:
            self._slow_consumer()
            return
        if not self._dirty:
            self._dirty = True
            self.ctx.outbox.mark(self)

    def flush(self) -> None:
        """Write what is pending with one non-blocking send."""
        self._dirty = False
        pending = self._pending
        if not pending or self.closed or self._wwatch is not None:
            return  # nothing to do, or the write watcher will finish it
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close(f"write failed: {exc.strerror or exc}")
            return
        if sent == len(data):
            self._pending = None
            self._pending_bytes = 0
            if self._closing:
                self.close(self._closing)
            return
        rest = data[sent:]
        self._pending = [rest]
        self._pending_bytes = len(rest)
        self._wwatch = gevent.get_hub().loop.io(self.sock.fileno(), _WRITE)
        self._wwatch.start(self._on_writable)

    def _on_writable(self) -> None:
        watcher, self._wwatch = self._wwatch, None
        if watcher is not None:
            watcher.close()
        try:
            self.flush()
        except Exception as exc:
            self.crash(exc)

    def _slow_consumer(self) -> None:
        """The outbound buffer passed its bound: apply ``slow_consumer_policy``.

        ``disconnect`` (the default) drops what is queued and ends the
        connection with a notice the client reads last (SSE: a
        ``rig.slow_consumer`` event; WebSocket: close 1008). ``drop_oldest``
        drops the oldest queued frames down to half the bound and queues a
        ``rig.events_dropped`` notice (how many) in their place. Either way
        memory stays bounded and the other connections never wait.
        """
        ctx = self.ctx
        pending = self._pending or []
        # A frame the kernel took part of must be finished: cutting it would
        # corrupt the stream.
        keep = pending[:1] if self._wwatch is not None else []
        rest = pending[len(keep) :]
        if ctx.slow_policy == "drop_oldest":
            old_notice = self._drop_notice
            if old_notice is not None and any(frame is old_notice for frame in rest):
                rest = [frame for frame in rest if frame is not old_notice]
            else:
                self._dropped = 0  # the previous notice went out: count afresh
            size = sum(len(frame) for frame in rest)
            dropped = 0
            while dropped < len(rest) and size > ctx.max_pending // 2:
                size -= len(rest[dropped])
                dropped += 1
            ctx.counters["slow_consumer_drops"] += dropped
            self._dropped += dropped
            notice = self._drop_notice = self.notice(
                "rig.events_dropped",
                {"dropped": self._dropped, "reason": "slow consumer: outbound buffer full"},
            )
            self._pending = [*keep, notice, *rest[dropped:]]
            self._pending_bytes = sum(len(frame) for frame in self._pending)
            if not self._dirty:
                self._dirty = True
                ctx.outbox.mark(self)
            return
        ctx.counters["slow_consumer_disconnects"] += 1
        log.warning(
            "connection %s: %d bytes pending, over the %d byte bound; disconnecting",
            self.conn_id,
            self._pending_bytes,
            ctx.max_pending,
        )
        self._pending = [*keep]
        self._pending_bytes = sum(len(frame) for frame in keep)
        self.end_after(self.slow_goodbye(), "slow consumer")

    def notice(self, event_type: str, data: dict[str, Any]) -> bytes:
        """A gateway event for this client, framed for its transport."""
        raise NotImplementedError

    def slow_goodbye(self) -> bytes:
        """The last frame of a connection dropped for being slow."""
        raise NotImplementedError

    def heartbeat(self) -> None:
        if self._rwatch is None:
            return  # adopted but not started: the response head must go first
        if self._closing:
            # Its last words have not drained since the previous beat: the
            # client is not reading. Stop waiting for it.
            self.close(f"{self._closing} (not drained)")
            return
        self.offer(self.heartbeat_frame)

    heartbeat_frame = b""

    # -- input ---------------------------------------------------------------------

    def _on_readable(self) -> None:
        # Level-triggered: pause until the actor has read, so one burst of
        # input is one message, not one per loop iteration.
        self._rwatch.stop()
        try:
            self.actor_ref.tell(_READABLE)
        except ActorDeadError:
            pass

    def _read(self) -> None:
        if self.closed:
            return
        while True:
            try:
                data = self.sock.recv(_RECV_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                self.close(f"read failed: {exc.strerror or exc}")
                return
            if not data:
                self.close("client closed")
                return
            self.received(data)
            if self.closed:
                return
        self._rwatch.start(self._on_readable)

    def received(self, data: bytes) -> None:
        """Handle bytes the client sent."""
        raise NotImplementedError

    # -- ending --------------------------------------------------------------------

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("connection %s (%s) closed: %s", self.conn_id, self.transport, reason)
        for watcher in (self._rwatch, self._wwatch):
            if watcher is not None:
                watcher.close()
        self._rwatch = self._wwatch = None
        self._pending = None
        self._pending_bytes = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self._unregister()
        self.actor_ref.stop()

    def hold(self) -> None:
        if self._held is None:
            self._held = []
        self._kick()  # the greeting goes out now, not after the replay

    def release(self, first: list[EventFrames]) -> None:
        held, self._held = self._held, None
        self._pending_bytes -= sum(len(data) for data in held or ())
        super().release(first)
        for data in held or ():
            self.offer(data)

    def end_after(self, data: bytes, reason: str) -> None:
        """Queue ``data`` as the last bytes; close once they are written."""
        self.offer(data)
        self._closing = reason
        if not self._dirty and self._wwatch is None and not self.closed:
            self.flush()

    def _final_write(self, data: bytes) -> None:
        """Best-effort last words before closing: one non-blocking send."""
        pending = self._pending
        payload = b"".join(pending) + data if pending else data
        try:
            self.sock.send(payload)
        except OSError:
            pass
        self._pending = None


class SseConnection(StreamConnection):
    """Server-Sent Events: ``event:``/``data:`` frames, comment heartbeats."""

    __slots__ = ()

    transport = "sse"

    def greeting(self) -> bytes:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "content-type: text/event-stream; charset=utf-8\r\n"
            "cache-control: no-cache\r\n"
            f"access-control-allow-origin: {self.ctx.cors}\r\n"
            "x-accel-buffering: no\r\n"
            # No chunking: the body ends when the connection does, so each
            # event is written as-is, the same bytes for every subscriber.
            "connection: close\r\n"
            "\r\n"
        ).encode("latin-1")
        return head + self.notice("rig.connection.create", {"connection_token": self.token})

    @staticmethod
    def framed(frames: EventFrames) -> bytes:
        return frames.sse

    heartbeat_frame = framing.SSE_HEARTBEAT

    def notice(self, event_type: str, data: dict[str, Any]) -> bytes:
        event = new_rig_event(event_type, data)
        return framing.sse_event(event.type, event.json)

    def slow_goodbye(self) -> bytes:
        return self.notice(
            "rig.slow_consumer",
            {"reason": "the client did not read fast enough; reconnect to resume"},
        )

    def received(self, data: bytes) -> None:
        pass  # an SSE client has nothing to say; EOF is all we watch for

    def kill(self, message: Kill) -> None:
        event = new_rig_event(message.event_type)
        self._final_write(framing.sse_event(event.type, event.json))
        self.close(message.event_type)

    def goodbye(self, retry_ms: int) -> None:
        # EventSource reconnects by itself after "retry" ms; spread per
        # client by the caller so that they do not all return at once.
        self.end_after(framing.sse_retry(retry_ms), "shutdown")


class WsConnection(StreamConnection):
    """WebSocket: one text frame per event, pings as heartbeats."""

    __slots__ = ("_decoder",)

    transport = "ws"

    def __init__(self, *args: Any, max_frame: int = 65536, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._decoder = framing.WsDecoder(max_frame)

    def greeting(self) -> bytes:
        # The 101 response was written by the handshake.
        return self.notice("rig.connection.create", {"connection_token": self.token})

    @staticmethod
    def framed(frames: EventFrames) -> bytes:
        return frames.ws

    heartbeat_frame = framing.WS_PING

    def notice(self, event_type: str, data: dict[str, Any]) -> bytes:
        return framing.ws_text(new_rig_event(event_type, data).json)

    def slow_goodbye(self) -> bytes:
        return framing.ws_close(1008, "Slow consumer: reconnect to resume.")

    def received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except framing.WsProtocolError as exc:
            self.close_with(exc.close_code, str(exc))
            return
        for message in messages:
            opcode = message.opcode
            if opcode == framing.OP_PING:
                self.offer(framing.ws_frame(framing.OP_PONG, message.payload))
            elif opcode == framing.OP_PONG:
                continue
            elif opcode == framing.OP_CLOSE:
                code = int.from_bytes(message.payload[:2], "big") if message.payload else 1000
                self.close_with(code if code >= 1000 else 1000, "")
                return
            else:
                self.close_with(1000, TWO_WAY_REASON)
                return

    def close_with(self, code: int, reason: str) -> None:
        self._final_write(framing.ws_close(code, reason))
        self.close(f"close {code} {reason}".rstrip())

    def kill(self, message: Kill) -> None:
        self.close_with(1000, message.ws_reason)

    def goodbye(self, retry_ms: int) -> None:
        self.end_after(framing.ws_close(1001, "Going away."), "shutdown")


class LongPollSession(ClientActor):
    """Long-polling: events wait in a bounded buffer until the client polls.

    A kill (blacklisted session, expired token) is an event like any other
    for a long-polling client: it is buffered last, a waiting poll returns
    it at once, and the session ends after the poll that delivered it (or
    at the next idle sweep if the client never polls again).

    The cursor (the ``last_event_id`` cookie) is the session's sequence
    number, for exact polls within the session, plus the replay id of the
    newest event buffered (see :mod:`rig_actors.events.replay_ids`): when
    the session is gone, the new one replays from there. A replay from Kafka
    runs like an SSE one: live events are held back, then follow the
    replayed ones, and those the client already had are skipped.
    """

    __slots__ = (
        "_buffer",
        "_held",
        "_last_id",
        "_seq",
        "_waiter",
        "killed",
        "last_poll",
    )

    transport = "longpolling"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer: deque[tuple[int, str]] = deque(maxlen=self.ctx.lp_buffer_size)
        self._seq = 0
        self._last_id: str | None = None  # the replay id in the cursor
        self._held: deque[EventFrames] | None = None  # live events kept back during a replay
        self._waiter: AsyncResult | None = None
        self.last_poll = time.monotonic()
        self.killed = ""  # the kill's event type, once killed

    def on_start(self) -> None:
        # Until an event with an id arrives, a session that replays stands
        # where the client stood: losing it too must not lose the replay.
        self._last_id = self.replay_from
        create = new_rig_event("rig.connection.create", {"connection_token": self.token})
        self._append(create.json, None)
        super().on_start()

    def offer_event(self, frames: EventFrames) -> None:
        if self.closed or self.killed:
            return
        if self._skip is not None and self._already_has(frames):
            return
        held = self._held
        if held is not None:
            if len(held) == held.maxlen:
                self._count_dropped(1)  # the buffer would drop it on release anyway
            held.append(frames)
            return
        event_id = frames.event_id
        self._append(frames.event.json, event_id if event_id is not None else frames.resume_id)

    def hold(self) -> None:
        if self._held is None:
            self._held = deque(maxlen=self.ctx.lp_buffer_size)

    def release(self, first: list[EventFrames]) -> None:
        held, self._held = self._held, None
        for frames in first:
            self.offer_event(frames)
        for frames in held or ():
            self.offer_event(frames)

    def heartbeat(self) -> None:
        pass  # the client polls; there is no stream to keep alive

    def _append(self, event_json: str, replay_id: str | None) -> None:
        self._seq += 1
        self._buffer.append((self._seq, event_json))
        if replay_id is not None:
            self._last_id = replay_id
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set(None)

    def _count_dropped(self, count: int) -> None:
        counters = self.ctx.counters
        counters["longpolling_dropped"] = counters.get("longpolling_dropped", 0) + count

    def cursor(self) -> str:
        """The cursor of a poll that returned everything buffered so far."""
        return lp_cursor(self._seq, self._last_id)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Poll):
            return self._poll(message.cursor)
        if self.killed and isinstance(message, SetSubscriptions | Reregister | Kill):
            return None  # killed: nothing may subscribe it again
        return super().on_receive(message)

    def _poll(self, cursor: str) -> tuple[list[str], str] | AsyncResult:
        """Events after ``cursor`` and the new cursor, or a waiter."""
        self.last_poll = time.monotonic()
        after, _ = parse_lp_cursor(cursor)
        events = [json for seq, json in self._buffer if seq > after]
        if self._buffer and self._buffer[0][0] > after + 1:
            # The bounded buffer overflowed since the last poll: counted here,
            # once per poll, rather than on every delivery.
            self._count_dropped(self._buffer[0][0] - after - 1)
        if self.killed:
            self.close(self.killed)  # this answer carries the news; then it ends
            return events, self.cursor()
        if events or self.closed:
            return events, self.cursor()
        if self._waiter is None:
            self._waiter = AsyncResult()
        return self._waiter

    def kill(self, message: Kill) -> None:
        if self.closed or self.killed:
            return
        self.killed = message.event_type
        log.info("connection %s (longpolling) ending: %s", self.conn_id, message.event_type)
        self._unregister()
        # Buffered last; wakes a waiting poll, which returns it.
        self._append(new_rig_event(message.event_type).json, None)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("connection %s (longpolling) closed: %s", self.conn_id, reason)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set(None)
        self._unregister()
        self.actor_ref.stop()
