"""EXTRACTORS config validation, JWT-derived subscriptions and JSON pointers (§5.2, §5.3)."""

from __future__ import annotations

import copy
import doctest
import pickle
from typing import Any

import pytest

from rig_actors.subscriptions import (
    MISSING,
    ExtractorConfigError,
    Extractors,
    FieldSpec,
    Subscription,
    parse_pointer,
    resolve_pointer,
)
from rig_actors.subscriptions import extractors as extractors_module


def field(index: Any, event: str | None = "/data/x", jwt: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"stable_field_index": index}
    if event is not None:
        spec["event"] = {"json_pointer": event}
    if jwt is not None:
        spec["jwt"] = {"json_pointer": jwt}
    return spec


def config_error(obj: Any) -> ExtractorConfigError:
    with pytest.raises(ExtractorConfigError) as info:
        Extractors.parse(obj)
    return info.value


# --- parsing --------------------------------------------------------------------------


def test_fields_are_ordered_by_stable_field_index() -> None:
    ex = Extractors.parse(
        {
            "person": {
                "age": field(5, "/data/age"),
                "name": field(0, "/data/name", "/username"),
                "city": field(2, "/data/address/city"),
            }
        }
    )
    assert ex.fields("person") == (
        FieldSpec("name", 0, "/data/name", "/username"),
        FieldSpec("city", 2, "/data/address/city", None),
        FieldSpec("age", 5, "/data/age", None),
    )
    assert dict(ex.field_positions("person")) == {"name": 0, "city": 1, "age": 2}


def test_unknown_event_type_has_no_fields() -> None:
    ex = Extractors.parse({"greeting": {"name": field(0)}})
    assert ex.fields("other") == ()
    assert dict(ex.field_positions("other")) == {}


def test_empty_and_unset_configs() -> None:
    assert Extractors.empty().event_types() == ()
    assert Extractors.parse(None) == Extractors.empty()
    assert Extractors.parse({}) == Extractors.empty()
    assert Extractors.parse({"t": {}}).fields("t") == ()


def test_rig_example_extractor_file_parses() -> None:
    ex = Extractors.parse(
        {
            "greeting": {"name": field(1, "/data/name")},
            "greeting.jwt": {"name": field(1, "/data/name", "/username")},
            "nope": {"fullname": field(1, "/data/fullname", "/fullname")},
            "example": {"email": field(1, "/data/email")},
        }
    )
    assert ex.event_types() == ("greeting", "greeting.jwt", "nope", "example")
    assert ex.fields("greeting.jwt")[0].jwt_pointer == "/username"


def test_jwt_section_without_pointer_means_no_jwt_field() -> None:
    ex = Extractors.parse(
        {"t": {"a": {"stable_field_index": 0, "event": {"json_pointer": "/a"}, "jwt": {}}}}
    )
    assert ex.fields("t")[0].jwt_pointer is None


def test_extractors_compare_by_value() -> None:
    one = Extractors.parse({"t": {"a": field(0)}})
    assert one == Extractors.parse({"t": {"a": field(0)}})
    assert one != Extractors.parse({"t": {"a": field(1)}})
    assert hash(one) == hash(Extractors.parse({"t": {"a": field(0)}}))


# --- validation -----------------------------------------------------------------------


def test_missing_stable_field_index_names_type_and_fields() -> None:
    err = config_error({"person": {"name": {"event": {"json_pointer": "/data/name"}}}})
    assert str(err) == (
        'event type "person": stable_field_index is required, but missing for fields: ["name"]'
    )
    assert err.errors == [
        ("person", 'stable_field_index is required, but missing for fields: ["name"]')
    ]


def test_duplicate_index_is_rejected() -> None:
    err = config_error({"person": {"name": field(1), "age": field(1), "x": field(2)}})
    assert str(err) == (
        'event type "person": Duplicate index - please use a different '
        'stable_field_index value for each field (fields: ["name", "age"])'
    )


