"""Unit tests for the CloudEvents codec (rig_actors.events.cloudevent)."""

from __future__ import annotations

import doctest
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig_actors.events import cloudevent
from rig_actors.events.cloudevent import (
    CloudEvent,
    CloudEventError,
    from_http,
    from_kafka,
    new_rig_event,
    parse_json_event,
    to_kafka_structured,
)

STRUCTURED = "The request body does not look like a CloudEvent: "
HTTP_BINARY = "The request does not look like a CloudEvent in binary mode: "
KAFKA_STRUCTURED = "The Kafka record value does not look like a CloudEvent: "
KAFKA_BINARY = "The Kafka record does not look like a CloudEvent in binary mode: "

# Appendix A.2 of the RIG reference, byte for byte.
A2_BODY = '{"specversion":"0.2","type":"greeting","source":"test","id":"1","data":{"name":"alice"}}'
# Appendix A.3 of the RIG reference.
A3_BODY = "The name this event carries is »Alice«."
A3_EXPECTED = (
    '{"contenttype":"text/plain","data":"The name this event carries is »Alice«.",'
    '"id":"42","source":"s","specversion":"0.2","type":"greeting"}'
)


def _ce(**attrs: Any) -> str:
    return json.dumps(attrs)


def _v02(**extra: Any) -> dict[str, Any]:
    return {"specversion": "0.2", "type": "t", "source": "s", "id": "1", **extra}


def _v10(**extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "1", "source": "s", "type": "t", **extra}


def _v01(**extra: Any) -> dict[str, Any]:
    return {
        "cloudEventsVersion": "0.1",
        "eventType": "t",
        "source": "s",
        "eventID": "1",
        **extra,
    }


def _binary_headers(specversion: str = "0.2", **extra: str) -> dict[str, str]:
    headers = {
        "ce-specversion": specversion,
        "ce-type": "greeting",
        "ce-source": "s",
        "ce-id": "42",
    }
    headers.update(extra)
    return headers


def _kafka_headers(
    specversion: str = "0.2", content_type: str | None = "text/plain"
) -> list[tuple[str, bytes]]:
    headers = [
        ("ce_specversion", specversion.encode()),
        ("ce_type", b"greeting"),
        ("ce_source", b"s"),
        ("ce_id", b"42"),
    ]
    if content_type is not None:
        headers.append(("content-type", content_type.encode()))
    return headers


def _error(func: Any, *args: Any) -> CloudEventError:
    with pytest.raises(CloudEventError) as info:
        func(*args)
    return info.value


# --------------------------------------------------------------------------- #
# Structured JSON (parse_json_event)
# --------------------------------------------------------------------------- #


def test_appendix_a2_event_is_parsed_and_its_text_kept_verbatim() -> None:
    event = parse_json_event(A2_BODY)

    assert event.json == A2_BODY
    assert (event.type, event.id, event.specversion) == ("greeting", "1", "0.2")
    assert event.attrs == json.loads(A2_BODY)


def test_bytes_input_is_decoded_as_utf8_and_kept_as_text() -> None:
    text = _ce(**_v02(data="»Alice«"))
    event = parse_json_event(text.encode("utf-8"))

    assert isinstance(event.json, str)
    assert event.json == text


def test_version_0_1_routes_on_event_type_and_event_id() -> None:
    event = parse_json_event(_ce(**_v01(eventType="greeting", eventID="9")))

    assert (event.type, event.id, event.specversion) == ("greeting", "9", "0.1")


def test_version_1_0_structured_event_is_accepted() -> None:
    text = _ce(**_v10(type="greeting", id="7", subject="x", data={"n": 1}))
    event = parse_json_event(text)

    assert (event.type, event.id, event.specversion) == ("greeting", "7", "1.0")
    assert event.json == text


def test_unknown_attributes_whitespace_and_key_order_are_preserved_byte_for_byte() -> None:
    text = (
        '{ "id" : "1",\n  "zeta": {"b": 2, "a": [1, 2.50, "\\u00e9"]},\n'
        '  "type": "t", "rig": {"correlation": "c"}, "source": "s",'
        ' "specversion": "0.2", "Mixed-Case_attr": null }'
    )
    event = parse_json_event(text)

    assert event.json == text
    assert event.attrs["zeta"] == {"b": 2, "a": [1, 2.5, "é"]}
    assert list(event.attrs["zeta"]) == ["b", "a"]
    assert event.attrs["Mixed-Case_attr"] is None
    assert event.attrs["rig"] == {"correlation": "c"}


