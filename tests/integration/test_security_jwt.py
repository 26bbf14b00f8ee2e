"""JWTs on a live gateway: every algorithm, every rejection cause, iss/aud, JWKS, no leaks.

``test_jwt_connect.py`` covers HS256, RS256 and ES256 and the automatic
subscriptions; here every other ``JWT_ALG`` gets a gateway of its own and
the same rejection causes (bad signature, expired, no ``exp``, another
algorithm, ``alg: none``, HS/RS key confusion, blacklisted session), then
``JWT_ISSUER``/``JWT_AUDIENCE``, keys from a JWKS URL (a real HTTP server
here; cached, refreshed on an unknown ``kid``) and the promise that no
token ends up in a log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from typing import Any

import jwt as pyjwt
import pytest
import requests
from authservers import JwksHost
from clients import SseClient, ce
from conftest import JWT_SECRET, start_procfile
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

REJECTED = "could not parse subscriptions: could not decode JWT: "


def claims(ttl_s: float = 300, **extra: Any) -> dict[str, Any]:
    return {"exp": int(time.time() + ttl_s), **extra}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """Signed by hand (HS256), or unsigned (``key`` None), whatever the header says."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if key is None:
        return f"{signing_input}."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def encode(payload: dict[str, Any], key: Any, algorithm: str, **kwargs: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return pyjwt.encode(payload, key, algorithm=algorithm, **kwargs)


def public_pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def refusal(gateway, jwt: str) -> str:
    response = requests.get(gateway.connect_url("sse", jwt=jwt), timeout=10)
    assert response.status_code == 400, response.text
    assert response.text.startswith(REJECTED), response.text
    return response.text[len(REJECTED) :]


def accepted(gateway, jwt: str) -> bool:
    with SseClient(gateway.connect_url("sse", jwt=jwt)) as sse:
        return sse.status == 200


# --------------------------------------------------------------------------- #
# Each algorithm, each rejection cause
# --------------------------------------------------------------------------- #

_KEYS: dict[str, Any] = {}


def signing_key(alg: str) -> Any:
    """The key tokens for ``alg`` are signed with (one per family, made once)."""
    family = alg[:2] + (alg[2:] if alg.startswith("ES") else "")
    if family not in _KEYS:
        if alg.startswith("HS"):
            _KEYS[family] = JWT_SECRET
        elif alg.startswith("RS"):
            _KEYS[family] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
            _KEYS[family] = ec.generate_private_key(curve)
    return _KEYS[family]


def configured_key(alg: str) -> str:
    key = signing_key(alg)
    return key if isinstance(key, str) else public_pem(key)


OTHER_ALG = {
    "HS384": "HS512",
    "HS512": "HS256",
    "RS384": "RS256",
    "RS512": "RS384",
    "ES384": "ES256",
}


@pytest.fixture(scope="module", params=["HS384", "HS512", "RS384", "RS512", "ES384"])
def alg_gateway(request, gateway_factory):
    alg = request.param
    gateway = gateway_factory(JWT_ALG=alg, JWT_SECRET_KEY=configured_key(alg))
    gateway.alg = alg
    yield gateway
    gateway.stop()


def test_each_algorithm_is_accepted_and_every_rejection_cause_refused(alg_gateway):
    alg = alg_gateway.alg
    key = signing_key(alg)
    assert accepted(alg_gateway, encode(claims(jti="ok"), key, alg))

    causes = {
        "expired": (encode(claims(ttl_s=-30), key, alg), "token expired"),
        "no exp": (encode({"jti": "x"}, key, alg), "missing exp claim"),
        "alg none": (hmac_token({"alg": "none"}, claims(), None), "Algorithm not allowed"),
        "other algorithm": (
            encode(claims(), signing_key(OTHER_ALG[alg]), OTHER_ALG[alg]),
            "Algorithm not allowed",
        ),
    }
    if alg.startswith("HS"):
        causes["bad signature"] = (
            encode(claims(), "another-secret-for-tests-0123456789abcdef", alg),
            "Invalid signature",
        )
    else:
        other = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg.startswith("RS")
            else ec.generate_private_key(ec.SECP384R1())
        )
        causes["bad signature"] = (encode(claims(), other, alg), "Invalid signature")
        # HS/RS confusion: an HMAC keyed with the (public) PEM text.
        pem = configured_key(alg).encode()
        causes["key confusion"] = (
            hmac_token({"alg": "HS256", "typ": "JWT"}, claims(), pem),
            "Algorithm not allowed",
        )
    for name, (jwt, cause) in causes.items():
        assert refusal(alg_gateway, jwt) == cause, name

    blacklisted = encode(claims(jti=f"bl-{alg}"), key, alg)
    assert accepted(alg_gateway, blacklisted)
    response = requests.post(
        f"{alg_gateway.api}/v3/session-blacklist",
        json={"sessionId": f"bl-{alg}", "validityInSeconds": 60},
        timeout=10,
    )
    assert response.status_code == 201
    assert refusal(alg_gateway, blacklisted) == "session is blacklisted"


