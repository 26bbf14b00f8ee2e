"""A small actor runtime on gevent, in Pykka's style.

An :class:`Actor` processes the messages in its mailbox one at a time, in
its own greenlet. Other code talks to it through an :class:`ActorRef`:
``tell`` (fire and forget) and ``ask`` (wait for the reply).

Why not Pykka itself: a Pykka ``ThreadingActor`` parks one thread (a
greenlet under gevent's monkey-patching) for its whole life, ~9.7 KB of RSS
on this stack; starting N of them is O(N^2) unless ``use_daemon_thread`` is
set, and removal from its registry is O(N). The gateway runs one actor per
client connection, so those costs are per connection. Here an actor's
greenlet exists only while its mailbox has messages, like a BEAM process
that is not scheduled while its mailbox is empty; an idle actor is a few
slots and nothing else. The API follows Pykka (``start``, ``tell``,
``ask``, ``stop``, ``on_start``, ``on_stop``, ``on_failure``,
``on_receive``) so that it reads the same.

Failures follow the BEAM rather than Pykka: an exception escaping
``on_receive`` (or ``on_start``) crashes the actor. ``on_failure`` runs, the
actor stops, a pending ``ask`` gets the exception, and the actor's
supervisor (if any) is told through :meth:`Actor.on_exit_notify`.

Example::

    >>> class Counter(Actor):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.count = 0
    ...     def on_receive(self, message):
    ...         self.count += message
    ...         return self.count
    >>> ref = Counter.start()
    >>> ref.tell(2)
    >>> ref.ask(3)
    5
    >>> ref.stop()
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult

__all__ = ["Actor", "ActorDeadError", "ActorRef", "ExitNotice"]

log = logging.getLogger(__name__)

# Actor life-cycle states; ints keep the per-actor footprint to one slot.
_NEW, _RUNNING, _STOPPED = 0, 1, 2


class ActorDeadError(Exception):
    """The actor is not running (it stopped or crashed)."""


class _Stop:
    """Mailbox marker that makes the runner stop the actor."""

    __slots__ = ()


class _Start:
    """Mailbox marker that makes the runner call ``on_start`` first."""

    __slots__ = ()


_STOP = _Stop()
_START = _Start()


class ExitNotice:
    """What a supervisor is told when one of its actors ends.

    ``error`` is ``None`` for a normal stop, else the exception that crashed
    the actor.
    """

    __slots__ = ("error", "ref")

    def __init__(self, ref: ActorRef, error: BaseException | None) -> None:
        self.ref = ref
        self.error = error

    def __repr__(self) -> str:
        return f"ExitNotice({self.ref!r}, {self.error!r})"


class ActorRef:
    """Handle to a running actor; the only way other code reaches it."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor) -> None:
        self._actor = actor

    @property
    def actor_class(self) -> type[Actor]:
        return type(self._actor)

    def is_alive(self) -> bool:
        return self._actor._state == _RUNNING

    def tell(self, message: Any) -> None:
        """Queue ``message`` for the actor; never blocks.

        Raises :class:`ActorDeadError` if the actor is not running.
        """
        actor = self._actor
        if actor._state != _RUNNING:
            raise ActorDeadError(f"{actor!r} is not running")
        actor._enqueue(message, None)

    def ask(self, message: Any, timeout: float | None = 10.0) -> Any:
        """Send ``message`` and wait for ``on_receive``'s return value.

        Re-raises the exception that crashed the actor while handling it,
        :class:`ActorDeadError` if the actor stops first, and
        ``gevent.Timeout`` after ``timeout`` seconds.
        """
        actor = self._actor
        if actor._state != _RUNNING:
            raise ActorDeadError(f"{actor!r} is not running")
        reply: AsyncResult = AsyncResult()
        actor._enqueue(message, reply)
        return reply.get(timeout=timeout)

    def stop(self) -> None:
        """Ask the actor to stop after the messages already queued."""
        actor = self._actor
        if actor._state == _RUNNING:
            actor._enqueue(_STOP, None)

    def __repr__(self) -> str:
        return f"<ActorRef {self._actor!r}>"


