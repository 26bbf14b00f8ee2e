"""Unit tests for rig_actors.events.framing (SSE and WebSocket wire formats)."""

from __future__ import annotations

import doctest
import struct

import pytest

from rig_actors.events import framing
from rig_actors.events.framing import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SSE_HEARTBEAT,
    WS_PING,
    WsDecoder,
    WsMessage,
    WsProtocolError,
    sse_comment,
    sse_event,
    sse_retry,
    ws_close,
    ws_frame,
    ws_text,
)

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    mask: bytes = MASK,
    declared_length: int | None = None,
) -> bytes:
    """Build a client->server frame by hand, independently of the module under test."""
    length = len(payload) if declared_length is None else declared_length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if length <= 125:
        header = bytes([first, mask_bit | length])
    elif length <= 0xFFFF:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def parse_server_header(frame: bytes) -> tuple[bool, int, bool, int, int]:
    """Return (fin, opcode, masked, payload_length, header_length) of a server frame."""
    fin = bool(frame[0] & 0x80)
    opcode = frame[0] & 0x0F
    masked = bool(frame[1] & 0x80)
    len7 = frame[1] & 0x7F
    if len7 == 126:
        return fin, opcode, masked, int.from_bytes(frame[2:4], "big"), 4
    if len7 == 127:
        return fin, opcode, masked, int.from_bytes(frame[2:10], "big"), 10
    return fin, opcode, masked, len7, 2


def expect_error(decoder: WsDecoder, data: bytes, code: int) -> WsProtocolError:
    with pytest.raises(WsProtocolError) as info:
        decoder.feed(data)
    assert info.value.close_code == code
    return info.value


def test_module_docstring_examples_hold() -> None:
    result = doctest.testmod(framing)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------- SSE


def test_sse_event_single_line() -> None:
    assert sse_event("greeting", '{"a":1}') == b'event: greeting\ndata: {"a":1}\n\n'


def test_sse_event_multiline_data_gets_one_data_field_per_line() -> None:
    assert sse_event("t", "a\nb\nc") == b"event: t\ndata: a\ndata: b\ndata: c\n\n"


@pytest.mark.parametrize("data", ["a\r\nb", "a\rb", "a\nb"])
def test_sse_event_splits_on_crlf_cr_and_lf(data: str) -> None:
    assert sse_event("t", data) == b"event: t\ndata: a\ndata: b\n\n"


def test_sse_event_mixed_line_endings_and_trailing_newline_are_preserved() -> None:
    # "\r\n" is one break, not two; a trailing break yields an empty last line,
    # so the client re-joins to exactly "a\nb\n\nc\n".
    assert sse_event("t", "a\r\nb\n\rc\n") == (
        b"event: t\ndata: a\ndata: b\ndata: \ndata: c\ndata: \n\n"
    )


def test_sse_event_does_not_split_on_other_unicode_line_separators() -> None:
    assert sse_event("t", "a\u2028b\x0bc") == "event: t\ndata: a\u2028b\x0bc\n\n".encode()


def test_sse_event_empty_data_is_one_empty_data_line() -> None:
    assert sse_event("t", "") == b"event: t\ndata: \n\n"


def test_sse_event_type_injection_is_stripped() -> None:
    frame = sse_event("evil\r\nid: 42\n\nevent: fake\r", "x")
    assert frame == b"event: evilid: 42event: fake\ndata: x\n\n"
    # Exactly one event line, one data line, one terminating blank line.
    assert frame.count(b"\n") == 3


def test_sse_event_is_utf8_encoded() -> None:
    assert sse_event("tÿpe", "héllo") == "event: tÿpe\ndata: héllo\n\n".encode()


def test_sse_comment_and_heartbeat() -> None:
    assert sse_comment("hello") == b": hello\n\n"
    assert sse_comment("a\r\nb\nc") == b": abc\n\n"
    assert SSE_HEARTBEAT == b": heartbeat\n\n"


