"""Unit tests of the pure parts of the security layer.

The session index and token-expiry heap of the connection supervisor, the
blacklist table, the blacklist endpoint's validation and value rendering,
the check modes without a network, and the earliest-``exp`` rule.
"""

from __future__ import annotations

import pytest

from rig_actors.actors.sessions import SessionIndex
from rig_actors.auth.blacklist import SessionBlacklist
from rig_actors.auth.checks import AuthorizationCheck
from rig_actors.auth.jwt import JwtError
from rig_actors.transports.connect import earliest_exp
from rig_actors.web.blacklist import _validate, inspect

# --------------------------------------------------------------------------- #
# SessionIndex
# --------------------------------------------------------------------------- #


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_take_returns_the_members_once_and_leaves_other_sessions():
    index = SessionIndex()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    index.join(a, ("s1", "s2"))
    index.join(b, ("s1",))
    index.join(c, ("s2",))
    assert set(index.take("s1")) == {a, b}
    assert index.take("s1") == []
    assert set(index.members("s2")) == {a, c}


def test_leave_forgets_every_session_and_deadline():
    index = SessionIndex()
    a = Conn("a")
    index.join(a, ("s",))
    index.expire_at(a, 10.0)
    index.leave(a)
    assert index.members("s") == []
    assert index.next_due() is None
    assert index.pop_due(100.0) == []
    assert index.stats() == {"sessions": 0, "deadlines": 0}


def test_deadlines_pop_in_order_and_a_replaced_deadline_counts_once():
    index = SessionIndex()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    index.expire_at(a, 30.0)
    index.expire_at(b, 10.0)
    index.expire_at(c, 20.0)
    index.expire_at(a, 5.0)  # a PUT with a shorter token
    index.expire_at(b, 50.0)  # a PUT with a longer one
    assert index.next_due() == 5.0
    assert index.pop_due(25.0) == [a, c]
    assert index.next_due() == 50.0
    assert index.pop_due(49.0) == []
    assert index.pop_due(50.0) == [b]
    assert index.next_due() is None


def test_stale_heap_entries_are_compacted():
    index = SessionIndex()
    conns = [Conn(str(i)) for i in range(500)]
    for i, conn in enumerate(conns):
        index.expire_at(conn, float(i))
    for conn in conns[:-1]:
        index.leave(conn)
    assert len(index._heap) < 100  # rebuilt as the stale entries piled up
    assert index.pop_due(1e9) == [conns[-1]]


# --------------------------------------------------------------------------- #
# SessionBlacklist
# --------------------------------------------------------------------------- #


def test_entries_live_until_their_expiry_and_re_adding_extends():
    now = [100.0]
    blacklist = SessionBlacklist(clock=lambda: now[0])
    assert blacklist.add("s", 110.0) == 110.0
    assert blacklist.add("s", 105.0) == 110.0  # never shortened
    assert "s" in blacklist
    now[0] = 110.0
    assert "s" not in blacklist  # active while expiry > now
    assert blacklist.expiry("s") is None


def test_the_table_is_purged_as_it_grows():
    now = [0.0]
    blacklist = SessionBlacklist(clock=lambda: now[0])
    for i in range(1000):
        blacklist.add(f"old-{i}", 1.0)
    now[0] = 2.0
    for i in range(100):
        blacklist.add(f"new-{i}", 10.0)
    assert len(blacklist) <= 1024


# --------------------------------------------------------------------------- #
# The endpoint's validation (RIG's texts)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sessionId": "a", "validityInSeconds": 1}, (None, "a", 1.0)),
        ({"sessionId": "a", "validityInSeconds": "007"}, (None, "a", 7.0)),
        ({"sessionId": "a", "validityInSeconds": 0.5}, (None, "a", 0.5)),
        ({"sessionId": "a", "validityInSeconds": float("inf")}, "positive number, got inf"),
        ({"sessionId": "a", "validityInSeconds": "1e3"}, 'Expected a number, got "1e3"'),
        ({"sessionId": "a", "validityInSeconds": " 5"}, 'Expected a number, got " 5"'),
        ({"sessionId": ["a"], "validityInSeconds": 1}, 'non-empty string, got ["a"]'),
        ({"sessionId": {"a": None}}, 'non-empty string, got %{"a" => nil}'),
    ],
)
def test_validate(params, expected):
    problem, session, validity = _validate(params)
    if isinstance(expected, tuple):
        assert (problem, session, validity) == expected
    else:
        assert problem is not None and problem.endswith(expected), problem


