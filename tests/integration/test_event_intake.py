"""Taking events in over HTTP against the real gateway (RIG §2.6, §3.3, §4.1-4.2, §4.5, A.2-A.3).

``POST /_rig/v1/events`` (inbound) and ``POST /v2|v3/messages`` (internal API)
share one intake: structured mode (``application/cloudevents+json``, or
``application/json`` without ``ce-specversion``) and binary mode (``ce-*``
headers). Where RIG answers 500 (no content-type, invalid JSON in binary mode)
we answer a 4xx and keep serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from clients import SseClient, ce, ws_connect

INBOUND_PATH = "/_rig/v1/events"
INTERNAL_PATHS = ("/v2/messages", "/v3/messages")
ALL_ENDPOINTS = [("inbound", INBOUND_PATH)] + [("api", p) for p in INTERNAL_PATHS]

CE_JSON = "application/cloudevents+json"


def url_of(gateway: Any, side: str, path: str) -> str:
    return (gateway.inbound if side == "inbound" else gateway.api) + path


def post(url: str, body: str | bytes, headers: dict[str, Any] | None = None) -> requests.Response:
    """POST raw bytes: no content-type unless given (requests adds none for raw data)."""
    data = body.encode() if isinstance(body, str) else body
    return requests.post(url, data=data, headers=headers or {}, timeout=10)


def open_sse(gateway: Any, event_type: str) -> SseClient:
    sse = gateway.sse([{"eventType": event_type}])
    sse.events(2)
    return sse


@pytest.fixture(params=ALL_ENDPOINTS, ids=lambda e: e[1])
def endpoint(request: pytest.FixtureRequest, gateway: Any) -> str:
    side, path = request.param
    return url_of(gateway, side, path)


# --------------------------------------------------------------------------- #
# Structured mode
# --------------------------------------------------------------------------- #


def test_structured_event_is_accepted_with_double_encoded_202_body(gateway, endpoint):
    raw = '{"specversion":"0.2","type":"greeting","source":"test","id":"1","data":{"name":"a"}}'
    response = post(endpoint, raw, {"content-type": "application/json"})
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert isinstance(body, str)
    assert body == raw


@pytest.mark.parametrize(
    "content_type",
    [
        CE_JSON,
        f"{CE_JSON}; charset=utf-8",
        "Application/CloudEvents+JSON",
        "application/cloudevents",
        "application/json",
        "application/json; charset=utf-8",
    ],
)
def test_structured_event_reaches_subscriber_verbatim(gateway, endpoint, content_type):
    raw = (
        '{"specversion":"0.2","type":"intake.structured","source":"test",'
        '"id":"s1","data":{"greeting":"Grüße »Alice«"}}'
    )
    with open_sse(gateway, "intake.structured") as sse:
        response = post(endpoint, raw.encode("utf-8"), {"content-type": content_type})
        assert response.status_code == 202, response.text
        event = sse.next_event()
        assert event.type == "intake.structured"
        assert event.data == raw
        sse.expect_silence(0.1)


def test_structured_mode_with_cloudevents_json_ignores_ce_headers(gateway, endpoint):
    raw = '{"specversion":"0.2","type":"intake.ignored","source":"body","id":"b1"}'
    headers = {
        "content-type": CE_JSON,
        "ce-specversion": "0.1",
        "ce-type": "intake.from-header",
        "ce-source": "header",
        "ce-id": "h1",
    }
    with open_sse(gateway, "intake.ignored") as sse:
        response = post(endpoint, raw, headers)
        assert response.status_code == 202, response.text
        assert response.json() == raw
        assert sse.next_event().data == raw


# Unknown attributes, odd key order, whitespace, escapes and non-ASCII text: the
# subscriber must get these bytes, not a re-serialisation.
VERBATIM_EVENTS = {
    "0.1": (
        '{ "eventType" : "intake.verbatim",\n  "cloudEventsVersion":"0.1", "source":"t",'
        '"eventID":"v01", "myExtension" : {"b":2,"a":[1, 2.50, "x\\u00e9"]},'
        ' "Weird-Name": null, "data":{"z":1,  "a":"»Alice«"}}'
    ),
    "0.2": (
        '{"type":"intake.verbatim",  "specversion":"0.2","id":"v02","source":"t",'
        '\t"rig":{"x":1e3}, "Custom_Attr":"keep me", "data" :"\\"quoted\\" ☃"}'
    ),
    "1.0": (
        '{"id":"v10" ,"specversion":"1.0","source":"t","type":"intake.verbatim",'
        '"myext":{"nested":{"deep":[true,false,null]}},"ext2":  12.000,'
        '"datacontenttype":"application/json","data":{"n":1.0}}'
    ),
}


@pytest.mark.parametrize("version", sorted(VERBATIM_EVENTS))
def test_unknown_attributes_reach_sse_and_ws_subscribers_byte_for_byte(gateway, version):
    raw = VERBATIM_EVENTS[version]
    assert json.loads(raw)  # the fixture itself is valid JSON
    subs = [{"eventType": "intake.verbatim"}]
    ws = ws_connect(gateway.connect_url("ws", subs))
    try:
        ws.recv(), ws.recv()  # rig.connection.create, rig.subscriptions_set
        with open_sse(gateway, "intake.verbatim") as sse:
            response = post(
                f"{gateway.inbound}{INBOUND_PATH}", raw.encode("utf-8"), {"content-type": CE_JSON}
            )
            assert response.status_code == 202, response.text
            assert response.json() == raw
            assert sse.next_event().data == raw
            # The producer's bytes, plus the replay id (ws_event_ids, on by default).
            text = ws.recv()
            assert text == raw[:-1] + f',"rigeventid":"{json.loads(text)["rigeventid"]}"}}'
    finally:
        ws.close()


def test_structured_event_without_source_is_rejected(gateway, endpoint):
    response = post(
        endpoint, '{"specversion":"0.2","type":"t","id":"1"}', {"content-type": CE_JSON}
    )
    assert response.status_code == 400
    assert response.text.startswith("The request body does not look like a CloudEvent")


# --------------------------------------------------------------------------- #
# Binary mode
# --------------------------------------------------------------------------- #


def binary_headers(version: str, content_type: str, **attrs: str | bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "content-type": content_type,
        "ce-specversion": version,
        "ce-type": "intake.binary",
        "ce-source": "s",
        "ce-id": "42",
    }
    headers.update({f"ce-{name}": value for name, value in attrs.items()})
    return headers


def test_binary_text_body_matches_appendix_a3_exactly(gateway):
    body = "The name this event carries is »Alice«."
    headers = {
        "content-type": "text/plain",
        "ce-specversion": "0.2",
        "ce-type": "greeting",
        "ce-source": "s",
        "ce-id": "42",
    }
    expected = (
        '{"contenttype":"text/plain","data":"The name this event carries is »Alice«.",'
        '"id":"42","source":"s","specversion":"0.2","type":"greeting"}'
    )
    with open_sse(gateway, "greeting") as sse:
        response = post(f"{gateway.inbound}{INBOUND_PATH}", body.encode("utf-8"), headers)
        assert response.status_code == 202, response.text
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.json() == expected
        event = sse.next_event()
        assert event.type == "greeting"
        assert event.data == expected


@pytest.mark.parametrize(
    ("version", "content_type_attr"), [("0.2", "contenttype"), ("1.0", "datacontenttype")]
)
def test_binary_text_body_becomes_data_string_with_content_type(
    gateway, endpoint, version, content_type_attr
):
    headers = binary_headers(version, "text/plain; charset=utf-8")
    with open_sse(gateway, "intake.binary") as sse:
        response = post(endpoint, "plain »text«".encode(), headers)
        assert response.status_code == 202, response.text
        received = sse.next_event()
        assert received.data == response.json()
        assert received.json == {
            content_type_attr: "text/plain; charset=utf-8",
            "data": "plain »text«",
            "id": "42",
            "source": "s",
            "specversion": version,
            "type": "intake.binary",
        }


@pytest.mark.parametrize("version", ["0.2", "1.0"])
def test_binary_json_body_becomes_data_without_content_type_attribute(gateway, endpoint, version):
    headers = binary_headers(version, "application/json")
    with open_sse(gateway, "intake.binary") as sse:
        response = post(endpoint, '{"name": "Alice", "n": [1, 2]}', headers)
        assert response.status_code == 202, response.text
        received = sse.next_event()
        assert received.data == response.json()
        assert received.data == (
            '{"data":{"name":"Alice","n":[1,2]},"id":"42","source":"s",'
            f'"specversion":"{version}","type":"intake.binary"}}'
        )


def test_binary_header_values_are_read_as_utf8(gateway):
    # "ce-source: café »s«" sent as raw UTF-8 bytes on the wire.
    headers = binary_headers("0.2", "text/plain", source="café »s«".encode())
    with open_sse(gateway, "intake.binary") as sse:
        response = post(f"{gateway.inbound}{INBOUND_PATH}", b"x", headers)
        assert response.status_code == 202, response.text
        assert sse.next_event().json["source"] == "café »s«"


def test_binary_extension_headers_are_json_decoded_when_possible(gateway, endpoint):
    headers = binary_headers("0.2", "text/plain", obj='{"a":1}', num="7", word="plain")
    with open_sse(gateway, "intake.binary") as sse:
        assert post(endpoint, "x", headers).status_code == 202
        event = sse.next_event().json
        assert (event["obj"], event["num"], event["word"]) == ({"a": 1}, 7, "plain")


# --------------------------------------------------------------------------- #
# HTTP details: CORS, preflight, health, unknown routes
# --------------------------------------------------------------------------- #


def test_inbound_event_responses_carry_cors_header(gateway):
    url = f"{gateway.inbound}{INBOUND_PATH}"
    ok = post(url, json.dumps(ce("intake.cors")), {"content-type": CE_JSON})
    bad = post(url, "{}", {"content-type": CE_JSON})
    assert (ok.status_code, bad.status_code) == (202, 400)
    assert ok.headers["access-control-allow-origin"] == "*"
    assert bad.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", INTERNAL_PATHS)
def test_internal_message_responses_carry_no_cors_header(gateway, path):
    ok = post(f"{gateway.api}{path}", json.dumps(ce("intake.cors")), {"content-type": CE_JSON})
    bad = post(f"{gateway.api}{path}", "{}", {"content-type": CE_JSON})
    assert (ok.status_code, bad.status_code) == (202, 400)
    assert "access-control-allow-origin" not in ok.headers
    assert "access-control-allow-origin" not in bad.headers


def test_events_preflight_allows_post(gateway):
    response = requests.options(
        f"{gateway.inbound}{INBOUND_PATH}",
        headers={"origin": "http://example.com", "access-control-request-method": "POST"},
        timeout=5,
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "POST"
    assert "content-type" in response.headers["access-control-allow-headers"].split(",")
    assert response.content == b""


def test_internal_health_is_plain_ok(gateway):
    response = requests.get(f"{gateway.api}/health", timeout=5)
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["content-type"].startswith("text/plain")


def test_inbound_health_is_ok(gateway):
    response = requests.get(f"{gateway.inbound}/_rig/health", timeout=5)
    assert response.status_code == 200
    assert response.text == "OK"


@pytest.mark.parametrize("path", ["/nope", "/v3/nope", "/v1/messages", "/_rig/v1/events"])
def test_internal_unknown_route_is_404_with_errors_detail(gateway, path):
    response = requests.get(f"{gateway.api}{path}", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"errors": {"detail": "Not found"}}


@pytest.mark.parametrize("path", ["/nope", "/_rig/nope", "/v3/messages"])
def test_inbound_unknown_route_is_404_not_found(gateway, path):
    response = requests.get(f"{gateway.inbound}{path}", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


# --------------------------------------------------------------------------- #
# Rejected requests
# --------------------------------------------------------------------------- #

GOOD_02 = json.dumps(ce("intake.bad"))
NOT_A_CE = "The request body does not look like a CloudEvent"
NESTED = '{"specversion":"0.2","type":"t","source":"s","id":"1","data":' + (
    "[" * 100_000 + "]" * 100_000 + "}"
)

# name -> (body, headers, status, text the body starts with or contains)
BAD_REQUESTS: dict[str, tuple[bytes, dict[str, Any], int, str]] = {
    "missing content-type": (GOOD_02.encode(), {}, 415, "content-type"),
    "batch mode": (
        f"[{GOOD_02}]".encode(),
        {"content-type": "application/cloudevents-batch+json"},
        415,
        "The batched CloudEvents HTTP transport binding mode is currently not supported.",
    ),
    "xml structured": (
        b"<event/>",
        {"content-type": "application/cloudevents+xml"},
        415,
        "not supported for structured mode",
    ),
    "JSON that is not a CloudEvent": (
        b'{"hello":"world"}',
        {"content-type": "application/json"},
        400,
        NOT_A_CE,
    ),
    "CloudEvents 0.3": (
        GOOD_02.replace('"0.2"', '"0.3"').encode(),
        {"content-type": CE_JSON},
        400,
        NOT_A_CE,
    ),
    "malformed JSON": (b'{"specversion":"0.2",', {"content-type": CE_JSON}, 400, NOT_A_CE),
    "JSON array": (f"[{GOOD_02}]".encode(), {"content-type": "application/json"}, 400, NOT_A_CE),
    "invalid UTF-8": (
        GOOD_02[:-1].encode() + b',"data":"\xff\xfe"}',
        {"content-type": CE_JSON},
        400,
        NOT_A_CE,
    ),
    "empty body": (b"", {"content-type": CE_JSON}, 400, NOT_A_CE),
    "deeply nested JSON": (NESTED.encode(), {"content-type": CE_JSON}, 400, NOT_A_CE),
    "binary with specversion 0.1": (
        b"x",
        binary_headers("0.1", "text/plain"),
        400,
        "ce-specversion",
    ),
    "binary without specversion": (
        b"x",
        {"content-type": "text/plain", "ce-type": "t", "ce-source": "s", "ce-id": "1"},
        400,
        "ce-specversion",
    ),
    "binary json with specversion 0.1": (
        b"{}",
        binary_headers("0.1", "application/json"),
        400,
        "ce-specversion",
    ),
    "binary application/json with invalid JSON body": (
        b"{not json",
        binary_headers("0.2", "application/json"),
        400,
        "JSON",
    ),
    "binary application/json with deeply nested body": (
        b"[" * 100_000 + b"]" * 100_000,
        binary_headers("0.2", "application/json"),
        400,
        "nested",
    ),
    "0.1 without eventID": (
        b'{"cloudEventsVersion":"0.1","eventType":"t","source":"s"}',
        {"content-type": CE_JSON},
        400,
        NOT_A_CE,
    ),
    "binary without ce-id": (
        b"x",
        {"content-type": "text/plain", "ce-specversion": "0.2", "ce-type": "t", "ce-source": "s"},
        400,
        "ce-id",
    ),
    "1.0 extension name with upper case": (
        b'{"specversion":"1.0","type":"t","source":"s","id":"1","myExt":1}',
        {"content-type": CE_JSON},
        400,
        NOT_A_CE,
    ),
    "1.0 extension name with underscore": (
        b'{"specversion":"1.0","type":"t","source":"s","id":"1","my_ext":1}',
        {"content-type": CE_JSON},
        400,
        NOT_A_CE,
    ),
    "1.0 binary extension header with a dash": (
        b"x",
        binary_headers("1.0", "text/plain", **{"my-ext": "1"}),
        400,
        "my-ext",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_request_is_rejected_with_4xx(gateway, endpoint, case):
    body, headers, status, text = BAD_REQUESTS[case]
    response = post(endpoint, body, headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert text in response.text
    if text == NOT_A_CE:
        assert response.text.startswith(NOT_A_CE)


def test_gateway_keeps_delivering_after_every_kind_of_bad_request(gateway):
    with open_sse(gateway, "intake.survivor") as sse:
        for side, path in ALL_ENDPOINTS:
            for body, headers, status, _ in BAD_REQUESTS.values():
                assert post(url_of(gateway, side, path), body, headers).status_code == status
        gateway.publish(ce("intake.survivor", {"ok": True}, id_="after-errors"))
        assert sse.next_event().json["id"] == "after-errors"
        sse.expect_silence(0.1)


# --------------------------------------------------------------------------- #
# Body size limit
# --------------------------------------------------------------------------- #

LIMIT = 1000


@pytest.fixture(scope="module")
def small_limit_gateway(gateway_factory: Callable[..., Any]) -> Iterator[Any]:
    yield gateway_factory(MAX_EVENT_BODY_BYTES=str(LIMIT))


def padded_event(size: int, id_: str) -> str:
    """A 0.2 event whose JSON text is exactly ``size`` bytes."""
    text = json.dumps(ce("intake.limit", "", id_=id_))
    padding = size - len(text)
    assert padding >= 0
    return text.replace('"data": ""', '"data": "' + "x" * padding + '"')


@pytest.mark.parametrize("side_path", ALL_ENDPOINTS, ids=lambda e: e[1])
def test_body_over_limit_is_413_and_gateway_still_serves(small_limit_gateway, side_path):
    gw = small_limit_gateway
    url = url_of(gw, *side_path)
    with open_sse(gw, "intake.limit") as sse:
        too_big = padded_event(LIMIT + 1, "too-big")
        response = post(url, too_big, {"content-type": CE_JSON})
        assert response.status_code == 413
        # Without a content-length (chunked) the limit applies while reading.
        chunked = requests.post(
            url,
            data=iter([too_big[:500].encode(), too_big[500:].encode()]),
            headers={"content-type": CE_JSON},
            timeout=10,
        )
        assert chunked.status_code == 413
        just_fits = padded_event(LIMIT, "just-fits")
        response = post(url, just_fits, {"content-type": CE_JSON})
        assert response.status_code == 202, response.text
        assert sse.next_event().data == just_fits
        sse.expect_silence(0.1)
    assert requests.get(f"{gw.api}/health", timeout=5).text == "OK"
