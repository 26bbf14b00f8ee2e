"""SubscriptionIndex matching semantics (§5.4 with our fixes), bookkeeping and scale."""

from __future__ import annotations

import doctest
from collections.abc import Hashable, Mapping
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig_actors import subscriptions as subscriptions_package
from rig_actors.subscriptions import (
    MISSING,
    Extractors,
    Subscription,
    SubscriptionIndex,
    resolve_pointer,
)
from rig_actors.subscriptions import index as index_module


def extractors(**types: dict[str, str]) -> Extractors:
    """``extractors(person={"name": "/data/name"})``; index = declaration order."""
    return Extractors.parse(
        {
            event_type: {
                name: {"stable_field_index": i, "event": {"json_pointer": pointer}}
                for i, (name, pointer) in enumerate(fields.items())
            }
            for event_type, fields in types.items()
        }
    )


def sub(event_type: str, *clauses: dict[str, Any]) -> Subscription:
    return Subscription(event_type, clauses)


def event(event_type: str = "person", **data: Any) -> dict[str, Any]:
    return {"specversion": "0.2", "type": event_type, "source": "test", "id": "1", "data": data}


PERSON = extractors(person={"name": "/data/name", "age": "/data/age"})


def index_with(
    *subs: Subscription, ex: Extractors = PERSON, owner: Hashable = "c"
) -> SubscriptionIndex:
    index = SubscriptionIndex(ex)
    index.replace(owner, subs)
    return index


def matches(subscription: Subscription, ev: Mapping[str, Any], ex: Extractors = PERSON) -> bool:
    return index_with(subscription, ex=ex).match(ev["type"], ev) == {"c"}


# --- the worked example of §5.4 (server_test.exs) -----------------------------------------

JOE = sub("person", {"name": "joe"})
JOE_AND_30 = sub("person", {"name": "joe", "age": 30})
JOE_20 = event(name="joe", age=20, x="x")
JOE_30 = event(name="joe", age=30, x="x")
BOB_30 = event(name="bob", age=30, x="x")
JOE_NOAGE = event(name="joe", age=None, x="x")


@pytest.mark.parametrize(
    ("subscription", "ev", "expected"),
    [
        (JOE, JOE_20, True),
        (JOE, JOE_30, True),
        (JOE, JOE_NOAGE, True),
        (JOE, BOB_30, False),
        (JOE_AND_30, JOE_20, False),
        (JOE_AND_30, JOE_30, True),
        (JOE_AND_30, JOE_NOAGE, False),
        (JOE_AND_30, BOB_30, False),
    ],
)
def test_worked_example_from_rig(
    subscription: Subscription, ev: dict[str, Any], expected: bool
) -> None:
    assert matches(subscription, ev) is expected


# --- value semantics ----------------------------------------------------------------------


def test_numbers_compare_numerically() -> None:
    assert matches(sub("person", {"age": 30}), event(age=30.0))
    assert matches(sub("person", {"age": 30.0}), event(age=30))
    assert not matches(sub("person", {"age": 30}), event(age=30.5))


def test_bool_is_not_a_number() -> None:
    assert not matches(sub("person", {"age": True}), event(age=1))
    assert not matches(sub("person", {"age": 1}), event(age=True))
    assert not matches(sub("person", {"age": False}), event(age=0))
    assert matches(sub("person", {"age": True}), event(age=True))


def test_strings_are_case_sensitive_and_never_equal_numbers() -> None:
    assert not matches(sub("person", {"name": "Joe"}), event(name="joe"))
    assert not matches(sub("person", {"age": "30"}), event(age=30))
    assert not matches(sub("person", {"age": 30}), event(age="30"))


def test_unknown_constraint_fields_are_ignored() -> None:
    assert matches(sub("person", {"shoe_size": 44}), event(name="bob"))
    assert matches(sub("person", {"name": "joe", "shoe_size": 44}), event(name="joe"))
    assert not matches(sub("person", {"name": "joe", "shoe_size": 44}), event(name="bob"))


def test_null_constraint_is_a_wildcard_for_that_field() -> None:
    assert matches(sub("person", {"name": None}), event(name="bob"))
    assert matches(sub("person", {"name": "joe", "age": None}), event(name="joe", age=5))
    assert matches(sub("person", {"name": "joe", "age": None}), event(name="joe"))


@pytest.mark.parametrize("value", [{"first": "joe"}, ["joe"], []])
def test_object_or_array_constraint_never_matches(value: Any) -> None:
    assert not matches(sub("person", {"name": value}), event(name=value))
    assert not matches(sub("person", {"name": value}), event(name="joe"))


def test_object_constraint_does_not_spoil_other_clauses() -> None:
    subscription = sub("person", {"name": {"x": 1}}, {"name": "joe"})
    assert matches(subscription, event(name="joe"))
    assert not matches(subscription, event(name="bob"))


