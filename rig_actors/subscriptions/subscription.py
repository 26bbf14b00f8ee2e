"""Subscription values: parsing, validation, JSON equality and de-duplication.

A subscription names one event type and an optional ``oneOf`` list of
constraint objects (a disjunction of conjunctions, see reference §5.1):

>>> sub = parse_subscription({"eventType": "greeting", "oneOf": [{"name": "joe"}]})
>>> sub.to_json()
{'eventType': 'greeting', 'oneOf': [{'name': 'joe'}]}

Constraint values compare with JSON equality: numbers numerically, booleans
never equal to numbers.

>>> Constraint({"age": 30}) == Constraint({"age": 30.0})
True
>>> Constraint({"flag": True}) == Constraint({"flag": 1})
False

This module is a leaf: it imports only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Constraint",
    "Subscription",
    "SubscriptionError",
    "dedupe",
    "match_key",
    "parse_subscription",
    "parse_subscription_list",
]

# RIG's validation texts (reference §5.1); kept verbatim because clients see them.
_NOT_A_MAP: Final = "not a map"
_TYPE_NOT_FOUND: Final = "event-type not found"
_TYPE_EMPTY: Final = "event-type empty"
_NOT_A_LIST: Final = "constraints expected to be a list of disjunctive clauses"
_CLAUSE_NOT_A_MAP: Final = "a disjunctive clause expected to be a conjunction represented by a map"
_BAD_KEYS: Final = "conjunctive clauses expected to be a map with nonempty strings as keys"
_LIST_EXPECTED: Final = "subscriptions is expected to be a JSON encoded list"

# Alias keys in RIG's order of precedence (``lib/rig/subscription.ex`` checks
# ``event_type`` before ``eventType`` and ``constraints`` before the others).
_EVENT_TYPE_KEYS: Final = ("event_type", "eventType")
_ONE_OF_KEYS: Final = ("constraints", "one_of", "oneOf")


class SubscriptionError(ValueError):
    """A subscription (or a list of them) is invalid.

    ``str(exc)`` is RIG's client-facing text; ``detail`` is the part after
    ``invalid subscription: `` (``None`` for list-level errors) and
    ``subject`` the offending input, so callers can append RIG's
    ``when parsing <params>`` suffix themselves.

    >>> err = SubscriptionError.invalid("event-type empty", {"eventType": ""})
    >>> str(err), err.detail
    ('invalid subscription: event-type empty', 'event-type empty')
    """

    def __init__(self, message: str, *, detail: str | None = None, subject: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.subject = subject

    @classmethod
    def invalid(cls, detail: str, subject: Any = None) -> SubscriptionError:
        """Build the error for one invalid subscription object."""
        return cls(f"invalid subscription: {detail}", detail=detail, subject=subject)


# --------------------------------------------------------------------------
# Match keys: the hashable form of a scalar used by the index.

_KEY_TRUE: Final = ("bool", True)
_KEY_FALSE: Final = ("bool", False)


def match_key(value: Any) -> Hashable | None:
    """Return the hashable key under which a scalar JSON value is indexed.

    Strings and numbers are their own key: Python already gives ``30`` and
    ``30.0`` equal hashes, and a string never equals a number. Booleans are
    wrapped because Python treats ``True == 1`` while JSON does not. Values
    that can never satisfy a constraint (null, objects, arrays, NaN, anything
    non-JSON) give ``None``.

    >>> match_key(30) == match_key(30.0), match_key(True) == match_key(1)
    (True, False)
    >>> match_key({"a": 1}) is None and match_key(None) is None
    True
    """
    # Exact type checks first: this runs once per configured field per event.
    kind = type(value)
    if kind is str or kind is int:
        return value
    if kind is bool:
        return _KEY_TRUE if value else _KEY_FALSE
    if kind is float:
        return None if math.isnan(value) else value
    # Rare subclasses (e.g. a str subclass from some decoder): normalise them.
    if isinstance(value, bool):
        return _KEY_TRUE if value else _KEY_FALSE
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    return None


# --------------------------------------------------------------------------
# Frozen JSON values.


def _freeze(value: Any) -> Any:
    """Deep-copy a decoded JSON value into an immutable, hashable form."""
    if isinstance(value, Constraint):
        return value
    if isinstance(value, Mapping):
        return Constraint(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: plain ``dict``/``list`` for JSON encoding."""
    if isinstance(value, Constraint):
        return value.to_json()
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _canon(value: Any) -> Hashable:
    """Tagged canonical form of a frozen value: equal iff JSON-equal.

    The tags keep ``True`` apart from ``1`` (Python conflates them) while
    ``30`` and ``30.0`` stay equal because Python compares them numerically.
    """
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        # NaN never equals itself; give it a fixed tag so that identical
        # subscriptions still de-duplicate.
        if isinstance(value, float) and math.isnan(value):
            return ("nan",)
        return ("num", value)
    if isinstance(value, str):
        return ("str", str(value))
    if isinstance(value, tuple):
        return ("arr", tuple(_canon(item) for item in value))
    if isinstance(value, Constraint):
        return ("obj", value._canon)
    # Not JSON; still needs to be hashable for de-duplication.
    return ("other", type(value).__qualname__, repr(value))