class Actor:
    """Base class: override ``on_receive`` and, as needed, the hooks.

    Subclasses that exist in large numbers (one per client connection)
    declare ``__slots__``; the base keeps its own state in five slots.
    """

    __slots__ = ("_exit_to", "_mailbox", "_running", "_state", "actor_ref")

    _live = 0  # actors started and not yet stopped, in this process

    def __init__(self) -> None:
        self.actor_ref = ActorRef(self)
        self._state = _NEW
        # None while empty: an idle actor holds no deque.
        self._mailbox: deque[tuple[Any, AsyncResult | None]] | None = None
        self._running = False
        self._exit_to: Callable[[ExitNotice], None] | None = None

    # -- life cycle -------------------------------------------------------

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ActorRef:
        """Create the actor, schedule ``on_start`` and return its ref."""
        return cls(*args, **kwargs)._begin()

    def _begin(self, exit_to: Callable[[ExitNotice], None] | None = None) -> ActorRef:
        if self._state != _NEW:
            raise RuntimeError(f"{self!r} was already started")
        self._exit_to = exit_to
        self._state = _RUNNING
        Actor._live += 1
        self._enqueue(_START, None)
        return self.actor_ref

    @staticmethod
    def live_count() -> int:
        """How many actors are running in this process."""
        return Actor._live

    def on_start(self) -> None:
        """Runs in the actor's greenlet before any message."""

    def on_stop(self) -> None:
        """Runs when the actor stops normally."""

    def on_failure(self, exc: BaseException) -> None:
        """Runs when the actor crashes, before it is stopped."""

    def on_receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__} got unexpected {message!r}")

    # -- mailbox and runner ----------------------------------------------

    def _enqueue(self, message: Any, reply: AsyncResult | None) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        mailbox.append((message, reply))
        if not self._running:
            self._running = True
            # A raw greenlet: no Greenlet object, no link machinery; it ends
            # when the mailbox is empty, so an idle actor costs no stack.
            gevent.spawn_raw(self._run)

    def _run(self) -> None:
        mailbox = self._mailbox
        while mailbox:
            message, reply = mailbox.popleft()
            if message is _STOP:
                self._finish(None, reply)
                return
            try:
                if message is _START:
                    self.on_start()
                    continue
                result = self.on_receive(message)
            except Exception as exc:
                if reply is not None:
                    reply.set_exception(exc)
                self._crash(exc)
                return
            if reply is not None:
                reply.set(result)
        self._mailbox = None
        self._running = False

    def _crash(self, exc: BaseException) -> None:
        log.error("actor %r crashed: %s: %s", self, type(exc).__name__, exc, exc_info=exc)
        try:
            self.on_failure(exc)
        except Exception:
            log.exception("on_failure of %r failed", self)
        self._finish(exc, None, run_on_stop=False)

    def _finish(
        self,
        error: BaseException | None,
        reply: AsyncResult | None,
        run_on_stop: bool = True,
    ) -> None:
        self._state = _STOPPED
        Actor._live -= 1
        if run_on_stop:
            try:
                self.on_stop()
            except Exception as exc:
                log.exception("on_stop of %r failed", self)
                error = exc
        mailbox, self._mailbox = self._mailbox, None
        self._running = False
        if reply is not None:
            reply.set(None)
        dead = ActorDeadError(f"{self!r} stopped")
        while mailbox:
            _, pending = mailbox.popleft()
            if pending is not None:
                pending.set_exception(dead)
        exit_to, self._exit_to = self._exit_to, None
        if exit_to is not None:
            try:
                exit_to(ExitNotice(self.actor_ref, error))
            except ActorDeadError:
                pass  # the supervisor is gone too; nobody left to tell
        # Break the actor <-> ref cycle so that reference counting frees a
        # finished actor at once: the gateway freezes the GC's view of
        # long-lived objects (gc.freeze), and a frozen cycle is never freed.
        # Old refs still reach the actor and report it dead.
        self.actor_ref = _DEAD_REF

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x}>"


class _Dead(Actor):
    __slots__ = ()


_DEAD = _Dead()
_DEAD._state = _STOPPED
_DEAD_REF = _DEAD.actor_ref