# --------------------------------------------------------------------------- #
# JWT_ISSUER, JWT_AUDIENCE
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def iss_aud_gateway(gateway_factory):
    return gateway_factory(
        JWT_SECRET_KEY=JWT_SECRET, JWT_ISSUER="https://idp.test/", JWT_AUDIENCE="rig"
    )


def test_issuer_and_audience_are_enforced_when_configured(iss_aud_gateway):
    gw = iss_aud_gateway
    good = {"iss": "https://idp.test/", "aud": "rig"}
    assert accepted(gw, encode(claims(**good), JWT_SECRET, "HS256"))
    assert accepted(gw, encode(claims(**{**good, "aud": ["other", "rig"]}), JWT_SECRET, "HS256"))
    bad = {
        "wrong issuer": ({**good, "iss": "https://evil.test/"}, "invalid issuer"),
        "no issuer": ({"aud": "rig"}, "invalid issuer"),
        "wrong audience": ({**good, "aud": "other"}, "invalid audience"),
        "no audience": ({"iss": "https://idp.test/"}, "invalid audience"),
    }
    for name, (extra, cause) in bad.items():
        assert refusal(gw, encode(claims(**extra), JWT_SECRET, "HS256")) == cause, name


def test_issuer_and_audience_apply_to_puts_and_checks_too(iss_aud_gateway):
    gw = iss_aud_gateway
    with gw.sse() as sse:
        conn = sse.events(2)[0].json["data"]["connection_token"]
        wrong = encode(claims(iss="https://evil.test/", aud="rig"), JWT_SECRET, "HS256")
        response = requests.put(
            f"{gw.inbound}/_rig/v1/connection/sse/{conn}/subscriptions",
            json={"subscriptions": []},
            headers={"authorization": f"Bearer {wrong}"},
            timeout=10,
        )
        assert response.status_code == 400
        assert response.text.endswith("could not decode JWT: invalid issuer")


# --------------------------------------------------------------------------- #
# JWKS
# --------------------------------------------------------------------------- #