def test_non_ascii_text_is_kept_unescaped() -> None:
    text = '{"specversion":"0.2","type":"t","source":"s","id":"1","data":"»Ä«"}'

    assert parse_json_event(text.encode("utf-8")).json == text


def test_cloud_event_error_is_a_value_error_carrying_a_status() -> None:
    error = _error(parse_json_event, "[]")

    assert isinstance(error, ValueError)
    assert error.status == 400
    assert str(error) == STRUCTURED + "expected a JSON object, got an array"


@pytest.mark.parametrize(
    ("event", "missing"),
    [
        (_v02(), "type"),
        (_v02(), "id"),
        (_v02(), "source"),
        (_v10(), "type"),
        (_v10(), "id"),
        (_v10(), "source"),
        (_v01(), "eventType"),
        (_v01(), "eventID"),
        (_v01(), "source"),
    ],
)
def test_missing_required_attribute_is_named_in_a_400(event: dict[str, Any], missing: str) -> None:
    del event[missing]

    error = _error(parse_json_event, _ce(**event))

    assert error.status == 400
    assert str(error) == f'{STRUCTURED}missing required attribute "{missing}"'


@pytest.mark.parametrize("make", [_v01, _v02])
def test_source_is_required_for_0_1_and_0_2_unlike_rig(make: Any) -> None:
    event = make()
    del event["source"]

    assert "source" in str(_error(parse_json_event, _ce(**event)))


def test_all_missing_required_attributes_are_listed() -> None:
    error = _error(parse_json_event, '{"specversion":"0.2"}')

    assert str(error) == (f'{STRUCTURED}missing required attributes "type", "source", "id"')


@pytest.mark.parametrize("bad", ["", 1, None, True, {"a": 1}, ["x"]])
@pytest.mark.parametrize("attr", ["type", "source", "id"])
def test_required_attributes_must_be_non_empty_strings(attr: str, bad: Any) -> None:
    error = _error(parse_json_event, _ce(**_v02(**{attr: bad})))

    assert error.status == 400
    assert str(error).startswith(
        f'{STRUCTURED}the attribute "{attr}" must be a non-empty string, got '
    )


@pytest.mark.parametrize("version", ["0.3", "0.1", "1", "", 0.2, 1.0, None])
def test_unsupported_specversion_is_rejected(version: Any) -> None:
    event = _v02()
    event["specversion"] = version

    error = _error(parse_json_event, _ce(**event))

    assert error.status == 400
    assert str(error).startswith(f'{STRUCTURED}unsupported attribute "specversion" ')
    assert json.dumps(version) in str(error)


def test_cloud_events_version_other_than_0_1_is_rejected() -> None:
    error = _error(parse_json_event, _ce(**_v01(cloudEventsVersion="0.2")))

    assert str(error) == (
        f'{STRUCTURED}unsupported attribute "cloudEventsVersion" "0.2" (supported: "0.1")'
    )


def test_object_without_any_version_attribute_is_rejected() -> None:
    error = _error(parse_json_event, '{"type":"t","source":"s","id":"1"}')

    assert error.status == 400
    assert "specversion" in str(error)
    assert "cloudEventsVersion" in str(error)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[]", "an array"),
        ("[{}]", "an array"),
        ("42", "a number"),
        ('"event"', "a string"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_json_that_is_not_an_object_is_rejected(text: str, kind: str) -> None:
    error = _error(parse_json_event, text)

    assert error.status == 400
    assert str(error) == f"{STRUCTURED}expected a JSON object, got {kind}"


@pytest.mark.parametrize("text", ['{"specversion":', "{'a': 1}", "{} {}", "\ufeff{}"])
def test_invalid_json_is_a_400(text: str) -> None:
    error = _error(parse_json_event, text)

    assert error.status == 400
    assert str(error).startswith(STRUCTURED + "invalid JSON: ")


@pytest.mark.parametrize("text", ["", b"", "  \n "])
def test_empty_body_is_a_400(text: str | bytes) -> None:
    error = _error(parse_json_event, text)

    assert str(error) == STRUCTURED + "the body is empty"


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b'{"specversion":"0.2","data":"\xc3"}', b"\xed\xa0\x80"],
)
def test_invalid_utf8_is_a_400(body: bytes) -> None:
    error = _error(parse_json_event, body)

    assert error.status == 400
    assert str(error).startswith(STRUCTURED + "the body is not valid UTF-8")


