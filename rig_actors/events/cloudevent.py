"""CloudEvents codec: structured JSON, the HTTP binding and the Kafka binding.

This is a pure module (standard library only). It turns what arrives on the
wire into a :class:`CloudEvent` that carries both the decoded attributes (for
routing and filtering) and the JSON text that subscribers are sent.

Supported versions are 0.1 (``cloudEventsVersion``), 0.2 and 1.0
(``specversion``). RIG itself only accepts 0.1/0.2 over HTTP; 1.0 is our
extension. Unlike RIG, ``source`` is required for every version, a missing
``content-type`` header is a 415 rather than a crash, and invalid JSON in
binary mode is a 400.

Anything unacceptable raises :class:`CloudEventError`, whose ``status`` is the
HTTP status to answer with and whose ``str()`` is the client-facing message.
No other exception escapes for bad input.

Example:
    >>> event = parse_json_event('{"specversion":"0.2","type":"greeting","source":"s","id":"1"}')
    >>> event.type, event.id, event.specversion
    ('greeting', '1', '0.2')
    >>> event = from_http({"Content-Type": "text/plain", "ce-specversion": "0.2",
    ...                    "ce-type": "greeting", "ce-source": "s", "ce-id": "42"}, b"hi")
    >>> event.json
    '{"contenttype":"text/plain","data":"hi","id":"42","source":"s","specversion":"0.2","type":"greeting"}'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn

__all__ = [
    "CloudEvent",
    "CloudEventError",
    "from_http",
    "from_kafka",
    "new_rig_event",
    "parse_json_event",
    "to_kafka_structured",
]


class CloudEventError(ValueError):
    """Input is not an acceptable CloudEvent.

    ``status`` is the HTTP status to answer (400 or 415); ``str(exc)`` is the
    client-facing message.

    Example:
        >>> try:
        ...     parse_json_event("[]")
        ... except CloudEventError as exc:
        ...     print(exc.status, exc)
        400 The request body does not look like a CloudEvent: expected a JSON object, got an array
    """

    status: int

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CloudEvent:
    """A validated CloudEvent.

    ``attrs`` is the decoded event object (structured form, data included);
    ``json`` is the text subscribers receive: for structured input exactly the
    text that arrived, for binary input the reconstructed structured JSON.
    ``type``/``id`` are ``type``/``id`` (0.2, 1.0) or ``eventType``/``eventID``
    (0.1). Treat instances as read-only: ``attrs`` and ``json`` must agree.

    Example:
        >>> e = parse_json_event(
        ...     '{"cloudEventsVersion":"0.1","eventType":"t","source":"s","eventID":"7"}'
        ... )
        >>> e.type, e.id, e.specversion, e.attrs["source"]
        ('t', '7', '0.1', 's')
    """

    __slots__ = ("attrs", "id", "json", "specversion", "type")

    attrs: dict[str, Any]
    json: str
    type: str
    id: str
    specversion: str

    def __init__(
        self, attrs: dict[str, Any], json: str, type: str, id: str, specversion: str
    ) -> None:
        self.attrs = attrs
        self.json = json
        self.type = type
        self.id = id
        self.specversion = specversion

    def __repr__(self) -> str:
        return f"CloudEvent(specversion={self.specversion!r}, type={self.type!r}, id={self.id!r})"


# --------------------------------------------------------------------------- #
# Internals
# --------------------------------------------------------------------------- #

_STRUCTURED_PREFIX = "The request body does not look like a CloudEvent"
_HTTP_BINARY_PREFIX = "The request does not look like a CloudEvent in binary mode"
_KAFKA_STRUCTURED_PREFIX = "The Kafka record value does not look like a CloudEvent"
_KAFKA_BINARY_PREFIX = "The Kafka record does not look like a CloudEvent in binary mode"

_BATCH_MESSAGE = "The batched CloudEvents HTTP transport binding mode is currently not supported."
_NO_CONTENT_TYPE_MESSAGE = "A content-type header is required."

_STRUCTURED_MEDIA = frozenset({"application/cloudevents", "application/cloudevents+json"})

# Binary-mode attributes whose header value is taken verbatim; every other
# header value is JSON-decoded when possible so extensions can carry objects.
_STRING_ATTRS = frozenset(
    {
        "specversion",
        "type",
        "source",
        "id",
        "time",
        "schemaurl",
        "dataschema",
        "subject",
        "datacontenttype",
    }
)

_BINARY_VERSIONS = ("0.2", "1.0")
# Attribute that records the media type of `data` in each binary-capable version.
_CONTENT_TYPE_ATTR = {"0.2": "contenttype", "1.0": "datacontenttype"}

# Attributes defined by CloudEvents 1.0 (core + JSON format); anything else is
# an extension and must obey the 1.0 naming rule.
_KNOWN_10 = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
    }
)
_EXTENSION_NAME_10 = re.compile(r"[a-z0-9]+")

# (required attributes in message order, routing-type key, id key)
_REQUIRED = {
    "0.1": (("eventType", "source", "eventID"), "eventType", "eventID"),
    "0.2": (("type", "source", "id"), "type", "id"),
    "1.0": (("id", "source", "type"), "type", "id"),
}

_CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER_LEN = 5  # magic byte + 4-byte schema id


class _Invalid(Exception):
    """Internal: a validation failure; the public entry point adds its prefix."""


class _MissingType:
    """Type of the "no data" sentinel, so ``data=None`` can still mean JSON null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "missing"


