"""Wire framing for the push transports: Server-Sent Events and WebSocket.

This is a pure leaf module (standard library only, no I/O) so that the
byte-level formats can be unit-tested without sockets or greenlets.

SSE (reference §2.2): every event is ``event: <type>`` followed by one
``data:`` line per line of the payload and an empty line; heartbeats are the
comment ``: heartbeat``.  RIG never emits ``id:`` or ``retry:`` lines, but
:func:`sse_retry` is provided for deployments that want to tune reconnects.

WebSocket (reference §2.3, RFC 6455): the server only needs to *encode*
unfragmented, unmasked frames, and to *decode* masked client frames
incrementally as they trickle in from the socket.

>>> sse_event("greeting", '{"a":1}')
b'event: greeting\\ndata: {"a":1}\\n\\n'
>>> ws_text("hi")
b'\\x81\\x02hi'
"""

from __future__ import annotations

import codecs
import re
import struct
from dataclasses import dataclass

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "SSE_HEARTBEAT",
    "WS_PING",
    "WsDecoder",
    "WsMessage",
    "WsProtocolError",
    "sse_comment",
    "sse_event",
    "sse_retry",
    "ws_close",
    "ws_frame",
    "ws_text",
]

# ---------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------

# The SSE spec recognises exactly these three line terminators.  str.splitlines
# is deliberately not used: it also splits on \v, \f, \x1c, U+2028 ... which a
# browser's EventSource would keep inside the data, corrupting the JSON.
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _strip_newlines(text: str) -> str:
    """Remove CR and LF so a value cannot terminate its line early.

    >>> _strip_newlines("a\\r\\nb")
    'ab'
    """
    return text.replace("\r", "").replace("\n", "")


def sse_event(event_type: str, data: str, event_id: str | None = None) -> bytes:
    """Encode one SSE event, UTF-8.

    Each line of ``data`` becomes its own ``data:`` field so the client's
    EventSource re-joins them with ``\\n``.  CR/LF are stripped from the event
    type: it is taken from (attacker-controlled) CloudEvent ``type`` values, and
    a newline there would let a publisher inject fields such as ``id:`` or a
    whole fake event into other users' streams.

    >>> sse_event("t", "line1\\r\\nline2")
    b'event: t\\ndata: line1\\ndata: line2\\n\\n'
    >>> sse_event("t\\ndata: evil", "x")
    b'event: tdata: evil\\ndata: x\\n\\n'
    >>> sse_event("t", "x", event_id="ab-7")
    b'id: ab-7\\nevent: t\\ndata: x\\n\\n'
    """
    parts = [f"event: {_strip_newlines(event_type)}\n"]
    if event_id is not None:
        # EventSource stores it and sends it back as Last-Event-ID.
        parts.insert(0, f"id: {_strip_newlines(event_id)}\n")
    parts.extend(f"data: {line}\n" for line in _SSE_LINE_BREAK.split(data))
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def sse_comment(text: str) -> bytes:
    """Encode an SSE comment (ignored by EventSource, keeps proxies from timing out).

    >>> sse_comment("heartbeat")
    b': heartbeat\\n\\n'
    >>> sse_comment("a\\nb")
    b': ab\\n\\n'
    """
    return f": {_strip_newlines(text)}\n\n".encode()


def sse_retry(ms: int) -> bytes:
    """Encode an SSE ``retry:`` field telling the client its reconnect delay.

    >>> sse_retry(3000)
    b'retry: 3000\\n\\n'
    """
    # EventSource ignores a retry value that is not all ASCII digits, so reject
    # anything that would render as such (negative numbers, bools, floats).
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"retry must be a non-negative int, got {ms!r}")
    return f"retry: {ms}\n\n".encode("ascii")


SSE_HEARTBEAT: bytes = sse_comment("heartbeat")

# ---------------------------------------------------------------------------
# WebSocket (RFC 6455) -- encoding, server side
# ---------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_DATA_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5

