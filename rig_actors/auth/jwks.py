"""JWT verification keys from a JSON Web Key Set URL (``JWT_JWKS_URL``; not in RIG).

Identity providers publish their signing keys as a JWKS (RFC 7517) and rotate
them: a new key appears in the set, tokens start naming it in their ``kid``
header, the old key disappears later. :class:`JwksKeys` serves that:

- keys are fetched once and cached by ``kid``;
- a token naming a ``kid`` the cache does not know triggers a refresh, at
  most once per ``min_refresh_s`` (so a flood of tokens with made-up ``kid``
  values costs the provider one request a second, not one per token), and
  concurrent callers share one fetch;
- a failed fetch keeps the keys already known;
- only keys usable with the pinned ``JWT_ALG`` are kept: the right key type
  (RSA for ``RS*``, EC on the algorithm's curve for ``ES*``, ``oct`` for
  ``HS*``), an ``alg`` member (if any) equal to ``JWT_ALG`` and a ``use``
  member (if any) of ``sig``. The algorithm stays pinned: the token's
  header cannot choose it.

The fetch is made with the gateway's pooled client, so it parks only the
request that needed the key.

Example::

    >>> keys = JwksKeys("https://idp.example/.well-known/jwks.json", "RS256", HttpPool())
    >>> keys.key_for("2024-05")  # doctest: +SKIP
    <cryptography...RSAPublicKey object ...>
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gevent.event import AsyncResult
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError

from .http import HttpError, HttpPool, redact_url

__all__ = ["JwksKeys"]

log = logging.getLogger(__name__)

_CURVES: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


class JwksKeys:
    """The keys of one JWKS URL for one pinned algorithm; see the module docstring."""

    def __init__(
        self,
        url: str,
        algorithm: str,
        http: HttpPool,
        *,
        timeout_s: float = 5.0,
        min_refresh_s: float = 1.0,
    ) -> None:
        self.url = url
        self.algorithm = algorithm
        self.timeout_s = timeout_s
        self.min_refresh_s = min_refresh_s
        self._http = http
        self._by_kid: dict[str, Any] = {}
        self._without_kid: list[Any] = []
        self._fetched_at = float("-inf")
        self._inflight: AsyncResult | None = None
        self.fetches = 0

    def key_for(self, kid: str | None) -> Any | None:
        """The verification key for a token's ``kid`` (``None``: the token has none).

        A token without ``kid`` is verified with the set's only key, if it has
        exactly one; with several keys it is ambiguous and gets ``None``.
        """
        key = self._lookup(kid)
        if key is None:
            self.refresh()
            key = self._lookup(kid)
        return key

    def _lookup(self, kid: str | None) -> Any | None:
        if kid is not None:
            return self._by_kid.get(kid)
        keys = [*self._by_kid.values(), *self._without_kid]
        return keys[0] if len(keys) == 1 else None

    def refresh(self) -> None:
        """Fetch the set again, unless that was done less than ``min_refresh_s`` ago."""
        inflight = self._inflight
        if inflight is not None:
            inflight.wait(self.timeout_s)  # someone else is fetching: share it
            return
        if time.monotonic() - self._fetched_at < self.min_refresh_s:
            return
        self._fetched_at = time.monotonic()
        self._inflight = inflight = AsyncResult()
        try:
            self._fetch()
        finally:
            self._inflight = None
            inflight.set(None)

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            response = self._http.request(
                "GET", self.url, headers={"accept": "application/json"}, timeout=self.timeout_s
            )
        except HttpError as exc:
            log.warning("JWKS fetch from %s failed: %s", redact_url(self.url), exc)
            return
        if response.status != 200:
            log.warning("JWKS fetch from %s answered %d", redact_url(self.url), response.status)
            return
        try:
            document = json.loads(response.body)
            entries = document["keys"]
            if not isinstance(entries, list):
                raise TypeError("keys is not a list")
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("JWKS from %s is not a key set: %s", redact_url(self.url), exc)
            return
        by_kid: dict[str, Any] = {}
        without_kid: list[Any] = []
        for entry in entries:
            key = self._usable_key(entry)
            if key is None:
                continue
            kid = entry.get("kid")
            if isinstance(kid, str):
                by_kid[kid] = key
            else:
                without_kid.append(key)
        self._by_kid, self._without_kid = by_kid, without_kid
        log.info(
            "JWKS from %s: %d usable %s keys", redact_url(self.url), len(entries), self.algorithm
        )

    def _usable_key(self, entry: Any) -> Any | None:
        if not isinstance(entry, dict):
            return None
        if entry.get("use", "sig") != "sig" or entry.get("alg", self.algorithm) != self.algorithm:
            return None
        try:
            key = get_default_algorithms()[self.algorithm].from_jwk(entry)
        except (PyJWTError, ValueError, TypeError, KeyError):
            return None
        if self.algorithm.startswith("HS"):
            return key if isinstance(key, bytes) and key else None
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            # A provider that published too much: verify with the public half.
            key = key.public_key()
        if self.algorithm.startswith("RS"):
            return key if isinstance(key, rsa.RSAPublicKey) else None
        curve = _CURVES[self.algorithm]
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve):
            return key
        return None