def test_text_with_unpaired_surrogates_is_a_400() -> None:
    error = _error(parse_json_event, '{"a":"\ud800"}')

    assert error.status == 400
    assert "surrogate" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        _ce(**_v02())[:-1] + ',"data":' + "[" * 50_000 + "]" * 50_000 + "}",
    ],
    ids=["arrays", "objects", "inside-data"],
)
def test_deeply_nested_json_is_a_400_not_a_crash(text: str) -> None:
    error = _error(parse_json_event, text)

    assert str(error) == STRUCTURED + "the JSON is nested too deeply"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_rejected(constant: str) -> None:
    text = _ce(**_v02())[:-1] + f',"data":{constant}}}'

    error = _error(parse_json_event, text)

    assert str(error) == f"{STRUCTURED}invalid JSON: {constant} is not valid JSON"


def test_integer_beyond_pythons_digit_limit_is_a_cloud_event_error() -> None:
    text = _ce(**_v02())[:-1] + ',"data":' + "9" * 10_000 + "}"

    assert _error(parse_json_event, text).status == 400


@pytest.mark.parametrize("name", ["My-Ext", "camelCase", "with_underscore", "é", ""])
def test_version_1_0_rejects_extension_names_outside_lowercase_alphanumerics(
    name: str,
) -> None:
    error = _error(parse_json_event, _ce(**_v10(**{name: "x"})))

    assert error.status == 400
    assert str(error).startswith(
        f'{STRUCTURED}invalid CloudEvents 1.0 extension attribute name "{name}": '
    )


def test_version_1_0_accepts_lowercase_alphanumeric_extensions_and_data_base64() -> None:
    event = parse_json_event(_ce(**_v10(traceparent="00-ab", ext2={"a": 1}, data_base64="aGk=")))

    assert event.attrs["ext2"] == {"a": 1}
    assert event.attrs["data_base64"] == "aGk="


@pytest.mark.parametrize("make", [_v01, _v02])
def test_versions_0_1_and_0_2_accept_arbitrary_extension_names(make: Any) -> None:
    event = parse_json_event(_ce(**make(**{"rig": {}, "x-Custom_Attr": 1})))

    assert event.attrs["x-Custom_Attr"] == 1


# --------------------------------------------------------------------------- #
# HTTP binding: mode selection
# --------------------------------------------------------------------------- #


def test_appendix_a2_application_json_without_ce_specversion_is_structured() -> None:
    event = from_http({"content-type": "application/json"}, A2_BODY.encode())

    assert event.json == A2_BODY
    assert event.type == "greeting"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "application/cloudevents",
        "Application/CloudEvents+JSON; charset=UTF-8",
        "application/json; charset=utf-8",
    ],
)
def test_structured_content_types_are_case_insensitive_and_ignore_parameters(
    content_type: str,
) -> None:
    event = from_http({"Content-Type": content_type}, A2_BODY.encode())

    assert event.json == A2_BODY


def test_structured_mode_ignores_ce_headers() -> None:
    headers = {"content-type": "application/cloudevents+json", **_binary_headers()}
    headers["ce-type"] = "from-header"

    event = from_http(headers, A2_BODY.encode())

    assert event.type == "greeting"
    assert event.json == A2_BODY


def test_structured_mode_body_that_is_not_a_cloud_event_is_a_400() -> None:
    error = _error(from_http, {"content-type": "application/json"}, b'{"foo":"bar"}')

    assert error.status == 400
    assert str(error).startswith(STRUCTURED)


@pytest.mark.parametrize(
    "content_type",
    ["application/cloudevents-batch", "application/cloudevents-batch+json; x=y"],
)
def test_batch_mode_is_a_415(content_type: str) -> None:
    error = _error(from_http, {"content-type": content_type}, b"[]")

    assert error.status == 415
    assert str(error) == (
        "The batched CloudEvents HTTP transport binding mode is currently not supported."
    )


def test_structured_mode_with_non_json_format_is_a_415_naming_the_content_type() -> None:
    content_type = "application/cloudevents+xml; charset=utf-8"

    error = _error(from_http, {"content-type": content_type}, b"<x/>")

    assert error.status == 415
    assert str(error) == (
        f"The given content-type {content_type} is currently not supported for structured mode."
    )


@pytest.mark.parametrize("headers", [{}, {"content-type": ""}, {"Content-Type": "  "}])
def test_missing_content_type_is_a_415_not_a_crash(headers: dict[str, str]) -> None:
    error = _error(from_http, headers, A2_BODY.encode())

    assert error.status == 415
    assert str(error) == "A content-type header is required."


