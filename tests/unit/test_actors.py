"""The actor runtime and supervisors, in-process (greenlets, no sockets)."""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from rig_actors.actors.core import Actor, ActorDeadError, ExitNotice
from rig_actors.actors.supervisor import ChildSpec, Names, StartChild, Supervisor, WhichChildren


class Echo(Actor):
    __slots__ = ("failed", "seen", "stopped")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.stopped = False
        self.failed: BaseException | None = None

    @classmethod
    def start_linked(cls, exit_to: Any) -> Any:
        return cls()._begin(exit_to)

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom")
        self.seen.append(message)
        return message

    def on_stop(self) -> None:
        self.stopped = True

    def on_failure(self, exc: BaseException) -> None:
        self.failed = exc


def settle() -> None:
    for _ in range(5):
        gevent.sleep(0)


def test_ask_returns_the_reply_and_tell_keeps_order():
    ref = Echo.start()
    for n in range(5):
        ref.tell(n)
    assert ref.ask("last") == "last"
    assert ref._actor.seen == [0, 1, 2, 3, 4, "last"]
    ref.stop()


def test_idle_actor_has_no_greenlet():
    ref = Echo.start()
    ref.ask(1)
    settle()
    assert ref._actor._running is False
    assert ref._actor._mailbox is None
    ref.stop()


def test_crash_stops_the_actor_runs_on_failure_and_fails_the_asker():
    ref = Echo.start()
    with pytest.raises(ValueError):
        ref.ask("boom")
    settle()
    actor = ref._actor
    assert not ref.is_alive()
    assert isinstance(actor.failed, ValueError)
    with pytest.raises(ActorDeadError):
        ref.tell(1)


def test_stop_runs_on_stop_and_fails_later_asks():
    ref = Echo.start()
    ref.stop()
    settle()
    assert ref._actor.stopped
    with pytest.raises(ActorDeadError):
        ref.ask(1)


def test_exit_is_reported_to_the_linked_supervisor_callback():
    notices: list[ExitNotice] = []
    ref = Echo()._begin(notices.append)
    ref.tell("boom")
    settle()
    assert len(notices) == 1 and notices[0].ref is ref
    assert isinstance(notices[0].error, ValueError)


def test_live_count_drops_when_actors_end():
    before = Actor.live_count()
    refs = [Echo.start() for _ in range(100)]
    assert Actor.live_count() == before + 100
    for ref in refs:
        ref.stop()
    settle()
    assert Actor.live_count() == before


def test_supervisor_restarts_a_crashed_permanent_child_under_its_name():
    names = Names()
    sup = Supervisor.start(names=names, children=(ChildSpec("echo", Echo.start_linked),))
    settle()
    first = names.get("echo")
    first.tell("boom")
    settle()
    second = names.get("echo")
    assert second is not first and second.is_alive()
    assert second.ask("hi") == "hi"
    sup.stop()


def test_temporary_and_transient_children_follow_their_restart_policy():
    names = Names()
    sup = Supervisor.start(names=names)
    temp = sup.ask(StartChild(ChildSpec("temp", Echo.start_linked, restart="temporary")))
    trans = sup.ask(StartChild(ChildSpec("trans", Echo.start_linked, restart="transient")))
    temp.tell("boom")
    trans.stop()
    settle()
    assert sup.ask(WhichChildren()) == []
    trans2 = sup.ask(StartChild(ChildSpec("trans", Echo.start_linked, restart="transient")))
    trans2.tell("boom")
    settle()
    assert [name for name, _ in sup.ask(WhichChildren())] == ["trans"]
    sup.stop()


def test_restart_intensity_exceeded_escalates_and_stops_all_children():
    names = Names()
    escalated: list[BaseException] = []
    sup = Supervisor.start(
        names=names,
        max_restarts=2,
        max_seconds=10,
        children=(ChildSpec("a", Echo.start_linked), ChildSpec("b", Echo.start_linked)),
        on_escalate=escalated.append,
    )
    settle()
    b = names.get("b")
    for _ in range(3):
        names.get("a").tell("boom")
        settle()
    assert len(escalated) == 1
    assert "restarted more than 2 times" in str(escalated[0])
    assert not sup.is_alive()
    assert not b.is_alive()


def test_nested_supervisor_escalates_to_its_parent_which_restarts_it():
    names = Names()
    inner_spec = ChildSpec(
        "inner",
        lambda exit_to: Supervisor.start_linked(
            exit_to,
            names=names,
            max_restarts=0,
            max_seconds=10,
            children=(ChildSpec("leaf", Echo.start_linked),),
        ),
    )
    root = Supervisor.start(names=names, children=(inner_spec,))
    settle()
    inner = names.get("inner")
    names.get("leaf").tell("boom")
    settle()
    assert not inner.is_alive()
    assert names.get("inner") is not inner
    assert names.get("leaf").ask("ok") == "ok"
    root.stop()