@pytest.mark.parametrize("value", [{"first": "joe"}, ["joe"], None])
def test_non_scalar_or_null_event_value_never_satisfies_a_constraint(value: Any) -> None:
    assert not matches(sub("person", {"name": "joe"}), event(name=value))


def test_missing_event_value_never_satisfies_a_constraint() -> None:
    assert not matches(sub("person", {"name": "joe"}), event(age=3))
    assert not matches(sub("person", {"name": "joe"}), {"type": "person"})


def test_empty_one_of_matches_every_event_of_the_type() -> None:
    assert matches(sub("person"), event(name="anyone"))
    assert matches(sub("person"), {"type": "person"})


def test_event_type_must_match_exactly() -> None:
    index = index_with(sub("person"))
    assert index.match("person.created", event("person.created")) == set()
    assert index.match("Person", event("Person")) == set()
    assert index.match("perso", event("perso")) == set()


def test_type_without_configured_fields_ignores_constraints() -> None:
    subscription = sub("greeting", {"name": "joe"})
    assert matches(subscription, event("greeting", name="bob"))
    assert matches(subscription, event("greeting", name="joe"))
    # Even constraints that could never match are irrelevant without fields.
    assert matches(sub("greeting", {"name": {"x": 1}}), event("greeting"))


def test_disjunction_matches_if_any_clause_matches() -> None:
    subscription = sub("person", {"name": "joe"}, {"age": 30})
    assert matches(subscription, event(name="joe", age=1))
    assert matches(subscription, event(name="bob", age=30))
    assert not matches(subscription, event(name="bob", age=1))


def test_array_index_pointers_extract_values() -> None:
    ex = extractors(order={"first_item": "/data/items/0/sku", "tag": "/data/tags/1"})
    subscription = sub("order", {"first_item": "A-1", "tag": "red"})
    ev = {
        "type": "order",
        "data": {"items": [{"sku": "A-1"}, {"sku": "B-2"}], "tags": ["x", "red"]},
    }
    assert matches(subscription, ev, ex)
    ev2 = {
        "type": "order",
        "data": {"items": [{"sku": "B-2"}, {"sku": "A-1"}], "tags": ["x", "red"]},
    }
    assert not matches(subscription, ev2, ex)


def test_top_level_attributes_can_be_fields() -> None:
    ex = extractors(person={"source": "/source"})
    assert matches(sub("person", {"source": "test"}), event(), ex)
    assert not matches(sub("person", {"source": "other"}), event(), ex)


def test_data_fields_match_whatever_the_contenttype() -> None:
    ev = {"type": "person", "contenttype": "application/json", "data": {"name": "joe"}}
    assert matches(JOE, ev)


def test_string_data_has_no_fields_but_wildcards_still_match() -> None:
    ev = {"type": "person", "contenttype": "application/json", "data": '{"name": "joe"}'}
    index = SubscriptionIndex(PERSON)
    index.replace("constrained", [JOE])
    index.replace("wildcard", [sub("person")])
    assert index.match("person", ev) == {"wildcard"}


# --- set semantics and bookkeeping --------------------------------------------------------


def test_owner_is_returned_once_however_many_rows_match() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace(
        "c",
        [
            sub("person", {"name": "joe"}, {"age": 30}, {"name": "joe", "age": 30}),
            sub("person"),
            sub("person", {"name": "joe"}),
        ],
    )
    index.replace("d", [sub("person", {"name": "joe"}, {"age": 30})])
    assert index.match("person", event(name="joe", age=30)) == {"c", "d"}


def test_rows_are_deduplicated_per_owner() -> None:
    index = SubscriptionIndex(PERSON)
    # {"name": "joe", "shoe": 1} is the same effective row as {"name": "joe"}.
    index.replace("c", [sub("person", {"name": "joe"}, {"name": "joe", "shoe": 1}), JOE])
    assert index.rows() == 1
    # A wildcard row absorbs the owner's constrained rows of that type.
    index.replace("c", [JOE, JOE_AND_30, sub("person")])
    assert index.rows() == 1
    assert index.match("person", event(name="bob")) == {"c"}


def test_counts_for_metrics() -> None:
    ex = extractors(person={"name": "/data/name"}, order={"id": "/data/id"})
    index = SubscriptionIndex(ex)
    index.replace("a", [sub("person", {"name": "joe"}, {"name": "bob"}), sub("order")])
    index.replace("b", [sub("person", {"name": "joe"}), sub("greeting")])
    assert index.owners() == 2
    assert index.rows() == 5
    assert index.event_types() == 3


