"""Settings: RIG's environment variables plus rig-actors' own knobs (reference §10).

Precedence, lowest first:

1. the field defaults of :class:`Settings` (the packaged defaults);
2. a YAML file: ``path`` if given, else ``$RIG_CONFIG`` if set, else ``./config.yaml``
   if it exists (the project's ``config.yaml`` documents every key);
3. environment variables: the upper-cased key (``inbound_port`` -> ``INBOUND_PORT``).

Environment values follow RIG's conventions: lists are comma-separated, booleans are
``1/0/true/false/yes/no`` (any case), integers must parse.  A blank environment value
of a number, boolean or enumeration counts as unset (``KAFKA_SSL_ENABLED=`` in a
compose file means "default", not "error").  Unknown environment variables are
ignored; unknown keys in the YAML file are an error (they are almost always typos).
``PORT`` is not read here: the process launcher maps it onto ``INBOUND_PORT``.

Relative file paths (``extractors``, ``proxy_config_file``, TLS files) are resolved
against the current directory; RIG's "priv directory" has no equivalent here.

Example::

    >>> settings = load_settings(env={"INBOUND_PORT": "8080", "KAFKA_BROKERS": "k1:9092"})
    >>> settings.inbound_port, settings.kafka_brokers, settings.kafka_enabled
    (8080, ('k1:9092',), True)
    >>> try:
    ...     load_settings(env={"INBOUND_PORT": "abc"})
    ... except ConfigError as err:
    ...     print(err)
    INBOUND_PORT: expected an integer between 1 and 65535, got 'abc'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_FILE",
    "JWT_ALGORITHMS",
    "UNSUPPORTED_ENV_VARS",
    "ConfigError",
    "Settings",
    "load_settings",
    "startup_warnings",
]

#: Environment variable naming the YAML file to read.
CONFIG_ENV_VAR = "RIG_CONFIG"
#: File read from the current directory when neither ``path`` nor ``RIG_CONFIG`` is given.
DEFAULT_CONFIG_FILE = "config.yaml"

#: Values ``jwt_alg`` accepts (kept equal to ``rig_actors.auth.jwt.ALGORITHMS`` by a test;
#: this module must not import the rest of the package).
JWT_ALGORITHMS: tuple[str, ...] = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
)

#: RIG variables rig-actors deliberately does not implement, with the reason shown in the
#: start-up warning when one of them is set.
UNSUPPORTED_ENV_VARS: dict[str, str] = {
    **dict.fromkeys(
        (
            "NATS_SERVERS",
            "NATS_SOURCE_TOPICS",
            "NATSTOFILTER_QUEUE_GROUP",
            "PROXY_NATS_RESPONSE_TIMEOUT",
        ),
        "NATS is not supported",
    ),
    **dict.fromkeys(
        (
            "KINESIS_ENABLED",
            "KINESIS_STREAM",
            "KINESIS_APP_NAME",
            "KINESIS_AWS_REGION",
            "KINESIS_ENDPOINT",
            "KINESIS_DYNAMODB_ENDPOINT",
            "KINESIS_CLIENT_JAR",
            "KINESIS_OTP_JAR",
            "KINESIS_LOG_LEVEL",
            "PROXY_KINESIS_RESPONSE_TIMEOUT",
            "PROXY_KINESIS_REQUEST_REGION",
        ),
        "Amazon Kinesis is not supported",
    ),
    **dict.fromkeys(
        ("KAFKA_SERIALIZER", "KAFKA_SCHEMA_REGISTRY_HOST", "KAFKA_LOG_SCHEMA"),
        "Avro is not supported",
    ),
    **dict.fromkeys(
        (
            "JAEGER_HOST",
            "JAEGER_PORT",
            "JAEGER_SERVICE_NAME",
            "ZIPKIN_ADDR",
            "ZIPKIN_SERVICE_NAME",
        ),
        "trace export is not supported",
    ),
    **dict.fromkeys(
        ("DISCOVERY_TYPE", "DNS_NAME", "NODE_HOST"),
        "Erlang clustering does not apply; rig-actors nodes coordinate through Kafka",
    ),
    **dict.fromkeys(
        (
            "JWT_BLACKLIST_DEFAULT_EXPIRY_HOURS",
            "KAFKA_GROUP_ID",
            "KAFKATOHTTP_KAFKA_GROUP_ID",
            "PROXY_KAFKA_REQUEST_TOPIC",
            "PROXY_KAFKA_REQUEST_AVRO",
            "PROXY_KINESIS_REQUEST_STREAM",
        ),
        "it was removed from RIG",
    ),
}

# Used when NODE_COOKIE is unset.  Deterministic so that every node of a cluster
# agrees on it, which also means it is public: tokens signed with it can be forged.
_DEFAULT_NODE_COOKIE = hashlib.sha256(b"rig-actors/insecure-default-node-cookie").hexdigest()

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


class ConfigError(Exception):
    """An invalid setting.  ``str(err)`` is one line naming the key and the expectation.

    Example::

        >>> str(ConfigError("INBOUND_PORT", "expected an integer between 1 and 65535, got 'abc'"))
        "INBOUND_PORT: expected an integer between 1 and 65535, got 'abc'"
    """

    def __init__(self, key: str, problem: str) -> None:
        problem = " ".join(problem.split())
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class _Invalid(Exception):
    """Raised by value parsers; the loader adds the key and, unless secret, the value."""

    def __init__(self, expected: str, *, show_value: bool = True) -> None:
        super().__init__(expected)
        self.expected = expected
        self.show_value = show_value


# --------------------------------------------------------------------------- parsers
# Each parser takes a raw value as it comes from the environment (always str) or from
# YAML (str, int, bool, list, mapping or None) and returns the typed value.


def _string(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _Invalid("expected a string")
    return raw


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    if maximum is not None:
        expected = f"expected an integer between {minimum} and {maximum}"
    elif minimum == 1:
        expected = "expected a positive integer"
    else:
        expected = f"expected an integer >= {minimum}"

    def parse(raw: Any) -> int:
        if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            value = int(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        else:
            raise _Invalid(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise _Invalid(expected)
        return value

    return parse


_port = _integer(1, 65535)
_positive = _integer(1)
_non_negative = _integer(0)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Invalid("expected a boolean (true/false, yes/no, 1/0)")


def _choice(aliases: Mapping[str, str]) -> Callable[[Any], str]:
    """Case-insensitive enumeration; ``aliases`` maps accepted spellings to canonical ones."""
    expected = "expected one of " + ", ".join(aliases)

    def parse(raw: Any) -> str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if isinstance(raw, str) and raw.strip().lower() in aliases:
            return aliases[raw.strip().lower()]
        raise _Invalid(expected)

    return parse


def _jwt_alg(raw: Any) -> str:
    if isinstance(raw, str) and raw.strip().upper() in JWT_ALGORITHMS:
        return raw.strip().upper()
    raise _Invalid("expected one of " + ", ".join(JWT_ALGORITHMS))


def _string_list(
    allowed: tuple[str, ...] | None = None,
) -> Callable[[Any], tuple[str, ...]]:
    expected = "expected a comma-separated list" + (
        " of " + ", ".join(allowed) if allowed else " of strings"
    )

    def parse(raw: Any) -> tuple[str, ...]:
        if raw is None:
            return ()
        if isinstance(raw, str):
            items = raw.split(",")
        elif isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            items = list(raw)
        else:
            raise _Invalid(expected)
        values = tuple(item.strip() for item in items if item.strip())
        if allowed is not None:
            values = tuple(value.lower() for value in values)
            if any(value not in allowed for value in values):
                raise _Invalid(expected)
        return values

    return parse


def _authorization_check(raw: Any) -> str:
    """``no_check`` | ``jwt_validation`` | an http(s) URL of an external checker (§6.3)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "no_check"
    if isinstance(raw, str):
        value = raw.strip()
        if value.lower() in ("no_check", "jwt_validation"):
            return value.lower()
        # RIG takes any other value for a URL and fails at request time; checking here
        # turns a typo such as "jwt_validaton" into a start-up error.
        parts = urlsplit(value)
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            return value
    raise _Invalid("expected no_check, jwt_validation or an http(s) URL")