def test_inspect_cuts_long_values():
    text = inspect("x" * 10_000)
    assert len(text) <= 260 and text.endswith("...")
    nested: list = []
    for _ in range(100):
        nested = [nested]
    assert inspect(nested).count("[") <= 30


# --------------------------------------------------------------------------- #
# Check modes without a network, earliest exp
# --------------------------------------------------------------------------- #


def verify(token: str) -> dict:
    if token != "good":
        raise JwtError("Invalid signature")
    return {"exp": 1}


def test_no_check_allows_and_jwt_validation_needs_one_valid_bearer_token():
    assert AuthorizationCheck("s", "no_check", None).allows(
        body=b"", content_type="", authorization=[]
    )
    check = AuthorizationCheck("s", "jwt_validation", verify)
    assert check.enabled
    for authorization, allowed in [
        ([], False),
        (["Bearer bad"], False),
        (["Bearer bad, Bearer good"], True),
        (["good"], True),  # a bare credential counts as a bearer token
        (["Basic good"], False),
    ]:
        assert check.allows(body=b"", content_type="", authorization=authorization) is allowed
    assert check.denied == 3


def test_a_url_check_needs_an_http_client():
    with pytest.raises(ValueError):
        AuthorizationCheck("s", "http://checker/", verify)


def test_earliest_exp_ignores_non_numbers():
    assert earliest_exp(None, {}) is None
    assert earliest_exp(5.0, {"exp": True}) == 5.0
    assert earliest_exp(5.0, {"exp": "3"}) == 5.0
    assert earliest_exp(5.0, {"exp": 3}) == 3


# --------------------------------------------------------------------------- #
# JwtVerifier with a key set
# --------------------------------------------------------------------------- #


class FakeKeys:
    """Stands in for JwksKeys: a dict of kid -> key, counting lookups."""

    def __init__(self, keys: dict) -> None:
        self.keys = keys
        self.lookups = 0

    def key_for(self, kid):
        self.lookups += 1
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)


SECRET_A = "secret-a-for-unit-tests-0123456789abcdef"
SECRET_B = "secret-b-for-unit-tests-0123456789abcdef"


def hs(claims: dict, secret: str, **headers) -> str:
    import time

    import jwt as pyjwt

    return pyjwt.encode({"exp": time.time() + 60, **claims}, secret, "HS256", headers=headers)


def test_the_kid_picks_the_key_from_the_set():
    from rig_actors.auth.jwt import JwtVerifier

    keys = FakeKeys({"a": SECRET_A.encode(), "b": SECRET_B.encode()})
    verifier = JwtVerifier("", "HS256", jwks=keys)
    assert verifier.verify(hs({"n": 1}, SECRET_B, kid="b"))["n"] == 1
    with pytest.raises(JwtError, match="Invalid signature"):
        verifier.verify(hs({}, SECRET_A, kid="b"))
    with pytest.raises(JwtError, match="unknown key id"):
        verifier.verify(hs({}, SECRET_A, kid="c"))
    with pytest.raises(JwtError, match="Invalid signature"):
        verifier.verify(hs({}, SECRET_A))  # no kid, two keys: ambiguous


def test_a_foreign_algorithm_is_refused_before_any_key_lookup():
    import jwt as pyjwt

    from rig_actors.auth.jwt import JwtVerifier

    keys = FakeKeys({"a": SECRET_A.encode()})
    verifier = JwtVerifier("", "HS256", jwks=keys)
    token = pyjwt.encode({"exp": 2**40}, SECRET_A * 2, "HS512", headers={"kid": "a"})
    with pytest.raises(JwtError, match="Algorithm not allowed"):
        verifier.verify(token)
    assert keys.lookups == 0


def test_without_kid_the_configured_secret_comes_first():
    from rig_actors.auth.jwt import JwtVerifier

    keys = FakeKeys({"a": SECRET_A.encode()})
    verifier = JwtVerifier(SECRET_B, "HS256", jwks=keys)
    assert verifier.verify(hs({"n": 2}, SECRET_B))["n"] == 2
    assert keys.lookups == 0
    assert verifier.verify(hs({"n": 3}, SECRET_A, kid="a"))["n"] == 3