class Constraint(Mapping[str, Any]):
    """An immutable, hashable JSON object, used for constraint conjunctions.

    Nested objects become ``Constraint`` too and arrays become tuples;
    :meth:`to_json` gives plain ``dict``/``list`` back. Equality and hashing
    follow JSON equality; comparing with a plain mapping also works.

    >>> c = Constraint({"name": "joe", "age": 30})
    >>> c["age"], len(c), c == {"age": 30.0, "name": "joe"}
    (30, 2, True)
    >>> hash(c) == hash(Constraint({"age": 30.0, "name": "joe"}))
    True
    """

    __slots__ = ("_canon", "_data", "_hash")

    def __init__(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        data = {key: _freeze(value) for key, value in dict(items).items()}
        canon = frozenset((key, _canon(value)) for key, value in data.items())
        self._data: dict[str, Any] = data
        self._canon: frozenset[tuple[Any, Hashable]] = canon
        self._hash: int = hash(canon)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Constraint):
            return self._hash == other._hash and self._canon == other._canon
        if isinstance(other, Mapping):
            return self._canon == Constraint(other)._canon
        return NotImplemented

    def __repr__(self) -> str:
        return f"Constraint({self.to_json()!r})"

    def to_json(self) -> dict[str, Any]:
        """Return a plain, mutable ``dict`` copy suitable for JSON encoding."""
        return {key: _thaw(value) for key, value in self._data.items()}


# --------------------------------------------------------------------------
# Subscription.


def _constraint(clause: Any, subject: Any) -> Constraint:
    """Validate one disjunctive clause and freeze it."""
    if isinstance(clause, Constraint):
        return clause
    if not isinstance(clause, Mapping):
        raise SubscriptionError.invalid(_CLAUSE_NOT_A_MAP, subject)
    for key in clause:
        if not isinstance(key, str) or not key:
            raise SubscriptionError.invalid(_BAD_KEYS, subject)
    return Constraint(clause)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A validated subscription: an event type plus ``oneOf`` constraints.

    ``one_of`` holds :class:`Constraint` objects (plain mappings given to the
    constructor are validated and frozen), so subscriptions are hashable and
    compare with JSON equality. An empty ``one_of`` means "every event of
    this type".

    >>> a = Subscription("greeting", ({"name": "joe"},))
    >>> a == Subscription("greeting", (Constraint({"name": "joe"}),))
    True
    >>> Subscription("greeting").to_json()
    {'eventType': 'greeting', 'oneOf': []}
    """

    event_type: str
    one_of: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.event_type, str) or not self.event_type:
            raise SubscriptionError.invalid(_TYPE_EMPTY, self.event_type)
        clauses: Any = self.one_of
        if isinstance(clauses, (str, bytes, Mapping)) or not isinstance(clauses, Iterable):
            raise SubscriptionError.invalid(_NOT_A_LIST, clauses)
        frozen = tuple(_constraint(clause, clause) for clause in clauses)
        # Frozen dataclass: the normalised tuple has to be stored this way.
        object.__setattr__(self, "one_of", frozen)

    def to_json(self) -> dict[str, Any]:
        """Return the wire form used in ``rig.subscriptions_set`` events.

        >>> Subscription("t", ({"a": [1, {"b": None}]},)).to_json()
        {'eventType': 't', 'oneOf': [{'a': [1, {'b': None}]}]}
        """
        return {
            "eventType": self.event_type,
            "oneOf": [clause.to_json() for clause in self.one_of],
        }


def parse_subscription(obj: Any) -> Subscription:
    """Validate a decoded JSON subscription object (reference §5.1).

    Accepts ``eventType``/``event_type`` and ``oneOf``/``one_of``/
    ``constraints``; a missing constraint list means ``[]``. Raises
    :class:`SubscriptionError` with RIG's message.

    >>> parse_subscription({"event_type": "t", "constraints": [{"a": 1}]})
    Subscription(event_type='t', one_of=(Constraint({'a': 1}),))
    >>> try:
    ...     parse_subscription({"oneOf": []})
    ... except SubscriptionError as exc:
    ...     print(exc)
    invalid subscription: event-type not found
    """
    if not isinstance(obj, Mapping):
        raise SubscriptionError.invalid(_NOT_A_MAP, obj)

    for key in _EVENT_TYPE_KEYS:
        if key in obj:
            event_type = obj[key]
            break
    else:
        raise SubscriptionError.invalid(_TYPE_NOT_FOUND, obj)

    # Like RIG, an explicit ``null`` is a present-but-invalid value, not absence.
    clauses: Any = []
    for key in _ONE_OF_KEYS:
        if key in obj:
            clauses = obj[key]
            break

    if not isinstance(event_type, str) or not event_type:
        raise SubscriptionError.invalid(_TYPE_EMPTY, obj)
    if not isinstance(clauses, (list, tuple)):
        raise SubscriptionError.invalid(_NOT_A_LIST, obj)
    frozen = tuple(_constraint(clause, obj) for clause in clauses)
    return Subscription(event_type, frozen)


def parse_subscription_list(obj: Any) -> list[Subscription]:
    """Parse a decoded JSON array of subscriptions, all or nothing.

    >>> subs = parse_subscription_list([{"eventType": "a"}, {"eventType": "b"}])
    >>> [s.event_type for s in subs]
    ['a', 'b']
    >>> try:
    ...     parse_subscription_list({"eventType": "a"})
    ... except SubscriptionError as exc:
    ...     print(exc)
    subscriptions is expected to be a JSON encoded list
    """
    if not isinstance(obj, (list, tuple)):
        raise SubscriptionError(_LIST_EXPECTED, subject=obj)
    # A comprehension raises on the first bad element, so nothing partial escapes.
    return [parse_subscription(item) for item in obj]


def dedupe(subs: Iterable[Subscription]) -> list[Subscription]:
    """Drop repeated subscriptions, keeping the first occurrence's position.

    >>> a, b = Subscription("a"), Subscription("b")
    >>> dedupe([a, b, Subscription("a")]) == [a, b]
    True
    """
    subs = list(subs)
    # One subscription (the usual connect) needs no hashing: a dataclass
    # hash walks every field, and this runs for every new stream.
    return subs if len(subs) < 2 else list(dict.fromkeys(subs))