_MISSING: Any = _MissingType()


class _Naming(NamedTuple):
    """How attribute names are shown in messages (JSON key vs. transport header)."""

    noun: str
    header_prefix: str

    def show(self, attr: str) -> str:
        return f"{self.header_prefix}{attr}" if self.header_prefix else f'"{attr}"'


_AS_ATTRIBUTE = _Naming("attribute", "")
_AS_HTTP_HEADER = _Naming("header", "ce-")
_AS_KAFKA_HEADER = _Naming("header", "ce_")


def _reject_constant(name: str) -> NoReturn:
    # Python accepts NaN/Infinity but browsers' JSON.parse does not, and the
    # text is forwarded to browsers verbatim.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise _Invalid("the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, int digit limit
        raise _Invalid(f"invalid JSON: {exc}") from None


# Built once: json.dumps with any non-default option builds an encoder per
# call, which showed up in the connect profile (two rig events per stream).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _dumps(obj: Any) -> str:
    try:
        text = _COMPACT.encode(obj)
    except RecursionError:
        raise _Invalid("the JSON is nested too deeply") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (e.g. from a "\ud800" escape) cannot be sent as
            # UTF-8; escaped form is equivalent JSON and always encodable.
            text = _COMPACT_ASCII.encode(obj)
    return text


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _plural(noun: str, count: int) -> str:
    return noun if count == 1 else noun + "s"


def _validate(obj: dict[str, Any], naming: _Naming) -> tuple[str, str, str]:
    """Check version and required attributes; return (specversion, type, id)."""
    if "specversion" in obj:
        spec = obj["specversion"]
        if not isinstance(spec, str) or spec not in ("0.2", "1.0"):
            raise _Invalid(
                f"unsupported {naming.noun} {naming.show('specversion')} {_show(spec)}"
                ' (supported: "0.2", "1.0"; CloudEvents 0.1 uses "cloudEventsVersion": "0.1")'
            )
    elif "cloudEventsVersion" in obj:
        spec = obj["cloudEventsVersion"]
        if not isinstance(spec, str) or spec != "0.1":
            raise _Invalid(
                f'unsupported {naming.noun} "cloudEventsVersion" {_show(spec)} (supported: "0.1")'
            )
    else:
        raise _Invalid('missing "specversion" ("0.2" or "1.0"), or "cloudEventsVersion" ("0.1")')

    required, type_key, id_key = _REQUIRED[spec]
    missing = [key for key in required if key not in obj]
    if missing:
        names = ", ".join(naming.show(key) for key in missing)
        raise _Invalid(f"missing required {_plural(naming.noun, len(missing))} {names}")
    for key in required:
        value = obj[key]
        if not isinstance(value, str) or not value:
            raise _Invalid(
                f"the {naming.noun} {naming.show(key)} must be a non-empty string, "
                f"got {_show(value)}"
            )

    if spec == "1.0":
        bad = [key for key in obj if key not in _KNOWN_10 and not _EXTENSION_NAME_10.fullmatch(key)]
        if bad:
            names = ", ".join(naming.show(key) for key in bad[:5])
            raise _Invalid(
                f"invalid CloudEvents 1.0 extension attribute {_plural('name', len(bad))} "
                f"{names}: attribute names may only contain lower-case letters a-z and "
                "digits 0-9"
            )
    return spec, obj[type_key], obj[id_key]


