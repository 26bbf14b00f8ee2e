"""JWTs on connect, against the real gateway (RIG §5.2, §6.1, §6.2).

A valid token adds automatic subscriptions: for ``greeting.jwt`` the extractor
maps the claim ``/username`` to the field ``name``. An invalid token refuses
the connection with 400 ``could not parse subscriptions: could not decode JWT: ...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
import requests
from clients import SseClient, ce, ws_connect
from conftest import EXTRACTORS, JWT_SECRET
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.warnings import InsecureKeyLengthWarning

REJECTED = "could not parse subscriptions: could not decode JWT: "
ALICE_AUTO = {"eventType": "greeting.jwt", "oneOf": [{"name": "alice"}]}


def claims(ttl_s: int = 300, **extra: Any) -> dict[str, Any]:
    return {"exp": int(time.time()) + ttl_s, **extra}


def hs256(payload: dict[str, Any], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # The shared test secret is shorter than HS384/HS512 recommend.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return pyjwt.encode(payload, secret, algorithm=algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand; ``key`` None gives an empty signature (alg none)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64url(signature)}"


def subscriptions_set_of(sse: SseClient) -> list[dict[str, Any]]:
    create, subs_set = sse.events(2)
    assert create.type == "rig.connection.create"
    assert subs_set.type == "rig.subscriptions_set"
    return subs_set.json["data"]


def rejection(gateway: Any, **params: str) -> requests.Response:
    response = requests.get(gateway.connect_url("sse", **params), timeout=5)
    assert response.status_code == 400, response.text
    return response


# --------------------------------------------------------------------------- #
# Automatic subscriptions
# --------------------------------------------------------------------------- #


def test_jwt_param_adds_automatic_subscription_before_manual_ones_deduplicated(gateway):
    token = hs256(claims(username="alice"))
    manual = [{"eventType": "greeting"}, ALICE_AUTO, {"eventType": "greeting"}]
    with gateway.sse(manual, jwt=token) as sse:
        assert subscriptions_set_of(sse) == [ALICE_AUTO, {"eventType": "greeting", "oneOf": []}]


def test_automatic_subscription_filters_delivery(gateway):
    with gateway.sse(jwt=hs256(claims(username="alice"))) as sse:
        assert subscriptions_set_of(sse) == [ALICE_AUTO]
        gateway.publish(ce("greeting.jwt", {"name": "bob"}, id_="bob"))
        gateway.publish(ce("greeting", {"name": "alice"}, id_="other-type"))
        gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="alice"))
        assert sse.next_event().json["id"] == "alice"
        sse.expect_silence()


def test_token_without_the_extracted_claim_adds_no_subscription(gateway):
    with gateway.sse([{"eventType": "greeting"}], jwt=hs256(claims(user="alice"))) as sse:
        assert subscriptions_set_of(sse) == [{"eventType": "greeting", "oneOf": []}]


def test_bearer_authorization_header_on_sse_connect_adds_automatic_subscription(gateway):
    token = hs256(claims(username="alice"))
    url = gateway.connect_url("sse", [{"eventType": "greeting"}])
    with SseClient(url, headers={"Authorization": f"Bearer {token}"}) as sse:
        assert sse.status == 200
        assert subscriptions_set_of(sse) == [ALICE_AUTO, {"eventType": "greeting", "oneOf": []}]
        gateway.publish(ce("greeting.jwt", {"name": "bob"}, id_="bob"))
        gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="alice"))
        assert sse.next_event().json["id"] == "alice"
        sse.expect_silence()


def test_jwt_param_on_websocket_connect_adds_automatic_subscription(gateway):
    ws = ws_connect(gateway.connect_url("ws", jwt=hs256(claims(username="alice"))))
    try:
        assert json.loads(ws.recv())["type"] == "rig.connection.create"
        assert json.loads(ws.recv())["data"] == [ALICE_AUTO]
    finally:
        ws.close()


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_token_issued_or_valid_in_the_future_is_accepted(gateway, claim):
    # RIG's example tokens carry a future iat; RIG checks neither iat nor nbf.
    token = hs256(claims(username="alice", **{claim: int(time.time()) + 3600}))
    with gateway.sse(jwt=token) as sse:
        assert sse.status == 200
        assert subscriptions_set_of(sse) == [ALICE_AUTO]


# --------------------------------------------------------------------------- #
# Rejected tokens
# --------------------------------------------------------------------------- #

OTHER_SECRET = "another-secret-for-tests-0123456789abcdef-0123456789"

# name -> (token maker, text the cause contains)
BAD_TOKENS: dict[str, tuple[Callable[[], str], str]] = {
    "bad signature": (lambda: hs256(claims(username="alice"), secret=OTHER_SECRET), "signature"),
    "tampered payload": (
        lambda: (
            lambda h, _, s: f"{h}.{b64url(json.dumps(claims(username='mallory')).encode())}.{s}"
        )(*hs256(claims(username="alice")).split(".")),
        "signature",
    ),
    "expired": (lambda: hs256(claims(ttl_s=-60, username="alice")), "expired"),
    "missing exp": (lambda: hs256({"username": "alice"}), "exp"),
    "alg none": (
        lambda: handmade({"alg": "none", "typ": "JWT"}, claims(username="alice"), None),
        "",
    ),
    "alg none with a signature": (
        lambda: handmade(
            {"alg": "none", "typ": "JWT"}, claims(username="alice"), JWT_SECRET.encode()
        ),
        "",
    ),
    "HS384 when HS256 is configured": (
        lambda: hs256(claims(username="alice"), algorithm="HS384"),
        "",
    ),
    "Bearer prefix in the query param": (
        lambda: "Bearer " + hs256(claims(username="alice")),
        "",
    ),
    "garbage": (lambda: "not-a-token", ""),
    "two segments": (lambda: ".".join(hs256(claims()).split(".")[:2]), ""),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_invalid_jwt_param_is_rejected_with_400(gateway, case):
    make, cause = BAD_TOKENS[case]
    response = rejection(gateway, jwt=make())
    assert response.text.startswith(REJECTED), response.text
    assert len(response.text) > len(REJECTED)
    assert cause in response.text[len(REJECTED) :]


def test_invalid_bearer_header_is_rejected_with_400(gateway):
    token = hs256(claims(username="alice"), secret=OTHER_SECRET)
    response = requests.get(
        gateway.connect_url("sse"), headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 400
    assert response.text.startswith(REJECTED)


def test_gateway_keeps_serving_after_rejected_tokens(gateway):
    with gateway.sse(jwt=hs256(claims(username="alice"))) as sse:
        sse.events(2)
        for make, _ in BAD_TOKENS.values():
            rejection(gateway, jwt=make())
        gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="still-here"))
        assert sse.next_event().json["id"] == "still-here"


# --------------------------------------------------------------------------- #
# Asymmetric keys
# --------------------------------------------------------------------------- #


def public_pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rs256_gateway(gateway_factory, rsa_key) -> Any:
    return gateway_factory(
        EXTRACTORS=json.dumps(EXTRACTORS), JWT_ALG="RS256", JWT_SECRET_KEY=public_pem(rsa_key)
    )


def test_rs256_token_is_accepted_with_a_pem_public_key(rs256_gateway, rsa_key):
    token = pyjwt.encode(claims(username="alice"), rsa_key, algorithm="RS256")
    with rs256_gateway.sse(jwt=token) as sse:
        assert subscriptions_set_of(sse) == [ALICE_AUTO]
        rs256_gateway.publish(ce("greeting.jwt", {"name": "alice"}, id_="rs"))
        assert sse.next_event().json["id"] == "rs"


@pytest.mark.parametrize("variant", ["exact", "stripped", "without trailing newline"])
def test_hs256_token_signed_with_the_public_key_text_is_rejected(rs256_gateway, rsa_key, variant):
    # The HS/RS key-confusion attack: the public key is public, so an HMAC
    # made with it as the secret must not pass for a signature.
    pem = public_pem(rsa_key)
    secret = {"exact": pem, "stripped": pem.strip(), "without trailing newline": pem[:-1]}[variant]
    token = handmade({"alg": "HS256", "typ": "JWT"}, claims(username="alice"), secret.encode())
    response = rejection(rs256_gateway, jwt=token)
    assert response.text.startswith(REJECTED)


def test_rs256_gateway_rejects_other_keys_and_algorithms(rs256_gateway, rsa_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "other RSA key": pyjwt.encode(claims(), other, algorithm="RS256"),
        "RS384": pyjwt.encode(claims(), rsa_key, algorithm="RS384"),
        "PS256": pyjwt.encode(claims(), rsa_key, algorithm="PS256"),
        "HS256 with the shared test secret": hs256(claims()),
        "expired": pyjwt.encode(claims(ttl_s=-60), rsa_key, algorithm="RS256"),
    }
    for name, token in tokens.items():
        response = requests.get(rs256_gateway.connect_url("sse", jwt=token), timeout=5)
        assert response.status_code == 400, name
        assert response.text.startswith(REJECTED), name


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def es256_gateway(gateway_factory, ec_key) -> Any:
    # A single-line PEM with literal "\n" sequences, as env files often carry it.
    return gateway_factory(
        EXTRACTORS=json.dumps(EXTRACTORS),
        JWT_ALG="ES256",
        JWT_SECRET_KEY=public_pem(ec_key).replace("\n", "\\n"),
    )


def test_es256_token_is_accepted_and_others_rejected(es256_gateway, ec_key):
    token = pyjwt.encode(claims(username="alice"), ec_key, algorithm="ES256")
    with es256_gateway.sse(jwt=token) as sse:
        assert subscriptions_set_of(sse) == [ALICE_AUTO]
    other = ec.generate_private_key(ec.SECP256R1())
    for bad in (
        pyjwt.encode(claims(), other, algorithm="ES256"),
        handmade({"alg": "HS256"}, claims(), public_pem(ec_key).encode()),
    ):
        response = requests.get(es256_gateway.connect_url("sse", jwt=bad), timeout=5)
        assert response.status_code == 400
        assert response.text.startswith(REJECTED)
