"""The ``EXTRACTORS`` configuration and RFC 6901 JSON pointers.

An extractor config maps event types to named fields; each field says where
its value sits in an event (and optionally in JWT claims) and carries a
``stable_field_index`` that orders the fields (reference §5.3):

>>> ex = Extractors.parse({"greeting": {"name": {
...     "stable_field_index": 0,
...     "event": {"json_pointer": "/data/name"},
...     "jwt": {"json_pointer": "/username"}}}})
>>> [f.name for f in ex.fields("greeting")]
['name']
>>> [s.to_json() for s in ex.jwt_subscriptions({"username": "joe"})]
[{'eventType': 'greeting', 'oneOf': [{'name': 'joe'}]}]

This module imports only the standard library and its sibling
``subscription`` module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Self

from .subscription import Constraint, Subscription

__all__ = [
    "MISSING",
    "ExtractorConfigError",
    "Extractors",
    "FieldSpec",
    "parse_pointer",
    "resolve_pointer",
    "resolve_tokens",
]

_INDEX_KEY: Final = "stable_field_index"


class _Missing:
    """Type of :data:`MISSING`; a falsy singleton distinct from JSON null."""

    __slots__ = ()
    _instance: Self | None = None

    def __new__(cls) -> Self:
        # Singleton so that ``is MISSING`` works even after copy/pickle.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Returned by :func:`resolve_pointer` when the pointer does not resolve."""


# --------------------------------------------------------------------------
# JSON pointers.

# A '~' must be followed by '0' or '1' (RFC 6901 §3).
_BAD_ESCAPE: Final = re.compile(r"~(?![01])")


@lru_cache(maxsize=4096)
def parse_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 pointer into unescaped reference tokens.

    Raises ``ValueError`` for malformed pointers (``TypeError`` for
    non-strings). Results are cached because the same few configured
    pointers are used over and over.

    >>> parse_pointer("/data/a~1b/~0c/")
    ('data', 'a/b', '~c', '')
    >>> parse_pointer("")
    ()
    """
    if not isinstance(pointer, str):
        raise TypeError(f"JSON pointer must be a string, got {pointer!r}")
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"invalid JSON pointer {pointer!r}: must start with '/'")
    if _BAD_ESCAPE.search(pointer):
        raise ValueError(f"invalid JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
    # Order matters: '~01' must become '~1', not '/'.
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/"))


def _array_index(token: str) -> int | None:
    """RFC 6901 array index: '0' or digits without a leading zero."""
    if token.isascii() and token.isdigit() and (token == "0" or token[0] != "0"):
        return int(token)
    return None


def resolve_tokens(doc: Any, tokens: tuple[str, ...]) -> Any:
    """Resolve pre-parsed pointer tokens (see :func:`parse_pointer`).

    >>> resolve_tokens({"a": [10, 20]}, ("a", "1"))
    20
    """
    for token in tokens:
        if type(doc) is dict:  # fast path for decoded JSON
            doc = doc.get(token, MISSING)
            if doc is MISSING:
                return MISSING
        elif isinstance(doc, Mapping):
            if token not in doc:
                return MISSING
            doc = doc[token]
        elif isinstance(doc, (list, tuple)):
            # RIG cannot index arrays (reference §15.17); we can.
            index = _array_index(token)
            if index is None or index >= len(doc):
                return MISSING
            doc = doc[index]
        else:
            # Scalars (including a still-encoded string ``data``) have no children.
            return MISSING
    return doc


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """Return the value at an RFC 6901 ``pointer`` in ``doc`` or :data:`MISSING`.

    Supports ``~0``/``~1`` escapes, the empty key and array indices. A JSON
    ``null`` at the pointer is returned as ``None``, distinct from MISSING.

    >>> event = {"data": {"name": "joe", "tags": ["a", "b"], "": 1, "a/b": 2}}
    >>> resolve_pointer(event, "/data/tags/1"), resolve_pointer(event, "/data/")
    ('b', 1)
    >>> resolve_pointer(event, "/data/a~1b"), resolve_pointer(event, "/data/x")
    (2, MISSING)
    >>> resolve_pointer({"data": '{"name": "joe"}'}, "/data/name")
    MISSING
    """
    return resolve_tokens(doc, parse_pointer(pointer))


# --------------------------------------------------------------------------
# Configuration.


class ExtractorConfigError(ValueError):
    """The ``EXTRACTORS`` configuration is invalid.

    ``errors`` lists ``(event_type, message)`` pairs, one per broken type;
    ``str(exc)`` joins them.

    >>> try:
    ...     Extractors.parse({"t": {"f": {"event": {"json_pointer": "/data/f"}}}})
    ... except ExtractorConfigError as exc:
    ...     print(exc)
    event type "t": stable_field_index is required, but missing for fields: ["f"]
    """

    def __init__(self, errors: Iterable[tuple[str | None, str]]) -> None:
        self.errors: list[tuple[str | None, str]] = list(errors)
        super().__init__(
            "; ".join(
                message if event_type is None else f"event type {json.dumps(event_type)}: {message}"
                for event_type, message in self.errors
            )
        )


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One configured field of an event type.

    ``event_tokens``/``jwt_tokens`` are the pre-parsed pointers, computed once
    so that per-event extraction does no string work.

    >>> FieldSpec("name", 0, "/data/name", None).event_tokens
    ('data', 'name')
    """

    name: str
    index: int
    event_pointer: str
    jwt_pointer: str | None = None
    event_tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)
    jwt_tokens: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: derived attributes must be set this way.
        object.__setattr__(self, "event_tokens", parse_pointer(self.event_pointer))
        jwt_tokens = None if self.jwt_pointer is None else parse_pointer(self.jwt_pointer)
        object.__setattr__(self, "jwt_tokens", jwt_tokens)


