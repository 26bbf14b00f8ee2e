"""Tests for rig_actors.config: defaults, config.yaml, env parsing and validation."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rig_actors.auth.jwt import ALGORITHMS
from rig_actors.config import (
    JWT_ALGORITHMS,
    ConfigError,
    Settings,
    load_settings,
    startup_warnings,
)

CONFIG_YAML = Path(__file__).resolve().parents[2] / "config.yaml"
FIELDS = {field.name: field for field in dataclasses.fields(Settings)}

EXTRACTORS = {
    "greeting": {
        "name": {
            "stable_field_index": 0,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        }
    }
}
API = {"id": "a", "name": "a", "version_data": {"default": {"endpoints": []}}}


def load_file(
    tmp_path: Path, values: dict[str, Any], env: dict[str, str] | None = None
) -> Settings:
    """Load from a YAML file holding ``values`` plus ``env``."""
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return load_settings(env=env or {}, path=path)


@pytest.fixture(autouse=True)
def _no_cwd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings reads ./config.yaml when present; run from an empty directory so
    # that only what a test passes counts.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ config.yaml drift


def _yaml_comment_blocks() -> dict[str, list[str]]:
    """Map each top-level key of config.yaml to the comment lines right above it."""
    blocks: dict[str, list[str]] = {}
    comment: list[str] = []
    for line in CONFIG_YAML.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comment.append(line)
            continue
        match = re.match(r"([a-z_][a-z0-9_]*):", line)
        if match:
            blocks[match.group(1)] = comment
        comment = []
    return blocks


def _as_yaml_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_every_setting_is_documented_in_config_yaml_with_the_same_default() -> None:
    document = yaml.safe_load(CONFIG_YAML.read_text(encoding="utf-8"))
    blocks = _yaml_comment_blocks()
    defaults = Settings()
    for name in FIELDS:
        assert name in document, f"{name} missing from config.yaml"
        assert document[name] == _as_yaml_value(getattr(defaults, name)), name
        comment = "\n".join(blocks[name])
        assert f"Env: {name.upper()}." in comment, name
        assert "Type:" in comment and "Default:" in comment, name


def test_every_config_yaml_key_is_a_setting() -> None:
    document = yaml.safe_load(CONFIG_YAML.read_text(encoding="utf-8"))
    assert set(document) == set(FIELDS)
    assert set(_yaml_comment_blocks()) == set(FIELDS)


def test_loading_config_yaml_gives_the_dataclass_defaults() -> None:
    assert load_settings(env={}, path=CONFIG_YAML) == Settings()


def test_jwt_algorithms_match_the_verifier() -> None:
    assert JWT_ALGORITHMS == ALGORITHMS


# ----------------------------------------------------------------- sources/precedence


def test_without_any_file_the_dataclass_defaults_apply() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.inbound_port == 4000
    assert settings.api_http_port == 4010
    assert settings.kafka_source_topics == ("rig",)
    assert settings.extractors == {}
    assert settings.apis == ()
    assert not settings.kafka_enabled


def test_config_yaml_in_the_current_directory_is_read() -> None:
    Path("config.yaml").write_text("inbound_port: 4100\n", encoding="utf-8")
    assert load_settings(env={}).inbound_port == 4100


def test_rig_config_env_var_names_the_file(tmp_path: Path) -> None:
    Path("config.yaml").write_text("inbound_port: 4100\n", encoding="utf-8")
    other = tmp_path / "other.yaml"
    other.write_text("inbound_port: 4200\n", encoding="utf-8")
    assert load_settings(env={"RIG_CONFIG": str(other)}).inbound_port == 4200


def test_path_argument_beats_rig_config(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text("inbound_port: 4300\n", encoding="utf-8")
    env = {"RIG_CONFIG": str(tmp_path / "missing.yaml")}
    assert load_settings(env=env, path=chosen).inbound_port == 4300


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    message = error_of({"RIG_CONFIG": str(tmp_path / "nope.yaml")})
    assert message.startswith("RIG_CONFIG: config file not found")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(env={}, path=tmp_path / "nope.yaml")


def test_env_overrides_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    settings = load_file(
        tmp_path,
        {"inbound_port": 4100, "api_http_port": 4110},
        env={"INBOUND_PORT": "4200"},
    )
    assert settings.inbound_port == 4200
    assert settings.api_http_port == 4110
    assert settings.host == "localhost"


def test_unknown_env_vars_and_port_are_ignored() -> None:
    settings = load_settings(env={"PORT": "9999", "SOMETHING_ELSE": "x", "inbound_port": "1"})
    assert settings.inbound_port == 4000


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^inbond_port \(in .*\): unknown setting$"):
        load_file(tmp_path, {"inbond_port": 1})


def test_empty_file_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert load_settings(env={}, path=path) == Settings()


@pytest.mark.parametrize("content", ["- a\n- b\n", "a: [unclosed\n  b: 1\n"])
def test_malformed_file_is_a_one_line_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, path=path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_file_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path, {"inbound_port": "abc"})
    assert str(info.value).startswith("inbound_port (in ")
    assert "expected an integer between 1 and 65535, got 'abc'" in str(info.value)


# -------------------------------------------------------------------------- integers


def test_integer_error_message_matches_the_spec() -> None:
    assert (
        error_of({"INBOUND_PORT": "abc"})
        == "INBOUND_PORT: expected an integer between 1 and 65535, got 'abc'"
    )


@pytest.mark.parametrize("value", ["0", "65536", "-1", "4000.5", "1e3", "true"])
def test_ports_must_be_in_range(value: str) -> None:
    assert error_of({"API_HTTP_PORT": value}).startswith("API_HTTP_PORT: expected an integer")


def test_integers_parse_with_whitespace_and_sign() -> None:
    assert load_settings(env={"INBOUND_PORT": " 8080 "}).inbound_port == 8080
    assert load_settings(env={"COALESCE_MS": "+5"}).coalesce_ms == 5


@pytest.mark.parametrize(
    "name",
    [
        "PROXY_RECV_TIMEOUT",
        "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT",
        "PROXY_KAFKA_RESPONSE_TIMEOUT",
        "HEARTBEAT_INTERVAL_MS",
        "LONGPOLLING_WAIT_MS",
        "LONGPOLLING_SESSION_TTL_MS",
        "REQUEST_TIMEOUT_MS",
        "MAX_CONNECTIONS_PER_MINUTE",
        "OUTBOUND_BUFFER_MAX_BYTES",
    ],
)
def test_timeouts_and_sizes_must_be_positive(name: str) -> None:
    assert error_of({name: "0"}) == f"{name}: expected a positive integer, got '0'"


def test_coalesce_may_be_zero_but_not_negative() -> None:
    assert load_settings(env={"COALESCE_MS": "0"}).coalesce_ms == 0
    assert error_of({"COALESCE_MS": "-1"}).startswith("COALESCE_MS: expected an integer >= 0")


def test_blank_env_number_means_unset(tmp_path: Path) -> None:
    assert (
        load_file(tmp_path, {"inbound_port": 4100}, env={"INBOUND_PORT": ""}).inbound_port == 4100
    )
    assert load_settings(env={"KAFKA_SSL_ENABLED": " "}).kafka_ssl_enabled is False


def test_yaml_booleans_are_not_integers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        load_file(tmp_path, {"inbound_port": True})


# -------------------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("0", False),
        ("false", False),
        ("No", False),
    ],
)
def test_booleans(value: str, expected: bool) -> None:
    assert (
        load_settings(env={"PROMETHEUS_METRICS_ENABLED": value}).prometheus_metrics_enabled
        is expected
    )


def test_invalid_boolean() -> None:
    assert error_of({"KAFKA_SSL_ENABLED": "maybe"}) == (
        "KAFKA_SSL_ENABLED: expected a boolean (true/false, yes/no, 1/0), got 'maybe'"
    )


# ----------------------------------------------------------------------------- lists


def test_lists_are_comma_separated_and_trimmed() -> None:
    settings = load_settings(
        env={"KAFKA_BROKERS": "k1:9092, k2:9092,,", "KAFKA_SOURCE_TOPICS": "a,b"}
    )
    assert settings.kafka_brokers == ("k1:9092", "k2:9092")
    assert settings.kafka_source_topics == ("a", "b")
    assert settings.kafka_enabled


def test_empty_list_env_clears_the_default() -> None:
    assert load_settings(env={"KAFKA_SOURCE_TOPICS": ""}).kafka_source_topics == ()


def test_lists_in_yaml_may_be_lists_or_strings(tmp_path: Path) -> None:
    settings = load_file(
        tmp_path,
        {"kafka_brokers": ["k1:9092", "k2:9092"], "proxy_kafka_response_topics": "r1,r2"},
    )
    assert settings.kafka_brokers == ("k1:9092", "k2:9092")
    assert settings.proxy_kafka_response_topics == ("r1", "r2")


def test_request_log_values_are_checked() -> None:
    env = {"REQUEST_LOG": "Console,kafka", "KAFKA_BROKERS": "k:9092"}
    assert load_settings(env=env).request_log == ("console", "kafka")
    assert error_of({"REQUEST_LOG": "console,file"}).startswith(
        "REQUEST_LOG: expected a comma-separated list of console, kafka"
    )


def test_request_log_kafka_needs_brokers() -> None:
    assert (
        error_of({"REQUEST_LOG": "kafka"}) == "REQUEST_LOG: 'kafka' needs KAFKA_BROKERS to be set"
    )


# ---------------------------------------------------------------------- enumerations


@pytest.mark.parametrize(
    "alg", ["HS256", "hs384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"]
)
def test_jwt_alg_accepted(alg: str) -> None:
    assert load_settings(env={"JWT_ALG": alg}).jwt_alg == alg.upper()


@pytest.mark.parametrize("alg", ["none", "PS256", "ES512", "HS1"])
def test_jwt_alg_rejected(alg: str) -> None:
    assert error_of({"JWT_ALG": alg}).startswith("JWT_ALG: expected one of HS256, HS384")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("debug", "debug"),
        ("INFO", "info"),
        ("warn", "warn"),
        ("warning", "warn"),
        ("error", "error"),
    ],
)
def test_log_level(value: str, expected: str) -> None:
    assert load_settings(env={"LOG_LEVEL": value}).log_level == expected


def test_log_level_invalid_and_number() -> None:
    assert error_of({"LOG_LEVEL": "trace"}).startswith("LOG_LEVEL: expected one of debug, info")
    assert load_settings(env={"LOG_LEVEL": "warning"}).log_level_number == 30


@pytest.mark.parametrize(
    ("value", "expected"), [("text", "text"), ("JSON", "json"), ("erlang", "text"), ("gcl", "json")]
)
def test_log_fmt(value: str, expected: str) -> None:
    assert load_settings(env={"LOG_FMT": value}).log_fmt == expected


def test_log_fmt_invalid() -> None:
    assert error_of({"LOG_FMT": "xml"}).startswith("LOG_FMT: expected one of text, json")


def test_slow_consumer_policy() -> None:
    assert (
        load_settings(env={"SLOW_CONSUMER_POLICY": "Drop_Oldest"}).slow_consumer_policy
        == "drop_oldest"
    )
    assert error_of({"SLOW_CONSUMER_POLICY": "block"}) == (
        "SLOW_CONSUMER_POLICY: expected one of disconnect, drop_oldest, got 'block'"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NO_CHECK", "no_check"),
        ("", "no_check"),
        ("JWT_Validation", "jwt_validation"),
        ("http://checker:8080/check", "http://checker:8080/check"),
        ("HTTPS://checker/Check", "HTTPS://checker/Check"),
    ],
)
def test_authorization_checks(value: str, expected: str) -> None:
    settings = load_settings(env={"SUBSCRIPTION_CHECK": value, "SUBMISSION_CHECK": value})
    assert settings.subscription_check == expected
    assert settings.submission_check == expected


@pytest.mark.parametrize("value", ["jwt_validaton", "ftp://x/y", "http://", "checker:8080"])
def test_authorization_check_typos_are_errors(value: str) -> None:
    assert error_of({"SUBSCRIPTION_CHECK": value}).startswith(
        "SUBSCRIPTION_CHECK: expected no_check, jwt_validation or an http(s) URL"
    )


def test_kafka_acks(tmp_path: Path) -> None:
    assert load_settings(env={"KAFKA_ACKS": "-1"}).kafka_acks == "all"
    assert load_settings(env={"KAFKA_ACKS": "1"}).kafka_acks == "1"
    assert load_file(tmp_path, {"kafka_acks": 0}).kafka_acks == "0"
    assert error_of({"KAFKA_ACKS": "2"}).startswith("KAFKA_ACKS: expected one of all")


def test_jwt_session_field_must_be_a_pointer() -> None:
    assert load_settings(env={"JWT_SESSION_FIELD": "/user/id"}).jwt_session_field == "/user/id"
    assert error_of({"JWT_SESSION_FIELD": "jti"}).startswith(
        "JWT_SESSION_FIELD: expected a JSON pointer"
    )


def test_jwks_url_must_be_a_url() -> None:
    assert (
        load_settings(env={"JWT_JWKS_URL": "https://idp/jwks"}).jwt_jwks_url == "https://idp/jwks"
    )
    assert error_of({"JWT_JWKS_URL": "idp/jwks"}).startswith(
        "JWT_JWKS_URL: expected an http(s) URL"
    )


# ------------------------------------------------------------------------ extractors


def test_extractors_inline_json() -> None:
    settings = load_settings(env={"EXTRACTORS": json.dumps(EXTRACTORS)})
    assert settings.extractors == EXTRACTORS


def test_extractors_json_file(tmp_path: Path) -> None:
    path = tmp_path / "extractors.json"
    path.write_text(json.dumps(EXTRACTORS), encoding="utf-8")
    assert load_settings(env={"EXTRACTORS": str(path)}).extractors == EXTRACTORS


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_extractors_yaml_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"extractors{suffix}"
    path.write_text(yaml.safe_dump(EXTRACTORS), encoding="utf-8")
    assert load_settings(env={"EXTRACTORS": str(path)}).extractors == EXTRACTORS


def test_extractors_relative_path_is_relative_to_cwd() -> None:
    Path("ex.json").write_text(json.dumps(EXTRACTORS), encoding="utf-8")
    assert load_settings(env={"EXTRACTORS": "ex.json"}).extractors == EXTRACTORS


def test_extractors_inline_mapping_in_yaml(tmp_path: Path) -> None:
    assert load_file(tmp_path, {"extractors": EXTRACTORS}).extractors == EXTRACTORS


def test_extractors_json_string_in_yaml(tmp_path: Path) -> None:
    assert load_file(tmp_path, {"extractors": json.dumps(EXTRACTORS)}).extractors == EXTRACTORS


@pytest.mark.parametrize("value", [None, "", {}])
def test_extractors_empty(tmp_path: Path, value: Any) -> None:
    assert load_file(tmp_path, {"extractors": value}).extractors == {}


def test_extractors_unset_env_is_empty() -> None:
    assert load_settings(env={"EXTRACTORS": ""}).extractors == {}


def test_extractors_missing_file_that_is_not_json() -> None:
    assert error_of({"EXTRACTORS": "/no/such/extractors.json"}) == (
        "EXTRACTORS: expected the path of an existing file or inline JSON, "
        "got '/no/such/extractors.json'"
    )


@pytest.mark.parametrize("value", ["[1, 2]", '{"greeting": 5}', '"text"'])
def test_extractors_must_be_a_mapping_of_mappings(value: str) -> None:
    assert error_of({"EXTRACTORS": value}).startswith(
        "EXTRACTORS: expected a mapping of event type to field definitions"
    )


def test_extractors_file_with_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{nope", encoding="utf-8")
    message = error_of({"EXTRACTORS": str(path)})
    assert message.startswith(f"EXTRACTORS: could not read '{path}'")


# ------------------------------------------------------------------------------ apis


def test_apis_inline_in_yaml(tmp_path: Path) -> None:
    assert load_file(tmp_path, {"apis": [API]}).apis == (API,)


def test_apis_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a list of API definitions"):
        load_file(tmp_path, {"apis": {"id": "a"}})


def test_proxy_config_file_path(tmp_path: Path) -> None:
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps([API]), encoding="utf-8")
    settings = load_settings(env={"PROXY_CONFIG_FILE": str(path)})
    assert settings.apis == (API,)
    assert settings.proxy_config_file == str(path)


def test_proxy_config_file_inline_json_replaces_apis(tmp_path: Path) -> None:
    other = dict(API, id="b")
    settings = load_file(tmp_path, {"apis": [API]}, env={"PROXY_CONFIG_FILE": json.dumps([other])})
    assert settings.apis == (other,)


@pytest.mark.parametrize("value", ['{"id": "a"}', "/no/such/proxy.json"])
def test_proxy_config_file_errors(value: str) -> None:
    assert error_of({"PROXY_CONFIG_FILE": value}).startswith("PROXY_CONFIG_FILE: expected")


def test_apis_env_var_takes_json() -> None:
    assert load_settings(env={"APIS": json.dumps([API])}).apis == (API,)
    assert load_settings(env={"APIS": ""}).apis == ()


# ------------------------------------------------------------------------------ Kafka


def test_kafka_enabled_property() -> None:
    assert not Settings().kafka_enabled
    assert load_settings(env={"KAFKA_BROKERS": "localhost:9092"}).kafka_enabled


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain:user:pass", ("PLAIN", "user", "pass")),
        ("PLAIN:user:pa:ss", ("PLAIN", "user", "pa:ss")),
        ("scram-sha-256:u:p", ("SCRAM-SHA-256", "u", "p")),
        ("scram-sha-512:u:", ("SCRAM-SHA-512", "u", "")),
    ],
)
def test_kafka_sasl(value: str, expected: tuple[str, str, str]) -> None:
    assert load_settings(env={"KAFKA_SASL": value}).kafka_sasl_credentials == expected


def test_kafka_sasl_unset() -> None:
    assert Settings().kafka_sasl_credentials is None


@pytest.mark.parametrize("value", ["gssapi:u:p", "plain:u", "plain::p", "plain"])
def test_kafka_sasl_invalid_hides_the_value(value: str) -> None:
    message = error_of({"KAFKA_SASL": value})
    assert message.startswith("KAFKA_SASL: expected <mechanism>:<user>:<password>")
    assert "got" not in message and ":u" not in message


def test_kafka_heartbeat_must_be_below_session_timeout() -> None:
    env = {"KAFKA_SESSION_TIMEOUT_MS": "2000", "KAFKA_HEARTBEAT_INTERVAL_MS": "2000"}
    assert error_of(env) == (
        "KAFKA_HEARTBEAT_INTERVAL_MS: expected less than KAFKA_SESSION_TIMEOUT_MS (2000), got 2000"
    )
    env["KAFKA_HEARTBEAT_INTERVAL_MS"] = "500"
    assert load_settings(env=env).kafka_heartbeat_interval_ms == 500


def test_kafka_ssl_files_must_exist_when_enabled(tmp_path: Path) -> None:
    env = {"KAFKA_BROKERS": "k:9093", "KAFKA_SSL_ENABLED": "true"}
    assert error_of(env) == "KAFKA_SSL_CA_CERTFILE: file not found: 'ca.crt.pem'"
    for name in ("ca.crt.pem", "client.crt.pem", "client.key.pem"):
        Path(name).write_text("x", encoding="utf-8")
    assert load_settings(env=env).kafka_ssl_enabled
    # Without brokers Kafka is off, so the files are not needed.
    assert load_settings(env={"KAFKA_SSL_ENABLED": "1", "KAFKA_SSL_CA_CERTFILE": "nope"})


def test_kafka_ssl_empty_file_setting_means_omit() -> None:
    for name in ("client.crt.pem", "client.key.pem"):
        Path(name).write_text("x", encoding="utf-8")
    env = {"KAFKA_BROKERS": "k:9093", "KAFKA_SSL_ENABLED": "yes", "KAFKA_SSL_CA_CERTFILE": ""}
    assert load_settings(env=env).kafka_ssl_ca_certfile == ""


# ------------------------------------------------------------------------------ HTTPS


def test_https_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_text("x", encoding="utf-8")
    key.write_text("x", encoding="utf-8")
    assert error_of({"HTTPS_CERTFILE": str(cert)}) == (
        "HTTPS_KEYFILE: required when HTTPS_CERTFILE is set"
    )
    assert error_of({"HTTPS_KEYFILE": str(key)}) == (
        "HTTPS_CERTFILE: required when HTTPS_KEYFILE is set"
    )
    assert error_of({"HTTPS_KEYFILE_PASS": "pw"}) == (
        "HTTPS_KEYFILE_PASS: set without HTTPS_CERTFILE and HTTPS_KEYFILE"
    )
    settings = load_settings(env={"HTTPS_CERTFILE": str(cert), "HTTPS_KEYFILE": str(key)})
    assert settings.https_enabled
    assert not Settings().https_enabled


def test_https_files_must_exist(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x", encoding="utf-8")
    message = error_of({"HTTPS_CERTFILE": "missing.pem", "HTTPS_KEYFILE": str(key)})
    assert message == "HTTPS_CERTFILE: file not found: 'missing.pem'"


# -------------------------------------------------------------------------------- JWT


def _rsa_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _certificate_pem() -> str:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_rs_key_is_checked_at_load() -> None:
    pem = _rsa_public_pem()
    settings = load_settings(env={"JWT_ALG": "RS256", "JWT_SECRET_KEY": pem})
    assert settings.jwt_secret_key == pem
    # Single-line env values with literal \n work too.
    escaped = pem.replace("\n", "\\n")
    assert (
        load_settings(env={"JWT_ALG": "RS256", "JWT_SECRET_KEY": escaped}).jwt_secret_key == escaped
    )


def test_es_certificate_accepted() -> None:
    load_settings(env={"JWT_ALG": "ES256", "JWT_SECRET_KEY": _certificate_pem()})


def test_bad_rs_key_is_an_error_without_echoing_it() -> None:
    message = error_of({"JWT_ALG": "RS256", "JWT_SECRET_KEY": "not-a-pem-secret"})
    assert message == "JWT_SECRET_KEY: expected a PEM public key or X.509 certificate for RS256"
    message = error_of({"JWT_ALG": "ES256", "JWT_SECRET_KEY": _rsa_public_pem()})
    assert message.endswith("the key is of the wrong type")


def test_pem_with_hs_alg_is_an_error() -> None:
    assert error_of({"JWT_SECRET_KEY": _rsa_public_pem()}) == (
        "JWT_SECRET_KEY: looks like a PEM key, but JWT_ALG is HS256"
    )


def test_empty_rs_key_is_allowed() -> None:
    assert load_settings(env={"JWT_ALG": "RS512"}).jwt_secret_key == ""


# ------------------------------------------------------------------- secrets/warnings


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path, {"node_cookie": 123456789})
    assert "123456789" not in str(info.value)
    assert str(info.value).endswith("expected a string")


def test_redacted_masks_secrets() -> None:
    settings = load_settings(env={"NODE_COOKIE": "c00kie", "KAFKA_SASL": "plain:u:hunter2"})
    redacted = settings.redacted()
    assert redacted["node_cookie"] == "***"
    assert redacted["kafka_sasl"] == "***"
    assert redacted["jwt_secret_key"] == ""
    assert redacted["inbound_port"] == 4000
    assert "hunter2" not in repr(redacted)


def test_effective_node_cookie() -> None:
    default = Settings().effective_node_cookie
    assert default and default == Settings().effective_node_cookie
    assert load_settings(env={"NODE_COOKIE": "abc"}).effective_node_cookie == "abc"


def test_startup_warnings() -> None:
    settings = load_settings(env={"SUBSCRIPTION_CHECK": "jwt_validation"})
    warnings = startup_warnings(settings, env={"NATS_SERVERS": "n:4222", "DNS_NAME": ""})
    assert any(w.startswith("NODE_COOKIE is not set") for w in warnings)
    assert "JWT_SECRET_KEY is not set: every JWT will be rejected" in warnings
    assert "NATS_SERVERS is set but ignored: NATS is not supported" in warnings
    assert not any("DNS_NAME" in w for w in warnings)
    quiet = load_settings(env={"NODE_COOKIE": "x"})
    assert startup_warnings(quiet, env={}) == []


def test_settings_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().inbound_port = 1  # type: ignore[misc]
