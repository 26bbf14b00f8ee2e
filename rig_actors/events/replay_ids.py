"""Replay ids on the wire: the WebSocket id attribute and the long-polling cursor.

Pure functions (standard library only), so the text formats are unit-tested
without sockets.

**WebSocket.** SSE carries an event's replay id in its ``id:`` line; a
WebSocket text frame is just the CloudEvent JSON, so the id travels as a
CloudEvents extension attribute, :data:`WS_ID_ATTRIBUTE`, spliced into the
JSON text once per event (the producer's bytes are not re-encoded):

>>> with_id_attribute('{"specversion":"1.0","id":"1"}', {}, "ab-7")
'{"specversion":"1.0","id":"1","rigeventid":"ab-7"}'

**Long-polling.** The ``last_event_id`` cookie (a JSON string, as in RIG)
holds an opaque cursor: the session's own sequence number, which makes a
poll within a live session exact and cheap, and the replay id of the newest
event the client has been given, which lets any new session (on any worker,
after the old one is gone) replay what the client missed:

>>> lp_cursor(12, "k1.0.0.7")
'12:k1.0.0.7'
>>> parse_lp_cursor("12:k1.0.0.7")
(12, 'k1.0.0.7')
>>> parse_lp_cursor("first_event"), parse_lp_cursor("3")
((0, None), (3, None))
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FIRST_EVENT",
    "WS_ID_ATTRIBUTE",
    "lp_cursor",
    "parse_lp_cursor",
    "replay_id",
    "with_id_attribute",
]

# CloudEvents extension names are lowercase letters and digits (1.0 §3.1.1).
WS_ID_ATTRIBUTE = "rigeventid"

# RIG's cursor for a session that has delivered nothing yet.
FIRST_EVENT = "first_event"

_SEPARATOR = ":"
# The gateway's own ids need no JSON escaping: skip json.dumps for them.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]*").fullmatch
_MAX_SEQ_DIGITS = 18  # a session never counts that far; longer is not a cursor


def _is_seq(text: str) -> bool:
    # isdigit() alone accepts "²" and other digits that int() refuses.
    return 0 < len(text) <= _MAX_SEQ_DIGITS and text.isascii() and text.isdigit()


def with_id_attribute(
    event_json: str, attrs: Mapping[str, Any], event_id: str, name: str = WS_ID_ATTRIBUTE
) -> str:
    """``event_json`` with ``name`` set to ``event_id`` as its last attribute.

    Unchanged when the producer already set that attribute (``attrs`` is the
    decoded event): a JSON object must not have the key twice, and the
    producer's value is theirs to keep. ``name`` is an extension name
    (lowercase letters and digits), so it needs no escaping.

    >>> with_id_attribute('{"type":"t", "rigeventid":"mine"}', {"rigeventid": "mine"}, "x")
    '{"type":"t", "rigeventid":"mine"}'
    >>> with_id_attribute('{"type":"t"}\\n', {}, 'a"b')
    '{"type":"t","rigeventid":"a\\\\"b"}\\n'
    >>> with_id_attribute('{ }', {}, "x")
    '{ "rigeventid":"x"}'
    """
    if name in attrs:
        return event_json
    end = event_json.rfind("}")
    if end < 0:
        return event_json  # not an object: nothing to add an attribute to
    before = end - 1
    while before >= 0 and event_json[before] in " \t\r\n":
        before -= 1
    separator = "" if before >= 0 and event_json[before] == "{" else ","
    value = f'"{event_id}"' if _PLAIN_ID(event_id) else json.dumps(event_id)
    return f'{event_json[:end]}{separator}"{name}":{value}{event_json[end:]}'


def lp_cursor(seq: int, replay_id: str | None) -> str:
    """The cursor after the session's event ``seq``; ``replay_id`` is the newest id given out.

    >>> lp_cursor(2, None)
    '2'
    """
    return str(seq) if replay_id is None else f"{seq}{_SEPARATOR}{replay_id}"


def parse_lp_cursor(text: str) -> tuple[int, str | None]:
    """The session sequence number and the replay id in a cursor.

    Anything else a client sends (a bare replay id, e.g. an SSE ``id:`` line
    or a WebSocket ``rigeventid`` passed as ``?last_event_id=``) is a replay
    id with no position in any session.

    >>> parse_lp_cursor("k1.0.0.7")
    (0, 'k1.0.0.7')
    >>> parse_lp_cursor(""), parse_lp_cursor("²:x")
    ((0, None), (0, '²:x'))
    """
    seq_text, separator, rest = text.partition(_SEPARATOR)
    if separator and _is_seq(seq_text) and rest:
        return int(seq_text), rest
    if _is_seq(text):
        return int(text), None
    if not text or text == FIRST_EVENT:
        return 0, None
    return 0, text


def replay_id(last_event_id: str) -> str:
    """The replay id in any id the gateway hands out, whatever the transport.

    A long-polling cursor holds one after its sequence number, so a client
    that falls back from long-polling to SSE or WebSocket can resume with
    it; every other id is itself.

    >>> replay_id("12:ab12cd34-7"), replay_id("ab12cd34-7")
    ('ab12cd34-7', 'ab12cd34-7')
    """
    seq_text, separator, rest = last_event_id.partition(_SEPARATOR)
    if separator and _is_seq(seq_text) and rest:
        return rest
    return last_event_id