def _url(raw: Any) -> str:
    value = _string(raw).strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise _Invalid("expected an http(s) URL")
    return value


def _json_pointer(raw: Any) -> str:
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    raise _Invalid("expected a JSON pointer such as /jti")


_SASL_MECHANISMS = {
    "plain": "PLAIN",
    "scram-sha-256": "SCRAM-SHA-256",
    "scram-sha-512": "SCRAM-SHA-512",
}


def _kafka_sasl(raw: Any) -> str:
    value = _string(raw).strip()
    if value:
        mechanism, _, rest = value.partition(":")
        user, sep, _password = rest.partition(":")
        if mechanism.lower() not in _SASL_MECHANISMS or not user or not sep:
            raise _Invalid(
                "expected <mechanism>:<user>:<password> with mechanism "
                + ", ".join(_SASL_MECHANISMS),
                show_value=False,
            )
    return value


def _load_document(value: str) -> Any:
    """RIG's ``parse_json_env``: the value names a file if one exists, else it is JSON."""
    text = value.strip()
    path = Path(text).expanduser()
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # inline JSON can be too long or odd for a file name
        is_file = False
    if is_file:
        try:
            content = path.read_text(encoding="utf-8")
            if path.suffix.lower() in (".yaml", ".yml"):
                return yaml.safe_load(content)
            return json.loads(content)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
            raise _Invalid(f"could not read {str(path)!r}: {err}", show_value=False) from None
    try:
        return json.loads(text)
    except ValueError:
        raise _Invalid("expected the path of an existing file or inline JSON") from None