def test_application_json_with_ce_specversion_header_is_binary_mode() -> None:
    headers = {"Content-Type": "application/json", **_binary_headers()}

    event = from_http(headers, b'{"name": "alice"}')

    assert event.attrs["data"] == {"name": "alice"}
    assert event.type == "greeting"


def test_header_names_are_matched_case_insensitively() -> None:
    headers = {
        "CONTENT-TYPE": "text/plain",
        "Ce-SpecVersion": "0.2",
        "CE-TYPE": "greeting",
        "ce-Source": "s",
        "Ce-Id": "42",
        "Ce-MyExt": "1",
    }

    event = from_http(headers, b"hi")

    assert event.type == "greeting"
    assert event.attrs["myext"] == 1


def test_werkzeug_headers_object_is_accepted() -> None:
    datastructures = pytest.importorskip("werkzeug.datastructures")
    headers = datastructures.Headers([("Content-Type", "text/plain"), *_binary_headers().items()])

    assert from_http(headers, A3_BODY.encode()).json == A3_EXPECTED


# --------------------------------------------------------------------------- #
# HTTP binding: binary mode
# --------------------------------------------------------------------------- #


def test_appendix_a3_text_body_becomes_data_with_contenttype() -> None:
    headers = {"content-type": "text/plain", **_binary_headers()}

    event = from_http(headers, A3_BODY.encode("utf-8"))

    assert event.json == A3_EXPECTED
    assert (event.type, event.id, event.specversion) == ("greeting", "42", "0.2")
    assert event.attrs == json.loads(A3_EXPECTED)


def test_binary_mode_contenttype_is_the_full_header_value() -> None:
    headers = {"content-type": "text/plain; charset=utf-8", **_binary_headers()}

    event = from_http(headers, b"hi")

    assert event.attrs["contenttype"] == "text/plain; charset=utf-8"


def test_binary_mode_json_body_becomes_data_without_content_type() -> None:
    headers = {"content-type": "application/json; charset=utf-8", **_binary_headers()}

    event = from_http(headers, b'{"b": [1, {"z": 1, "a": 2}], "a": "\xc3\xa9"}')

    assert event.json == (
        '{"data":{"b":[1,{"z":1,"a":2}],"a":"é"},"id":"42","source":"s",'
        '"specversion":"0.2","type":"greeting"}'
    )
    assert "contenttype" not in event.attrs


def test_binary_mode_content_type_header_overrides_ce_content_type_headers() -> None:
    json_headers = {
        "content-type": "application/json",
        **_binary_headers(**{"ce-contenttype": "text/xml"}),
    }
    text_headers = {
        "content-type": "text/plain",
        **_binary_headers(**{"ce-contenttype": "text/xml"}),
    }

    assert "contenttype" not in from_http(json_headers, b"{}").attrs
    assert from_http(text_headers, b"x").attrs["contenttype"] == "text/plain"


def test_binary_mode_structured_suffix_json_media_type_is_decoded() -> None:
    headers = {"content-type": "application/vnd.example+json", **_binary_headers()}

    event = from_http(headers, b"[1,2]")

    assert event.attrs["data"] == [1, 2]
    assert "contenttype" not in event.attrs


def test_binary_mode_invalid_json_body_is_a_400_not_a_crash() -> None:
    headers = {"content-type": "application/json", **_binary_headers()}

    error = _error(from_http, headers, b"{not json")

    assert error.status == 400
    assert str(error).startswith(
        HTTP_BINARY + "the application/json body is not usable: invalid JSON: "
    )


def test_binary_mode_deeply_nested_json_body_is_a_400() -> None:
    headers = {"content-type": "application/json", **_binary_headers()}

    error = _error(from_http, headers, b"[" * 100_000 + b"]" * 100_000)

    assert error.status == 400
    assert "nested too deeply" in str(error)


def test_binary_mode_invalid_utf8_text_body_is_a_400() -> None:
    headers = {"content-type": "application/octet-stream", **_binary_headers()}

    error = _error(from_http, headers, b"\x00\xff\xfe")

    assert error.status == 400
    assert str(error).startswith(HTTP_BINARY + "the body is not valid UTF-8")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_binary_mode_empty_body_has_no_data_and_no_content_type(
    content_type: str,
) -> None:
    headers = {"content-type": content_type, **_binary_headers()}

    event = from_http(headers, b"")

    assert event.json == ('{"id":"42","source":"s","specversion":"0.2","type":"greeting"}')


