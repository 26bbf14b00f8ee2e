"""Unit tests of rig_actors.proxy.routes: validation, defaults, matching, CRUD, merge."""

from __future__ import annotations

import copy
import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rig_actors.config import load_settings
from rig_actors.proxy.routes import (
    ApiConflict,
    ApiNotFound,
    ApiValidationError,
    RouteTable,
    format_timestamp,
    normalize_api,
    rewrite_path,
    validate_api,
)


def api(api_id: str = "a", *endpoints: dict[str, Any], **fields: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "id": api_id,
        "name": api_id,
        "proxy": {"target_url": "backend", "port": 8080},
        "version_data": {"default": {"endpoints": list(endpoints)}},
    }
    definition.update(fields)
    return definition


def ep(endpoint_id: str = "e", method: str = "GET", path: str = "/x", **fields: Any) -> dict:
    return {"id": endpoint_id, "method": method, "path_regex": path, **fields}


class Clock:
    """Strictly increasing timestamps, one per call."""

    def __init__(self) -> None:
        self.ticks = itertools.count(1)

    def __call__(self) -> str:
        return f"2024-01-01T00:00:{next(self.ticks):02d}.000000Z"


@pytest.fixture()
def table() -> RouteTable:
    return RouteTable(clock=Clock())


# ------------------------------------------------------------------ validation


def test_a_valid_definition_has_no_errors() -> None:
    assert validate_api(api("a", ep())) == {}


def test_put_with_an_empty_body_gives_rigs_error_map() -> None:
    # apis_test.exs: PUT {} (the path supplies the id).
    assert validate_api({"id": "x"}) == {
        "api": [
            {"name": "must be string"},
            {"name": "must have a length of at least 1"},
            {"proxy": "must be present"},
            {"version_data": "must be present"},
        ]
    }


def test_an_empty_endpoint_gives_rigs_error_map() -> None:
    assert validate_api(api("invalid-config", {})) == {
        "invalid-config/": [
            {"id": "must be string"},
            {"id": "must have a length of at least 1"},
            {"path_regex": "must be string"},
            {"path_regex": "must have a length of at least 1"},
            {"method": "must be string"},
            {"method": "must have a length of at least 1"},
        ]
    }


def test_a_body_without_id_is_a_validation_error_not_a_crash() -> None:
    errors = validate_api(
        {"name": "n", "proxy": {"target_url": "h", "port": 1}, "version_data": {}}
    )
    assert errors["api"][:2] == [
        {"id": "must be string"},
        {"id": "must have a length of at least 1"},
    ]


def test_non_object_definitions_report_every_missing_field() -> None:
    assert validate_api([1, 2])["api"][0] == {"id": "must be string"}
    assert validate_api(None) == validate_api({})


def test_proxy_problems() -> None:
    assert validate_api(api(proxy={}))["api"] == [
        {"proxy": "must be present"},
        {"target_url": "must be string"},
        {"target_url": "must have a length of at least 1"},
        {"port": "must be integer"},
    ]
    assert validate_api(api(proxy={"target_url": "h", "port": "80"}))["api"] == [
        {"port": "must be integer"}
    ]
    assert validate_api(api(proxy={"target_url": 7, "port": True}))["api"] == [
        {"target_url": "must be string"},
        {"port": "must be integer"},
    ]
    assert validate_api(api(proxy=None))["api"] == [{"proxy": "must be present"}]


def test_version_data_problems() -> None:
    assert validate_api(api(version_data={}))["api"] == [
        {"version_data": "must be present"},
        {"version_data": "must have at least one version, e.g. default"},
    ]
    assert validate_api(api(version_data={"default": {}, "v2": {"endpoints": {}}}))["api"] == [
        {"endpoints": "must be list"},
        {"endpoints": "must be list"},
    ]


def test_auth_problems_are_keyed_by_the_api_id() -> None:
    errors = validate_api(api("svc", auth={"use_header": True, "use_query": True}))
    assert errors == {
        "svc": [
            {"header_name": "must be present"},
            {"query_name": "must be present"},
            {"auth_type": 'must be one of ["jwt"]'},
        ]
    }
    assert (
        validate_api(api("svc", auth={"use_header": True, "header_name": "x"}, auth_type="jwt"))
        == {}
    )
    # use_header false (blank) requires nothing.
    assert validate_api(api("svc", auth={"use_header": False, "header_name": ""})) == {}