def jwk(private_key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    data = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def jwks():
    with JwksHost() as host:
        host.rsa = {
            name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for name in ("k1", "k2", "k3")
        }
        host.keys = [jwk(host.rsa["k1"], "k1")]
        yield host


@pytest.fixture(scope="module")
def jwks_gateway(gateway_factory, jwks):
    return gateway_factory(JWT_ALG="RS256", JWT_JWKS_URL=jwks.url)


def rs256(host: JwksHost, name: str, kid: str | None = "same", **extra: Any) -> str:
    headers = {"kid": name if kid == "same" else kid} if kid is not None else {}
    return encode(claims(**extra), host.rsa[name], "RS256", headers=headers)


def test_jwks_key_is_used_and_cached(jwks_gateway, jwks):
    assert accepted(jwks_gateway, rs256(jwks, "k1"))
    fetches = jwks.fetches
    for _ in range(5):
        assert accepted(jwks_gateway, rs256(jwks, "k1"))
    assert jwks.fetches == fetches


def test_a_rotated_key_is_fetched_when_a_token_names_it(jwks_gateway, jwks):
    token = rs256(jwks, "k2")
    assert refusal(jwks_gateway, token) == "unknown key id"
    jwks.keys = [jwk(jwks.rsa["k1"], "k1"), jwk(jwks.rsa["k2"], "k2")]
    time.sleep(1.1)  # refreshes are at most one a second
    assert accepted(jwks_gateway, token)
    assert accepted(jwks_gateway, rs256(jwks, "k1"))


def test_unknown_kids_cannot_hammer_the_key_server(jwks_gateway, jwks):
    time.sleep(1.1)
    fetches = jwks.fetches
    started = time.monotonic()
    for _ in range(20):
        refusal(jwks_gateway, rs256(jwks, "k3", kid=uuid.uuid4().hex))
    elapsed = time.monotonic() - started
    assert jwks.fetches - fetches <= 1 + int(elapsed), (jwks.fetches - fetches, elapsed)


def test_a_token_signed_by_a_key_not_in_the_set_is_refused(jwks_gateway, jwks):
    # k3 is not published; claiming k1 does not make its signature valid.
    assert refusal(jwks_gateway, rs256(jwks, "k3", kid="k1")) == "Invalid signature"


def test_the_algorithm_stays_pinned_with_jwks(jwks_gateway, jwks):
    public = jwks.rsa["k1"].public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = hmac_token({"alg": "HS256", "kid": "k1"}, claims(), pem)
    assert refusal(jwks_gateway, confused) == "Algorithm not allowed"
    assert refusal(jwks_gateway, hmac_token({"alg": "none"}, claims(), None)) == (
        "Algorithm not allowed"
    )
    rs512 = encode(claims(), jwks.rsa["k1"], "RS512", headers={"kid": "k1"})
    assert refusal(jwks_gateway, rs512) == "Algorithm not allowed"


def test_keys_for_other_algorithms_or_uses_are_ignored(gateway_factory):
    with JwksHost() as host:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        host.rsa = {"k": key}
        host.keys = [jwk(key, "k", alg="RS512"), jwk(key, "k-enc", use="enc")]
        gateway = gateway_factory(JWT_ALG="RS256", JWT_JWKS_URL=host.url)
        assert refusal(gateway, rs256(host, "k")) == "unknown key id"
        assert refusal(gateway, rs256(host, "k", kid="k-enc")) == "unknown key id"
        host.keys.append(jwk(key, None))  # one usable key, no kid
        time.sleep(1.1)
        assert refusal(gateway, rs256(host, "k")) == "unknown key id"  # refetches the set
        assert accepted(gateway, rs256(host, "k", kid=None))  # no kid: the only key


# --------------------------------------------------------------------------- #
# No token in any log
# --------------------------------------------------------------------------- #


def test_tokens_never_reach_the_logs(gateway_factory, tmp_path):
    gw = gateway_factory(
        JWT_SECRET_KEY=JWT_SECRET, SUBMISSION_CHECK="jwt_validation", LOG_LEVEL="debug"
    )
    valid = encode(claims(jti="logged?"), JWT_SECRET, "HS256")
    invalid = encode(claims(), "another-secret-for-tests-0123456789abcdef", "HS256")
    expired = encode(claims(ttl_s=-10), JWT_SECRET, "HS256")
    tokens = [valid, invalid, expired]
    for jwt in tokens:
        sse = requests.get(
            gw.connect_url("sse", [{"eventType": "x"}], jwt=jwt), timeout=10, stream=True
        )
        sse.close()
        requests.get(gw.connect_url("longpolling", jwt=jwt), timeout=10)
        requests.post(
            f"{gw.inbound}/_rig/v1/events",
            json=ce("x"),
            headers={"authorization": f"Bearer {jwt}"},
            timeout=10,
        )
    requests.post(
        f"{gw.api}/v3/session-blacklist",
        json={"sessionId": "logged?", "validityInSeconds": 60},
        timeout=10,
    )
    requests.get(gw.connect_url("sse", jwt=valid), timeout=10)  # blacklisted now: 400
    # A malformed request line with a token in it reaches pywsgi's error log.
    import socket

    with socket.create_connection(("127.0.0.1", gw.inbound_port)) as sock:
        sock.sendall(f"GET /_rig/v1/connection/sse?jwt={valid} HTTP/9.9\r\n\r\n".encode())
        sock.recv(1024)
    log = gw.log()
    for jwt in tokens:
        for part in jwt.split("."):
            assert part not in log


def test_gunicorn_access_log_shows_no_token(tmp_path):
    gateway = start_procfile(
        tmp_path,
        {
            "WEB_CONCURRENCY": "1",
            "JWT_SECRET_KEY": JWT_SECRET,
            "GUNICORN_CMD_ARGS": "--access-logfile -",
        },
    )
    try:
        valid = encode(claims(jti="acc"), JWT_SECRET, "HS256")
        invalid = encode(claims(), "another-secret-for-tests-0123456789abcdef", "HS256")
        requests.get(gateway.connect_url("longpolling", jwt=valid), timeout=10)
        requests.get(gateway.connect_url("sse", jwt=invalid), timeout=10)
        time.sleep(0.3)
        log = gateway.log()
        assert "GET /_rig/v1/connection/longpolling?jwt=" in log  # the access log is on
        for jwt in (valid, invalid):
            for part in jwt.split("."):
                assert part not in log
    finally:
        gateway.stop()