def test_binary_mode_version_1_0_text_body_uses_datacontenttype() -> None:
    headers = {"content-type": "text/plain", **_binary_headers("1.0")}

    event = from_http(headers, b"hello")

    assert event.json == (
        '{"data":"hello","datacontenttype":"text/plain","id":"42","source":"s",'
        '"specversion":"1.0","type":"greeting"}'
    )
    assert event.specversion == "1.0"


def test_binary_mode_version_1_0_json_body_has_no_datacontenttype() -> None:
    headers = {"content-type": "application/json", **_binary_headers("1.0")}

    event = from_http(headers, b'{"n":1}')

    assert event.attrs == {
        "data": {"n": 1},
        "id": "42",
        "source": "s",
        "specversion": "1.0",
        "type": "greeting",
    }


def test_binary_mode_without_ce_specversion_is_a_400_with_a_hint() -> None:
    headers = {"content-type": "text/plain", "ce-type": "t"}

    error = _error(from_http, headers, b"hi")

    assert error.status == 400
    assert str(error) == (
        HTTP_BINARY + "the ce-specversion header is missing (for structured mode "
        "send content-type application/cloudevents+json)"
    )


@pytest.mark.parametrize(
    ("version", "suffix"),
    [
        ("0.1", '"0.1" (CloudEvents 0.1 has no binary mode)'),
        ("0.3", '"0.3"'),
        ("", '""'),
        ("1.0.0", '"1.0.0"'),
    ],
)
def test_binary_mode_specversion_other_than_0_2_or_1_0_names_the_value(
    version: str, suffix: str
) -> None:
    headers = {"content-type": "text/plain", **_binary_headers(version)}

    error = _error(from_http, headers, b"hi")

    assert error.status == 400
    assert str(error) == (
        f'{HTTP_BINARY}the ce-specversion header must be "0.2" or "1.0", got {suffix}'
    )


def test_binary_mode_standard_attributes_stay_strings() -> None:
    headers = {
        "content-type": "text/plain",
        **_binary_headers(
            **{
                "ce-id": "123",
                "ce-source": '"quoted"',
                "ce-time": "2018-04-05T17:31:00Z",
                "ce-schemaurl": "null",
                "ce-subject": "true",
                "ce-type": "[1]",
            }
        ),
    }

    attrs = from_http(headers, b"x").attrs

    assert attrs["id"] == "123"
    assert attrs["source"] == '"quoted"'
    assert attrs["time"] == "2018-04-05T17:31:00Z"
    assert attrs["schemaurl"] == "null"
    assert attrs["subject"] == "true"
    assert attrs["type"] == "[1]"


def test_binary_mode_extension_headers_are_json_decoded_when_possible() -> None:
    headers = {
        "content-type": "text/plain",
        **_binary_headers(
            **{
                "ce-rig": '{"correlation":"c"}',
                "ce-count": "5",
                "ce-flag": "false",
                "ce-note": "hello world",
                "ce-weird": "NaN",
            }
        ),
    }

    attrs = from_http(headers, b"x").attrs

    assert attrs["rig"] == {"correlation": "c"}
    assert attrs["count"] == 5
    assert attrs["flag"] is False
    assert attrs["note"] == "hello world"
    assert attrs["weird"] == "NaN"


def test_binary_mode_reconstructs_compact_json_with_sorted_top_level_keys() -> None:
    headers = {
        "content-type": "application/json",
        **_binary_headers(**{"ce-zzz": '{"y":1,"x":2}', "ce-aaa": "é"}),
    }

    event = from_http(headers, b'{"z": 0, "a": 1}')

    assert event.json == (
        '{"aaa":"é","data":{"z":0,"a":1},"id":"42","source":"s",'
        '"specversion":"0.2","type":"greeting","zzz":{"y":1,"x":2}}'
    )
    assert list(event.attrs) == sorted(event.attrs)
    assert json.loads(event.json) == event.attrs


def test_binary_mode_missing_required_headers_are_listed() -> None:
    headers = {"content-type": "text/plain", "ce-specversion": "1.0", "ce-type": "t"}

    error = _error(from_http, headers, b"x")

    assert error.status == 400
    assert str(error) == HTTP_BINARY + "missing required headers ce-id, ce-source"


def test_binary_mode_empty_required_header_is_a_400() -> None:
    headers = {"content-type": "text/plain", **_binary_headers(**{"ce-id": ""})}

    error = _error(from_http, headers, b"x")

    assert str(error) == (HTTP_BINARY + 'the header ce-id must be a non-empty string, got ""')


