"""API keys and roles on both transports; keys never reach the logs."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest

from _servers import running_server
from m2m import errors
from m2m.clients import GrpcClient, HttpClient
from m2m.clients._wire import AuthenticationError, PermissionDeniedError
from m2m.server import auth
from m2m.server.auth import KeyRing, Role, bearer_token
from m2m.server.serve import exposure_warning
from m2m.server.settings import ServerSettings, collect_api_keys

READ, WRITE, ADMIN = "rk-3f9a1c77e2", "wk-8b21de4490", "ak-5c03a9f1b7"
KEYS = {READ: Role.READ, WRITE: Role.WRITE, ADMIN: Role.ADMIN}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("auth"), api_keys=KEYS) as srv:
        with HttpClient(srv.url, api_key=ADMIN) as admin:
            admin.create_collection("docs", 2).add(["a"], [[1, 0]])
        yield srv


def test_key_sources_merge_and_errors_never_show_keys(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key:write\nshared:read  # comment\n")
    got = collect_api_keys(
        ["flag-key:admin", "shared:admin"], keys_file, environ={"M2M_API_KEYS": "env-key:read, shared:write"}
    )
    assert got == {"env-key": Role.READ, "shared": Role.ADMIN, "file-key": Role.WRITE, "flag-key": Role.ADMIN}
    for bad in (["s3cr3t-value:superuser"], ["s3cr3t-value"], [":read"]):
        with pytest.raises(errors.InvalidArgumentError) as info:
            collect_api_keys(bad, environ={})
        assert "s3cr3t-value" not in str(info.value)
    assert "s3cr3t-value" not in repr(ServerSettings(api_keys={"s3cr3t-value": Role.READ}))
    assert "s3cr3t-value" not in repr(KeyRing({"s3cr3t-value": Role.READ}))


def test_keyring_roles_and_constant_time_comparison(monkeypatch):
    ring = KeyRing(KEYS)
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    # Every key is compared whatever the match position, so timing does not reveal which key matched.
    for presented in (READ, ADMIN, "nope", READ[:-1]):
        calls.clear()
        ring.role_of(presented)
        assert len(calls) == len(KEYS)
    assert ring.authorize(WRITE, Role.READ) is Role.WRITE
    with pytest.raises(PermissionDeniedError):
        ring.authorize(READ, Role.WRITE)
    with pytest.raises(AuthenticationError):
        ring.authorize(None, Role.READ)
    with pytest.raises(AuthenticationError):
        ring.authorize("wrong", Role.READ)
    assert KeyRing({}).authorize(None, Role.ADMIN) is Role.ADMIN  # no keys configured: open
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None


def test_exposed_without_key_warns():
    assert exposure_warning(ServerSettings(host="0.0.0.0")) is not None
    assert exposure_warning(ServerSettings(host="::")) is not None
    assert exposure_warning(ServerSettings(host="0.0.0.0", api_keys={"k": Role.READ})) is None
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(ServerSettings(host=host)) is None


def _status(response: httpx.Response) -> tuple[int, str | None]:
    if response.status_code < 400:
        return response.status_code, None
    return response.status_code, response.json()["error"]["type"]


def test_rest_roles(server):
    def req(key, method, path, body=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return _status(httpx.request(method, server.url + path, json=body, headers=headers))

    add = {"ids": ["n"], "embeddings": [[0, 1]]}
    assert req(None, "GET", "/health") == (200, None)
    assert req(None, "GET", "/v1/collections") == (401, "AuthenticationError")
    assert req("bogus", "GET", "/v1/collections") == (401, "AuthenticationError")
    assert req(None, "GET", "/metrics") == (401, "AuthenticationError")
    assert req(READ, "GET", "/v1/collections") == (200, None)
    assert req(READ, "GET", "/metrics") == (200, None)
    assert req(READ, "POST", "/v1/collections/docs/query", {"query_embeddings": [[1, 0]]}) == (200, None)
    assert req(READ, "POST", "/v1/collections/docs/add", add) == (403, "PermissionDeniedError")
    assert req(READ, "POST", "/v1/collections", {"name": "x1", "dim": 2}) == (403, "PermissionDeniedError")
    # get_or_create of an existing collection is a read.
    assert req(READ, "POST", "/v1/collections", {"name": "docs", "dim": 2, "get_or_create": True})[0] == 201
    assert req(WRITE, "POST", "/v1/collections/docs/add", add) == (200, None)
    assert req(WRITE, "POST", "/v1/collections/docs/delete", {"ids": ["n"]}) == (200, None)
    assert req(WRITE, "DELETE", "/v1/collections/docs") == (403, "PermissionDeniedError")
    assert req(WRITE, "POST", "/v1/collections", {"name": "x2", "dim": 2}) == (403, "PermissionDeniedError")
    assert req(ADMIN, "POST", "/v1/collections", {"name": "x3", "dim": 2}) == (201, None)
    assert req(ADMIN, "DELETE", "/v1/collections/x3") == (200, None)
    r = httpx.get(server.url + "/v1/stats")
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_clients_reraise_auth_errors(server, transport):
    def make(key):
        return (
            HttpClient(server.url, api_key=key)
            if transport == "http"
            else GrpcClient(server.grpc_target, key)
        )

    with make(None) as anon, make("not-a-key") as wrong, make(READ) as reader, make(WRITE) as writer:
        with pytest.raises(AuthenticationError):
            anon.list_collections()
        with pytest.raises(AuthenticationError):
            wrong.get_collection("docs")
        assert anon.heartbeat()["status"] == "ok"
        docs = reader.get_collection("docs")
        assert docs.count() >= 1 and reader.get_or_create_collection("docs", 2).dim == 2
        with pytest.raises(PermissionDeniedError):
            docs.add(["r"], [[0, 1]])
        with pytest.raises(PermissionDeniedError):
            reader.create_collection(f"new-{transport}", 2)
        wdocs = writer.get_collection("docs")
        wdocs.upsert([f"w-{transport}"], np.array([[0.5, 0.5]], dtype=np.float32))
        assert wdocs.delete(ids=[f"w-{transport}"]) == 1
        with pytest.raises(PermissionDeniedError):
            writer.delete_collection("docs")


def test_keys_never_logged(tmp_path, caplog):
    secret = "zq-very-secret-key-4471"
    caplog.set_level(logging.DEBUG)
    with running_server(tmp_path, api_keys={secret: Role.ADMIN, "other-key-9": Role.READ}) as srv:
        with HttpClient(srv.url, api_key=secret) as ok, GrpcClient(srv.grpc_target, api_key=secret) as gok:
            ok.create_collection("logged", 2).add(["a"], [[0, 1]])
            gok.get_collection("logged").query([[0, 1]])
            for bad in (secret[:-1], secret + "x"):
                with HttpClient(srv.url, api_key=bad) as c, pytest.raises(AuthenticationError):
                    c.list_collections()
                with GrpcClient(srv.grpc_target, api_key=bad) as c, pytest.raises(AuthenticationError):
                    c.list_collections()
            with HttpClient(srv.url, api_key="other-key-9") as reader, pytest.raises(PermissionDeniedError):
                reader.delete_collection("logged")
        assert secret not in repr(srv.settings) and secret not in repr(srv.app.state.keyring)
    assert caplog.records, "expected some log records to check"
    assert secret[:-1] not in caplog.text and "other-key-9" not in caplog.text