def test_sse_retry() -> None:
    assert sse_retry(0) == b"retry: 0\n\n"
    assert sse_retry(15000) == b"retry: 15000\n\n"


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_sse_retry_rejects_values_eventsource_would_ignore(bad: object) -> None:
    with pytest.raises(ValueError):
        sse_retry(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------ WS encoding


@pytest.mark.parametrize(
    ("size", "header_len", "len7"),
    [(0, 2, 0), (125, 2, 125), (126, 4, 126), (65535, 4, 126), (65536, 10, 127)],
)
def test_ws_frame_length_encoding_boundaries(size: int, header_len: int, len7: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = ws_frame(OP_BINARY, payload)
    assert frame[0] == 0x82  # FIN + binary, no RSV bits
    assert frame[1] & 0x80 == 0  # servers never mask
    assert frame[1] & 0x7F == len7
    fin, opcode, masked, length, parsed_header_len = parse_server_header(frame)
    assert (fin, opcode, masked, length, parsed_header_len) == (
        True,
        OP_BINARY,
        False,
        size,
        header_len,
    )
    assert frame[header_len:] == payload
    assert len(frame) == header_len + size


def test_ws_frame_extended_lengths_are_big_endian() -> None:
    assert ws_frame(OP_TEXT, b"x" * 300)[:4] == b"\x81\x7e\x01\x2c"
    assert ws_frame(OP_TEXT, b"x" * 65536)[:10] == b"\x81\x7f" + b"\x00" * 5 + b"\x01\x00\x00"


def test_ws_frame_rejects_oversized_control_frame_and_bad_opcode() -> None:
    with pytest.raises(ValueError):
        ws_frame(OP_PING, b"x" * 126)
    with pytest.raises(ValueError):
        ws_frame(0x10, b"")


def test_ws_text_encodes_utf8() -> None:
    assert ws_text("héllo") == b"\x81\x06" + "héllo".encode()


def test_ws_ping_has_empty_payload() -> None:
    assert WS_PING == b"\x89\x00"


def test_ws_close_code_and_reason() -> None:
    assert ws_close(1000, "Session killed.") == b"\x88\x11\x03\xe8Session killed."
    assert ws_close(1001) == b"\x88\x02\x03\xe9"


def test_ws_close_truncates_reason_without_splitting_multibyte_sequence() -> None:
    # 3-byte characters: 123 // 3 = 41 fit exactly; shift by one ASCII byte so
    # the 123-byte cut lands in the middle of a character.
    reason = "a" + "€" * 60
    frame = ws_close(1000, reason)
    fin, opcode, masked, length, header_len = parse_server_header(frame)
    assert (fin, opcode, masked) == (True, OP_CLOSE, False)
    assert length <= 125
    payload = frame[header_len:]
    assert len(payload) == length
    assert payload[:2] == b"\x03\xe8"
    text = payload[2:].decode("utf-8")  # must not raise
    assert text == "a" + "€" * 40  # 1 + 120 bytes; a 41st euro would need 124
    assert len(payload) == 123


def test_ws_close_reason_exactly_at_limit_is_kept_whole() -> None:
    reason = "r" * 123
    frame = ws_close(4000, reason)
    assert frame[1] == 125
    assert frame[4:] == reason.encode()


def test_ws_close_frames_are_accepted_by_the_decoder() -> None:
    # Round trip: re-mask the server frame's payload and decode it as a client's.
    frame = ws_close(1000, "ü" * 100)
    payload = frame[2:]
    [msg] = WsDecoder().feed(client_frame(OP_CLOSE, payload))
    assert msg == WsMessage(OP_CLOSE, payload)


# ------------------------------------------------------------ WS decoding


def test_decoder_single_masked_text_frame() -> None:
    assert WsDecoder().feed(client_frame(OP_TEXT, b"Hello")) == [WsMessage(OP_TEXT, b"Hello")]


def test_decoder_known_rfc_example() -> None:
    # RFC 6455 §5.7: a single-frame masked text message containing "Hello".
    data = bytes.fromhex("818537fa213d7f9f4d5158")
    assert WsDecoder().feed(data) == [WsMessage(OP_TEXT, b"Hello")]


def test_decoder_empty_payloads() -> None:
    d = WsDecoder()
    assert d.feed(client_frame(OP_TEXT, b"") + client_frame(OP_PING, b"")) == [
        WsMessage(OP_TEXT, b""),
        WsMessage(OP_PING, b""),
    ]


@pytest.mark.parametrize("size", [5, 126, 70000])
def test_decoder_frames_split_at_every_byte_boundary(size: int) -> None:
    payload = bytes((i * 7) & 0xFF for i in range(size))
    frame = client_frame(OP_BINARY, payload)
    # Splitting at every possible point once is O(n^2) for the large frame, so
    # for it only probe the interesting boundaries around the header.
    cuts = range(len(frame) + 1) if size < 1000 else [*range(16), len(frame) - 1, len(frame)]
    for cut in cuts:
        d = WsDecoder(max_message_bytes=100_000)
        first = d.feed(frame[:cut])
        second = d.feed(frame[cut:])
        assert first + second == [WsMessage(OP_BINARY, payload)], cut


def test_decoder_one_byte_at_a_time() -> None:
    frames = (
        client_frame(OP_TEXT, b"abc")
        + client_frame(OP_PING, b"p")
        + client_frame(OP_BINARY, b"x" * 200)
    )
    d = WsDecoder()
    out: list[WsMessage] = []
    for i in range(len(frames)):
        out += d.feed(frames[i : i + 1])
    assert out == [
        WsMessage(OP_TEXT, b"abc"),
        WsMessage(OP_PING, b"p"),
        WsMessage(OP_BINARY, b"x" * 200),
    ]


def test_decoder_several_frames_in_one_feed_with_trailing_partial() -> None:
    a = client_frame(OP_TEXT, b"one")
    b = client_frame(OP_PONG, b"")
    c = client_frame(OP_BINARY, b"\x00\xff")
    tail = client_frame(OP_TEXT, b"four")
    d = WsDecoder()
    assert d.feed(a + b + c + tail[:3]) == [
        WsMessage(OP_TEXT, b"one"),
        WsMessage(OP_PONG, b""),
        WsMessage(OP_BINARY, b"\x00\xff"),
    ]
    assert d.feed(tail[3:]) == [WsMessage(OP_TEXT, b"four")]


def test_decoder_many_small_frames_in_one_feed() -> None:
    data = b"".join(client_frame(OP_TEXT, str(i).encode()) for i in range(5000))
    out = WsDecoder().feed(data)
    assert [m.payload for m in out] == [str(i).encode() for i in range(5000)]


def test_decoder_reassembles_fragmented_message_with_interleaved_ping() -> None:
    data = (
        client_frame(OP_TEXT, b"Hel", fin=False)
        + client_frame(OP_PING, b"are you there")
        + client_frame(OP_CONT, b"lo, ", fin=False)
        + client_frame(OP_CONT, b"world", fin=True)
    )
    d = WsDecoder()
    assert d.feed(data) == [
        WsMessage(OP_PING, b"are you there"),
        WsMessage(OP_TEXT, b"Hello, world"),
    ]
    # The decoder is back to idle: a fresh message is accepted.
    assert d.feed(client_frame(OP_BINARY, b"next")) == [WsMessage(OP_BINARY, b"next")]


def test_decoder_fragmented_text_with_code_point_split_across_fragments() -> None:
    euro = "€".encode()
    data = client_frame(OP_TEXT, b"a" + euro[:1], fin=False) + client_frame(
        OP_CONT, euro[1:], fin=True
    )
    assert WsDecoder().feed(data) == [WsMessage(OP_TEXT, b"a" + euro)]


def test_decoder_unmasks_large_payload_correctly() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, not a multiple of anything but 4
    payload += b"xyz"  # make the length not a multiple of the mask length
    frame = client_frame(OP_BINARY, payload, mask=b"\x01\x80\xfe\x7f")
    assert WsDecoder(max_message_bytes=2 << 20).feed(frame) == [WsMessage(OP_BINARY, payload)]


# -- protocol errors


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (client_frame(OP_TEXT, b"hi", masked=False), "unmasked"),
        (client_frame(OP_TEXT, b"hi", rsv=0b100), "rsv1"),
        (client_frame(OP_TEXT, b"hi", rsv=0b010), "rsv2"),
        (client_frame(OP_TEXT, b"hi", rsv=0b001), "rsv3"),
        (client_frame(0x3, b"hi"), "reserved data opcode"),
        (client_frame(0x7, b"hi"), "reserved data opcode"),
        (client_frame(0xB, b""), "reserved control opcode"),
        (client_frame(0xF, b""), "reserved control opcode"),
        (client_frame(OP_PING, b"x", fin=False), "fragmented ping"),
        (client_frame(OP_CLOSE, b"", fin=False), "fragmented close"),
        (client_frame(OP_PING, b"x" * 126), "control payload > 125"),
        (client_frame(OP_PONG, b"x" * 200), "control payload > 125"),
        (client_frame(OP_CONT, b"x"), "continuation without start"),
        (client_frame(OP_CLOSE, b"\x03"), "close payload of length 1"),
    ],
)
def test_decoder_protocol_errors_close_with_1002(frame: bytes, why: str) -> None:
    expect_error(WsDecoder(), frame, 1002)


