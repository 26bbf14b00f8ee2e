"""In-memory subscription index: which owners want a given event?

This is on the gateway's hot path, so the cost of :meth:`SubscriptionIndex.match`
grows with the number of *matching* rows, not with the number of
subscriptions, and :meth:`~SubscriptionIndex.replace`/:meth:`~SubscriptionIndex.remove`
cost only the affected owner's rows.

Layout, per event type ``T`` (fields ``F0..Fn-1`` from :class:`Extractors`):

* ``wildcard``: owners holding a row without usable constraints (``oneOf: []``,
  only unknown/null keys, or ``T`` has no configured fields).
* ``shapes``: for constrained rows, ``shape -> values -> owners`` where
  ``shape`` is the sorted tuple of constrained field positions and
  ``values`` the tuple of their match keys (the bare key for one-field
  shapes, the common case, to save a tuple per row and per probe). Matching an event extracts each
  field once and probes every shape with one hash lookup, so every owner
  visited is a real match: no candidate has to be re-checked. The number of
  shapes is bounded by the field combinations clients actually use (at most
  ``2**n - 1``, in practice a handful), independent of the subscription count.

  This is stricter than anchoring rows on a single field: with fields
  ``category`` and ``user`` and 100k rows ``{category: news, user: <id>}``,
  a single-field anchor on ``category`` would visit 100k rows per event.

Rows are de-duplicated per owner and event type (and an owner with a
wildcard row for ``T`` keeps no constrained rows for ``T``), so each owner
sits at most once in any bucket and a plain ``set`` keeps removal exact.

>>> from rig_actors.subscriptions import Extractors, Subscription
>>> ex = Extractors.parse({"greeting": {"name": {"stable_field_index": 0,
...     "event": {"json_pointer": "/data/name"}}}})
>>> index = SubscriptionIndex(ex)
>>> index.replace("conn-1", [Subscription("greeting", ({"name": "joe"},))])
>>> index.replace("conn-2", [Subscription("greeting")])
>>> sorted(index.match("greeting", {"data": {"name": "joe"}}))
['conn-1', 'conn-2']
>>> sorted(index.match("greeting", {"data": {"name": "bob"}}))
['conn-2']

Not thread-safe: the gateway runs it from cooperative (gevent) code in which
none of these methods yields.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from .extractors import Extractors, FieldSpec, resolve_tokens
from .subscription import Constraint, Subscription, dedupe, match_key

__all__ = ["SubscriptionIndex"]

Shape = tuple[int, ...]
# For a one-field shape the bare match key; otherwise a tuple of keys in shape order.
Values = Hashable

# The empty shape marks a wildcard row: no field is constrained.
_WILDCARD_ROW: tuple[Shape, Values] = ((), ())
_first = itemgetter(0)


class _Row:
    """One indexed row of an owner; the empty ``shape`` marks a wildcard row."""

    __slots__ = ("event_type", "shape", "values")

    def __init__(self, event_type: str, shape: Shape, values: Values) -> None:
        self.event_type = event_type
        self.shape = shape
        self.values = values


class _TypeIndex:
    """Everything indexed for one event type."""

    __slots__ = ("fields", "rows", "shapes", "wildcard")

    def __init__(self, fields: tuple[FieldSpec, ...]) -> None:
        self.fields = fields
        self.wildcard: set[Hashable] = set()
        self.shapes: dict[Shape, dict[Values, set[Hashable]]] = {}
        self.rows = 0


class _Owner:
    """What one owner registered: its subscriptions and the rows they produced."""

    __slots__ = ("rows", "subscriptions")

    def __init__(self, subscriptions: tuple[Subscription, ...], rows: list[_Row]) -> None:
        self.subscriptions = subscriptions
        self.rows = rows


def _compile_clause(
    clause: Constraint, positions: Mapping[str, int]
) -> tuple[Shape, Values] | None:
    """Turn one constraint object into ``(shape, values)``; ``None`` if it can never match.

    A clause without usable constraints compiles to :data:`_WILDCARD_ROW`.
    """
    pairs: list[tuple[int, Hashable]] = []
    for name, value in clause.items():
        position = positions.get(name)
        # Unknown fields are ignored and null means "any value" (reference §5.4).
        if position is None or value is None:
            continue
        key = match_key(value)
        if key is None:
            # Object/array constraints can never equal an extracted scalar.
            return None
        pairs.append((position, key))
    if not pairs:
        return _WILDCARD_ROW
    if len(pairs) == 1:
        position, key = pairs[0]
        return (position,), key
    pairs.sort(key=_first)
    return tuple(p for p, _ in pairs), tuple(k for _, k in pairs)


class SubscriptionIndex:
    """Maps ``(event type, event)`` to the set of owners subscribed to it.

    Owners are opaque hashables (the gateway uses connection actors).
    ``visited_rows`` is a cumulative debug counter of rows touched by
    :meth:`match`; since every touched row is a match it equals the number
    of matching rows summed over calls.

    >>> index = SubscriptionIndex(Extractors.empty())
    >>> index.replace("c1", [Subscription("t", ({"x": 1},))])
    >>> index.match("t", {}), index.owners(), index.rows(), index.event_types()
    ({'c1'}, 1, 1, 1)
    >>> index.remove("c1")
    >>> index.owners(), index.rows(), index.event_types()
    (0, 0, 0)
    """

    __slots__ = ("_extractors", "_owners", "_rows", "_types", "visited_rows")

    def __init__(self, extractors: Extractors) -> None:
        self._extractors = extractors
        self._types: dict[str, _TypeIndex] = {}
        self._owners: dict[Hashable, _Owner] = {}
        self._rows = 0
        self.visited_rows = 0

    # -- mutation ----------------------------------------------------------

    def replace(self, owner: Hashable, subscriptions: Iterable[Subscription]) -> None:
        """Make ``subscriptions`` the owner's whole set (empty = remove the owner).

        Costs O(old rows + new rows) of this owner only.
        """
        subs = tuple(dedupe(subscriptions))
        current = self._owners.get(owner)
        if current is not None and current.subscriptions == subs:
            return  # periodic refreshes usually change nothing
        # Compile before touching the index so a failure leaves it unchanged.
        rows = self._compile(subs)
        if current is not None:
            self._unindex(owner, current.rows)
            del self._owners[owner]
        if not subs:
            return
        self._index(owner, rows)
        # Kept even when no row is indexable (e.g. only object constraints) so
        # that set_extractors() can re-evaluate the owner later.
        self._owners[owner] = _Owner(subs, rows)

    def remove(self, owner: Hashable) -> None:
        """Forget ``owner`` entirely; O(its rows). Unknown owners are ignored."""
        current = self._owners.pop(owner, None)
        if current is not None:
            self._unindex(owner, current.rows)

    def set_extractors(self, extractors: Extractors) -> None:
        """Switch field configuration and re-index every owner (rare, O(all))."""
        self._extractors = extractors
        self._types = {}
        self._rows = 0
        for owner, entry in self._owners.items():
            entry.rows = self._compile(entry.subscriptions)
            self._index(owner, entry.rows)

    # -- queries -----------------------------------------------------------

    def match(self, event_type: str, event: Mapping[str, Any]) -> set[Hashable]:
        """Owners with at least one row matching ``event`` (each at most once).

        ``event`` is the CloudEvent as a decoded JSON object; field values are
        read with the configured pointers, e.g. ``/data/name``, whatever the
        event's content type (a ``data`` string simply has no sub-fields).
        """
        entry = self._types.get(event_type)
        if entry is None:
            return set()
        result = set(entry.wildcard)
        visited = len(result)
        if entry.shapes:
            keys = [match_key(resolve_tokens(event, spec.event_tokens)) for spec in entry.fields]
            for shape, table in entry.shapes.items():
                if len(shape) == 1:
                    # One-field tables are keyed by the bare key (see _compile_clause).
                    key = keys[shape[0]]
                    if key is None:
                        continue
                    owners = table.get(key)
                else:
                    probe = tuple(keys[position] for position in shape)
                    if None in probe:
                        continue
                    owners = table.get(probe)
                if owners:
                    visited += len(owners)
                    result |= owners
        self.visited_rows += visited
        return result

    def subscriptions(self, owner: Hashable) -> tuple[Subscription, ...]:
        """The owner's current (de-duplicated) subscriptions; ``()`` if unknown."""
        entry = self._owners.get(owner)
        return () if entry is None else entry.subscriptions

    def owners(self) -> int:
        """Number of owners with a non-empty subscription set."""
        return len(self._owners)

    def rows(self) -> int:
        """Number of indexed rows (after per-owner de-duplication)."""
        return self._rows

    def event_types(self) -> int:
        """Number of event types with at least one indexed row."""
        return len(self._types)

    # -- internals ---------------------------------------------------------

    def _compile(self, subs: tuple[Subscription, ...]) -> list[_Row]:
        """Rows for one owner: de-duplicated, a wildcard absorbing the rest of its type."""
        wildcard_types: dict[str, None] = {}  # ordered set
        constrained: dict[str, set[tuple[Shape, Values]]] = {}
        for sub in subs:
            event_type = sub.event_type
            if event_type in wildcard_types:
                continue
            positions = self._extractors.field_positions(event_type)
            # Without configured fields every subscription gets the whole type.
            if not sub.one_of or not positions:
                wildcard_types[event_type] = None
                continue
            found = constrained.setdefault(event_type, set())
            for clause in sub.one_of:
                compiled = _compile_clause(clause, positions)
                if compiled is _WILDCARD_ROW:
                    wildcard_types[event_type] = None
                    break
                if compiled is not None:
                    found.add(compiled)
        rows = [_Row(event_type, (), ()) for event_type in wildcard_types]
        for event_type, found in constrained.items():
            if event_type not in wildcard_types:
                rows.extend(_Row(event_type, shape, values) for shape, values in found)
        return rows

    def _index(self, owner: Hashable, rows: list[_Row]) -> None:
        for row in rows:
            entry = self._types.get(row.event_type)
            if entry is None:
                entry = _TypeIndex(self._extractors.fields(row.event_type))
                self._types[row.event_type] = entry
            if not row.shape:
                entry.wildcard.add(owner)
            else:
                table = entry.shapes.get(row.shape)
                if table is None:
                    table = entry.shapes[row.shape] = {}
                bucket = table.get(row.values)
                if bucket is None:
                    bucket = table[row.values] = set()
                bucket.add(owner)
            entry.rows += 1
        self._rows += len(rows)

    def _unindex(self, owner: Hashable, rows: list[_Row]) -> None:
        for row in rows:
            entry = self._types[row.event_type]
            if not row.shape:
                entry.wildcard.remove(owner)
            else:
                table = entry.shapes[row.shape]
                bucket = table[row.values]
                bucket.remove(owner)
                # Drop empty containers so memory follows live subscriptions.
                if not bucket:
                    del table[row.values]
                    if not table:
                        del entry.shapes[row.shape]
            entry.rows -= 1
            if entry.rows == 0:
                # No rows left for this type: forget it (RIG never does, §15.19).
                del self._types[row.event_type]
        self._rows -= len(rows)