def test_binary_mode_version_1_0_rejects_invalid_extension_header_names() -> None:
    headers = {
        "content-type": "text/plain",
        **_binary_headers("1.0", **{"ce-x-y": "1"}),
    }

    error = _error(from_http, headers, b"x")

    assert error.status == 400
    assert str(error).startswith(
        HTTP_BINARY + "invalid CloudEvents 1.0 extension attribute name ce-x-y: "
    )


def test_binary_mode_version_0_2_accepts_any_extension_header_name() -> None:
    headers = {"content-type": "text/plain", **_binary_headers(**{"ce-x-y_z": "1"})}

    assert from_http(headers, b"x").attrs["x-y_z"] == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("ce-data", "the header ce-data is not allowed: data is carried in the body"),
        ("ce-", "the header ce- does not name an attribute"),
    ],
)
def test_binary_mode_rejects_headers_that_are_not_attributes(header: str, message: str) -> None:
    headers = {"content-type": "text/plain", **_binary_headers(**{header: "1"})}

    error = _error(from_http, headers, b"x")

    assert str(error) == HTTP_BINARY + message


def test_binary_mode_unpaired_surrogate_in_extension_is_escaped_in_json() -> None:
    headers = {"content-type": "text/plain", **_binary_headers(**{"ce-x": '"\\ud800"'})}

    event = from_http(headers, "é".encode())

    event.json.encode("utf-8")
    assert json.loads(event.json) == event.attrs


# --------------------------------------------------------------------------- #
# Kafka binding
# --------------------------------------------------------------------------- #


def test_kafka_record_without_content_type_is_structured_and_kept_verbatim() -> None:
    event = from_kafka([], A2_BODY.encode())

    assert event.json == A2_BODY
    assert event.type == "greeting"


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/cloudevents+json",
        b"application/cloudevents",
        b"Application/CloudEvents+JSON; charset=utf-8",
        b"",
    ],
)
def test_kafka_cloudevents_content_types_are_structured(content_type: bytes) -> None:
    event = from_kafka([("Content-Type", content_type)], A2_BODY.encode())

    assert event.json == A2_BODY


def test_kafka_structured_record_keeps_attributes_rig_would_drop() -> None:
    text = _ce(**_v02(contenttype="application/json", schemaurl="u", data={"a": 1}))

    event = from_kafka([], text.encode())

    assert event.json == text
    assert event.attrs["contenttype"] == "application/json"


def test_kafka_structured_version_1_0_is_accepted() -> None:
    text = _ce(**_v10(data="x"))

    assert from_kafka([], text.encode()).specversion == "1.0"


@pytest.mark.parametrize("value", [b"[]", b"not json", b"\xff", b'{"specversion":"0.2"}'])
def test_kafka_malformed_structured_record_is_a_cloud_event_error(value: bytes) -> None:
    error = _error(from_kafka, [], value)

    assert error.status == 400
    assert str(error).startswith(KAFKA_STRUCTURED)


@pytest.mark.parametrize("headers", [[], [("content-type", b"application/cloudevents+json")]])
def test_kafka_structured_record_without_value_is_rejected(
    headers: list[tuple[str, bytes]],
) -> None:
    error = _error(from_kafka, headers, None)

    assert str(error) == KAFKA_STRUCTURED + "the record has no value"


def test_kafka_confluent_framed_value_is_rejected_as_avro() -> None:
    error = _error(from_kafka, [], b"\x00\x00\x00\x00\x07\x02hi")

    assert "Avro is not supported" in str(error)


def test_kafka_avro_binary_content_type_is_rejected_as_avro() -> None:
    error = _error(from_kafka, _kafka_headers(content_type="avro/binary"), b"\x02hi")

    assert "Avro is not supported" in str(error)


def test_kafka_short_value_starting_with_zero_byte_is_just_invalid_json() -> None:
    error = _error(from_kafka, [], b"\x00\x01")

    assert error.status == 400
    assert "Avro" not in str(error)


def test_kafka_structured_format_other_than_json_is_rejected() -> None:
    error = _error(from_kafka, [("content-type", b"application/cloudevents+avro")], b"x")

    assert "application/cloudevents+avro" in str(error)


def test_kafka_batch_format_is_rejected() -> None:
    error = _error(from_kafka, [("content-type", b"application/cloudevents-batch+json")], b"[]")

    assert "batch" in str(error)


def test_kafka_binary_text_value_becomes_data_with_contenttype_for_0_2() -> None:
    event = from_kafka(_kafka_headers(), A3_BODY.encode())

    assert event.json == A3_EXPECTED


def test_kafka_binary_version_1_0_stores_datacontenttype() -> None:
    event = from_kafka(_kafka_headers("1.0"), b"hello")

    assert event.attrs["datacontenttype"] == "text/plain"
    assert event.attrs["data"] == "hello"
    assert event.specversion == "1.0"