def _extractors(raw: Any) -> dict[str, Any]:
    """Extractor config (§5.3) as a mapping; the event filter validates its contents."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    document = _load_document(raw) if isinstance(raw, str) else raw
    if document is None:
        return {}
    expected = "expected a mapping of event type to field definitions"
    if not isinstance(document, Mapping):
        raise _Invalid(expected, show_value=isinstance(raw, str))
    for event_type, fields in document.items():
        if not isinstance(event_type, str) or not isinstance(fields, Mapping):
            raise _Invalid(expected, show_value=isinstance(raw, str))
    return dict(document)


def _api_list(raw: Any) -> tuple[Any, ...]:
    """A list of API definitions (§7.2); their contents are validated by the proxy."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ()
    document = _load_document(raw) if isinstance(raw, str) else raw
    if not isinstance(document, list | tuple):
        raise _Invalid("expected a list of API definitions", show_value=isinstance(raw, str))
    return tuple(document)


# ------------------------------------------------------------------------- settings


def _metadata(
    parse: Callable[[Any], Any], *, secret: bool = False, blank_is_unset: bool = False
) -> dict[str, Any]:
    """How a field is loaded.

    ``blank_is_unset``: a null or blank value falls back to the lower-precedence one.
    ``secret``: the value is never echoed in errors or :meth:`Settings.redacted`.
    """
    return {"parse": parse, "secret": secret, "blank_is_unset": blank_is_unset}


def _setting(
    default: Any,
    parse: Callable[[Any], Any],
    *,
    secret: bool = False,
    blank_is_unset: bool = False,
) -> Any:
    """Declare a field with an immutable default, its parser and its loading flags."""
    metadata = _metadata(parse, secret=secret, blank_is_unset=blank_is_unset)
    return dataclasses.field(default=default, metadata=metadata)


def _scalar(default: Any, parse: Callable[[Any], Any]) -> Any:
    """A number, boolean or choice: blank means "not set here" rather than invalid."""
    return _setting(default, parse, blank_is_unset=True)