def test_endpoint_rules() -> None:
    definition = api(
        "svc",
        ep("sec", secured=True),
        ep("k", target="kafka"),
        ep("s", schema="subject"),
        ep("ok", target="kafka", topic="t"),
    )
    assert validate_api(definition) == {
        "svc/k": [{"topic": "must be present"}],
        "svc/s": [{"target": "must be present"}],
        "svc/sec": [{"auth_type": 'must be one of ["jwt"]'}],
    }
    # RIG compares target values exactly here (routing is case-insensitive).
    assert validate_api(api("svc", ep("k", target="Kafka"))) == {}


def test_a_path_regex_that_does_not_compile_is_rejected() -> None:
    assert validate_api(api("svc", ep("bad", path="/x(["))) == {
        "svc/bad": [{"path_regex": "must be a valid regular expression"}]
    }


def test_error_keys_use_elixir_interpolation() -> None:
    errors = validate_api(
        api("svc", ep(None, path=""), auth={"use_query": True, "query_name": "q"})
    )
    assert set(errors) == {"svc", "svc/"}


def test_the_error_map_keys_are_sorted_like_an_elixir_map() -> None:
    errors = validate_api({"id": "z", "version_data": {"default": {"endpoints": [{"id": "e"}]}}})
    assert list(errors) == sorted(errors)


# --------------------------------------------------------------- normalisation


def test_methods_are_upper_cased_in_every_version() -> None:
    definition = api("a", ep(method="get"), version_data=None)
    definition["version_data"] = {
        "default": {"endpoints": [ep(method="get")]},
        "v2": {"endpoints": [ep(method="Post")]},
    }
    normalized = normalize_api(definition)
    assert normalized["version_data"]["default"]["endpoints"][0]["method"] == "GET"
    assert normalized["version_data"]["v2"]["endpoints"][0]["method"] == "POST"
    assert definition["version_data"]["default"]["endpoints"][0]["method"] == "get"


def test_jwt_turns_the_header_on_but_keeps_a_custom_header_name() -> None:
    assert normalize_api({"auth_type": "jwt"})["auth"] == {
        "use_header": True,
        "header_name": "Authorization",
    }
    custom = normalize_api({"auth_type": "jwt", "auth": {"header_name": "x-token"}})
    assert custom["auth"] == {"header_name": "x-token", "use_header": True}
    assert normalize_api({"auth_type": "none", "auth": {}})["auth"] == {}