def test_decoder_protocol_error_detected_from_first_two_bytes() -> None:
    # No need to wait for the length, mask or payload of an unmasked frame.
    expect_error(WsDecoder(), client_frame(OP_TEXT, b"x" * 1000, masked=False)[:2], 1002)


def test_decoder_new_data_frame_while_fragmented_message_open() -> None:
    d = WsDecoder()
    assert d.feed(client_frame(OP_TEXT, b"a", fin=False)) == []
    expect_error(d, client_frame(OP_BINARY, b"b"), 1002)


def test_decoder_new_text_frame_while_fragmented_message_open() -> None:
    d = WsDecoder()
    assert d.feed(client_frame(OP_BINARY, b"a", fin=False)) == []
    expect_error(d, client_frame(OP_TEXT, b"b", fin=False), 1002)


def test_decoder_continuation_after_completed_message() -> None:
    d = WsDecoder()
    d.feed(client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, b"b"))
    expect_error(d, client_frame(OP_CONT, b"c"), 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000])
def test_decoder_invalid_close_codes(code: int) -> None:
    expect_error(WsDecoder(), client_frame(OP_CLOSE, struct.pack("!H", code)), 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_decoder_valid_close_codes(code: int) -> None:
    payload = struct.pack("!H", code)
    assert WsDecoder().feed(client_frame(OP_CLOSE, payload)) == [WsMessage(OP_CLOSE, payload)]


def test_decoder_close_with_code_and_reason() -> None:
    payload = struct.pack("!H", 1001) + "going away ☂".encode()
    assert WsDecoder().feed(client_frame(OP_CLOSE, payload)) == [WsMessage(OP_CLOSE, payload)]


def test_decoder_close_without_payload() -> None:
    assert WsDecoder().feed(client_frame(OP_CLOSE, b"")) == [WsMessage(OP_CLOSE, b"")]


def test_decoder_close_reason_invalid_utf8_is_1007() -> None:
    expect_error(WsDecoder(), client_frame(OP_CLOSE, b"\x03\xe8bad\xff"), 1007)


def test_decoder_discards_data_after_close() -> None:
    d = WsDecoder()
    data = client_frame(OP_CLOSE, b"\x03\xe8") + client_frame(OP_TEXT, b"late")
    assert d.feed(data) == [WsMessage(OP_CLOSE, b"\x03\xe8")]
    assert d.feed(client_frame(OP_TEXT, b"later")) == []


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc3", b"abc\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"],
    ids=["invalid-byte", "truncated", "surrogate", "overlong", "above-max"],
)
def test_decoder_invalid_utf8_text_is_1007(payload: bytes) -> None:
    expect_error(WsDecoder(), client_frame(OP_TEXT, payload), 1007)


