"""JWT verification with RIG's rules (reference §6.1, §6.2).

RIG accepts a token only when it is signed with exactly the configured algorithm and
carries an ``exp`` claim in the future.  It deliberately does *not* check ``iat`` or
``nbf``: RIG's own example tokens carry an ``iat`` in the future, and PyJWT's
high-level ``jwt.decode`` would reject them, so claims are validated here by hand on
top of PyJWT's signature layer (``PyJWS``).  ``iss`` and ``aud`` are checked only when
an issuer/audience is configured (RIG never checks them).

Example::

    >>> verifier = JwtVerifier("my-secret", "HS256")
    >>> claims = verifier.verify(token)  # doctest: +SKIP
    >>> JwtVerifier.bearer_tokens(["Bearer a, Basic b, c"])
    ['a', 'c']

The blacklist check on the session claim is not done here; it belongs to the session
layer, which knows the configured ``JWT_SESSION_FIELD`` (§15 item 7).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.api_jws import PyJWS
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidSignatureError,
    PyJWTError,
)

from ..subscriptions.extractors import MISSING, resolve_pointer

if TYPE_CHECKING:
    from .jwks import JwksKeys

__all__ = ["ALGORITHMS", "JwtError", "JwtVerifier", "any_verifies"]

#: The algorithms ``JWT_ALG`` may name: RIG's HS*/RS* plus ES256/ES384.
ALGORITHMS: tuple[str, ...] = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
)

# ES* signatures only make sense with the curve the algorithm is defined for (RFC 7518
# §3.4); a P-256 key configured for ES384 is a configuration mistake, not a key to try.
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
}

# A header value carrying megabytes of "token" is an attack, not a credential.
_MAX_TOKEN_CHARS = 16384

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class JwtError(ValueError):
    """A token was rejected.  ``str(err)`` is a RIG-like cause suitable for clients.

    Example::

        >>> try:
        ...     JwtVerifier("s").verify("garbage")
        ... except JwtError as err:
        ...     print(err)
        not a token: Not enough segments
    """


class JwtVerifier:
    """Verifies JWTs signed with one pinned algorithm.

    ``secret_key`` is the shared secret for ``HS*``; for ``RS*``/``ES*`` it is a PEM
    public key or X.509 certificate (a PEM private key is accepted too and reduced to
    its public half).  Literal ``\\n`` sequences in a PEM, as they come out of
    single-line environment variables, are turned into newlines.

    An empty secret never raises here: every token is then rejected, which matches a
    RIG started without ``JWT_SECRET_KEY``.  A non-empty key that cannot be used for
    the algorithm raises :class:`JwtError` at construction.

    Example::

        >>> import time, jwt as pyjwt
        >>> secret = "a-shared-secret-of-at-least-32-bytes"
        >>> claims = {"sub": "alice", "aud": "my-app", "exp": time.time() + 60}
        >>> token = pyjwt.encode(claims, secret, algorithm="HS256")
        >>> JwtVerifier(secret, "HS256", audience="my-app").verify(token)["sub"]
        'alice'
    """

    def __init__(
        self,
        secret_key: str,
        algorithm: str = "HS256",
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 0,
        jwks: JwksKeys | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise JwtError(
                f"unsupported JWT algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
            )
        self.algorithm = algorithm
        self.issuer = issuer or None
        self.audience = audience or None
        self.leeway_s = float(leeway_s)
        self._key: bytes | _PublicKey | None = _prepare_key(secret_key, algorithm)
        # With a JWKS URL, a token's "kid" picks the key from the set; a token
        # without one falls back to the configured secret key (if any).
        self._jwks = jwks
        # A private PyJWS that knows only the pinned algorithm: anything else in the
        # token header (including "none" and the HS-with-public-key confusion) fails
        # before a key is ever used.
        self._jws = PyJWS(algorithms=[algorithm])
        self._jws.unregister_algorithm(algorithm)
        self._jws.register_algorithm(algorithm, _without_key_length_warning(algorithm))

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token, or raise :class:`JwtError`.

        Example::

            >>> import jwt as pyjwt
            >>> secret = "a-shared-secret-of-at-least-32-bytes"
            >>> expired = pyjwt.encode({"exp": 1}, secret)
            >>> try:
            ...     JwtVerifier(secret).verify(expired)
            ... except JwtError as err:
            ...     print(err)
            token expired
        """
        if not isinstance(token, str):
            raise JwtError("not a token: expected a string")
        token = token.strip()
        if not token:
            raise JwtError("not a token: empty")
        if len(token) > _MAX_TOKEN_CHARS:
            raise JwtError("not a token: too long")
        try:
            key = self._key
            if self._jwks is not None:
                key = self._key_from_jwks(token) or key
            if key is None:
                # Still parse, so garbage and wrong algorithms get their own causes.
                header = self._jws.decode_complete(
                    token,
                    algorithms=[self.algorithm],
                    options={"verify_signature": False},
                )["header"]
                if header.get("alg") != self.algorithm:
                    raise JwtError("Algorithm not allowed")
                raise JwtError("Invalid signature")
            decoded = self._jws.decode_complete(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
            )
        except JwtError:
            raise
        except InvalidSignatureError:
            raise JwtError("Invalid signature") from None
        except InvalidAlgorithmError:
            raise JwtError("Algorithm not allowed") from None
        except DecodeError as err:
            raise JwtError(f"not a token: {_one_line(err)}") from None
        except RecursionError:  # a deeply nested JSON header
            raise JwtError("not a token: header nested too deeply") from None
        except (PyJWTError, ValueError, TypeError) as err:
            raise JwtError(f"Could not verify token: {_one_line(err)}") from None
        return self._check_claims(decoded["payload"])

    def _key_from_jwks(self, token: str) -> Any:
        """The JWKS key the token's ``kid`` names (None: no kid and no single key)."""
        assert self._jwks is not None
        header = self._jws.get_unverified_header(token)
        # Checked before any key is looked up, so that a token cannot make
        # the gateway fetch the key set by naming a foreign algorithm.
        if header.get("alg") != self.algorithm:
            raise JwtError("Algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtError("not a token: kid is not a string")
        if kid is None and self._key is not None:
            return self._key  # no kid: the configured secret key comes first
        key = self._jwks.key_for(kid)
        if key is None and kid is not None:
            raise JwtError("unknown key id")
        return key

    def _check_claims(self, payload: bytes) -> dict[str, Any]:
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise JwtError("not a token: payload is not JSON") from None
        if not isinstance(claims, dict):
            raise JwtError("not a token: payload is not a JSON object")

        exp = claims.get("exp")
        if exp is None:
            raise JwtError("missing exp claim")
        # bool is an int subclass; "exp": true is not a date.
        if (
            isinstance(exp, bool)
            or not isinstance(exp, int | float)
            or (isinstance(exp, float) and not math.isfinite(exp))
        ):
            raise JwtError("invalid exp claim")
        if exp <= time.time() - self.leeway_s:
            raise JwtError("token expired")

        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise JwtError("invalid issuer")
        if self.audience is not None:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self.audience not in audiences:
                raise JwtError("invalid audience")
        return claims

    @staticmethod
    def bearer_tokens(header_values: Iterable[str]) -> list[str]:
        """Extract bearer tokens from ``Authorization`` header values, in order.

        Each value may hold several comma-separated credentials.  A credential is
        ``<scheme> <token>``; the scheme is compared case-insensitively with
        ``bearer`` and other schemes are skipped.  A credential without a space is
        taken as a bare bearer token (RIG's ``Rig.Plug.AuthHeader`` rule).

        Example::

            >>> JwtVerifier.bearer_tokens(["Bearer a", "bearer b, Basic x, c"])
            ['a', 'b', 'c']
        """
        tokens: list[str] = []
        for value in header_values:
            for credential in value.split(","):
                credential = credential.strip()
                if not credential:
                    continue
                scheme, sep, token = credential.partition(" ")
                if not sep:
                    # A bare token; "Bearer" alone (e.g. from "Bearer ") is not one.
                    if credential.lower() != "bearer":
                        tokens.append(credential)
                elif scheme.lower() == "bearer" and token.strip():
                    tokens.append(token.strip())
        return tokens


def _prepare_key(secret_key: str, algorithm: str) -> bytes | _PublicKey | None:
    """Turn the configured secret into what the algorithm verifies with (None = reject all)."""
    if not secret_key:
        return None
    if algorithm.startswith("HS"):
        return secret_key.encode("utf-8")

    pem = secret_key.strip()
    if "\\n" in pem:
        pem = pem.replace("\\n", "\n")
    data = pem.encode("utf-8")
    key: Any
    try:
        if b"CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY" in data:
            key = load_pem_private_key(data, password=None).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        problem = _one_line(err)
        raise JwtError(
            f"JWT secret key for {algorithm} is not a PEM public key or certificate: {problem}"
        ) from None

    if algorithm.startswith("RS"):
        if not isinstance(key, rsa.RSAPublicKey):
            raise JwtError(f"JWT secret key for {algorithm} must be an RSA key")
        return key
    curve = _EC_CURVES[algorithm]
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
        raise JwtError(f"JWT secret key for {algorithm} must be an EC key on curve {curve.name}")
    return key


def _without_key_length_warning(algorithm: str) -> Algorithm:
    """PyJWT's algorithm object for ``algorithm``, minus its per-call key-length warning.

    PyJWT warns on *every* verification with an HMAC key shorter than the digest;
    RIG deployments commonly use such secrets, and the warning says nothing an
    operator can act on per request.
    """
    alg_obj = get_default_algorithms()[algorithm]
    alg_obj.check_key_length = lambda key: None  # type: ignore[method-assign]
    return alg_obj


def any_verifies(verify: Callable[[str], object], tokens: Iterable[str]) -> bool:
    """Whether any of ``tokens`` passes ``verify`` (which raises :class:`JwtError`).

    >>> def verify(token):
    ...     if token != "good":
    ...         raise JwtError("bad")
    >>> any_verifies(verify, ["bad", "good"]), any_verifies(verify, ["bad"])
    (True, False)
    """
    for token in tokens:
        try:
            verify(token)
        except JwtError:
            continue
        return True
    return False


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def session_names(claims: Mapping[str, Any], pointer: str) -> tuple[str, ...]:
    """The session a token with these claims belongs to (``JWT_SESSION_FIELD``).

    >>> session_names({"jti": "abc"}, "/jti"), session_names({}, "/jti")
    (('abc',), ())
    """
    if not claims:
        return ()
    value = resolve_pointer(claims, pointer)
    if value is MISSING or value is None or isinstance(value, (dict, list)):
        return ()
    return (value if isinstance(value, str) else json.dumps(value),)