def test_negative_index_is_rejected() -> None:
    err = config_error({"person": {"name": field(-1)}})
    assert str(err) == (
        'event type "person": Negative index - please use only non-negative values '
        'for stable_field_index (fields: ["name"])'
    )


@pytest.mark.parametrize(
    "spec",
    [
        field(0, event=None),
        {"stable_field_index": 0, "event": {}},
        {"stable_field_index": 0, "event": "/data/x"},
        field(0, event=""),
        field(0, event="data/x"),
        field(0, event="/data/~2"),
        field("0"),
        field(1.5),
        field(True),
        field(None),
        field(0, jwt=""),
        {"stable_field_index": 0, "event": {"json_pointer": "/x"}, "jwt": "/user"},
        "not an object",
    ],
)
def test_invalid_field_config_names_type_and_field(spec: Any) -> None:
    err = config_error({"person": {"ok": field(7), "name": spec}})
    assert str(err) == 'event type "person": Invalid configuration for fields: ["name"]'


def test_every_broken_type_is_reported() -> None:
    err = config_error(
        {"a": {"f": field(0, event=None)}, "ok": {"f": field(0)}, "b": {"g": field(-1)}}
    )
    assert [event_type for event_type, _ in err.errors] == ["a", "b"]
    assert "Invalid configuration" in str(err)
    assert "Negative index" in str(err)


@pytest.mark.parametrize("obj", [[], "greeting", 1])
def test_top_level_must_be_an_object(obj: Any) -> None:
    err = config_error(obj)
    assert err.errors[0][0] is None
    assert "must be an object" in str(err)


def test_event_type_config_must_be_an_object() -> None:
    err = config_error({"greeting": ["name"]})
    assert err.errors[0][0] == "greeting"


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="missing for fields"):
        Extractors.parse({"t": {"f": {}}})


# --- JWT-derived subscriptions ---------------------------------------------------------


TWO_FIELDS = {
    "testevent": {
        "name": field(0, "/data/givenName", "/givenName"),
        "age": field(1, "/data/age", "/age"),
    }
}


def test_jwt_subscription_is_a_conjunction_of_resolved_fields() -> None:
    ex = Extractors.parse(TWO_FIELDS)
    subs = ex.jwt_subscriptions({"givenName": "alice", "age": 33})
    assert subs == [Subscription("testevent", ({"name": "alice", "age": 33},))]


def test_jwt_subscription_contains_only_the_fields_that_resolve() -> None:
    ex = Extractors.parse(TWO_FIELDS)
    subs = ex.jwt_subscriptions({"givenName": "alice"})
    assert subs == [Subscription("testevent", ({"name": "alice"},))]


def test_no_jwt_subscription_when_nothing_resolves() -> None:
    ex = Extractors.parse(TWO_FIELDS)
    assert ex.jwt_subscriptions({}) == []
    assert ex.jwt_subscriptions({"other": "x"}) == []


def test_types_without_jwt_pointers_produce_nothing() -> None:
    ex = Extractors.parse(
        {"testevent": {"name": field(0, "/data/givenName"), "age": field(1, "/data/age")}}
    )
    assert ex.jwt_subscriptions({"givenName": "alice", "age": 33}) == []


def test_empty_config_produces_nothing() -> None:
    assert Extractors.empty().jwt_subscriptions({"givenName": "alice"}) == []


def test_one_subscription_per_type_in_config_order() -> None:
    ex = Extractors.parse(
        {
            "greeting": {"name": field(1, "/data/name")},
            "greeting.jwt": {"name": field(1, "/data/name", "/username")},
            "nope": {"fullname": field(1, "/data/fullname", "/fullname")},
            "mail": {"to": field(0, "/data/to", "/email")},
        }
    )
    subs = ex.jwt_subscriptions({"username": "john.doe", "email": "j@d"})
    assert [s.to_json() for s in subs] == [
        {"eventType": "greeting.jwt", "oneOf": [{"name": "john.doe"}]},
        {"eventType": "mail", "oneOf": [{"to": "j@d"}]},
    ]


