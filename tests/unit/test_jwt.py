"""Tests for rig_actors.auth.jwt: RIG's JWT rules (§6.1) and bearer parsing (§1.1, §6.2)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rig_actors.auth.jwt import ALGORITHMS, JwtError, JwtVerifier

SECRET = "mysecret"  # short on purpose: RIG's examples use secrets like this


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs_token(
    claims: Any, secret: str | bytes = SECRET, alg: str = "HS256", header: dict | None = None
) -> str:
    """Sign by hand: PyJWT refuses short or PEM-looking HMAC keys, which tests need."""
    key = secret.encode() if isinstance(secret, str) else secret
    head = b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(key, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64(signature)}"


def future(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


def pem_public(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def self_signed_certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rig-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cause(verifier: JwtVerifier, token: Any) -> str:
    with pytest.raises(JwtError) as info:
        verifier.verify(token)
    return str(info.value)


# ----------------------------------------------------------------------------- HMAC


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs_algorithms(alg: str) -> None:
    claims = {"sub": "alice", "exp": future()}
    assert JwtVerifier(SECRET, alg).verify(hs_token(claims, alg=alg)) == claims


def test_short_hs_secret_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        JwtVerifier(SECRET).verify(hs_token({"exp": future()}))


def test_bad_signature() -> None:
    token = hs_token({"exp": future()}, secret="other-secret")
    assert cause(JwtVerifier(SECRET), token) == "Invalid signature"


def test_tampered_payload() -> None:
    head, _, signature = hs_token({"sub": "alice", "exp": future()}).split(".")
    forged = b64(json.dumps({"sub": "admin", "exp": future()}).encode())
    assert cause(JwtVerifier(SECRET), f"{head}.{forged}.{signature}") == "Invalid signature"


def test_empty_secret_rejects_every_token() -> None:
    verifier = JwtVerifier("")  # must not raise
    assert cause(verifier, hs_token({"exp": future()}, secret=b"")) == "Invalid signature"
    assert cause(verifier, hs_token({"exp": future()})) == "Invalid signature"


def test_empty_secret_still_reports_garbage_and_wrong_algorithm() -> None:
    verifier = JwtVerifier("")
    assert cause(verifier, "garbage").startswith("not a token")
    assert cause(verifier, hs_token({"exp": future()}, alg="HS512")) == "Algorithm not allowed"


# ---------------------------------------------------------------------------- claims


def test_expired() -> None:
    token = hs_token({"exp": int(time.time()) - 10})
    assert cause(JwtVerifier(SECRET), token) == "token expired"


def test_leeway_accepts_slightly_expired() -> None:
    token = hs_token({"exp": int(time.time()) - 5})
    assert JwtVerifier(SECRET, leeway_s=30).verify(token)["exp"]


def test_missing_exp() -> None:
    assert cause(JwtVerifier(SECRET), hs_token({"sub": "alice"})) == "missing exp claim"
    assert cause(JwtVerifier(SECRET), hs_token({"exp": None})) == "missing exp claim"


@pytest.mark.parametrize("exp", ["tomorrow", True, [1], {"a": 1}])
def test_invalid_exp(exp: Any) -> None:
    assert cause(JwtVerifier(SECRET), hs_token({"exp": exp})) == "invalid exp claim"


def test_huge_exp_is_far_future() -> None:
    assert JwtVerifier(SECRET).verify(hs_token({"exp": 10**400}))


def test_deeply_nested_json_is_rejected_cleanly() -> None:
    nested = "[" * 5000 + "]" * 5000
    body = b64(nested.encode())
    head = b64(json.dumps({"alg": "HS256"}).encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64(signature)}"
    assert len(token) < 16384  # reaches the JSON decoder, not the length guard
    assert cause(JwtVerifier(SECRET), token) == "not a token: payload is not JSON"
    deep_head = b64(('{"alg": "HS256", "x": ' + nested + "}").encode())
    assert cause(JwtVerifier(SECRET), f"{deep_head}.e30.sig").startswith("not a token")


def test_float_exp_is_fine() -> None:
    assert JwtVerifier(SECRET).verify(hs_token({"exp": time.time() + 60.5}))


def test_future_iat_and_nbf_are_accepted() -> None:
    # RIG's own example tokens carry an iat in the future; RIG checks neither iat nor nbf.
    claims = {"iat": future(86400 * 365), "nbf": future(86400), "exp": future(86400 * 366)}
    assert JwtVerifier(SECRET).verify(hs_token(claims)) == claims


def test_payload_must_be_an_object() -> None:
    assert (
        cause(JwtVerifier(SECRET), hs_token([1, 2])) == "not a token: payload is not a JSON object"
    )


def test_issuer_checked_only_when_configured() -> None:
    token = hs_token({"iss": "idp", "exp": future()})
    assert JwtVerifier(SECRET).verify(token)["iss"] == "idp"
    assert JwtVerifier(SECRET, issuer="idp").verify(token)["iss"] == "idp"
    assert cause(JwtVerifier(SECRET, issuer="other"), token) == "invalid issuer"
    assert cause(JwtVerifier(SECRET, issuer="idp"), hs_token({"exp": future()})) == "invalid issuer"


def test_audience_checked_only_when_configured() -> None:
    token = hs_token({"aud": ["app", "other"], "exp": future()})
    assert JwtVerifier(SECRET).verify(token)  # RIG ignores aud
    assert JwtVerifier(SECRET, audience="app").verify(token)
    assert JwtVerifier(SECRET, audience="app").verify(hs_token({"aud": "app", "exp": future()}))
    assert cause(JwtVerifier(SECRET, audience="nope"), token) == "invalid audience"
    no_aud = hs_token({"exp": future()})
    assert cause(JwtVerifier(SECRET, audience="app"), no_aud) == "invalid audience"


def test_empty_issuer_and_audience_mean_unchecked() -> None:
    token = hs_token({"iss": "x", "aud": "y", "exp": future()})
    assert JwtVerifier(SECRET, issuer="", audience="").verify(token)


# ------------------------------------------------------------------------ algorithms


def test_wrong_algorithm() -> None:
    token = hs_token({"exp": future()}, alg="HS512")
    assert cause(JwtVerifier(SECRET, "HS256"), token) == "Algorithm not allowed"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_rejected(alg: str) -> None:
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "admin", "exp": future()}).encode())
    for token in (f"{head}.{body}.", f"{head}.{body}.{b64(b'x')}"):
        assert cause(JwtVerifier(SECRET), token) == "Algorithm not allowed"
        assert cause(JwtVerifier(""), token) == "Algorithm not allowed"


def test_missing_alg_header() -> None:
    token = hs_token({"exp": future()}, header={"typ": "JWT"})
    assert cause(JwtVerifier(SECRET), token) == "Algorithm not allowed"


def test_hs_rs_key_confusion_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem_public(rsa_key)
    forged = hs_token({"sub": "admin", "exp": future()}, secret=public_pem)
    assert cause(JwtVerifier(public_pem, "RS256"), forged) == "Algorithm not allowed"


def test_hs_verifier_with_pem_secret_never_accepts(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem_public(rsa_key)
    forged = hs_token({"exp": future()}, secret=public_pem)
    assert cause(JwtVerifier(public_pem, "HS256"), forged).startswith("Could not verify token")


def test_unsupported_algorithm_at_construction() -> None:
    with pytest.raises(JwtError, match="unsupported JWT algorithm"):
        JwtVerifier(SECRET, "none")
    with pytest.raises(JwtError):
        JwtVerifier(SECRET, "PS256")


def test_algorithm_list() -> None:
    assert ALGORITHMS == ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384")


# ------------------------------------------------------------------------ RSA and EC


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rs_with_public_key(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    claims = {"sub": "alice", "exp": future()}
    token = pyjwt.encode(claims, rsa_key, algorithm=alg)
    assert JwtVerifier(pem_public(rsa_key), alg).verify(token) == claims


def test_rs_with_self_signed_certificate(rsa_key: rsa.RSAPrivateKey) -> None:
    token = pyjwt.encode({"exp": future()}, rsa_key, algorithm="RS256")
    assert JwtVerifier(self_signed_certificate(rsa_key), "RS256").verify(token)


def test_rs_with_escaped_newlines(rsa_key: rsa.RSAPrivateKey) -> None:
    token = pyjwt.encode({"exp": future()}, rsa_key, algorithm="RS256")
    escaped = pem_public(rsa_key).replace("\n", "\\n")
    assert JwtVerifier(escaped, "RS256").verify(token)


def test_rs_with_private_key_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    token = pyjwt.encode({"exp": future()}, rsa_key, algorithm="RS256")
    assert JwtVerifier(private_pem, "RS256").verify(token)


def test_rs_bad_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = pyjwt.encode({"exp": future()}, other, algorithm="RS256")
    assert cause(JwtVerifier(pem_public(rsa_key), "RS256"), token) == "Invalid signature"


def test_rs_expired(rsa_key: rsa.RSAPrivateKey) -> None:
    token = pyjwt.encode({"exp": int(time.time()) - 1}, rsa_key, algorithm="RS256")
    assert cause(JwtVerifier(pem_public(rsa_key), "RS256"), token) == "token expired"


def test_rs_empty_key_rejects_every_token(rsa_key: rsa.RSAPrivateKey) -> None:
    token = pyjwt.encode({"exp": future()}, rsa_key, algorithm="RS256")
    assert cause(JwtVerifier("", "RS256"), token) == "Invalid signature"


def test_es256(ec_key: ec.EllipticCurvePrivateKey) -> None:
    claims = {"sub": "bob", "exp": future()}
    token = pyjwt.encode(claims, ec_key, algorithm="ES256")
    assert JwtVerifier(pem_public(ec_key), "ES256").verify(token) == claims


def test_es256_rejects_rs_token(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = pyjwt.encode({"exp": future()}, rsa_key, algorithm="RS256")
    assert cause(JwtVerifier(pem_public(ec_key), "ES256"), token) == "Algorithm not allowed"


def test_wrong_key_types_fail_at_construction(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(JwtError, match="must be an RSA key"):
        JwtVerifier(pem_public(ec_key), "RS256")
    with pytest.raises(JwtError, match="must be an EC key on curve secp256r1"):
        JwtVerifier(pem_public(rsa_key), "ES256")
    with pytest.raises(JwtError, match="must be an EC key on curve secp384r1"):
        JwtVerifier(pem_public(ec_key), "ES384")
    with pytest.raises(JwtError, match="not a PEM public key or certificate"):
        JwtVerifier("not a pem", "RS256")


# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b", "a.b.c", "a.b.c.d", "....", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", "  "],
)
def test_garbage_is_not_a_token(token: str) -> None:
    assert cause(JwtVerifier(SECRET), token).startswith("not a token")


def test_non_string_and_oversized_tokens() -> None:
    verifier = JwtVerifier(SECRET)
    assert cause(verifier, None) == "not a token: expected a string"
    assert cause(verifier, b"abc") == "not a token: expected a string"
    assert cause(verifier, "a" * 20000) == "not a token: too long"


def test_surrounding_whitespace_is_ignored() -> None:
    assert JwtVerifier(SECRET).verify("  " + hs_token({"exp": future()}) + "\n")


def test_errors_are_value_errors() -> None:
    assert issubclass(JwtError, ValueError)


# ----------------------------------------------------------------------- bearer parsing


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], []),
        (["Bearer abc"], ["abc"]),
        (["bearer abc"], ["abc"]),
        (["BEARER abc"], ["abc"]),
        (["abc"], ["abc"]),
        (["Basic dXNlcjpwdw=="], []),
        (["Bearer a, Bearer b"], ["a", "b"]),
        (["Bearer a,Basic x,c"], ["a", "c"]),
        (["Bearer a", "Bearer b, c"], ["a", "b", "c"]),
        (["Bearer  a  "], ["a"]),
        (["", " , ,"], []),
        (["Bearer "], []),
        (["Digest a b c"], []),
    ],
)
def test_bearer_tokens(headers: list[str], expected: list[str]) -> None:
    assert JwtVerifier.bearer_tokens(headers) == expected


def test_bearer_tokens_accepts_any_iterable() -> None:
    assert JwtVerifier.bearer_tokens(iter(("Bearer x",))) == ["x"]


def test_bearer_tokens_then_verify() -> None:
    token = hs_token({"exp": future()})
    verifier = JwtVerifier(SECRET)
    (found,) = JwtVerifier.bearer_tokens([f"Bearer {token}"])
    assert verifier.verify(found)["exp"]
