"""Opaque, URL-safe, tamper-proof connection tokens (reference §2.10).

A token names the worker that holds a connection and the connection's id there, so any
worker of the cluster can route a request (e.g. a PUT of subscriptions) to the owner.
RIG encrypts an Erlang pid; clients only need the token to be opaque to them, URL-safe
and unforgeable, so a signed ``owner.conn_id`` is enough and much shorter.  The ids are
readable by whoever holds the token: do not put secrets into them.

The token is ``<owner>.<conn_id>.<signature>`` where the signature is an HMAC-SHA256
(itsdangerous ``Signer``, key derived from the secret and a salt).  Different salts give
unrelated signatures, so the proxy's correlation ids can reuse this codec without a
connection token ever being accepted as a correlation id or vice versa.

Example::

    >>> codec = TokenCodec("node-cookie")
    >>> token = codec.encode("w1", "c42")
    >>> codec.decode(token)
    TokenClaims(owner='w1', conn_id='c42')
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer

__all__ = ["MAX_TOKEN_CHARS", "TokenClaims", "TokenCodec", "TokenError"]

#: Longer input is rejected unread: real tokens are well under 100 characters.
MAX_TOKEN_CHARS = 512

# Ids travel unescaped, so they are restricted to characters that are URL-safe and
# cannot be confused with the "." separator.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


class TokenError(ValueError):
    """The token is not one this codec issued (bad signature, garbage, wrong shape).

    Example::

        >>> try:
        ...     TokenCodec("s").decode("nope")
        ... except TokenError as err:
        ...     print(err)
        invalid token
    """


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: the owning worker id and the connection id there."""

    owner: str
    conn_id: str


class TokenCodec:
    """Signs and verifies ``(owner, conn_id)`` pairs as short URL-safe strings.

    ``owner`` and ``conn_id`` must each be 1-128 characters of ``[A-Za-z0-9_-]``
    (uuid4 hex/str, ``secrets.token_urlsafe`` output and hostnames without dots fit).

    Example::

        >>> codec = TokenCodec("node-cookie", salt="rig-correlation")
        >>> codec.decode(codec.encode("w1", "req-7")).conn_id
        'req-7'
    """

    def __init__(self, secret: str, salt: str = "rig-connection") -> None:
        if not secret:
            # An empty key would make every token forgeable; refuse rather than
            # silently run insecurely.
            raise ValueError("TokenCodec needs a non-empty secret")
        self._signer = Signer(secret, salt=salt, sep=".", digest_method=hashlib.sha256)
        # Every new stream gets a token; itsdangerous derives the key again
        # for each signature. The same HMAC, keyed once and copied per use,
        # gives the same bytes (a test checks) at a fraction of the cost.
        self._mac = hmac.new(self._signer.derive_key(), digestmod=hashlib.sha256)

    def encode(self, owner: str, conn_id: str) -> str:
        """Return the signed token for ``owner``/``conn_id``.

        Example::

            >>> TokenCodec("s").encode("w1", "c1").startswith("w1.c1.")
            True
        """
        for name, value in (("owner", owner), ("conn_id", conn_id)):
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise ValueError(f"{name} must be 1-128 characters of [A-Za-z0-9_-], got {value!r}")
        payload = f"{owner}.{conn_id}"
        mac = self._mac.copy()
        mac.update(payload.encode("ascii"))
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")
        return f"{payload}.{signature}"

    def decode(self, token: str) -> TokenClaims:
        """Return the claims of a token this codec issued; :class:`TokenError` otherwise.

        Never raises anything else, whatever the input.

        Example::

            >>> codec = TokenCodec("s")
            >>> codec.decode(codec.encode("w1", "c1")).owner
            'w1'
        """
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_CHARS
            or not _TOKEN.fullmatch(token)
        ):
            raise TokenError("invalid token")
        try:
            payload = self._signer.unsign(token).decode("ascii")
        except (BadSignature, ValueError, TypeError):
            raise TokenError("invalid token") from None
        # base64 ignores the unused low bits of the last signature character, so a
        # few spellings of one signature verify; accept only the one encode() makes so
        # a token string is a stable identity (for logs, caches, comparisons).
        if not hmac.compare_digest(self._signer.sign(payload), token.encode("ascii")):
            raise TokenError("invalid token")
        owner, sep, conn_id = payload.partition(".")
        if not sep or not _ID.fullmatch(owner) or not _ID.fullmatch(conn_id):
            raise TokenError("invalid token")
        return TokenClaims(owner=owner, conn_id=conn_id)