_FIN = 0x80
_RSV_MASK = 0x70
_OPCODE_MASK = 0x0F
_MASK_BIT = 0x80
_LEN7_MASK = 0x7F


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """Encode a single unmasked frame with FIN set.

    The length uses the shortest of the 7-bit, 16-bit and 64-bit encodings, as
    RFC 6455 §5.2 requires.  Servers never mask (§5.1).

    >>> ws_frame(OP_BINARY, b"\\x00\\x01")
    b'\\x82\\x02\\x00\\x01'
    >>> ws_frame(OP_TEXT, b"x" * 126)[:4]
    b'\\x81~\\x00~'
    """
    if not 0 <= opcode <= _OPCODE_MASK:
        raise ValueError(f"opcode out of range: {opcode!r}")
    n = len(payload)
    # Building an illegal control frame would make a conforming client fail
    # the connection, so catch the bug here rather than on the wire.
    if opcode >= 0x8 and n > _MAX_CONTROL_PAYLOAD:
        raise ValueError(f"control frame payload too long: {n} > {_MAX_CONTROL_PAYLOAD}")
    first = _FIN | opcode
    if n <= 125:
        header = struct.pack("!BB", first, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + bytes(payload)


def ws_text(text: str) -> bytes:
    """Encode a text frame (UTF-8).

    >>> ws_text("é")
    b'\\x81\\x02\\xc3\\xa9'
    """
    return ws_frame(OP_TEXT, text.encode("utf-8"))


def ws_close(code: int, reason: str = "") -> bytes:
    """Encode a close frame with a status code and an optional reason.

    The reason is cut so the payload fits the 125-byte control-frame limit;
    the cut never lands inside a multi-byte UTF-8 sequence, because the peer
    must fail the connection on an invalid reason (§8.1).

    >>> ws_close(1000, "Bad request.")
    b'\\x88\\x0e\\x03\\xe8Bad request.'
    >>> len(ws_close(1000, "é" * 100))  # 2 header + 2 code + 61 * 2 bytes
    126
    """
    encoded = reason.encode("utf-8")
    limit = _MAX_CONTROL_PAYLOAD - 2
    if len(encoded) > limit:
        # The prefix is valid UTF-8 except possibly a torn final sequence;
        # "ignore" drops exactly that tail and nothing else.
        encoded = encoded[:limit].decode("utf-8", "ignore").encode("utf-8")
    return ws_frame(OP_CLOSE, struct.pack("!H", code) + encoded)


WS_PING: bytes = ws_frame(OP_PING, b"")

# ---------------------------------------------------------------------------
# WebSocket (RFC 6455) -- decoding client frames
# ---------------------------------------------------------------------------


class WsProtocolError(Exception):
    """The client violated RFC 6455; close the connection with ``close_code``.

    >>> WsProtocolError(1002, "unmasked frame").close_code
    1002
    """

    close_code: int

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code


def _protocol_error(message: str) -> WsProtocolError:
    return WsProtocolError(1002, message)


@dataclass(slots=True)
class WsMessage:
    """A complete data message (fragments reassembled) or one control frame.

    ``opcode`` is never :data:`OP_CONT`: a reassembled message carries the
    opcode of its first fragment.

    >>> WsMessage(OP_TEXT, b"hi")
    WsMessage(opcode=1, payload=b'hi')
    """

    opcode: int
    payload: bytes


def _unmask(data: bytes | bytearray, mask: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``mask`` (RFC 6455 §5.3).

    Done as one big-integer XOR so the work happens in C; a per-byte Python
    loop would take seconds for a multi-megabyte payload.

    >>> _unmask(_unmask(b"hello", b"abcd"), b"abcd")
    b'hello'
    """
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def _valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 §7.4).

    1004-1006 and 1015 are reserved or "must not be sent"; below 1000 and
    1012-2999 are unassigned/reserved for the protocol; 3000-4999 are for
    libraries and applications.

    >>> [_valid_close_code(c) for c in (1000, 1005, 3000, 5000)]
    [True, False, True, False]
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1011 or 3000 <= code <= 4999


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WsDecoder:
    """Incremental decoder for client->server frames.

    ``feed(bytes)`` returns the list of complete messages/control frames
    parsed so far and keeps any partial frame buffered for the next call.
    Violations raise :class:`WsProtocolError`; after that the decoder stays
    failed and every later ``feed`` raises the same error, so a caller cannot
    accidentally keep reading a desynchronised stream.  Once a close frame has
    been returned, later bytes are discarded (§5.5.1: nothing may follow it).

    >>> frame = b"\\x81\\x82" + b"\\x00\\x00\\x00\\x00" + b"hi"  # zero mask
    >>> d = WsDecoder()
    >>> d.feed(frame[:3])
    []
    >>> d.feed(frame[3:])
    [WsMessage(opcode=1, payload=b'hi')]
    """

    def __init__(self, max_message_bytes: int = 65536) -> None:
        self._max = max_message_bytes
        self._buf = bytearray()
        self._error: WsProtocolError | None = None
        self._closed = False
        # State of a fragmented message in progress (opcode is None when idle).
        self._frag_opcode: int | None = None
        self._frag_parts: list[bytes] = []
        self._frag_size = 0
        # Validating text fragment by fragment lets us fail fast on bad UTF-8
        # (and tolerates a code point split across fragments).
        self._frag_utf8: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> list[WsMessage]:
        """Add bytes from the socket; return every message completed so far."""
        if self._error is not None:
            raise self._error
        if self._closed:
            return []
        self._buf += data
        out: list[WsMessage] = []
        try:
            self._parse(out)
        except WsProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._frag_parts.clear()
            raise
        return out

    def _parse(self, out: list[WsMessage]) -> None:
        buf = self._buf
        pos = 0
        try:
            while not self._closed:
                frame = self._parse_frame(pos)
                if frame is None:
                    break
                pos, message = frame
                if message is not None:
                    out.append(message)
        finally:
            # One deletion per feed (not per frame) keeps many small frames in
            # a single chunk linear rather than quadratic.
            if self._closed:
                buf.clear()
            elif pos:
                del buf[:pos]

    def _parse_frame(self, pos: int) -> tuple[int, WsMessage | None] | None:
        """Parse the frame starting at ``pos``.

        Returns ``None`` if more bytes are needed, else the position after the
        frame and the message it completed (if any).  Header checks run as
        soon as the bytes they need are present, so a bad or oversized frame
        is rejected before its payload is waited for or buffered.
        """
        buf = self._buf
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        fin = bool(b0 & _FIN)
        opcode = b0 & _OPCODE_MASK
        len7 = b1 & _LEN7_MASK

        if b0 & _RSV_MASK:
            # No extensions are negotiated, so RSV1-3 must be zero (§5.2).
            raise _protocol_error("reserved bits set")
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise _protocol_error(f"unknown opcode {opcode:#x}")
        if not b1 & _MASK_BIT:
            raise _protocol_error("client frame not masked")
        is_control = opcode in _CONTROL_OPCODES
        if is_control:
            # §5.5: control frames cannot be fragmented and carry <= 125 bytes
            # (which also means they never use the extended length forms).
            if not fin:
                raise _protocol_error("fragmented control frame")
            if len7 > _MAX_CONTROL_PAYLOAD:
                raise _protocol_error("control frame payload too long")
        elif opcode == OP_CONT:
            if self._frag_opcode is None:
                raise _protocol_error("continuation frame without a started message")
        elif self._frag_opcode is not None:
            raise _protocol_error("new data frame while a fragmented message is open")

        header_len = 2
        if len7 == 126:
            header_len = 4
            if avail < header_len:
                return None
            (length,) = struct.unpack_from("!H", buf, pos + 2)
        elif len7 == 127:
            header_len = 10
            if avail < header_len:
                return None
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            if length >> 63:
                raise _protocol_error("64-bit length has its most significant bit set")
        else:
            length = len7

        # Reject oversize on the declared length alone: waiting for the payload
        # would let a client make us buffer arbitrary amounts of memory.
        if not is_control:
            pending = self._frag_size if opcode == OP_CONT else 0
            if pending + length > self._max:
                raise WsProtocolError(
                    1009,
                    f"message of at least {pending + length} bytes exceeds {self._max}",
                )

        header_len += 4  # masking key
        if avail < header_len + length:
            return None
        mask = bytes(buf[pos + header_len - 4 : pos + header_len])
        start = pos + header_len
        payload = _unmask(buf[start : start + length], mask)
        end = start + length

        if is_control:
            return end, self._control(opcode, payload)
        return end, self._data(opcode, fin, payload)

    def _control(self, opcode: int, payload: bytes) -> WsMessage:
        if opcode == OP_CLOSE:
            self._check_close_payload(payload)
            self._closed = True
        return WsMessage(opcode, payload)

    @staticmethod
    def _check_close_payload(payload: bytes) -> None:
        # §5.5.1: empty, or a 2-byte code optionally followed by UTF-8 text.
        if not payload:
            return
        if len(payload) == 1:
            raise _protocol_error("close payload of length 1")
        (code,) = struct.unpack_from("!H", payload)
        if not _valid_close_code(code):
            raise _protocol_error(f"invalid close code {code}")
        if not _is_utf8(payload[2:]):
            raise WsProtocolError(1007, "close reason is not valid UTF-8")

    def _data(self, opcode: int, fin: bool, payload: bytes) -> WsMessage | None:
        if opcode != OP_CONT and fin:
            # Fast path: an unfragmented message, by far the common case.
            if opcode == OP_TEXT and not _is_utf8(payload):
                raise WsProtocolError(1007, "text message is not valid UTF-8")
            return WsMessage(opcode, payload)

        if opcode != OP_CONT:
            self._frag_opcode = opcode
            self._frag_utf8 = (
                codecs.getincrementaldecoder("utf-8")("strict") if opcode == OP_TEXT else None
            )
        if self._frag_utf8 is not None:
            try:
                self._frag_utf8.decode(payload, final=fin)
            except UnicodeDecodeError as exc:
                raise WsProtocolError(1007, "text message is not valid UTF-8") from exc
        self._frag_parts.append(payload)
        self._frag_size += len(payload)
        if not fin:
            return None

        assert self._frag_opcode is not None  # guaranteed by the header checks
        message = WsMessage(self._frag_opcode, b"".join(self._frag_parts))
        self._frag_opcode = None
        self._frag_parts = []
        self._frag_size = 0
        self._frag_utf8 = None
        return message