def _names(names: list[str]) -> str:
    return json.dumps(names)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_pointer(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        parse_pointer(value)
    except ValueError:
        return False
    return True


def _jwt_pointer(spec: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Return ``(valid, pointer)`` for the optional ``jwt`` section.

    Like RIG, a missing ``jwt`` section or one without ``json_pointer`` simply
    means "not derived from the JWT"; a present but malformed one is an error.
    """
    jwt = spec.get("jwt")
    if jwt is None:
        return True, None
    if not isinstance(jwt, Mapping):
        return False, None
    pointer = jwt.get("json_pointer")
    if pointer is None:
        return True, None
    return (True, pointer) if _valid_pointer(pointer) else (False, None)


def _parse_type(type_config: Any) -> tuple[tuple[FieldSpec, ...], str | None]:
    """Validate one event type's fields; returns ``(fields, error message)``.

    Checks run in RIG's order (missing index, duplicate, negative, then
    per-field validity) so the first reported problem is the same.
    """
    if not isinstance(type_config, Mapping):
        return (), "expected an object mapping field names to field definitions"

    not_objects = [str(name) for name, spec in type_config.items() if not isinstance(spec, Mapping)]
    if not_objects:
        return (), f"Invalid configuration for fields: {_names(not_objects)}"

    missing = [str(name) for name, spec in type_config.items() if _INDEX_KEY not in spec]
    if missing:
        return (
            (),
            f"{_INDEX_KEY} is required, but missing for fields: {_names(missing)}",
        )

    indices = {name: spec[_INDEX_KEY] for name, spec in type_config.items()}
    # Group by JSON text so that 1 and "1" stay distinct (as in RIG's MapSet).
    by_index: dict[str, list[str]] = {}
    for name, index in indices.items():
        key = json.dumps(index, sort_keys=True, default=repr)
        by_index.setdefault(key, []).append(str(name))
    duplicates = [name for names in by_index.values() if len(names) > 1 for name in names]
    if duplicates:
        return (), (
            f"Duplicate index - please use a different {_INDEX_KEY} value for each"
            f" field (fields: {_names(duplicates)})"
        )
    negative = [
        str(name)
        for name, index in indices.items()
        if isinstance(index, (int, float)) and not isinstance(index, bool) and index < 0
    ]
    if negative:
        return (), (
            f"Negative index - please use only non-negative values for {_INDEX_KEY}"
            f" (fields: {_names(negative)})"
        )

    fields: list[FieldSpec] = []
    invalid: list[str] = []
    for name, spec in type_config.items():
        event = spec.get("event")
        event_pointer = event.get("json_pointer") if isinstance(event, Mapping) else None
        jwt_ok, jwt_pointer = _jwt_pointer(spec)
        if (
            not isinstance(name, str)
            or not name
            or not _is_index(spec[_INDEX_KEY])
            or not _valid_pointer(event_pointer)
            or not jwt_ok
        ):
            invalid.append(str(name))
            continue
        fields.append(FieldSpec(name, spec[_INDEX_KEY], event_pointer, jwt_pointer))
    if invalid:
        return (), f"Invalid configuration for fields: {_names(invalid)}"
    return tuple(sorted(fields, key=lambda spec: spec.index)), None


class Extractors:
    """Parsed EXTRACTORS config: event type -> fields ordered by stable_field_index.

    >>> ex = Extractors.parse({"person": {
    ...     "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}},
    ...     "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}}}})
    >>> [f.name for f in ex.fields("person")], ex.fields("other")
    (['name', 'age'], ())
    >>> dict(ex.field_positions("person"))
    {'name': 0, 'age': 1}
    """

    __slots__ = ("_positions", "_types")

    def __init__(self, types: Mapping[str, Iterable[FieldSpec]] | None = None) -> None:
        """Build from already-validated field specs (see :meth:`parse`)."""
        self._types: dict[str, tuple[FieldSpec, ...]] = {}
        self._positions: dict[str, dict[str, int]] = {}
        for event_type, specs in (types or {}).items():
            ordered = tuple(sorted(specs, key=lambda spec: spec.index))
            self._types[event_type] = ordered
            self._positions[event_type] = {spec.name: pos for pos, spec in enumerate(ordered)}

    @classmethod
    def parse(cls, obj: Any) -> Extractors:
        """Validate a decoded EXTRACTORS document (reference §5.3).

        ``None`` (variable unset) gives an empty config. Raises
        :class:`ExtractorConfigError` naming every broken event type.

        >>> Extractors.parse(None).event_types()
        ()
        >>> try:
        ...     Extractors.parse({"t": {"f": {"stable_field_index": 0}}})
        ... except ExtractorConfigError as exc:
        ...     print(exc)
        event type "t": Invalid configuration for fields: ["f"]
        """
        if obj is None:
            return cls.empty()
        if not isinstance(obj, Mapping):
            raise ExtractorConfigError(
                [
                    (
                        None,
                        "extractor config must be an object mapping event types to fields",
                    )
                ]
            )
        types: dict[str, tuple[FieldSpec, ...]] = {}
        errors: list[tuple[str | None, str]] = []
        for event_type, type_config in obj.items():
            if not isinstance(event_type, str) or not event_type:
                errors.append((None, f"invalid event type {event_type!r}"))
                continue
            fields, error = _parse_type(type_config)
            if error is not None:
                errors.append((event_type, error))
            else:
                types[event_type] = fields
        if errors:
            raise ExtractorConfigError(errors)
        return cls(types)

    @classmethod
    def empty(cls) -> Extractors:
        """A config without fields: every subscription matches its whole type.

        >>> Extractors.empty().fields("greeting")
        ()
        """
        return cls()

    def event_types(self) -> tuple[str, ...]:
        """Configured event types in configuration order."""
        return tuple(self._types)

    def fields(self, event_type: str) -> tuple[FieldSpec, ...]:
        """Fields of ``event_type`` ordered by ``stable_field_index`` (``()`` if none)."""
        return self._types.get(event_type, ())

    def field_positions(self, event_type: str) -> Mapping[str, int]:
        """Field name -> position in :meth:`fields` (empty mapping if none).

        The returned mapping is shared; do not modify it.
        """
        return self._positions.get(event_type, {})

    def jwt_subscriptions(self, claims: Mapping[str, Any]) -> list[Subscription]:
        """Automatic subscriptions derived from JWT claims (reference §5.2 item 3).

        Per event type, every field with a ``jwt.json_pointer`` that resolves
        in ``claims`` contributes ``name: value``; the pairs form one
        conjunction. Types where nothing resolves get no subscription. A claim
        that is JSON ``null`` counts as unresolved: RIG would turn it into a
        wildcard and hand the user everyone's events.

        >>> ex = Extractors.parse({"t": {
        ...     "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"},
        ...              "jwt": {"json_pointer": "/user/name"}},
        ...     "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"},
        ...             "jwt": {"json_pointer": "/age"}}}})
        >>> [s.to_json() for s in ex.jwt_subscriptions({"user": {"name": "al"}, "age": 3})]
        [{'eventType': 't', 'oneOf': [{'name': 'al', 'age': 3}]}]
        >>> ex.jwt_subscriptions({"other": 1})
        []
        """
        subscriptions: list[Subscription] = []
        for event_type, fields in self._types.items():
            pairs: dict[str, Any] = {}
            for spec in fields:
                if spec.jwt_tokens is None:
                    continue
                value = resolve_tokens(claims, spec.jwt_tokens)
                if value is not MISSING and value is not None:
                    pairs[spec.name] = value
            if pairs:
                subscriptions.append(Subscription(event_type, (Constraint(pairs),)))
        return subscriptions

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Extractors):
            return NotImplemented
        return self._types == other._types

    def __hash__(self) -> int:
        return hash(tuple(self._types.items()))

    def __repr__(self) -> str:
        return f"Extractors({self._types!r})"
