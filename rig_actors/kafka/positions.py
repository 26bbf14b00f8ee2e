"""Event ids that are positions in Kafka, valid on every worker and node.

With Kafka, the id of an event (the SSE ``id:`` line) says how far the
stream had got when the event was delivered: for every partition of the
source topics, the offset of the next record. Any worker can resume a
client from there by reading Kafka itself, so a client that reconnects to
another worker (after a deploy or a crash) misses nothing.

The format is ``k1.`` followed by ``<topic index>.<partition>.<offset>``
triples joined by ``_``; the topic index is the topic's place in
``KAFKA_SOURCE_TOPICS`` (the same on every node).

>>> encode({(0, 1): 42, (0, 0): 7})
'k1.0.0.7_0.1.42'
>>> decode('k1.0.0.7_0.1.42')
{(0, 0): 7, (0, 1): 42}
>>> decode('abc-12') is None
True
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Positions", "decode", "encode"]

Positions = dict[tuple[int, int], int]

_PREFIX = "k1."
_MAX_LENGTH = 4096  # ids come back from clients: bound what we parse


def encode(positions: Mapping[tuple[int, int], int]) -> str:
    return _PREFIX + "_".join(f"{t}.{p}.{o}" for (t, p), o in sorted(positions.items()))


def decode(text: str) -> Positions | None:
    """The positions in ``text``, or ``None`` if it is not such an id."""
    if not text.startswith(_PREFIX) or len(text) > _MAX_LENGTH:
        return None
    positions: Positions = {}
    for triple in text[len(_PREFIX) :].split("_"):
        parts = triple.split(".")
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            return None
        topic, partition, offset = (int(part) for part in parts)
        positions[(topic, partition)] = offset
    return positions