def test_replace_drops_old_rows() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("c", [JOE, sub("greeting")])
    index.replace("c", [sub("person", {"name": "bob"})])
    assert index.match("person", event(name="joe")) == set()
    assert index.match("person", event(name="bob")) == {"c"}
    assert index.match("greeting", event("greeting")) == set()
    assert (index.owners(), index.rows(), index.event_types()) == (1, 1, 1)
    assert index.subscriptions("c") == (sub("person", {"name": "bob"}),)


def test_replace_with_same_set_is_a_no_op() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("c", [JOE, JOE])
    index.replace("c", [JOE])
    assert index.subscriptions("c") == (JOE,)
    assert index.rows() == 1


def test_replace_with_empty_set_removes_the_owner() -> None:
    index = index_with(JOE)
    index.replace("c", [])
    assert (index.owners(), index.rows(), index.event_types()) == (0, 0, 0)
    assert index.subscriptions("c") == ()


def test_replace_does_not_touch_other_owners() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("a", [JOE])
    index.replace("b", [JOE])
    index.replace("a", [sub("person", {"name": "bob"})])
    assert index.match("person", event(name="joe")) == {"b"}


def test_remove_leaves_no_trace() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("a", [JOE, JOE_AND_30, sub("greeting"), sub("person", {"age": 3})])
    index.replace("b", [sub("person")])
    index.remove("a")
    index.remove("b")
    assert (index.owners(), index.rows(), index.event_types()) == (0, 0, 0)
    assert index.match("person", event(name="joe", age=30)) == set()
    assert index._types == {}  # white-box: no empty containers left behind


def test_empty_buckets_and_shapes_are_dropped() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("a", [JOE])
    index.replace("b", [sub("person", {"name": "bob"}), JOE_AND_30])
    index.remove("b")
    entry = index._types["person"]  # white-box check of the layout
    assert entry.shapes == {(0,): {"joe": {"a"}}}
    assert entry.wildcard == set()


def test_event_types_without_rows_are_forgotten() -> None:
    index = SubscriptionIndex(PERSON)
    for i in range(100):
        index.replace(f"c{i}", [sub(f"type-{i}")])
    index.replace("keep", [sub("kept")])
    for i in range(100):
        index.remove(f"c{i}")
    assert index.event_types() == 1
    assert index.match("kept", event("kept")) == {"keep"}


def test_remove_of_unknown_owner_is_harmless() -> None:
    index = index_with(JOE)
    index.remove("nobody")
    assert index.owners() == 1


def test_owner_with_only_unmatchable_constraints_is_still_an_owner() -> None:
    index = index_with(sub("person", {"name": ["joe"]}))
    assert (index.owners(), index.rows(), index.event_types()) == (1, 0, 0)
    assert index.match("person", event(name="joe")) == set()
    index.remove("c")
    assert index.owners() == 0


def test_owners_are_opaque_hashables() -> None:
    class Connection:
        pass

    first, second = Connection(), Connection()
    index = SubscriptionIndex(PERSON)
    index.replace(first, [JOE])
    index.replace(second, [sub("person")])
    assert index.match("person", event(name="joe")) == {first, second}
    index.remove(first)
    assert index.match("person", event(name="joe")) == {second}


def test_match_returns_a_fresh_set() -> None:
    index = index_with(sub("person"))
    index.match("person", event()).add("intruder")
    assert index.match("person", event()) == {"c"}


def test_set_extractors_reindexes_everything() -> None:
    greeting_name = extractors(greeting={"name": "/data/name"})
    index = SubscriptionIndex(Extractors.empty())
    index.replace("joe", [sub("greeting", {"name": "joe"})])
    index.replace("all", [sub("greeting")])
    # No fields configured: constraints are ignored.
    assert index.match("greeting", event("greeting", name="bob")) == {"joe", "all"}
    index.set_extractors(greeting_name)
    assert index.match("greeting", event("greeting", name="bob")) == {"all"}
    assert index.match("greeting", event("greeting", name="joe")) == {"joe", "all"}
    index.set_extractors(Extractors.empty())
    assert index.match("greeting", event("greeting", name="bob")) == {"joe", "all"}
    assert (index.owners(), index.rows(), index.event_types()) == (2, 2, 1)


# --- cost: matching touches only matching rows --------------------------------------------


def test_match_visits_only_matching_rows_at_scale() -> None:
    ex = extractors(msg={"user": "/data/user", "room": "/data/room"})
    index = SubscriptionIndex(ex)
    owners = 100_000
    values = 1_000
    for i in range(owners):
        index.replace(i, [Subscription("msg", ({"user": f"u{i % values}"},))])
    assert (index.owners(), index.rows(), index.event_types()) == (owners, owners, 1)

    before = index.visited_rows
    result = index.match("msg", event("msg", user="u7", room="r1"))
    assert len(result) == owners // values
    assert result == {i for i in range(7, owners, values)}
    assert index.visited_rows - before == owners // values

    # An event nobody wants costs no row visits at all.
    before = index.visited_rows
    assert index.match("msg", event("msg", user="nobody")) == set()
    assert index.visited_rows == before

    for i in range(owners):
        index.remove(i)
    assert (index.owners(), index.rows(), index.event_types()) == (0, 0, 0)