@dataclass(frozen=True)
class Settings:
    """All settings, typed.  Field names are the keys of ``config.yaml``; see that file
    for what each one means.  List settings are tuples so that a Settings is immutable.

    Build one with :func:`load_settings`; in tests, ``dataclasses.replace(Settings(), ...)``
    is handy (it does not validate).

    Example::

        >>> s = Settings()
        >>> s.inbound_port, s.jwt_alg, s.kafka_enabled
        (4000, 'HS256', False)
    """

    # -- servers, TLS, CORS, limits (§10.1)
    inbound_port: int = _scalar(4000, _port)
    inbound_https_port: int = _scalar(4001, _port)
    api_http_port: int = _scalar(4010, _port)
    api_https_port: int = _scalar(4011, _port)
    host: str = _setting("localhost", _string)
    bind_address: str = _setting("0.0.0.0", _string)
    https_certfile: str = _setting("", _string)
    https_keyfile: str = _setting("", _string)
    https_keyfile_pass: str = _setting("", _string, secret=True)
    cors: str = _setting("*", _string)
    max_connections_per_minute: int = _scalar(5000, _positive)

    # -- auth, sessions, subscriptions (§10.2)
    jwt_secret_key: str = _setting("", _string, secret=True)
    jwt_alg: str = _scalar("HS256", _jwt_alg)
    jwt_session_field: str = _setting("/jti", _json_pointer, blank_is_unset=True)
    jwt_issuer: str = _setting("", _string)
    jwt_audience: str = _setting("", _string)
    jwt_jwks_url: str = _setting("", _url)
    subscription_check: str = _setting("no_check", _authorization_check)
    submission_check: str = _setting("no_check", _authorization_check)
    authorization_check_timeout_ms: int = _scalar(5000, _positive)
    extractors: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=_metadata(_extractors)
    )
    node_cookie: str = _setting("", _string, secret=True)

    # -- connections and delivery
    heartbeat_interval_ms: int = _scalar(15000, _positive)
    longpolling_wait_ms: int = _scalar(5000, _positive)
    longpolling_buffer_size: int = _scalar(200, _positive)
    longpolling_session_ttl_ms: int = _scalar(3600000, _positive)
    outbound_buffer_max_bytes: int = _scalar(1048576, _positive)
    slow_consumer_policy: str = _scalar(
        "disconnect",
        _choice({"disconnect": "disconnect", "drop_oldest": "drop_oldest"}),
    )
    coalesce_ms: int = _scalar(25, _non_negative)
    max_event_body_bytes: int = _scalar(1048576, _positive)
    max_subscriptions_per_connection: int = _scalar(100, _positive)
    max_constraints_per_subscription: int = _scalar(100, _positive)
    ws_max_frame_bytes: int = _scalar(65536, _positive)
    ws_event_ids: bool = _scalar(True, _boolean)
    request_timeout_ms: int = _scalar(10000, _positive)
    max_header_bytes: int = _scalar(32768, _positive)

    # -- reverse proxy (§10.3)
    proxy_config_file: str = _setting("", _string)
    apis: tuple[Any, ...] = _setting((), _api_list)
    proxy_recv_timeout: int = _scalar(5000, _positive)
    proxy_http_async_response_timeout: int = _scalar(5000, _positive)
    proxy_kafka_response_timeout: int = _scalar(5000, _positive)
    proxy_kafka_response_topics: tuple[str, ...] = _setting(("rig-proxy-response",), _string_list())
    proxy_kafka_response_kafka_group_id: str = _setting("rig-proxy-response", _string)
    request_log: tuple[str, ...] = _setting((), _string_list(("console", "kafka")))
    kafka_log_topic: str = _setting("rig-request-log", _string)

    # -- Kafka (§10.4)
    kafka_brokers: tuple[str, ...] = _setting((), _string_list())
    kafka_source_topics: tuple[str, ...] = _setting(("rig",), _string_list())
    kafkatofilter_kafka_group_id: str = _setting("rig-kafka-to-filter", _string)
    kafka_ssl_enabled: bool = _scalar(False, _boolean)
    kafka_ssl_ca_certfile: str = _setting("ca.crt.pem", _string)
    kafka_ssl_certfile: str = _setting("client.crt.pem", _string)
    kafka_ssl_keyfile: str = _setting("client.key.pem", _string)
    kafka_ssl_keyfile_pass: str = _setting("", _string, secret=True)
    kafka_sasl: str = _setting("", _kafka_sasl, secret=True)
    kafka_restart_delay_ms: int = _scalar(20000, _positive)
    kafka_session_timeout_ms: int = _scalar(10000, _positive)
    kafka_heartbeat_interval_ms: int = _scalar(3000, _positive)
    kafka_acks: str = _scalar("all", _choice({"all": "all", "-1": "all", "1": "1", "0": "0"}))
    kafka_control_topic: str = _setting("rig-control", _string)
    kafka_blacklist_topic: str = _setting("rig-session-blacklist", _string)

    # -- logging and metrics (§10.6)
    log_level: str = _scalar(
        "info",
        _choice(
            {
                "debug": "debug",
                "info": "info",
                "warn": "warn",
                "warning": "warn",
                "error": "error",
            }
        ),
    )
    log_fmt: str = _scalar(
        "text",
        _choice({"text": "text", "json": "json", "erlang": "text", "gcl": "json"}),
    )
    prometheus_metrics_enabled: bool = _scalar(True, _boolean)

    # -- operations
    fault_injection: bool = _scalar(False, _boolean)
    shutdown_timeout_ms: int = _scalar(5000, _positive)
    reconnect_retry_ms: int = _scalar(1000, _positive)
    reconnect_jitter_ms: int = _scalar(4000, _non_negative)
    replay_buffer_size: int = _scalar(10000, _positive)
    replay_max_age_ms: int = _scalar(300000, _positive)

    @property
    def kafka_enabled(self) -> bool:
        """Kafka features are on iff ``kafka_brokers`` is non-empty (as in RIG)."""
        return bool(self.kafka_brokers)

    @property
    def https_enabled(self) -> bool:
        """HTTPS listeners run iff a certificate and a key are configured."""
        return bool(self.https_certfile and self.https_keyfile)

    @property
    def effective_node_cookie(self) -> str:
        """The secret for connection tokens and correlation ids.

        ``node_cookie`` when set; otherwise a fixed, public default (identical on every
        node, so a cluster still works), which :func:`startup_warnings` reports.
        """
        return self.node_cookie or _DEFAULT_NODE_COOKIE

    @property
    def kafka_sasl_credentials(self) -> tuple[str, str, str] | None:
        """``(mechanism, user, password)`` from ``kafka_sasl``, e.g. ``("PLAIN", "u", "p")``.

        The mechanism is spelled the way Kafka clients expect it; the password may
        contain colons.
        """
        if not self.kafka_sasl:
            return None
        mechanism, _, rest = self.kafka_sasl.partition(":")
        user, _, password = rest.partition(":")
        return _SASL_MECHANISMS[mechanism.lower()], user, password

    @property
    def log_level_number(self) -> int:
        """``log_level`` as a :mod:`logging` level number."""
        return {
            "debug": logging.DEBUG,
            "info": logging.INFO,
            "warn": logging.WARNING,
            "error": logging.ERROR,
        }[self.log_level]

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict with secrets masked, for a start-up log line.

        Example::

            >>> Settings(jwt_secret_key="s3cret").redacted()["jwt_secret_key"]
            '***'
        """
        result: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            result[field.name] = "***" if field.metadata["secret"] and value else value
        return result


# -------------------------------------------------------------------------- loading


def load_settings(
    env: Mapping[str, str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a YAML file and the environment.

    ``env`` defaults to ``os.environ``; ``path`` overrides ``$RIG_CONFIG``.  Raises
    :class:`ConfigError` on the first invalid value.  Nothing is logged here (logging
    is not configured yet); log :func:`startup_warnings` once it is.

    Example::

        >>> load_settings(env={"JWT_ALG": "rs256"}).jwt_alg
        'RS256'
    """
    if env is None:
        env = os.environ
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}

    file_path = _config_path(env, path)
    if file_path is not None:
        document = _read_yaml(file_path)
        for key, raw in document.items():
            if key not in fields:
                raise ConfigError(f"{key} (in {file_path})", "unknown setting")
            _apply(values, labels, fields[key], raw, f"{key} (in {file_path})")

    for name, field in fields.items():
        if name.upper() in env:
            _apply(values, labels, field, env[name.upper()], name.upper())

    def label(name: str) -> str:
        return labels.get(name, name.upper())

    # proxy_config_file is RIG's way of giving the route table; when set it replaces
    # any inline `apis` list rather than merging, so there is one source of truth.
    proxy_config_file = values.get("proxy_config_file", "").strip()
    if proxy_config_file:
        try:
            values["apis"] = _api_list(proxy_config_file)
        except _Invalid as err:
            raise ConfigError(
                label("proxy_config_file"), _describe(err, proxy_config_file, False)
            ) from None

    settings = Settings(**values)
    _check_consistency(settings, label)
    return settings


