"""What every new connection goes through before it exists (RIG §2.1).

The checks run in RIG's order so that the same bad input gets the same
answer: undecodable ``subscriptions`` JSON, then the JWT (query parameter
``jwt`` or an ``Authorization: Bearer`` header), then the subscriptions
themselves, then our limits, then ``SUBSCRIPTION_CHECK`` (only when a
``subscriptions`` parameter was given, as in RIG, but for long-polling too),
then the connection rate limit. The result is the subscription set
(automatic ones from the JWT first, deduplicated), the session names the
connection belongs to and when its token expires.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..auth.jwt import JwtError, JwtVerifier
from ..auth.jwt import session_names as claims_session_names
from ..subscriptions import (
    Subscription,
    SubscriptionError,
    dedupe,
    parse_subscription_list,
)

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "ConnectError",
    "Prepared",
    "earliest_exp",
    "prepare_connection",
    "session_names",
    "subscription_limits",
]


class ConnectError(Exception):
    """The connection is refused: ``status`` and ``message`` for HTTP."""

    def __init__(self, status: int, message: str, ws_reason: str = "Bad request.") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.ws_reason = ws_reason


@dataclass(frozen=True, slots=True)
class Prepared:
    subscriptions: tuple[Subscription, ...]
    sessions: tuple[str, ...]
    #: The earliest ``exp`` of the request's JWTs (epoch s); None without a JWT.
    expires_at: float | None = None


def prepare_connection(
    gateway: Gateway,
    args: Mapping[str, str],
    authorization: Iterable[str] = (),
    *,
    allow_wrapped: bool = False,
    count_connection: bool = True,
) -> Prepared:
    """Validate a connect request; raises :class:`ConnectError`.

    ``allow_wrapped`` accepts ``{"subscriptions": [...]}`` as well as a bare
    list (long-polling does, §2.4).
    """
    raw = args.get("subscriptions")
    decoded: Any = None
    if raw is not None:
        try:
            decoded = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            message = f"Failed to decode subscription list: {exc}"
            raise ConnectError(400, message, ws_reason=message) from None

    authorization = list(authorization)
    tokens = [t for t in (args.get("jwt") or "",) if t] + JwtVerifier.bearer_tokens(authorization)
    claims: dict[str, Any] = {}
    expires_at: float | None = None
    for token in tokens:
        try:
            token_claims = gateway.verify_jwt(token)
        except JwtError as exc:
            raise ConnectError(
                400, f"could not parse subscriptions: could not decode JWT: {exc}"
            ) from None
        claims.update(token_claims)
        expires_at = earliest_exp(expires_at, token_claims)
    automatic = gateway.extractors.jwt_subscriptions(claims) if claims else []

    manual: list[Subscription] = []
    if decoded is not None:
        if allow_wrapped and isinstance(decoded, dict) and "subscriptions" in decoded:
            decoded = decoded["subscriptions"]
        try:
            manual = parse_subscription_list(decoded)
        except SubscriptionError as exc:
            raise ConnectError(
                400,
                "could not parse subscriptions: could not parse subscription from JSON: "
                f"{exc} when parsing {raw}",
            ) from None

    subscriptions = tuple(dedupe(automatic + manual))
    problem = subscription_limits(gateway, subscriptions)
    if problem:
        raise ConnectError(400, f"could not parse subscriptions: {problem}")

    if raw is not None and gateway.subscription_check.enabled:
        # RIG's request to the checker: the list rebuilt as a body, and the
        # query parameter's JWT as a bearer credential.
        credentials = [f"Bearer {t}" for t in (args.get("jwt") or "",) if t] + authorization
        allowed = gateway.subscription_check.allows(
            body=json.dumps({"subscriptions": decoded}).encode(),
            content_type="application/json; charset=utf-8",
            authorization=credentials,
        )
        if not allowed:
            raise ConnectError(400, "Subscription denied (not authorized).")

    if count_connection and not gateway.rate_limit.allow():
        raise ConnectError(429, "Reached maximum number of connections")

    return Prepared(subscriptions, session_names(gateway, claims), expires_at)


def earliest_exp(current: float | None, claims: Mapping[str, Any]) -> float | None:
    """The earlier of ``current`` and the claims' ``exp`` (a verified token has one).

    Example::

        >>> earliest_exp(None, {"exp": 20}), earliest_exp(10.0, {"exp": 20})
        (20, 10.0)
    """
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return current
    return exp if current is None else min(current, exp)


def subscription_limits(gateway: Gateway, subscriptions: tuple[Subscription, ...]) -> str | None:
    """The first limit ``subscriptions`` breaks, as a message, or ``None``."""
    settings = gateway.settings
    if len(subscriptions) > settings.max_subscriptions_per_connection:
        return (
            f"too many subscriptions: {len(subscriptions)}, the limit is "
            f"{settings.max_subscriptions_per_connection}"
        )
    for sub in subscriptions:
        if len(sub.one_of) > settings.max_constraints_per_subscription:
            return (
                f"too many constraints for {sub.event_type!r}: {len(sub.one_of)}, the limit "
                f"is {settings.max_constraints_per_subscription}"
            )
    return None


def session_names(gateway: Gateway, claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The session a connection with these claims belongs to (JWT_SESSION_FIELD)."""
    return claims_session_names(claims, gateway.settings.jwt_session_field)