def test_multi_field_rows_are_not_visited_for_a_partial_match() -> None:
    # A single-field anchor on "room" would touch all 10k rows per event.
    ex = extractors(msg={"room": "/data/room", "user": "/data/user"})
    index = SubscriptionIndex(ex)
    for i in range(10_000):
        index.replace(i, [Subscription("msg", ({"room": "lobby", "user": f"u{i}"},))])
    index.replace("lobby-watcher", [Subscription("msg", ({"room": "lobby"},))])
    before = index.visited_rows
    assert index.match("msg", event("msg", room="lobby", user="u42")) == {42, "lobby-watcher"}
    assert index.visited_rows - before == 2


def test_visited_rows_equals_matching_rows_including_wildcards() -> None:
    index = SubscriptionIndex(PERSON)
    index.replace("w1", [sub("person")])
    index.replace("w2", [sub("person", {"unknown": 1})])
    index.replace("j", [JOE])
    index.replace("b", [sub("person", {"name": "bob"})])
    before = index.visited_rows
    assert index.match("person", event(name="joe")) == {"w1", "w2", "j"}
    assert index.visited_rows - before == 3


# --- agreement with a brute-force reading of §5.4 -------------------------------------------


def brute_force(
    subs: dict[str, list[Subscription]], ex: Extractors, ev: dict[str, Any]
) -> set[str]:
    """Straightforward reference implementation of the matching rules."""

    def equal(want: Any, got: Any) -> bool:
        scalar = (str, int, float)
        if not isinstance(want, scalar) or not isinstance(got, scalar):
            return False
        if isinstance(want, bool) or isinstance(got, bool):
            return isinstance(want, bool) and isinstance(got, bool) and want == got
        if isinstance(want, str) or isinstance(got, str):
            return isinstance(want, str) and isinstance(got, str) and want == got
        return want == got

    def clause_matches(clause: Mapping[str, Any]) -> bool:
        for spec in ex.fields(ev["type"]):
            if spec.name not in clause or clause[spec.name] is None:
                continue
            got = resolve_pointer(ev, spec.event_pointer)
            if got is MISSING or not equal(clause[spec.name], got):
                return False
        return True

    result = set()
    for owner, owner_subs in subs.items():
        for s in owner_subs:
            if s.event_type != ev["type"]:
                continue
            if not ex.fields(s.event_type) or not s.one_of or any(map(clause_matches, s.one_of)):
                result.add(owner)
    return result


SCALARS = st.sampled_from(
    [None, True, False, 0, 1, 1.0, 30, 30.0, "1", "joe", "Joe", "", [1], {"a": 1}]
)
FIELD_NAMES = st.sampled_from(["name", "age", "flag", "unknown"])
CLAUSES = st.dictionaries(FIELD_NAMES, SCALARS, max_size=3)
SUBS = st.builds(
    Subscription,
    st.sampled_from(["person", "greeting"]),
    st.lists(CLAUSES, max_size=3).map(tuple),
)
EVENT_DATA = st.dictionaries(st.sampled_from(["name", "age", "flag"]), SCALARS)


@settings(max_examples=300, deadline=None)
@given(
    owners=st.dictionaries(st.sampled_from("abcdef"), st.lists(SUBS, max_size=4), max_size=6),
    removed=st.sets(st.sampled_from("abcdef")),
    event_type=st.sampled_from(["person", "greeting"]),
    data=EVENT_DATA,
)
def test_index_agrees_with_brute_force(
    owners: dict[str, list[Subscription]], removed: set[str], event_type: str, data: dict[str, Any]
) -> None:
    ex = extractors(person={"name": "/data/name", "age": "/data/age", "flag": "/data/flag"})
    index = SubscriptionIndex(ex)
    for owner, subs in owners.items():
        index.replace(owner, [sub("person", {"name": "stale"})])
        index.replace(owner, subs)
    for owner in removed:
        index.remove(owner)
    live = {o: s for o, s in owners.items() if o not in removed}
    ev = event(event_type, **data)
    before = index.visited_rows
    result = index.match(event_type, ev)
    assert result == brute_force(live, ex, ev)
    # Rows are de-duplicated per owner, so visits are bounded by matches per owner type.
    assert index.visited_rows - before >= len(result)
    for owner in list(live):
        index.remove(owner)
    assert (index.owners(), index.rows(), index.event_types()) == (0, 0, 0)


@pytest.mark.parametrize("module", [index_module, subscriptions_package])
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