def _config_path(env: Mapping[str, str], path: str | os.PathLike[str] | None) -> Path | None:
    if path is not None:
        chosen, origin = Path(path), "path"
    elif env.get(CONFIG_ENV_VAR, "").strip():
        chosen, origin = Path(env[CONFIG_ENV_VAR].strip()), CONFIG_ENV_VAR
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    if not chosen.is_file():
        raise ConfigError(origin, f"config file not found: {str(chosen)!r}")
    return chosen


def _read_yaml(file_path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(file_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(str(file_path), f"could not read the config file: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(str(file_path), "expected a mapping of setting names to values")
    return document


def _apply(
    values: dict[str, Any],
    labels: dict[str, str],
    field: dataclasses.Field[Any],
    raw: Any,
    label: str,
) -> None:
    meta = field.metadata
    if meta["blank_is_unset"] and (raw is None or (isinstance(raw, str) and not raw.strip())):
        return
    try:
        values[field.name] = meta["parse"](raw)
    except _Invalid as err:
        raise ConfigError(label, _describe(err, raw, meta["secret"])) from None
    labels[field.name] = label


def _describe(err: _Invalid, raw: Any, secret: bool) -> str:
    if not err.show_value or secret:
        return err.expected
    shown = repr(raw)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{err.expected}, got {shown}"


def _check_consistency(settings: Settings, label: Callable[[str], str]) -> None:
    """Rules that span several settings, or need the file system."""
    s = settings
    if s.https_certfile and not s.https_keyfile:
        raise ConfigError(label("https_keyfile"), "required when HTTPS_CERTFILE is set")
    if s.https_keyfile and not s.https_certfile:
        raise ConfigError(label("https_certfile"), "required when HTTPS_KEYFILE is set")
    if s.https_keyfile_pass and not s.https_enabled:
        raise ConfigError(
            label("https_keyfile_pass"), "set without HTTPS_CERTFILE and HTTPS_KEYFILE"
        )
    for name in ("https_certfile", "https_keyfile"):
        _require_file(getattr(s, name), label(name))

    if s.kafka_enabled and s.kafka_ssl_enabled:
        for name in (
            "kafka_ssl_ca_certfile",
            "kafka_ssl_certfile",
            "kafka_ssl_keyfile",
        ):
            _require_file(getattr(s, name), label(name))
    if s.kafka_heartbeat_interval_ms >= s.kafka_session_timeout_ms:
        raise ConfigError(
            label("kafka_heartbeat_interval_ms"),
            f"expected less than KAFKA_SESSION_TIMEOUT_MS ({s.kafka_session_timeout_ms}), "
            f"got {s.kafka_heartbeat_interval_ms}",
        )
    if "kafka" in s.request_log and not s.kafka_enabled:
        raise ConfigError(label("request_log"), "'kafka' needs KAFKA_BROKERS to be set")

    _check_jwt_key(s.jwt_secret_key, s.jwt_alg, label("jwt_secret_key"))


def _require_file(value: str, label: str) -> None:
    if value and not Path(value).expanduser().is_file():
        raise ConfigError(label, f"file not found: {value!r}")


def _check_jwt_key(secret: str, alg: str, label: str) -> None:
    """Fail at start-up, not on the first request, when the JWT key cannot work."""
    looks_like_pem = "-----BEGIN" in secret
    if alg.startswith("HS"):
        if looks_like_pem:
            raise ConfigError(label, f"looks like a PEM key, but JWT_ALG is {alg}")
        return
    if not secret:
        return  # like RIG: every token is rejected; startup_warnings() says so
    data = secret.strip().replace("\\n", "\n").encode("utf-8")
    expected = f"expected a PEM public key or X.509 certificate for {alg}"
    key: Any
    try:
        if b"CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY" in data:
            key = load_pem_private_key(data, password=None).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(label, expected) from None
    wanted = rsa.RSAPublicKey if alg.startswith("RS") else ec.EllipticCurvePublicKey
    if not isinstance(key, wanted):
        raise ConfigError(label, f"{expected}: the key is of the wrong type")


def startup_warnings(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """Things worth a warning log line at start-up (the caller logs them once logging is set up).

    Example::

        >>> startup_warnings(Settings(node_cookie="x"), env={"NATS_SERVERS": "n:4222"})
        ['NATS_SERVERS is set but ignored: NATS is not supported']
    """
    if env is None:
        env = os.environ
    warnings: list[str] = []
    if not settings.node_cookie:
        warnings.append(
            "NODE_COOKIE is not set: connection tokens and correlation ids are signed "
            "with a public default key and can be forged; set a random secret shared by "
            "all nodes"
        )
    uses_jwt = "jwt_validation" in (
        settings.subscription_check,
        settings.submission_check,
    )
    if uses_jwt and not settings.jwt_secret_key and not settings.jwt_jwks_url:
        warnings.append("JWT_SECRET_KEY is not set: every JWT will be rejected")
    for name, reason in UNSUPPORTED_ENV_VARS.items():
        if env.get(name, "").strip():
            warnings.append(f"{name} is set but ignored: {reason}")
    return warnings
