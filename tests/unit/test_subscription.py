"""Subscription parsing, validation, JSON equality and de-duplication (reference §5.1)."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from rig_actors.subscriptions import (
    Constraint,
    Subscription,
    SubscriptionError,
    dedupe,
    match_key,
    parse_subscription,
    parse_subscription_list,
)
from rig_actors.subscriptions import subscription as subscription_module

# --- parsing and aliases -----------------------------------------------------


def test_parses_event_type_and_one_of() -> None:
    sub = parse_subscription({"eventType": "greeting", "oneOf": [{"name": "joe"}]})
    assert sub.event_type == "greeting"
    assert sub.one_of == ({"name": "joe"},)


@pytest.mark.parametrize("type_key", ["eventType", "event_type"])
@pytest.mark.parametrize("one_of_key", ["oneOf", "one_of", "constraints"])
def test_accepts_every_alias_key(type_key: str, one_of_key: str) -> None:
    sub = parse_subscription({type_key: "t", one_of_key: [{"a": 1}]})
    assert sub == Subscription("t", ({"a": 1},))


def test_missing_one_of_means_all_events_of_the_type() -> None:
    assert parse_subscription({"eventType": "t"}).one_of == ()


def test_event_type_alias_precedence_follows_rig() -> None:
    # RIG looks at event_type first, then eventType.
    sub = parse_subscription({"eventType": "camel", "event_type": "snake"})
    assert sub.event_type == "snake"


def test_constraints_alias_precedence_follows_rig() -> None:
    sub = parse_subscription({"eventType": "t", "oneOf": [{"a": 1}], "constraints": [{"b": 2}]})
    assert sub.one_of == ({"b": 2},)


def test_extra_keys_are_ignored() -> None:
    sub = parse_subscription({"eventType": "t", "whatever": 1})
    assert sub == Subscription("t")


# --- validation messages -------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "detail"),
    [
        ([], "not a map"),
        ("greeting", "not a map"),
        (None, "not a map"),
        ({}, "event-type not found"),
        ({"oneOf": []}, "event-type not found"),
        ({"eventType": ""}, "event-type empty"),
        ({"eventType": 123}, "event-type empty"),
        ({"eventType": None}, "event-type empty"),
        ({"eventType": ["a"]}, "event-type empty"),
        (
            {"eventType": "t", "oneOf": {"a": 1}},
            "constraints expected to be a list of disjunctive clauses",
        ),
        (
            {"eventType": "t", "oneOf": "a"},
            "constraints expected to be a list of disjunctive clauses",
        ),
        (
            {"eventType": "t", "oneOf": None},
            "constraints expected to be a list of disjunctive clauses",
        ),
        (
            {"eventType": "t", "oneOf": ["a"]},
            "a disjunctive clause expected to be a conjunction represented by a map",
        ),
        (
            {"eventType": "t", "oneOf": [{"a": 1}, [1]]},
            "a disjunctive clause expected to be a conjunction represented by a map",
        ),
        (
            {"eventType": "t", "oneOf": [{"": 1}]},
            "conjunctive clauses expected to be a map with nonempty strings as keys",
        ),
        (
            {"eventType": "t", "oneOf": [{1: 1}]},
            "conjunctive clauses expected to be a map with nonempty strings as keys",
        ),
    ],
)
def test_invalid_subscription_reports_rig_message(obj: Any, detail: str) -> None:
    with pytest.raises(SubscriptionError) as info:
        parse_subscription(obj)
    assert str(info.value) == f"invalid subscription: {detail}"
    assert info.value.detail == detail
    assert info.value.subject == obj


def test_subscription_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="event-type not found"):
        parse_subscription({})


def test_event_type_not_found_is_checked_before_constraints() -> None:
    with pytest.raises(SubscriptionError, match="event-type not found"):
        parse_subscription({"oneOf": "not a list"})


def test_direct_construction_validates_and_freezes() -> None:
    with pytest.raises(SubscriptionError, match="event-type empty"):
        Subscription("")
    with pytest.raises(SubscriptionError, match="constraints expected"):
        Subscription("t", {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(SubscriptionError, match="nonempty strings as keys"):
        Subscription("t", ({"": 1},))
    sub = Subscription("t", [{"a": 1}])  # type: ignore[arg-type]
    assert isinstance(sub.one_of, tuple)
    assert isinstance(sub.one_of[0], Constraint)


# --- lists -------------------------------------------------------------------------


def test_parses_a_list_in_order() -> None:
    subs = parse_subscription_list(
        [{"eventType": "foo", "oneOf": [{"a": "b"}]}, {"eventType": "bar", "oneOf": []}]
    )
    assert subs == [Subscription("foo", ({"a": "b"},)), Subscription("bar")]


def test_empty_list_is_valid() -> None:
    assert parse_subscription_list([]) == []


def test_list_is_all_or_nothing() -> None:
    with pytest.raises(SubscriptionError) as info:
        parse_subscription_list(
            [{"eventType": "greeting", "oneOf": []}, {"eventType": 123, "oneOf": []}]
        )
    assert str(info.value) == "invalid subscription: event-type empty"
    assert info.value.subject == {"eventType": 123, "oneOf": []}


@pytest.mark.parametrize("obj", [{"eventType": "t"}, "[]", None, 3])
def test_non_list_is_rejected_with_rig_message(obj: Any) -> None:
    with pytest.raises(SubscriptionError) as info:
        parse_subscription_list(obj)
    assert str(info.value) == "subscriptions is expected to be a JSON encoded list"
    assert info.value.detail is None


# --- equality, hashing, dedupe -------------------------------------------------------


def test_subscriptions_are_hashable_and_equal_by_value() -> None:
    a = parse_subscription({"eventType": "t", "oneOf": [{"a": 1, "b": [1, {"c": 2}]}]})
    b = parse_subscription({"eventType": "t", "oneOf": [{"b": [1, {"c": 2}], "a": 1}]})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_numbers_compare_numerically() -> None:
    assert Subscription("t", ({"age": 30},)) == Subscription("t", ({"age": 30.0},))
    assert Constraint({"x": [30]}) == Constraint({"x": [30.0]})


def test_bool_is_not_a_number() -> None:
    assert Subscription("t", ({"flag": True},)) != Subscription("t", ({"flag": 1},))
    assert Constraint({"flag": False}) != Constraint({"flag": 0})
    assert Constraint({"x": [True]}) != Constraint({"x": [1]})


def test_null_differs_from_missing_key_and_from_other_values() -> None:
    assert Constraint({"a": None}) != Constraint({})
    assert Constraint({"a": None}) != Constraint({"a": 0})
    assert Constraint({"a": "1"}) != Constraint({"a": 1})


def test_clause_order_matters_for_equality() -> None:
    one = Subscription("t", ({"a": 1}, {"b": 2}))
    other = Subscription("t", ({"b": 2}, {"a": 1}))
    assert one != other


def test_dedupe_keeps_first_seen_order() -> None:
    a, b, c = Subscription("a"), Subscription("b"), Subscription("c")
    assert dedupe([b, a, b, c, a]) == [b, a, c]
    assert dedupe([]) == []


def test_dedupe_uses_json_equality() -> None:
    thirty = Subscription("t", ({"age": 30},))
    thirty_float = Subscription("t", ({"age": 30.0},))
    true = Subscription("t", ({"flag": True},))
    one = Subscription("t", ({"flag": 1},))
    assert dedupe([thirty, thirty_float, true, one]) == [thirty, true, one]


def test_dedupe_keeps_the_first_instance() -> None:
    first = Subscription("t", ({"age": 30},))
    result = dedupe([first, Subscription("t", ({"age": 30.0},))])
    assert result[0] is first


# --- JSON form ---------------------------------------------------------------------


def test_to_json_matches_subscriptions_set_shape() -> None:
    sub = parse_subscription({"event_type": "greeting", "constraints": [{"name": "alice"}]})
    assert sub.to_json() == {"eventType": "greeting", "oneOf": [{"name": "alice"}]}
    assert Subscription("greeting").to_json() == {"eventType": "greeting", "oneOf": []}


def test_to_json_returns_plain_mutable_copies() -> None:
    source = {"eventType": "t", "oneOf": [{"a": {"b": [1, 2]}, "n": None}]}
    sub = parse_subscription(source)
    out = sub.to_json()
    assert out == source
    assert type(out["oneOf"][0]["a"]) is dict
    assert type(out["oneOf"][0]["a"]["b"]) is list
    out["oneOf"][0]["a"]["b"].append(3)
    assert sub.to_json() == source


def test_parsed_subscription_does_not_alias_the_input() -> None:
    clause = {"a": [1]}
    sub = parse_subscription({"eventType": "t", "oneOf": [clause]})
    clause["a"].append(2)
    clause["b"] = 1
    assert sub.one_of == ({"a": [1]},)


def test_constraint_is_a_read_only_mapping() -> None:
    c = Constraint({"name": "joe", "age": 30})
    assert dict(c) == {"name": "joe", "age": 30}
    assert list(c) == ["name", "age"]
    assert "name" in c
    assert c.get("missing") is None
    with pytest.raises(TypeError):
        c["name"] = "bob"  # type: ignore[index]
    assert repr(c) == "Constraint({'name': 'joe', 'age': 30})"
    assert c != ["name"]


# --- match keys ---------------------------------------------------------------------


def test_match_key_normalises_numbers_and_separates_bools() -> None:
    assert match_key(30) == match_key(30.0)
    assert hash(match_key(30)) == hash(match_key(30.0))
    assert match_key(True) != match_key(1)
    assert match_key(False) != match_key(0)
    assert match_key("30") != match_key(30)
    assert match_key("Joe") != match_key("joe")


@pytest.mark.parametrize("value", [None, {"a": 1}, [1], (1,), float("nan"), b"x"])
def test_match_key_is_none_for_unmatchable_values(value: Any) -> None:
    assert match_key(value) is None


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(subscription_module)
    assert result.attempted > 0
    assert result.failed == 0
