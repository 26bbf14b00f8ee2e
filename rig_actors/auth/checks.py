"""Authorization checks: ``SUBSCRIPTION_CHECK`` and ``SUBMISSION_CHECK`` (RIG §6.3, §6.4).

Each is one :class:`AuthorizationCheck` in one of three modes:

``no_check``
    Everyone may (the default).
``jwt_validation``
    Allowed iff at least one bearer token of the request is valid: signed
    with the pinned algorithm, not expired, ``iss``/``aud`` as configured,
    and its session not blacklisted. The verification is the gateway's
    single :meth:`~rig_actors.gateway.Gateway.verify_jwt`.
a URL
    Ask an external service: ``POST <url>`` with the request's
    subscriptions (``{"subscriptions": [...]}``) or event (its JSON) and
    the request's ``Authorization`` header. 2xx allows; 401 and 403 deny;
    any other status, no answer, or no answer within the timeout denies
    too, and is logged (a checker that is down must not open the door).

Where they apply (the transports call :meth:`AuthorizationCheck.allows`):
the subscription check on SSE, WebSocket *and long-polling* connects that
carry a ``subscriptions`` parameter, and on every subscriptions PUT; the
submission check on ``POST /_rig/v1/events`` (never on the internal
``/v2|v3/messages``). RIG skips long-polling and its submission check
denies or crashes in every mode but ``no_check`` (§15 items 4, 8).

Example::

    >>> check = AuthorizationCheck("subscription", "jwt_validation", verify=gateway.verify_jwt)
    >>> check.allows(body=b'{"subscriptions":[]}', content_type="application/json",
    ...              authorization=["Bearer " + token])  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .http import HttpError, HttpPool, redact_url
from .jwt import JwtVerifier, any_verifies

__all__ = ["JWT_VALIDATION", "NO_CHECK", "AuthorizationCheck"]

log = logging.getLogger(__name__)

NO_CHECK = "no_check"
JWT_VALIDATION = "jwt_validation"


class AuthorizationCheck:
    """One configured check; see the module docstring.

    ``mode`` is the parsed setting (``no_check``, ``jwt_validation`` or an
    http(s) URL); ``verify`` raises :class:`~rig_actors.auth.jwt.JwtError`
    for a token that is not valid; ``http`` and ``timeout_s`` are used by
    the URL mode only.

    Example::

        >>> AuthorizationCheck("submission", "no_check", verify=None).allows(
        ...     body=b"{}", content_type="application/json", authorization=[])
        True
    """

    def __init__(
        self,
        name: str,
        mode: str,
        verify: Callable[[str], Any] | None,
        *,
        http: HttpPool | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.mode = mode or NO_CHECK
        self._verify = verify
        self._http = http
        self.timeout_s = timeout_s
        self.url = self.mode if self.mode not in (NO_CHECK, JWT_VALIDATION) else ""
        if self.url and http is None:
            raise ValueError("an external check needs an HttpPool")
        if self.mode == JWT_VALIDATION and verify is None:
            raise ValueError("jwt_validation needs a verify function")
        self.denied = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.mode != NO_CHECK

    def allows(self, *, body: bytes, content_type: str, authorization: Sequence[str]) -> bool:
        """Whether the request may proceed.

        ``authorization`` holds the request's ``Authorization`` header values
        as received (for a connect with ``?jwt=``, ``"Bearer <jwt>"`` is one
        of them). In the URL mode this blocks the calling greenlet only, for
        at most ``timeout_s``.
        """
        if self.mode == NO_CHECK:
            return True
        if self.mode == JWT_VALIDATION:
            allowed = self._any_valid_token(authorization)
        else:
            allowed = self._ask(body, content_type, authorization)
        if not allowed:
            self.denied += 1
        return allowed

    def _any_valid_token(self, authorization: Sequence[str]) -> bool:
        assert self._verify is not None
        return any_verifies(self._verify, JwtVerifier.bearer_tokens(authorization))

    def _ask(self, body: bytes, content_type: str, authorization: Sequence[str]) -> bool:
        assert self._http is not None
        headers = {"content-type": content_type or "application/json; charset=utf-8"}
        if authorization:
            # RIG joins several Authorization headers with ", " (one header).
            headers["authorization"] = ", ".join(authorization)
        try:
            response = self._http.request(
                "POST", self.url, body=body, headers=headers, timeout=self.timeout_s
            )
        except HttpError as exc:
            self.failed += 1
            # Never the headers: they carry the client's credentials.
            log.warning(
                "%s check at %s failed (%s); denying", self.name, redact_url(self.url), exc
            )
            return False
        status = response.status
        if 200 <= status < 300:
            return True
        if status in (401, 403):
            return False
        self.failed += 1
        log.warning(
            "%s check at %s answered %d; denying", self.name, redact_url(self.url), status
        )
        return False