def test_decoder_invalid_utf8_in_fragmented_text_fails_fast() -> None:
    # The bad first fragment is rejected before the message is complete.
    expect_error(WsDecoder(), client_frame(OP_TEXT, b"ok\xff", fin=False), 1007)


def test_decoder_truncated_utf8_at_end_of_fragmented_text_is_1007() -> None:
    d = WsDecoder()
    assert d.feed(client_frame(OP_TEXT, b"a\xe2\x82", fin=False)) == []
    expect_error(d, client_frame(OP_CONT, b""), 1007)


def test_decoder_binary_may_contain_invalid_utf8() -> None:
    assert WsDecoder().feed(client_frame(OP_BINARY, b"\xff\xfe")) == [
        WsMessage(OP_BINARY, b"\xff\xfe")
    ]


def test_decoder_oversize_detected_from_header_alone() -> None:
    # Only the 10-byte header of a 10 MB frame: no mask, no payload.
    header = client_frame(OP_BINARY, b"", declared_length=10_000_000)[:10]
    assert len(header) == 10
    expect_error(WsDecoder(), header, 1009)


def test_decoder_oversize_16bit_length_detected_from_header() -> None:
    header = client_frame(OP_TEXT, b"", declared_length=1000)[:4]
    expect_error(WsDecoder(max_message_bytes=999), header, 1009)


