"""The API gateway's route table: API definitions, validation, matching (RIG §7.2, §7.3, §7.14).

Pure logic, standard library only: no I/O, no actors, no Kafka. The proxy
service wraps a :class:`RouteTable` and replicates its changes; everything
here can be tested without a network.

An *API definition* is RIG's JSON object (``id``, ``name``, ``proxy``,
``version_data.default.endpoints`` ...). :func:`validate_api` answers RIG's
error map, key for key and message for message, so RIG users keep their
files and their client code that reads the 400 bodies. Differences from
RIG, each a fix of a defect listed in the reference's §15:

- methods are upper-cased however a definition arrived (RIG only does it
  for the config file, so ``"method": "get"`` created over the API never
  matched);
- ``auth_type: jwt`` switches ``auth.use_header`` on but keeps a custom
  ``header_name`` (RIG overwrote it with ``Authorization``, which made
  ``x-...`` token headers unusable);
- a HEAD request matches HEAD endpoints (RIG rewrote HEAD to GET first, so
  they were unreachable); without one it falls back to the GET endpoints,
  as RIG users expect;
- inputs that crash RIG get an error map instead (a ``path_regex`` that
  does not compile gets ``"must be a valid regular expression"``; a body
  without ``id`` gets the usual ``id`` errors).

Example::

    >>> table = RouteTable(clock=lambda: "2024-01-01T00:00:00.000000Z")
    >>> table.load([{
    ...     "id": "books", "name": "books",
    ...     "proxy": {"target_url": "http://books", "port": 8080},
    ...     "version_data": {"default": {"endpoints": [{
    ...         "id": "one", "method": "get",
    ...         "path_regex": "/books/([^/]+)", "path_replacement": "/v2/book/\\\\1"}]}},
    ... }], node_name="w1")
    >>> match = table.match("GET", "/BOOKS/42")
    >>> match.endpoint["id"], match.path
    ('one', '/v2/book/42')
    >>> table.match("POST", "/books/42") is None
    True
    >>> validate_api({"id": "x"})["api"][:2]
    [{'name': 'must be string'}, {'name': 'must have a length of at least 1'}]
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MANAGED_FIELDS",
    "SUPPORTED_HTTP_METHODS",
    "ApiConflict",
    "ApiNotFound",
    "ApiValidationError",
    "ErrorMap",
    "RouteMatch",
    "RouteTable",
    "format_timestamp",
    "normalize_api",
    "rewrite_path",
    "validate_api",
]

#: ``{"<key>": [{"<field>": "<message>"}, ...]}``: RIG's validation answer.
ErrorMap = dict[str, list[dict[str, str]]]

#: Fields the gateway maintains itself; values sent by clients are ignored.
MANAGED_FIELDS = ("ref_number", "timestamp", "node_name", "phx_ref", "phx_ref_prev")

#: Methods the HTTP target forwards; an endpoint may name another one (RIG
#: accepts any string) and then answers 405.
SUPPORTED_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

_MUST_BE_PRESENT = "must be present"
_AUTH_TYPE_JWT = 'must be one of ["jwt"]'
# Elixir's Regex.replace/3 syntax: \N or \g{N}; \0 is the whole match.
_GROUP_REFERENCE = re.compile(r"\\(?:g\{(\d+)\}|(\d+))")


class ApiValidationError(ValueError):
    """An API definition RIG would reject; ``errors`` is the 400 body.

    Example::

        >>> try:
        ...     RouteTable().prepare_create({"id": "a"}, node_name="w")
        ... except ApiValidationError as err:
        ...     sorted(err.errors)
        ['api']
    """

    def __init__(self, errors: ErrorMap, position: int | None = None) -> None:
        where = "" if position is None else f"API #{position + 1}: "
        super().__init__(where + json.dumps(errors, separators=(",", ":")))
        self.errors = errors
        self.position = position


class ApiNotFound(LookupError):
    """No active API with this id (RIG's 404)."""

    def __init__(self, api_id: str) -> None:
        super().__init__(f"API with id={api_id} doesn't exists.")
        self.api_id = api_id


class ApiConflict(Exception):
    """An active API with this id exists already (RIG's 409)."""

    def __init__(self, api_id: str) -> None:
        super().__init__(f"API with id={api_id} already exists.")
        self.api_id = api_id


# ------------------------------------------------------------------ validation


def _blank(value: Any) -> bool:
    """Vex's notion of blank, which decides every "must be present" in RIG."""
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def _to_string(value: Any, nil: str) -> str:
    """Elixir's string interpolation of a decoded JSON value (``nil`` differs by place)."""
    if value is None:
        return nil
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _string_errors(obj: dict[str, Any], key: str) -> list[dict[str, str]]:
    value = obj.get(key)
    errors = []
    if not isinstance(value, str):
        errors.append({key: "must be string"})
    # RIG's length check counts a blank value as empty; on other non-strings it
    # crashes, which is not worth copying: "must be string" says it all.
    if _blank(value):
        errors.append({key: "must have a length of at least 1"})
    return errors


def _proxy_errors(proxy: Any) -> list[dict[str, str]]:
    errors = [{"proxy": _MUST_BE_PRESENT}] if _blank(proxy) else []
    if _blank(proxy) and not isinstance(proxy, dict):
        return errors  # null, "" or false: nothing inside to check
    fields = proxy if isinstance(proxy, dict) else {}
    errors += _string_errors(fields, "target_url")
    port = fields.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        errors.append({"port": "must be integer"})
    return errors


def _version_data_errors(version_data: Any) -> list[dict[str, str]]:
    if version_data is None:
        return [{"version_data": _MUST_BE_PRESENT}]
    errors = [{"version_data": _MUST_BE_PRESENT}] if _blank(version_data) else []
    if not isinstance(version_data, dict) or not version_data:
        errors.append({"version_data": "must have at least one version, e.g. default"})
        return errors
    for version in version_data.values():
        endpoints = version.get("endpoints") if isinstance(version, dict) else None
        if not isinstance(endpoints, list):
            errors.append({"endpoints": "must be list"})
    return errors


def _auth_type_errors(api: dict[str, Any]) -> list[dict[str, str]]:
    return [] if api.get("auth_type") == "jwt" else [{"auth_type": _AUTH_TYPE_JWT}]


def _auth_errors(api: dict[str, Any]) -> list[dict[str, str]]:
    auth = api["auth"]
    if not isinstance(auth, dict):
        return []
    errors = []
    if not _blank(auth.get("use_header")) and _blank(auth.get("header_name")):
        errors.append({"header_name": _MUST_BE_PRESENT})
    if not _blank(auth.get("use_query")) and _blank(auth.get("query_name")):
        errors.append({"query_name": _MUST_BE_PRESENT})
    if auth.get("use_header") is True or auth.get("use_query") is True:
        errors += _auth_type_errors(api)
    return errors


def _endpoint_errors(api: dict[str, Any], endpoint: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    if endpoint.get("secured") is True:
        errors += _auth_type_errors(api)
    if endpoint.get("target") in ("kafka", "kinesis") and _blank(endpoint.get("topic")):
        errors.append({"topic": _MUST_BE_PRESENT})
    if not _blank(endpoint.get("schema")) and _blank(endpoint.get("target")):
        errors.append({"target": _MUST_BE_PRESENT})
    errors += _string_errors(endpoint, "id")
    errors += _string_errors(endpoint, "path_regex")
    regex = endpoint.get("path_regex")
    if isinstance(regex, str) and regex and _compile(regex) is None:
        errors.append({"path_regex": "must be a valid regular expression"})
    errors += _string_errors(endpoint, "method")
    return errors


def validate_api(api: Any) -> ErrorMap:
    """RIG's error map for one API definition; empty when it is valid.

    Keys: ``"api"`` for top-level problems, ``"<api id>"`` for ``auth``
    problems, ``"<api id>/<endpoint id>"`` per endpoint. Only the
    ``default`` version's endpoints are checked (the only ones routed).

    Example::

        >>> validate_api({"id": "invalid-config", "name": "n",
        ...               "proxy": {"target_url": "h", "port": 1},
        ...               "version_data": {"default": {"endpoints": [{}]}}})["invalid-config/"][0]
        {'id': 'must be string'}
    """
    if not isinstance(api, dict):
        api = {}  # RIG crashes here; report what is missing instead
    entries: list[tuple[str, list[dict[str, str]]]] = []

    top = _string_errors(api, "id") + _string_errors(api, "name")
    top += _proxy_errors(api.get("proxy")) if "proxy" in api else [{"proxy": _MUST_BE_PRESENT}]
    if "version_data" in api:
        top += _version_data_errors(api["version_data"])
    else:
        top.append({"version_data": _MUST_BE_PRESENT})
    if top:
        entries.append(("api", top))

    if "auth" in api and "id" in api:
        auth = _auth_errors(api)
        if auth:
            entries.append((_to_string(api["id"], nil="nil"), auth))

    endpoint_entries = []
    default = api.get("version_data")
    default = default.get("default") if isinstance(default, dict) else None
    endpoints = default.get("endpoints") if isinstance(default, dict) else None
    if "id" in api and isinstance(endpoints, list):
        api_key = _to_string(api["id"], nil="")
        for endpoint in endpoints:
            endpoint = endpoint if isinstance(endpoint, dict) else {}
            errors = _endpoint_errors(api, endpoint)
            if errors:
                key = f"{api_key}/{_to_string(endpoint.get('id'), nil='')}"
                endpoint_entries.append((key, errors))
    # RIG lists endpoint problems first, drops consecutive duplicates, then
    # builds a map in which a later entry with the same key wins.
    ordered = endpoint_entries + entries
    deduped = [e for i, e in enumerate(ordered) if i == 0 or ordered[i - 1] != e]
    result: ErrorMap = {}
    for key, errors in deduped:
        result[key] = errors
    # Elixir maps of this size iterate (and are encoded) in key order.
    return dict(sorted(result.items()))


# -------------------------------------------------------------- normalisation


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and ``Z``, as RIG writes ``timestamp``.

    Example::

        >>> format_timestamp(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
        '2024-05-01T12:00:00.000000Z'
    """
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _utc_now() -> str:
    return format_timestamp(datetime.now(UTC))


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def normalize_api(api: dict[str, Any]) -> dict[str, Any]:
    """Upper-case every endpoint method and apply the ``auth_type: jwt`` rule.

    Returns a new dict; ``api`` is not modified. With ``auth_type: jwt``
    ``auth.use_header`` is on and an empty ``header_name`` becomes
    ``Authorization`` (a custom one is kept).

    Example::

        >>> api = normalize_api({"auth_type": "jwt", "auth": {"header_name": "x-token"},
        ...                      "version_data": {"default": {"endpoints": [{"method": "get"}]}}})
        >>> api["auth"], api["version_data"]["default"]["endpoints"][0]["method"]
        ({'header_name': 'x-token', 'use_header': True}, 'GET')
    """
    api = copy.deepcopy(api)
    version_data = api.get("version_data")
    if isinstance(version_data, dict):
        for version in version_data.values():
            endpoints = version.get("endpoints") if isinstance(version, dict) else None
            for endpoint in endpoints if isinstance(endpoints, list) else ():
                if isinstance(endpoint, dict) and isinstance(endpoint.get("method"), str):
                    endpoint["method"] = endpoint["method"].upper()
    if api.get("auth_type") == "jwt":
        auth = api.get("auth")
        auth = dict(auth) if isinstance(auth, dict) else {}
        auth["use_header"] = True
        if _blank(auth.get("header_name")):
            auth["header_name"] = "Authorization"
        api["auth"] = auth
    return api


def _with_defaults(
    api: dict[str, Any], *, node_name: str, timestamp: str, ref_number: int, keep_active: bool
) -> dict[str, Any]:
    stored: dict[str, Any] = {
        "active": True,
        "auth_type": "none",
        "auth": {"use_header": False, "header_name": "", "use_query": False, "query_name": ""},
        "proxy": {"use_env": False},
        "versioned": False,
    }
    for key, value in api.items():
        if key in MANAGED_FIELDS or (key == "active" and not keep_active):
            continue
        stored[key] = value
    if not isinstance(stored.get("active"), bool):
        stored["active"] = True
    stored["ref_number"] = ref_number
    stored["timestamp"] = timestamp
    stored["node_name"] = node_name
    return normalize_api(stored)


def _content(api: dict[str, Any]) -> dict[str, Any]:
    """What two copies of one definition must agree on (not who wrote it, or when)."""
    return {k: v for k, v in api.items() if k not in ("node_name", "timestamp", "phx_ref")}


def _ref(api: dict[str, Any]) -> int:
    ref = api.get("ref_number")
    return ref if isinstance(ref, int) and not isinstance(ref, bool) else 0


def _supersedes(incoming: dict[str, Any], current: dict[str, Any]) -> bool:
    """§7.14, simplified: higher ref_number wins, then the newer timestamp.

    Equal ref_number and timestamp but different content (two nodes changed
    one API in the same microsecond) is settled by comparing the encoded
    definitions, so that every copy ends up with the same winner.
    """
    if _ref(incoming) != _ref(current):
        return _ref(incoming) > _ref(current)
    if _content(incoming) == _content(current):
        return False
    new, old = (
        _parse_timestamp(incoming.get("timestamp")),
        _parse_timestamp(current.get("timestamp")),
    )
    if new != old:
        return new > old
    return _canonical(_content(incoming)) > _canonical(_content(current))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# -------------------------------------------------------------------- matching


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str] | None:
    # Anchoring is done with fullmatch() rather than by wrapping the text in
    # ^...$ as RIG does: that way "a|b" means "exactly a or exactly b".
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return None


def rewrite_path(match: re.Match[str], replacement: str) -> str:
    r"""Expand ``\N`` / ``\g{N}`` in ``replacement`` with ``match``'s groups.

    As in RIG (Elixir's ``Regex.replace/3``), a group that does not exist or
    did not take part in the match expands to nothing.

    Example::

        >>> m = re.fullmatch(r"/foo/([^/]+)/bar/([^/]+)", "/foo/1/bar/2")
        >>> rewrite_path(m, r"/bar/\1/foo/\g{2}\3")
        '/bar/1/foo/2'
    """

    def group(ref: re.Match[str]) -> str:
        number = int(ref.group(1) or ref.group(2))
        if number > (match.re.groups or 0):
            return ""
        return match.group(number) or ""

    return _GROUP_REFERENCE.sub(group, replacement)


@dataclass(frozen=True, slots=True)
class _Route:
    api: dict[str, Any]
    endpoint: dict[str, Any]
    regex: re.Pattern[str]
    replacement: str | None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A matched endpoint: its API, the endpoint and the (rewritten) backend path.

    ``target`` and ``response_from`` are lower-cased with RIG's defaults
    (``http`` and ``http``).
    """

    api: dict[str, Any]
    endpoint: dict[str, Any]
    path: str

    @property
    def target(self) -> str:
        target = self.endpoint.get("target")
        return target.lower() if isinstance(target, str) and target else "http"

    @property
    def response_from(self) -> str:
        source = self.endpoint.get("response_from")
        return source.lower() if isinstance(source, str) and source else "http"


# ----------------------------------------------------------------------- table


class RouteTable:
    """API definitions by id, with RIG's management semantics and fast matching.

    Stored definitions carry ``active``, ``ref_number``, ``timestamp`` and
    ``node_name``. Changes are *prepared* (validated and stamped, the table
    unchanged) and then *applied* with :meth:`merge`, so that the caller can
    replicate a change before making it visible. ``clock`` returns the
    current time as a :func:`format_timestamp` string.

    Example::

        >>> table = RouteTable()
        >>> api = table.prepare_create({"id": "a", "name": "a",
        ...     "proxy": {"target_url": "h", "port": 80},
        ...     "version_data": {"default": {"endpoints": []}}}, node_name="w1")
        >>> table.merge(api), table.get_active("a")["ref_number"]
        (True, 0)
        >>> table.merge(table.prepare_deactivate("a", node_name="w1"))
        True
        >>> table.get_active("a") is None, table.get("a")["ref_number"]
        (True, 1)
    """

    def __init__(self, clock: Callable[[], str] = _utc_now) -> None:
        self._clock = clock
        self._apis: dict[str, dict[str, Any]] = {}
        self._routes: dict[str, tuple[_Route, ...]] = {}
        self.version = 0  # bumped on every change; cheap "has it changed?" for callers

    # -- reading ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._apis)

    def get(self, api_id: str) -> dict[str, Any] | None:
        """The stored definition, active or not (a copy)."""
        api = self._apis.get(api_id)
        return copy.deepcopy(api) if api is not None else None

    def get_active(self, api_id: str) -> dict[str, Any] | None:
        """The stored definition if it is active (a copy), else None."""
        api = self._apis.get(api_id)
        return copy.deepcopy(api) if api is not None and api.get("active") is True else None

    def list_active(self) -> list[dict[str, Any]]:
        """Copies of the active definitions, in the order they were first stored."""
        return [copy.deepcopy(a) for a in self._apis.values() if a.get("active") is True]

    def snapshot(self) -> list[dict[str, Any]]:
        """Copies of every stored definition, deactivated ones included."""
        return [copy.deepcopy(a) for a in self._apis.values()]

    # -- matching ---------------------------------------------------------------

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first endpoint for ``method`` whose ``path_regex`` matches all of ``path``.

        A HEAD request falls back to GET endpoints when no HEAD endpoint
        matches. ``path`` is the request path without the query string.
        """
        found = self._first(method, path)
        if found is None and method == "HEAD":
            found = self._first("GET", path)
        return found

    def _first(self, method: str, path: str) -> RouteMatch | None:
        for route in self._routes.get(method, ()):
            matched = route.regex.fullmatch(path)
            if matched is not None:
                rewritten = path
                if route.replacement:
                    rewritten = rewrite_path(matched, route.replacement)
                return RouteMatch(route.api, route.endpoint, rewritten)
        return None

    # -- changes ----------------------------------------------------------------

    def load(self, definitions: Iterable[Any], *, node_name: str) -> None:
        """Store the definitions of a config file (RIG §7.1).

        Raises :class:`ApiValidationError` (with ``position``) for the first
        invalid one and stores nothing then. A later definition with the
        same id replaces an earlier one.
        """
        stamped = []
        for position, api in enumerate(definitions):
            errors = validate_api(api)
            if errors:
                raise ApiValidationError(errors, position)
            stamped.append(
                _with_defaults(
                    api,
                    node_name=node_name,
                    timestamp=self._clock(),
                    ref_number=0,
                    keep_active=True,
                )
            )
        for api in stamped:
            self._apis[api["id"]] = api
        self._rebuild()

    def prepare_create(self, body: Any, *, node_name: str) -> dict[str, Any]:
        """The definition ``POST /apis`` stores (RIG §3.2); the table is unchanged.

        Raises :class:`ApiValidationError` (400) or :class:`ApiConflict`
        (409). Re-creating a deactivated API continues its ``ref_number``.
        """
        errors = validate_api(body)
        if errors:
            raise ApiValidationError(errors)
        current = self._apis.get(body["id"])
        if current is not None and current.get("active") is True:
            raise ApiConflict(body["id"])
        ref = _ref(current) + 1 if current is not None else 0
        return _with_defaults(
            body, node_name=node_name, timestamp=self._clock(), ref_number=ref, keep_active=False
        )

    def prepare_update(self, api_id: str, body: Any, *, node_name: str) -> dict[str, Any]:
        """The definition ``PUT /apis/<id>`` stores: the stored one shallow-merged with ``body``.

        The path's id overrides one in the body. Validation comes first
        (400 even for an unknown id), then :class:`ApiNotFound` (404).
        Defaults are not re-applied; methods are upper-cased.
        """
        params = {**(body if isinstance(body, dict) else {}), "id": api_id}
        errors = validate_api(params)
        if errors:
            raise ApiValidationError(errors)
        current = self._apis.get(api_id)
        if current is None or current.get("active") is not True:
            raise ApiNotFound(api_id)
        merged = dict(current)
        for key, value in params.items():
            if key not in MANAGED_FIELDS and key != "active":
                merged[key] = value
        merged["ref_number"] = _ref(current) + 1
        merged["timestamp"] = self._clock()
        merged["node_name"] = node_name
        return normalize_api(merged)

    def prepare_deactivate(self, api_id: str, *, node_name: str) -> dict[str, Any]:
        """The definition ``DELETE /apis/<id>`` stores: inactive, next ``ref_number``."""
        current = self._apis.get(api_id)
        if current is None or current.get("active") is not True:
            raise ApiNotFound(api_id)
        return {
            **copy.deepcopy(current),
            "active": False,
            "ref_number": _ref(current) + 1,
            "timestamp": self._clock(),
            "node_name": node_name,
        }

    def merge(self, api: dict[str, Any]) -> bool:
        """Adopt ``api`` unless the stored copy supersedes it; True if adopted.

        Used for local changes (prepared above) and for copies that other
        workers replicate, which may arrive late, twice or out of order.
        """
        api_id = api.get("id") if isinstance(api, dict) else None
        if not isinstance(api_id, str) or not api_id:
            return False
        current = self._apis.get(api_id)
        if current is not None and not _supersedes(api, current):
            if _ref(api) == _ref(current) and _content(api) == _content(current):
                # The same definition written again: remember the later stamp
                # (routing is unchanged), so that every copy ends up with the
                # same (ref_number, timestamp, content) whatever the order.
                if _parse_timestamp(api.get("timestamp")) > _parse_timestamp(
                    current.get("timestamp")
                ):
                    current["timestamp"] = api.get("timestamp")
                    current["node_name"] = api.get("node_name")
            return False
        self._apis[api_id] = copy.deepcopy(api)
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        routes: dict[str, list[_Route]] = {}
        for api in self._apis.values():
            if api.get("active") is not True or api.get("versioned") not in (None, False):
                continue
            default = (api.get("version_data") or {}).get("default")
            endpoints = default.get("endpoints") if isinstance(default, dict) else None
            for endpoint in endpoints if isinstance(endpoints, list) else ():
                if not isinstance(endpoint, dict):
                    continue
                method, pattern = endpoint.get("method"), endpoint.get("path_regex")
                if not isinstance(method, str) or not isinstance(pattern, str) or not pattern:
                    continue
                regex = _compile(pattern)
                if regex is None:
                    continue  # only from a peer running other code; validation rejects it
                replacement = endpoint.get("path_replacement")
                replacement = replacement if isinstance(replacement, str) else None
                routes.setdefault(method, []).append(_Route(api, endpoint, regex, replacement))
        # Swapped in one assignment: a request never sees half a table.
        self._routes = {method: tuple(found) for method, found in routes.items()}
        self.version += 1