def test_jwt_pointers_can_be_nested_and_index_arrays() -> None:
    ex = Extractors.parse(
        {"t": {"org": field(0, "/data/org", "/orgs/0"), "uid": field(1, "/d", "/u/id")}}
    )
    subs = ex.jwt_subscriptions({"orgs": ["acme", "other"], "u": {"id": 7}})
    assert subs == [Subscription("t", ({"org": "acme", "uid": 7},))]


def test_null_claim_counts_as_unresolved() -> None:
    # A null constraint would be a wildcard, handing the user everyone's events.
    ex = Extractors.parse(TWO_FIELDS)
    assert ex.jwt_subscriptions({"givenName": None}) == []
    assert ex.jwt_subscriptions({"givenName": None, "age": 3}) == [
        Subscription("testevent", ({"age": 3},))
    ]


# --- JSON pointers ------------------------------------------------------------------------


DOC = {
    "data": {
        "name": "joe",
        "tags": ["a", "b", {"deep": True}],
        "": "empty key",
        "a/b": "slash",
        "m~n": "tilde",
        " ": "space",
        "nothing": None,
        "zero": 0,
    }
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("", DOC),
        ("/data/name", "joe"),
        ("/data/tags", ["a", "b", {"deep": True}]),
        ("/data/tags/0", "a"),
        ("/data/tags/2/deep", True),
        ("/data/", "empty key"),
        ("/data/a~1b", "slash"),
        ("/data/m~0n", "tilde"),
        ("/data/ ", "space"),
        ("/data/nothing", None),
        ("/data/zero", 0),
    ],
)
def test_resolve_pointer_follows_rfc_6901(pointer: str, expected: Any) -> None:
    assert resolve_pointer(DOC, pointer) == expected


@pytest.mark.parametrize(
    "pointer",
    [
        "/missing",
        "/data/missing",
        "/data/name/first",  # into a string
        "/data/zero/x",  # into a number
        "/data/nothing/x",  # into null
        "/data/tags/3",  # past the end
        "/data/tags/-",  # "one past the end" never exists when reading
        "/data/tags/01",  # leading zero is not an index
        "/data/tags/-1",
        "/data/tags/x",
        "/data/tags/",
        "/data/tags/\u0661",  # a non-ASCII digit
    ],
)
def test_unresolvable_pointer_gives_missing(pointer: str) -> None:
    assert resolve_pointer(DOC, pointer) is MISSING


def test_missing_is_distinct_from_null() -> None:
    assert resolve_pointer({"a": None}, "/a") is None
    assert resolve_pointer({}, "/a") is MISSING
    assert not MISSING
    assert repr(MISSING) == "MISSING"


def test_missing_survives_copy_and_pickle() -> None:
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_string_data_has_no_sub_fields() -> None:
    event = {"contenttype": "application/json", "data": '{"name": "joe"}'}
    assert resolve_pointer(event, "/data/name") is MISSING


def test_data_is_reachable_whatever_the_content_type() -> None:
    # RIG cannot do this when a lowercase contenttype attribute is present (§15.17).
    event = {"contenttype": "application/json", "data": {"name": "joe"}}
    assert resolve_pointer(event, "/data/name") == "joe"


def test_tuples_are_arrays() -> None:
    assert resolve_pointer({"a": ("x", "y")}, "/a/1") == "y"


@pytest.mark.parametrize("pointer", ["data", "data/name", "/a~", "/a~2b", "#/data"])
def test_malformed_pointer_raises(pointer: str) -> None:
    with pytest.raises(ValueError, match="invalid JSON pointer"):
        parse_pointer(pointer)


def test_escapes_are_decoded_in_the_right_order() -> None:
    assert parse_pointer("/~01") == ("~1",)
    assert parse_pointer("/~10") == ("/0",)


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(extractors_module)
    assert result.attempted > 0
    assert result.failed == 0