def test_decoder_message_exactly_at_limit_is_accepted() -> None:
    payload = b"x" * 1000
    assert WsDecoder(max_message_bytes=1000).feed(client_frame(OP_BINARY, payload)) == [
        WsMessage(OP_BINARY, payload)
    ]


def test_decoder_oversize_accumulated_over_fragments() -> None:
    d = WsDecoder(max_message_bytes=10)
    assert d.feed(client_frame(OP_BINARY, b"123456", fin=False)) == []
    # The continuation's header alone already pushes the total past the limit.
    cont = client_frame(OP_CONT, b"12345", fin=True)
    expect_error(d, cont[:2], 1009)


def test_decoder_control_frames_do_not_count_toward_message_size() -> None:
    d = WsDecoder(max_message_bytes=10)
    data = (
        client_frame(OP_TEXT, b"12345", fin=False)
        + client_frame(OP_PING, b"p" * 100)
        + client_frame(OP_CONT, b"67890")
    )
    assert d.feed(data) == [
        WsMessage(OP_PING, b"p" * 100),
        WsMessage(OP_TEXT, b"1234567890"),
    ]


def test_decoder_64bit_length_with_top_bit_set_is_1002() -> None:
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63)
    expect_error(WsDecoder(), header, 1002)


def test_decoder_stays_failed_after_error() -> None:
    d = WsDecoder()
    first = expect_error(d, client_frame(OP_TEXT, b"x", masked=False), 1002)
    with pytest.raises(WsProtocolError) as info:
        d.feed(client_frame(OP_TEXT, b"fine"))
    assert info.value is first


def test_decoder_error_in_same_feed_as_good_frames_still_raises() -> None:
    # The caller must fail the connection; the error is what matters.
    data = client_frame(OP_TEXT, b"ok") + client_frame(OP_TEXT, b"\xff")
    expect_error(WsDecoder(), data, 1007)


def test_ws_protocol_error_carries_close_code_and_message() -> None:
    err = WsProtocolError(1009, "too big")
    assert err.close_code == 1009
    assert str(err) == "too big"