def test_format_timestamp_is_iso_utc_with_microseconds() -> None:
    from datetime import UTC, datetime

    stamp = format_timestamp(datetime(2024, 2, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert stamp == "2024-02-03T04:05:06.000007Z"


# -------------------------------------------------------------------- matching


def test_match_is_anchored_and_case_insensitive(table: RouteTable) -> None:
    table.load([api("a", ep("e", path="/books/[0-9]+"))], node_name="w")
    assert table.match("GET", "/BOOKS/12") is not None
    assert table.match("GET", "/books/12/x") is None
    assert table.match("GET", "/x/books/12") is None
    assert table.match("get", "/books/12") is None  # request methods are case-sensitive


def test_alternatives_are_anchored_as_a_whole(table: RouteTable) -> None:
    table.load([api("a", ep("e", path="/a|/b"))], node_name="w")
    assert table.match("GET", "/a") and table.match("GET", "/b")
    assert table.match("GET", "/a/more") is None
    assert table.match("GET", "/more/b") is None


def test_rewrite_with_capture_groups(table: RouteTable) -> None:
    table.load(
        [api("a", ep("e", path="/foo/([^/]+)/bar/([^/]+)", path_replacement=r"/bar/\1/foo/\2"))],
        node_name="w",
    )
    match = table.match("GET", "/foo/1/bar/2")
    assert match is not None and match.path == "/bar/1/foo/2"


def test_rewrite_path_expands_like_elixir() -> None:
    matched = re.fullmatch(r"/(a)(b)?/(c)", "/a/c")
    assert matched is not None
    # \2 did not take part and \9 does not exist: both expand to nothing.
    assert rewrite_path(matched, r"/\3\2\1/\g{1}/\9/\0") == "/ca/a///a/c"


def test_first_match_wins_in_table_order(table: RouteTable) -> None:
    table.load(
        [api("a", ep("first", path="/x.*")), api("b", ep("second", path="/x"))],
        node_name="w",
    )
    match = table.match("GET", "/x")
    assert match is not None and match.endpoint["id"] == "first"


def test_inactive_versioned_and_non_default_versions_are_not_routed(table: RouteTable) -> None:
    inactive = api("i", ep("e", path="/i"), active=False)
    versioned = api("v", ep("e", path="/v"), versioned=True)
    other = api("o", ep("e", path="/o0"))
    other["version_data"]["v2"] = {"endpoints": [ep("e2", path="/o")]}
    table.load([inactive, versioned, other], node_name="w")
    assert table.match("GET", "/i") is None
    assert table.match("GET", "/v") is None
    assert table.match("GET", "/o") is None


def test_head_prefers_head_endpoints_and_falls_back_to_get(table: RouteTable) -> None:
    table.load(
        [api("a", ep("get", "GET", "/x"), ep("head", "HEAD", "/x"), ep("only-get", "GET", "/y"))],
        node_name="w",
    )
    head = table.match("HEAD", "/x")
    assert head is not None and head.endpoint["id"] == "head"
    fallback = table.match("HEAD", "/y")
    assert fallback is not None and fallback.endpoint["id"] == "only-get"


def test_any_method_string_can_be_routed(table: RouteTable) -> None:
    table.load([api("a", ep("odd", "badmethod", "/x"))], node_name="w")
    match = table.match("BADMETHOD", "/x")
    assert match is not None and match.target == "http" and match.response_from == "http"


def test_target_and_response_from_are_case_insensitive(table: RouteTable) -> None:
    table.load(
        [api("a", ep("k", "POST", "/k", target="KAFKA", topic="t", response_from="Kafka"))],
        node_name="w",
    )
    match = table.match("POST", "/k")
    assert match is not None and (match.target, match.response_from) == ("kafka", "kafka")


# ------------------------------------------------------------------ load / CRUD


def test_load_applies_defaults_and_keeps_an_explicit_active(table: RouteTable) -> None:
    table.load([api("a", ep(method="get")), api("b", active=False)], node_name="w1")
    stored = table.get("a")
    assert stored is not None
    assert stored["active"] is True
    assert stored["auth_type"] == "none"
    assert stored["auth"] == {
        "use_header": False,
        "header_name": "",
        "use_query": False,
        "query_name": "",
    }
    assert stored["versioned"] is False
    assert stored["ref_number"] == 0
    assert stored["node_name"] == "w1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stored["timestamp"])
    assert stored["version_data"]["default"]["endpoints"][0]["method"] == "GET"
    assert table.get_active("b") is None


def test_load_stops_at_the_first_invalid_definition(table: RouteTable) -> None:
    with pytest.raises(ApiValidationError) as caught:
        table.load([api("ok"), api("bad", {})], node_name="w")
    assert caught.value.position == 1
    assert "bad/" in caught.value.errors
    assert len(table) == 0


def test_create_conflict_deactivate_and_recreate(table: RouteTable) -> None:
    table.merge(table.prepare_create(api("a"), node_name="w"))
    with pytest.raises(ApiConflict, match=re.escape("API with id=a already exists.")):
        table.prepare_create(api("a"), node_name="w")
    table.merge(table.prepare_deactivate("a", node_name="w"))
    assert table.list_active() == []
    recreated = table.prepare_create(api("a", name="again"), node_name="w2")
    assert recreated["ref_number"] == 2 and recreated["active"] is True
    table.merge(recreated)
    assert table.get_active("a")["name"] == "again"  # type: ignore[index]


def test_create_ignores_managed_fields_sent_by_the_client(table: RouteTable) -> None:
    created = table.prepare_create(
        api("a", ref_number=99, timestamp="x", node_name="evil", active=False), node_name="w"
    )
    assert (created["ref_number"], created["node_name"], created["active"]) == (0, "w", True)
    assert created["timestamp"] != "x"


def test_update_merges_shallowly_and_bumps_the_ref(table: RouteTable) -> None:
    table.merge(table.prepare_create(api("a", ep(), auth_type="none"), node_name="w"))
    updated = table.prepare_update(
        "a",
        {
            "id": "ignored",
            "name": "new",
            "proxy": {"target_url": "h", "port": 1},
            "version_data": {"default": {"endpoints": [ep(method="post")]}},
        },
        node_name="w2",
    )
    assert updated["id"] == "a"
    assert updated["name"] == "new"
    assert updated["auth_type"] == "none"  # kept from the stored definition
    assert updated["ref_number"] == 1 and updated["node_name"] == "w2"
    assert updated["version_data"]["default"]["endpoints"][0]["method"] == "POST"


def test_update_validates_before_looking_the_api_up(table: RouteTable) -> None:
    with pytest.raises(ApiValidationError):
        table.prepare_update("missing", {}, node_name="w")
    with pytest.raises(ApiNotFound, match=re.escape("API with id=missing doesn't exists.")):
        table.prepare_update("missing", api("x"), node_name="w")


def test_deactivating_twice_is_not_found(table: RouteTable) -> None:
    table.merge(table.prepare_create(api("a"), node_name="w"))
    table.merge(table.prepare_deactivate("a", node_name="w"))
    with pytest.raises(ApiNotFound):
        table.prepare_deactivate("a", node_name="w")


def test_reads_return_copies(table: RouteTable) -> None:
    table.merge(table.prepare_create(api("a", ep()), node_name="w"))
    copy_ = table.get("a")
    assert copy_ is not None
    copy_["version_data"]["default"]["endpoints"].clear()
    assert table.match("GET", "/x") is not None


# ----------------------------------------------------------------------- merge


def stamped(ref: int, timestamp: str, **fields: Any) -> dict[str, Any]:
    return {**api("a", ep()), "active": True, "ref_number": ref, "timestamp": timestamp, **fields}


def test_merge_prefers_the_higher_ref_number(table: RouteTable) -> None:
    assert table.merge(stamped(1, "2024-01-01T00:00:00.000000Z", name="one"))
    assert not table.merge(stamped(0, "2030-01-01T00:00:00.000000Z", name="zero"))
    assert table.merge(stamped(2, "2020-01-01T00:00:00.000000Z", name="two"))
    assert table.get("a")["name"] == "two"  # type: ignore[index]


def test_merge_with_equal_refs_takes_the_newer_timestamp(table: RouteTable) -> None:
    table.merge(stamped(1, "2024-01-01T00:00:01.000000Z", name="older"))
    assert table.merge(stamped(1, "2024-01-01T00:00:02.000000Z", name="newer"))
    assert not table.merge(stamped(1, "2024-01-01T00:00:00.000000Z", name="oldest"))
    assert table.get("a")["name"] == "newer"  # type: ignore[index]


def test_merge_of_the_same_content_changes_nothing(table: RouteTable) -> None:
    table.merge(stamped(1, "2024-01-01T00:00:01.000000Z", node_name="w1"))
    version = table.version
    assert not table.merge(stamped(1, "2025-01-01T00:00:01.000000Z", node_name="w2"))
    assert table.version == version


def test_merge_ignores_definitions_without_id(table: RouteTable) -> None:
    assert not table.merge({"name": "x"})
    assert not table.merge({"id": ""})


versions = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 3),
        st.sampled_from(["x", "y", "z"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(versions, st.randoms())
def test_copies_converge_whatever_the_order_of_arrival(
    found: list[tuple[int, int, str, bool]], rnd: random.Random
) -> None:
    definitions = [
        stamped(ref, f"2024-01-01T00:00:0{second}.000000Z", name=name, active=active)
        for ref, second, name, active in found
    ]
    results = []
    for _ in range(3):
        order = copy.deepcopy(definitions)
        rnd.shuffle(order)
        table = RouteTable()
        for definition in order:
            table.merge(definition)
            table.merge(definition)  # duplicates change nothing
        stored = table.get("a")
        assert stored is not None
        results.append(
            (stored["name"], stored["active"], stored["ref_number"], stored["timestamp"])
        )
    assert len(set(results)) == 1


# ------------------------------------------------------------------------ docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-gateway.rst"


def yaml_blocks(text: str) -> list[str]:
    """The bodies of the ``.. code-block:: yaml`` directives of an rst text."""
    blocks, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: yaml":
            continue
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and not following.startswith("    "):
                break
            body.append(following[4:])
        blocks.append("\n".join(body))
    return blocks


def test_every_yaml_example_of_the_docs_is_a_valid_config(tmp_path: Path) -> None:
    blocks = yaml_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    for number, block in enumerate(blocks):
        path = tmp_path / f"example-{number}.yaml"
        path.write_text(block, encoding="utf-8")
        loaded = load_settings(env={}, path=path)  # every key is a setting
        assert loaded.apis, block
        table = RouteTable()
        table.load(loaded.apis, node_name="docs")  # raises on an invalid definition
        assert yaml.safe_load(block)["apis"] == list(loaded.apis)