def test_kafka_binary_json_value_is_decoded_and_content_type_kept() -> None:
    headers = _kafka_headers(content_type="application/json; charset=utf-8")

    event = from_kafka(headers, b'{"name":"alice"}')

    assert event.attrs["data"] == {"name": "alice"}
    assert event.attrs["contenttype"] == "application/json; charset=utf-8"
    assert json.loads(event.json) == event.attrs


def test_kafka_binary_header_names_are_case_insensitive_and_extensions_decoded() -> None:
    headers = [
        ("CE_SpecVersion", b"0.2"),
        ("Ce_Type", b"greeting"),
        ("ce_SOURCE", b"s"),
        ("ce_id", b"7"),
        ("ce_rig", b'{"correlation":"c"}'),
        ("ce_note", b"plain text"),
        ("CONTENT-TYPE", b"text/plain"),
    ]

    event = from_kafka(headers, b"x")

    assert (event.type, event.id) == ("greeting", "7")
    assert event.attrs["rig"] == {"correlation": "c"}
    assert event.attrs["note"] == "plain text"


def test_kafka_binary_ignores_dash_prefixed_headers() -> None:
    headers = [*_kafka_headers(), ("ce-extra", b"1")]

    assert "extra" not in from_kafka(headers, b"x").attrs


def test_kafka_binary_without_value_has_no_data() -> None:
    event = from_kafka(_kafka_headers(), None)

    assert "data" not in event.attrs
    assert "contenttype" not in event.attrs


@pytest.mark.parametrize("version", ["0.1", "0.3"])
def test_kafka_binary_requires_specversion_0_2_or_1_0(version: str) -> None:
    error = _error(from_kafka, _kafka_headers(version), b"x")

    assert error.status == 400
    assert str(error).startswith(
        f'{KAFKA_BINARY}the ce_specversion header must be "0.2" or "1.0", got "{version}"'
    )


def test_kafka_binary_missing_required_headers_are_listed() -> None:
    headers = [("ce_specversion", b"1.0"), ("content-type", b"text/plain")]

    error = _error(from_kafka, headers, b"x")

    assert str(error) == (KAFKA_BINARY + "missing required headers ce_id, ce_source, ce_type")


def test_kafka_binary_version_1_0_rejects_invalid_extension_names() -> None:
    headers = [*_kafka_headers("1.0"), ("ce_Bad-Name", b"1")]

    error = _error(from_kafka, headers, b"x")

    assert "ce_bad-name" in str(error)


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ([*_kafka_headers(), ("ce_note", b"\xff")], b"x"),
        (_kafka_headers(), b"\xff"),
        (_kafka_headers(content_type="application/json"), b"{oops"),
        ([("content-type", b"\xff")], b"x"),
    ],
    ids=["header-utf8", "value-utf8", "value-json", "content-type-utf8"],
)
def test_kafka_malformed_binary_record_is_a_cloud_event_error(
    headers: list[tuple[str, bytes]], value: bytes
) -> None:
    error = _error(from_kafka, headers, value)

    assert error.status == 400
    assert str(error).startswith(KAFKA_BINARY)


def test_to_kafka_structured_sends_the_json_with_a_cloudevents_content_type() -> None:
    text = _ce(**_v02(data="»Alice«"))
    event = parse_json_event(text)

    headers, value = to_kafka_structured(event)

    assert headers == [("content-type", b"application/cloudevents+json")]
    assert value == text.encode("utf-8")


@pytest.mark.parametrize(
    "event",
    [
        parse_json_event(A2_BODY),
        from_http({"content-type": "text/plain", **_binary_headers("1.0")}, b"hi"),
        new_rig_event("rig.session_killed"),
    ],
    ids=["structured", "binary", "rig"],
)
def test_kafka_round_trip_preserves_the_json(event: CloudEvent) -> None:
    again = from_kafka(*to_kafka_structured(event))

    assert again.json == event.json
    assert again.attrs == event.attrs


# --------------------------------------------------------------------------- #
# RIG's own events
# --------------------------------------------------------------------------- #

_TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def test_new_rig_event_has_alphabetical_keys_and_compact_json() -> None:
    event = new_rig_event("rig.connection.create", {"connection_token": "T"})

    assert list(event.attrs) == ["data", "id", "source", "specversion", "time", "type"]
    assert event.json == (
        '{"data":{"connection_token":"T"},'
        f'"id":"{event.id}","source":"rig","specversion":"0.2",'
        f'"time":"{event.attrs["time"]}","type":"rig.connection.create"}}'
    )
    assert (event.type, event.specversion) == ("rig.connection.create", "0.2")


