"""Supervisors with OTP semantics: one-for-one restarts and restart intensity.

A :class:`Supervisor` starts its children from :class:`ChildSpec` factories
and is told (an :class:`~rig_actors.actors.core.ExitNotice`) when one ends:

- ``permanent`` children are always restarted, ``transient`` ones only when
  they crashed, ``temporary`` ones never (client connections: their socket
  is gone, so there is nothing to restart);
- only the child that ended is restarted (one-for-one);
- more than ``max_restarts`` restarts within ``max_seconds`` means the
  problem is not local: the supervisor stops every child and crashes
  itself, which escalates to its own supervisor. The root's ``on_escalate``
  decides what a crash of the whole tree means (the gateway exits so that
  gunicorn or the platform starts a fresh process).

A child registered under a name (``ChildSpec.name``) is published in a
:class:`Names` table at every (re)start, the way a BEAM process registers a
name: callers look the current ref up instead of holding a stale one.

Example::

    >>> names = Names()
    >>> sup = Supervisor.start(names=names, max_restarts=3, max_seconds=5)
    >>> ref = sup.ask(StartChild(ChildSpec("counter", Counter.start_linked)))
    >>> names.get("counter") is ref
    True
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .core import Actor, ActorDeadError, ActorRef, ExitNotice

__all__ = [
    "ChildSpec",
    "Names",
    "RestartIntensityExceeded",
    "StartChild",
    "Supervisor",
    "WhichChildren",
]

log = logging.getLogger(__name__)

Restart = Literal["permanent", "transient", "temporary"]
ExitCallback = Callable[[ExitNotice], None]


class RestartIntensityExceeded(Exception):
    """Too many restarts in the window: the supervisor gives up."""


class Names:
    """Registered names of long-lived actors (``registry``, ``kafka`` ...)."""

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: dict[str, ActorRef] = {}

    def get(self, name: str) -> ActorRef:
        """The current ref; raises :class:`ActorDeadError` while restarting."""
        ref = self._refs.get(name)
        if ref is None:
            raise ActorDeadError(f"no actor registered as {name!r}")
        return ref

    def set(self, name: str, ref: ActorRef) -> None:
        self._refs[name] = ref

    def items(self) -> list[tuple[str, ActorRef]]:
        """Every registered ``(name, ref)`` now (for the metrics sampler)."""
        return list(self._refs.items())

    def discard(self, name: str, ref: ActorRef) -> None:
        if self._refs.get(name) is ref:
            del self._refs[name]


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child.

    ``start`` receives the exit callback to link the child to its
    supervisor and returns the child's ref (``MyActor.start_linked``).
    """

    name: str
    start: Callable[[ExitCallback], ActorRef]
    restart: Restart = "permanent"


@dataclass(frozen=True)
class StartChild:
    spec: ChildSpec


@dataclass(frozen=True)
class WhichChildren:
    """Ask for ``[(name, ref), ...]`` of the live children."""


@dataclass
class _Child:
    spec: ChildSpec
    restarts: int = field(default=0)


class Supervisor(Actor):
    """One-for-one supervisor; see the module docstring."""

    def __init__(
        self,
        *,
        names: Names | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        children: tuple[ChildSpec, ...] = (),
        on_escalate: Callable[[BaseException], None] | None = None,
        on_restart: Callable[[str, BaseException | None], None] | None = None,
    ) -> None:
        super().__init__()
        self.names = names if names is not None else Names()
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._initial = children
        self._on_escalate = on_escalate
        self._on_restart = on_restart
        self._children: dict[ActorRef, _Child] = {}
        self._restart_times: deque[float] = deque()

    @classmethod
    def start_linked(cls, exit_to: ExitCallback, **kwargs: Any) -> ActorRef:
        """Start as the child of another supervisor."""
        return cls(**kwargs)._begin(exit_to)

    def on_start(self) -> None:
        for spec in self._initial:
            self._start(spec)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ExitNotice):
            self._child_exited(message)
            return None
        if isinstance(message, StartChild):
            return self._start(message.spec)
        if isinstance(message, WhichChildren):
            return [(child.spec.name, ref) for ref, child in self._children.items()]
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._stop_children()

    def on_failure(self, exc: BaseException) -> None:
        self._stop_children()
        if self._on_escalate is not None:
            self._on_escalate(exc)

    # -- internals ----------------------------------------------------------

    def _start(self, spec: ChildSpec) -> ActorRef:
        ref = spec.start(self.actor_ref.tell)
        self._children[ref] = _Child(spec)
        self.names.set(spec.name, ref)
        return ref

    def _child_exited(self, notice: ExitNotice) -> None:
        child = self._children.pop(notice.ref, None)
        if child is None:
            return
        spec = child.spec
        self.names.discard(spec.name, notice.ref)
        if spec.restart == "temporary" or (spec.restart == "transient" and notice.error is None):
            return
        self._note_restart(spec.name, notice.error)
        log.warning("restarting %s after %s", spec.name, _describe(notice.error))
        if self._on_restart is not None:
            self._on_restart(spec.name, notice.error)
        self._start(spec)

    def _note_restart(self, name: str, error: BaseException | None) -> None:
        now = time.monotonic()
        times = self._restart_times
        times.append(now)
        while times and now - times[0] > self.max_seconds:
            times.popleft()
        if len(times) > self.max_restarts:
            raise RestartIntensityExceeded(
                f"{name} restarted more than {self.max_restarts} times in "
                f"{self.max_seconds:g} s; last exit: {_describe(error)}"
            )

    def _stop_children(self) -> None:
        children, self._children = self._children, {}
        for ref, child in children.items():
            self.names.discard(child.spec.name, ref)
            ref.stop()


def _describe(error: BaseException | None) -> str:
    return "a normal stop" if error is None else f"{type(error).__name__}: {error}"