def _parse_structured(text: str | bytes, prefix: str) -> CloudEvent:
    try:
        if isinstance(text, str):
            source = text
            if not source.isascii():
                try:
                    source.encode("utf-8")
                except UnicodeEncodeError:
                    # Only reachable for str input; such text could never be
                    # forwarded as UTF-8, so refuse it here.
                    raise _Invalid("the text contains unpaired surrogates") from None
        else:
            try:
                source = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Invalid(
                    f"the body is not valid UTF-8 (invalid byte at offset {exc.start})"
                ) from None
        if not source.strip():
            raise _Invalid("the body is empty")
        obj = _loads(source)
        if not isinstance(obj, dict):
            raise _Invalid(f"expected a JSON object, got {_kind(obj)}")
        spec, type_, id_ = _validate(obj, _AS_ATTRIBUTE)
    except _Invalid as exc:
        raise CloudEventError(400, f"{prefix}: {exc}") from None
    return CloudEvent(obj, source, type_, id_, spec)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _is_batch_media(media: str) -> bool:
    return media == "application/cloudevents-batch" or media.startswith(
        "application/cloudevents-batch+"
    )


def _is_cloudevents_media(media: str) -> bool:
    return media == "application/cloudevents" or media.startswith("application/cloudevents+")


def _binary_event(
    raw_attrs: Mapping[str, str],
    content_type: str,
    body: bytes | None,
    naming: _Naming,
    *,
    store_content_type_for_json: bool,
) -> CloudEvent:
    """Build the structured event from binary-mode parts (already header-decoded)."""
    spec_header = naming.show("specversion")
    spec = raw_attrs.get("specversion")
    if spec is None:
        raise _Invalid(
            f"the {spec_header} header is missing (for structured mode send "
            "content-type application/cloudevents+json)"
        )
    if spec not in _BINARY_VERSIONS:
        hint = " (CloudEvents 0.1 has no binary mode)" if spec == "0.1" else ""
        raise _Invalid(f'the {spec_header} header must be "0.2" or "1.0", got {_show(spec)}{hint}')

    attrs: dict[str, Any] = {}
    for name, value in raw_attrs.items():
        if not name:
            raise _Invalid(f"the header {naming.header_prefix} does not name an attribute")
        if name == "data":
            raise _Invalid(
                f"the header {naming.show('data')} is not allowed: data is carried in the body"
            )
        if name in _STRING_ATTRS:
            attrs[name] = value
        else:
            try:
                attrs[name] = _loads(value)
            except _Invalid:
                attrs[name] = value

    # The transport content type is authoritative for `data`; a ce- header
    # claiming otherwise would only contradict it.
    content_type_attr = _CONTENT_TYPE_ATTR[spec]
    attrs.pop(content_type_attr, None)
    if body:
        media = _media_type(content_type)
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(
                f"the body is not valid UTF-8 (invalid byte at offset {exc.start}); "
                "binary payloads are not supported"
            ) from None
        if _is_json_media(media):
            try:
                attrs["data"] = _loads(text)
            except _Invalid as exc:
                raise _Invalid(f"the {content_type} body is not usable: {exc}") from None
            if store_content_type_for_json:
                attrs[content_type_attr] = content_type
        else:
            attrs["data"] = text
            attrs[content_type_attr] = content_type

    spec, type_, id_ = _validate(attrs, naming)
    ordered = {key: attrs[key] for key in sorted(attrs)}
    return CloudEvent(ordered, _dumps(ordered), type_, id_, spec)


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def parse_json_event(text: str | bytes) -> CloudEvent:
    """Parse and validate one CloudEvent in structured JSON form.

    ``event.json`` is the input text unmodified (bytes are decoded as UTF-8), so
    unknown attributes, key order and whitespace reach subscribers as sent.
    Raises :class:`CloudEventError` (400) with
    ``"The request body does not look like a CloudEvent: <reason>"``.

    Example:
        >>> text = '{"specversion":"1.0","id":"1","source":"s","type":"t","x":{"a": 1}}'
        >>> parse_json_event(text).json == text
        True
        >>> try:
        ...     parse_json_event('{"specversion":"0.2","type":"t","id":"1"}')
        ... except CloudEventError as exc:
        ...     print(exc.status, exc)
        400 The request body does not look like a CloudEvent: missing required attribute "source"
    """
    return _parse_structured(text, _STRUCTURED_PREFIX)


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Decode a CloudEvent from an HTTP request (structured or binary mode).

    Mode is chosen by the media type of ``content-type`` (case-insensitive,
    parameters ignored): ``application/cloudevents[+json]`` is structured (``ce-*``
    headers ignored); other ``application/cloudevents+X`` is 415; the batch mode
    is 415; ``application/json`` is structured unless a ``ce-specversion`` header
    is present (RIG's leniency); anything else is binary mode. A missing
    ``content-type`` is 415.

    In binary mode (``ce-specversion`` "0.2" or "1.0") attributes come from the
    ``ce-<name>`` headers; a JSON body becomes ``data`` with no content-type
    attribute, any other body becomes ``data`` as text with the header value in
    ``contenttype`` (0.2) or ``datacontenttype`` (1.0). ``event.json`` is the
    reconstructed structured JSON with top-level keys sorted.

    Header values are expected as proper ``str`` (any latin-1 round-trip done by
    the WSGI layer must be undone by the caller).

    Example:
        >>> e = from_http({"content-type": "application/json", "ce-specversion": "1.0",
        ...                "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b'{"n": 1}')
        >>> e.json
        '{"data":{"n":1},"id":"1","source":"s","specversion":"1.0","type":"t"}'
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    content_type = (lowered.get("content-type") or "").strip()
    if not content_type:
        raise CloudEventError(415, _NO_CONTENT_TYPE_MESSAGE)
    media = _media_type(content_type)

    if _is_batch_media(media):
        raise CloudEventError(415, _BATCH_MESSAGE)
    if _is_cloudevents_media(media):
        if media in _STRUCTURED_MEDIA:
            return parse_json_event(body)
        raise CloudEventError(
            415,
            f"The given content-type {content_type} is currently not supported "
            "for structured mode.",
        )
    if media == "application/json" and "ce-specversion" not in lowered:
        return parse_json_event(body)

    raw_attrs = {
        key[len("ce-") :]: value for key, value in lowered.items() if key.startswith("ce-")
    }
    try:
        return _binary_event(
            raw_attrs,
            content_type,
            body,
            _AS_HTTP_HEADER,
            store_content_type_for_json=False,
        )
    except _Invalid as exc:
        raise CloudEventError(400, f"{_HTTP_BINARY_PREFIX}: {exc}") from None


def from_kafka(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> CloudEvent:
    """Decode a CloudEvent from a Kafka record (structured JSON or binary mode).

    Header names are case-insensitive. Without a ``content-type`` header, or with
    ``application/cloudevents[+json]``, the value is a structured JSON event. A
    Confluent-framed value (magic byte 0) or ``avro/binary`` raises "Avro is not
    supported"; ``application/cloudevents+X`` and the batch format are rejected.
    Any other content type is binary mode: attributes from ``ce_<name>`` headers
    (``ce_specversion`` "0.2" or "1.0"), ``data`` from the value (JSON-decoded for
    JSON media types, else UTF-8 text) and the content type stored as
    ``contenttype`` (0.2) or ``datacontenttype`` (1.0).

    Deliberate difference from RIG: RIG re-serialises Kafka events and so drops
    ``contenttype``/``schemaurl`` and unknown details. Here ``event.json`` is the
    original value text for structured records and the reconstructed JSON
    (sorted top-level keys) for binary records, exactly as for HTTP. Malformed
    records raise :class:`CloudEventError`; its ``status`` only matters for logs.

    Example:
        >>> e = from_kafka([("ce_specversion", b"0.2"), ("ce_type", b"t"), ("ce_source", b"s"),
        ...                 ("ce_id", b"1"), ("Content-Type", b"text/plain")], b"hello")
        >>> e.json
        '{"contenttype":"text/plain","data":"hello","id":"1","source":"s","specversion":"0.2","type":"t"}'
    """
    by_name: dict[str, bytes] = {}
    for name, raw in headers:
        # Last one wins, as when a header list is turned into a map.
        by_name[name.lower()] = raw if raw is not None else b""

    try:
        content_type = _kafka_header_text("content-type", by_name.get("content-type", b""))
    except _Invalid as exc:
        raise CloudEventError(400, f"{_KAFKA_BINARY_PREFIX}: {exc}") from None
    # An empty content-type says nothing about the format; treat it as absent.
    content_type = content_type.strip()

    if not content_type:
        if value is None:
            raise CloudEventError(400, f"{_KAFKA_STRUCTURED_PREFIX}: the record has no value")
        if len(value) >= _CONFLUENT_HEADER_LEN and value[0] == _CONFLUENT_MAGIC:
            raise CloudEventError(
                415,
                "Avro is not supported (the value uses the Confluent schema-registry framing).",
            )
        return _parse_structured(value, _KAFKA_STRUCTURED_PREFIX)

    media = _media_type(content_type)
    if _is_batch_media(media):
        raise CloudEventError(415, "The batched CloudEvents Kafka format is not supported.")
    if _is_cloudevents_media(media):
        if media not in _STRUCTURED_MEDIA:
            raise CloudEventError(
                415,
                f"The given content-type {content_type} is not supported for structured mode.",
            )
        if value is None:
            raise CloudEventError(400, f"{_KAFKA_STRUCTURED_PREFIX}: the record has no value")
        return _parse_structured(value, _KAFKA_STRUCTURED_PREFIX)
    if media == "avro/binary":
        raise CloudEventError(415, "Avro is not supported (content-type avro/binary).")

    try:
        raw_attrs = {
            name[len("ce_") :]: _kafka_header_text(name, raw)
            for name, raw in by_name.items()
            if name.startswith("ce_")
        }
        return _binary_event(
            raw_attrs,
            content_type,
            value,
            _AS_KAFKA_HEADER,
            store_content_type_for_json=True,
        )
    except _Invalid as exc:
        raise CloudEventError(400, f"{_KAFKA_BINARY_PREFIX}: {exc}") from None


def _kafka_header_text(name: str, raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(f"the header {name} is not valid UTF-8") from None


def to_kafka_structured(event: CloudEvent) -> tuple[list[tuple[str, bytes]], bytes]:
    """Encode an event for a Kafka producer in structured mode.

    Returns ``(headers, value)``: the value is ``event.json`` as UTF-8 and the only
    header is ``content-type: application/cloudevents+json`` (which both RIG and
    :func:`from_kafka` read as structured JSON).

    Example:
        >>> e = parse_json_event('{"specversion":"0.2","type":"t","source":"s","id":"1"}')
        >>> headers, value = to_kafka_structured(e)
        >>> headers
        [('content-type', b'application/cloudevents+json')]
        >>> value
        b'{"specversion":"0.2","type":"t","source":"s","id":"1"}'
    """
    return [("content-type", b"application/cloudevents+json")], event.json.encode("utf-8")


def _uuid4_text() -> str:
    """``str(uuid.uuid4())``, at a third of its cost.

    Example::

        >>> import uuid
        >>> uuid.UUID(_uuid4_text()).version
        4
    """
    h = os.urandom(16).hex()
    # Version 4 and the RFC 4122 variant, as uuid.uuid4() sets them.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_rig_event(type_: str, data: object | None = _MISSING) -> CloudEvent:
    """Build one of RIG's own CloudEvents 0.2 events (``rig.connection.create`` etc.).

    ``source`` is ``"rig"``, ``id`` a random UUID4, ``time`` RFC 3339 UTC with
    microseconds and a ``+00:00`` offset. Keys are emitted in alphabetical order
    with compact separators. Omit ``data`` for an event without a ``data`` key
    (``rig.session_killed``); ``data=None`` gives ``"data":null``.

    Example:
        >>> e = new_rig_event("rig.connection.create", {"connection_token": "T"})
        >>> list(e.attrs)
        ['data', 'id', 'source', 'specversion', 'time', 'type']
        >>> e.json.startswith('{"data":{"connection_token":"T"},"id":"')
        True
        >>> "data" in new_rig_event("rig.session_killed").attrs
        False
    """
    event_id = _uuid4_text()
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    attrs: dict[str, Any] = {}
    try:
        if data is _MISSING:
            head = "{"
        else:
            attrs["data"] = data
            head = f'{{"data":{_dumps(data)},'
        # Every stream gets two of these when it opens: the fixed keys are
        # spliced in rather than encoded (the same text _dumps(attrs) gives).
        text = (
            f'{head}"id":"{event_id}","source":"rig","specversion":"0.2",'
            f'"time":"{now}","type":{_dumps(type_)}}}'
        )
    except _Invalid as exc:
        # Our own data being unserialisable is a programming error, not bad input.
        raise ValueError(str(exc)) from None
    attrs["id"] = event_id
    attrs["source"] = "rig"
    attrs["specversion"] = "0.2"
    attrs["time"] = now
    attrs["type"] = type_
    return CloudEvent(attrs, text, type_, event_id, "0.2")
