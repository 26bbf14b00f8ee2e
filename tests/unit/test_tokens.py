"""Tests for rig_actors.auth.tokens: opaque, URL-safe, tamper-proof tokens (§2.10)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import string
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from itsdangerous import Signer

from rig_actors.auth.tokens import MAX_TOKEN_CHARS, TokenClaims, TokenCodec, TokenError

URL_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec("node-cookie")


def test_round_trip(codec: TokenCodec) -> None:
    token = codec.encode("worker-1", "conn_42")
    assert codec.decode(token) == TokenClaims(owner="worker-1", conn_id="conn_42")


def test_tokens_are_url_safe_and_short(codec: TokenCodec) -> None:
    for _ in range(200):
        owner = secrets.token_urlsafe(8)
        conn_id = uuid.uuid4().hex
        token = codec.encode(owner, conn_id)
        assert URL_SAFE.fullmatch(token)
        assert quote(token, safe="") == token  # nothing to escape in a URL path or query
        assert len(token) < 100
        assert codec.decode(token) == TokenClaims(owner, conn_id)


def test_uuid_string_ids(codec: TokenCodec) -> None:
    owner, conn_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert codec.decode(codec.encode(owner, conn_id)) == TokenClaims(owner, conn_id)


def test_encoding_is_deterministic(codec: TokenCodec) -> None:
    assert codec.encode("w", "c") == codec.encode("w", "c")


def test_any_codec_with_the_same_secret_decodes() -> None:
    # Tokens must be decodable on every node of the cluster.
    token = TokenCodec("shared").encode("w1", "c1")
    assert TokenCodec("shared").decode(token).owner == "w1"


def test_other_secret_rejects() -> None:
    token = TokenCodec("secret-a").encode("w1", "c1")
    with pytest.raises(TokenError):
        TokenCodec("secret-b").decode(token)


def test_other_salt_rejects() -> None:
    # Correlation ids use another salt; neither kind may pass for the other.
    token = TokenCodec("s").encode("w1", "c1")
    with pytest.raises(TokenError):
        TokenCodec("s", salt="rig-correlation").decode(token)
    correlation = TokenCodec("s", salt="rig-correlation").encode("w1", "r1")
    with pytest.raises(TokenError):
        TokenCodec("s").decode(correlation)


def test_every_single_character_change_is_detected(codec: TokenCodec) -> None:
    token = codec.encode("worker-1", "conn-1")
    for index, char in enumerate(token):
        for replacement in "AB_-.z9":
            if replacement == char:
                continue
            tampered = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(TokenError):
                codec.decode(tampered)


def test_non_canonical_signature_spelling_is_rejected(codec: TokenCodec) -> None:
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    token = codec.encode("worker-1", "conn-1")
    last = token[-1]
    # A 32-byte HMAC is 43 base64 characters; the low 2 bits of the last one are unused.
    same_bytes = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(TokenError):
        codec.decode(token[:-1] + same_bytes)


def test_swapping_owner_is_detected(codec: TokenCodec) -> None:
    _, conn_id, signature = codec.encode("worker-1", "conn-1").split(".")
    with pytest.raises(TokenError):
        codec.decode(f"worker-2.{conn_id}.{signature}")


def test_signature_cannot_be_moved_between_splits(codec: TokenCodec) -> None:
    # "a.b-c" vs "a-b.c" must not share a signature: the separator is signed too.
    token = codec.encode("a", "b-c")
    signature = token.rsplit(".", 1)[1]
    with pytest.raises(TokenError):
        codec.decode(f"a-b.c.{signature}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        ".",
        "..",
        "a.b",
        "a.b.c",
        "a..sig",
        "w1.c1.!!!",
        "w1.c1.sig=",
        "w1/c1.sig",
        "w1 c1.sig",
        "\x00",
        "é.é.é",
        "a" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_garbage_raises_token_error(codec: TokenCodec, token: str) -> None:
    with pytest.raises(TokenError):
        codec.decode(token)


@pytest.mark.parametrize("value", [None, 123, b"w1.c1.sig", ["w1"], object()])
def test_wrong_types_raise_token_error(codec: TokenCodec, value: Any) -> None:
    with pytest.raises(TokenError):
        codec.decode(value)


def test_signed_payload_with_bad_shape_is_rejected(codec: TokenCodec) -> None:
    # A validly signed payload that is not "owner.conn_id" must still be refused.
    signer = codec._signer
    for payload in ("no-separator", "a.b.c", ".c", "a."):
        token = signer.sign(payload).decode()
        with pytest.raises(TokenError):
            codec.decode(token)


def test_oversized_but_valid_looking_token_is_rejected(codec: TokenCodec) -> None:
    long_token = codec.encode("w" * 128, "c" * 128)
    assert len(long_token) < MAX_TOKEN_CHARS
    assert codec.decode(long_token).owner == "w" * 128
    with pytest.raises(TokenError):
        codec.decode(long_token + "x" * MAX_TOKEN_CHARS)


@pytest.mark.parametrize(
    ("owner", "conn_id"),
    [("", "c"), ("w", ""), ("w.1", "c"), ("w", "c/1"), ("w", "c 1"), ("w" * 129, "c")],
)
def test_encode_rejects_ids_outside_the_alphabet(
    codec: TokenCodec, owner: str, conn_id: str
) -> None:
    with pytest.raises(ValueError):
        codec.encode(owner, conn_id)


def test_encode_rejects_non_strings(codec: TokenCodec) -> None:
    with pytest.raises(ValueError):
        codec.encode(1, "c")  # type: ignore[arg-type]


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenCodec("")


def test_token_error_is_a_value_error() -> None:
    assert issubclass(TokenError, ValueError)


def test_claims_are_frozen() -> None:
    claims = TokenClaims("w", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        claims.owner = "x"  # type: ignore[misc]
    assert not hasattr(claims, "__dict__")  # slots


def test_tokens_are_itsdangerous_sha256_signatures() -> None:
    # Tokens cross nodes and versions (a PUT or a poll may reach another
    # worker): the fast signer must give itsdangerous's exact bytes.
    signer = Signer("node-cookie", salt="rig-connection", sep=".", digest_method=hashlib.sha256)
    codec = TokenCodec("node-cookie")
    for owner, conn_id in [("w1", "c42"), ("node_a-7", "x" * 128), ("A", str(uuid.uuid4()))]:
        assert codec.encode(owner, conn_id) == signer.sign(f"{owner}.{conn_id}").decode()
