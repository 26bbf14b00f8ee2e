"""Route management over the internal API, /v2|v3/apis, on one process (RIG §3.2, §7.2)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from backend import Backend
from clients import sign_jwt
from conftest import JWT_SECRET, GatewayProcess

JSON = "application/json; charset=utf-8"


def definition(api_id: str, port: int, *endpoints: dict, **fields: object) -> dict:
    return {
        "id": api_id,
        "name": f"{api_id} service",
        "proxy": {"target_url": "127.0.0.1", "port": port},
        "version_data": {"default": {"endpoints": list(endpoints)}},
        **fields,
    }


def ep(endpoint_id: str, method: str, path: str, **fields: object) -> dict:
    return {"id": endpoint_id, "method": method, "path_regex": path, **fields}


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(backend: Backend, gateway_factory) -> Iterator[GatewayProcess]:
    # One API from inline JSON (RIG's PROXY_CONFIG_FILE form), the rest over the API.
    preloaded = [definition("preloaded", backend.port, ep("p", "get", "/preloaded"))]
    started = gateway_factory(PROXY_CONFIG_FILE=json.dumps(preloaded), JWT_SECRET_KEY=JWT_SECRET)
    yield started
    started.stop()


def post(gateway: GatewayProcess, body: object, version: str = "v3") -> requests.Response:
    return requests.post(f"{gateway.api}/{version}/apis", json=body, timeout=5)


def put(gateway: GatewayProcess, api_id: str, body: object) -> requests.Response:
    return requests.put(f"{gateway.api}/v3/apis/{api_id}", json=body, timeout=5)


def get(gateway: GatewayProcess, api_id: str, version: str = "v3") -> requests.Response:
    return requests.get(f"{gateway.api}/{version}/apis/{api_id}", timeout=5)


def listed(gateway: GatewayProcess) -> dict[str, dict]:
    response = requests.get(f"{gateway.api}/v3/apis", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    return {api["id"]: api for api in response.json()}


def test_config_routes_are_listed_and_routed(gateway: GatewayProcess) -> None:
    api = listed(gateway)["preloaded"]
    assert api["active"] is True and api["ref_number"] == 0
    assert api["version_data"]["default"]["endpoints"][0]["method"] == "GET"
    assert requests.get(f"{gateway.inbound}/preloaded", timeout=5).status_code == 200


def test_create_read_update_delete(gateway: GatewayProcess, backend: Backend) -> None:
    body = definition("books", backend.port, ep("one", "get", "/books/([0-9]+)"))
    created = post(gateway, body)
    assert (created.status_code, created.json()) == (201, {"message": "ok"})
    assert created.headers["content-type"] == JSON

    stored = get(gateway, "books").json()
    assert stored["active"] is True
    assert stored["auth_type"] == "none"
    assert stored["auth"] == {
        "header_name": "",
        "query_name": "",
        "use_header": False,
        "use_query": False,
    }
    assert stored["versioned"] is False
    assert stored["ref_number"] == 0
    assert stored["node_name"] and stored["timestamp"].endswith("Z")
    # RIG forgets to upper-case methods of API-created routes; we do not.
    assert stored["version_data"]["default"]["endpoints"][0]["method"] == "GET"
    assert requests.get(f"{gateway.inbound}/books/7", timeout=5).json()["path"] == "/books/7"
    assert get(gateway, "books", version="v2").json() == stored
    assert "books" in listed(gateway)

    conflict = post(gateway, body, version="v2")
    assert (conflict.status_code, conflict.json()) == (
        409,
        {"message": "API with id=books already exists."},
    )

    changed = dict(body, id="ignored-the-path-wins")
    changed["version_data"] = {
        "default": {
            "endpoints": [
                ep("one", "GET", "/library/([0-9]+)", path_replacement="/books/\\1"),
            ]
        }
    }
    updated = put(gateway, "books", changed)
    assert (updated.status_code, updated.json()) == (200, {"message": "ok"})
    stored = get(gateway, "books").json()
    assert stored["id"] == "books" and stored["ref_number"] == 1
    assert requests.get(f"{gateway.inbound}/books/7", timeout=5).status_code == 404
    assert requests.get(f"{gateway.inbound}/library/7", timeout=5).json()["path"] == "/books/7"

    deleted = requests.delete(f"{gateway.api}/v3/apis/books", timeout=5)
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = {"message": "API with id=books doesn't exists."}
    assert (get(gateway, "books").status_code, get(gateway, "books").json()) == (404, gone)
    assert "books" not in listed(gateway)
    assert requests.get(f"{gateway.inbound}/library/7", timeout=5).status_code == 404
    again = requests.delete(f"{gateway.api}/v3/apis/books", timeout=5)
    assert (again.status_code, again.json()) == (404, gone)
    assert (put(gateway, "books", body).status_code, put(gateway, "books", body).json()) == (
        404,
        gone,
    )

    # A deactivated API can be created again; its ref_number goes on.
    assert post(gateway, body).status_code == 201
    assert get(gateway, "books").json()["ref_number"] == 3
    assert requests.get(f"{gateway.inbound}/books/1", timeout=5).status_code == 200


def test_validation_errors_are_rigs_error_maps(gateway: GatewayProcess, backend: Backend) -> None:
    # lib/rig_api/v3/apis_test.exs
    response = put(gateway, "preloaded", {})
    assert response.status_code == 400
    assert response.json() == {
        "api": [
            {"name": "must be string"},
            {"name": "must have a length of at least 1"},
            {"proxy": "must be present"},
            {"version_data": "must be present"},
        ]
    }
    response = post(gateway, definition("invalid-config", backend.port, {}))
    assert response.status_code == 400
    assert response.json() == {
        "invalid-config/": [
            {"id": "must be string"},
            {"id": "must have a length of at least 1"},
            {"path_regex": "must be string"},
            {"path_regex": "must have a length of at least 1"},
            {"method": "must be string"},
            {"method": "must have a length of at least 1"},
        ]
    }
    assert get(gateway, "invalid-config").status_code == 404
    # Validation comes before the existence check, as in RIG.
    assert put(gateway, "no-such-api", {}).status_code == 400


def test_a_body_without_id_is_400_not_500(gateway: GatewayProcess, backend: Backend) -> None:
    body = definition("x", backend.port)
    del body["id"]
    response = post(gateway, body)
    assert response.status_code == 400
    assert response.json() == {
        "api": [{"id": "must be string"}, {"id": "must have a length of at least 1"}]
    }
    array = post(gateway, [body])
    assert array.status_code == 400 and "api" in array.json()


def test_framework_errors(gateway: GatewayProcess) -> None:
    broken = requests.post(
        f"{gateway.api}/v3/apis",
        data="{oops",
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert (broken.status_code, broken.json()) == (400, {"errors": {"detail": "Bad request"}})
    text = requests.post(
        f"{gateway.api}/v3/apis", data="x", headers={"content-type": "text/plain"}, timeout=5
    )
    assert text.status_code == 415


def test_jwt_apis_keep_a_custom_token_header(gateway: GatewayProcess, backend: Backend) -> None:
    body = definition(
        "custom-auth",
        backend.port,
        ep("s", "GET", "/custom-auth", secured=True),
        auth_type="jwt",
        auth={"use_header": True, "header_name": "x-token"},
    )
    assert post(gateway, body).status_code == 201
    stored = get(gateway, "custom-auth").json()
    # RIG overwrites the name with "Authorization" here (its §15.10).
    assert stored["auth"] == {"header_name": "x-token", "use_header": True}
    url = f"{gateway.inbound}/custom-auth"
    assert requests.get(url, timeout=5).status_code == 401
    token = sign_jwt(JWT_SECRET)
    assert requests.get(url, headers={"x-token": token}, timeout=5).status_code == 200

    plain = definition(
        "default-auth", backend.port, ep("s", "GET", "/default-auth", secured=True), auth_type="jwt"
    )
    assert post(gateway, plain).status_code == 201
    assert get(gateway, "default-auth").json()["auth"]["header_name"] == "Authorization"
    response = requests.get(
        f"{gateway.inbound}/default-auth", headers={"authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 200


def test_secured_endpoints_need_auth_type_jwt(gateway: GatewayProcess, backend: Backend) -> None:
    body = definition("not-jwt", backend.port, ep("s", "GET", "/x", secured=True))
    response = post(gateway, body)
    assert (response.status_code, response.json()) == (
        400,
        {"not-jwt/s": [{"auth_type": 'must be one of ["jwt"]'}]},
    )