def test_new_rig_event_time_is_rfc3339_utc_with_microseconds() -> None:
    before = datetime.now(UTC)
    event = new_rig_event("rig.session_killed")
    after = datetime.now(UTC)

    stamp = event.attrs["time"]
    assert _TIME_FORMAT.fullmatch(stamp)
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(stamp) <= after


def test_new_rig_event_id_is_a_fresh_uuid4() -> None:
    first = new_rig_event("x")
    second = new_rig_event("x")

    assert uuid.UUID(first.id).version == 4
    assert first.attrs["id"] == first.id
    assert first.id != second.id


def test_session_killed_event_has_no_data_key() -> None:
    event = new_rig_event("rig.session_killed")

    assert "data" not in event.attrs
    assert '"data"' not in event.json
    assert event.json.startswith('{"id":"')


def test_new_rig_event_with_none_data_has_a_null_data_key() -> None:
    event = new_rig_event("x", None)

    assert event.json.startswith('{"data":null,')


def test_subscriptions_set_event_matches_the_reference_shape() -> None:
    data = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]

    event = new_rig_event("rig.subscriptions_set", data)

    assert event.json == (
        '{"data":[{"eventType":"greeting","oneOf":[{"name":"alice"}]}],'
        f'"id":"{event.id}","source":"rig","specversion":"0.2",'
        f'"time":"{event.attrs["time"]}","type":"rig.subscriptions_set"}}'
    )


def test_new_rig_event_keeps_non_ascii_unescaped_and_is_a_valid_event() -> None:
    event = new_rig_event("x", {"name": "»Ä«"})

    assert "»Ä«" in event.json
    assert parse_json_event(event.json).attrs == event.attrs


# --------------------------------------------------------------------------- #
# Properties and documentation
# --------------------------------------------------------------------------- #

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    extensions=st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True).filter(
            lambda k: k not in {"specversion", "id", "source", "type"}
        ),
        _json_values,
        max_size=4,
    ),
    event_id=st.text(min_size=1, max_size=20),
    indent=st.none() | st.integers(0, 2),
)
def test_any_valid_structured_event_round_trips_unchanged(
    extensions: dict[str, Any], event_id: str, indent: int | None
) -> None:
    obj = {**extensions, **_v10(id=event_id)}
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # not representable as UTF-8; covered by a dedicated test

    event = parse_json_event(text.encode("utf-8"))

    assert event.json == text
    assert event.attrs == obj
    assert event.id == event_id


_content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/cloudevents+json",
        "text/plain",
        "application/octet-stream",
        "application/cloudevents+xml",
        "application/cloudevents-batch",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    content_type=_content_types,
    ce_headers=st.dictionaries(
        st.sampled_from(["specversion", "type", "source", "id", "x", "data", ""]),
        st.sampled_from(["0.2", "1.0", "0.1", "", "t", "{", '{"a":1}', "[[["]),
    ),
    body=st.binary(max_size=64) | st.sampled_from([A2_BODY.encode(), b"[" * 5000, b'{"a":NaN}']),
)
def test_http_input_never_raises_anything_but_cloud_event_error(
    content_type: str | None, ce_headers: dict[str, str], body: bytes
) -> None:
    headers = {f"ce-{k}": v for k, v in ce_headers.items()}
    if content_type is not None:
        headers["content-type"] = content_type
    try:
        event = from_http(headers, body)
    except CloudEventError as exc:
        assert exc.status in (400, 415)
    else:
        assert json.loads(event.json) == event.attrs
        event.json.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "content-type",
                    "ce_specversion",
                    "ce_type",
                    "ce_source",
                    "ce_id",
                    "ce_x",
                ]
            ),
            st.binary(max_size=12)
            | st.sampled_from([b"0.2", b"1.0", b"application/json", b"avro/binary"]),
        ),
        max_size=6,
    ),
    value=st.none() | st.binary(max_size=64),
)
def test_kafka_input_never_raises_anything_but_cloud_event_error(
    headers: list[tuple[str, bytes]], value: bytes | None
) -> None:
    try:
        event = from_kafka(headers, value)
    except CloudEventError as exc:
        assert exc.status in (400, 415)
    else:
        assert json.loads(event.json) == event.attrs


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(cloudevent, optionflags=doctest.ELLIPSIS)

    assert result.attempted > 0
    assert result.failed == 0
