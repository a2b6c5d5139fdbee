"""API keys and roles over real HTTP: 401s, scopes, revocation, expiry, tenant-scoped admin reads."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from switchgear.admission.keys import KeyRing
from switchgear.config import Config
from switchgear.errors import Overloaded
from switchgear.pipeline.admit import Authenticator
from switchgear.store.base import StoreUnavailable

from servers import gateway, wait_for_record

ADMIN = "sg-test-admin-secret-0123456789abcdef"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def secured(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> Iterator[str]:
    """A gateway that requires keys (an admin key is set), with two models."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"sim": SIM, "other": SIM})) as base_url:
        yield base_url


def call(base_url: str, method: str, path: str, token: str | None = None,
         body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    root = base_url.removesuffix("/v1")
    response = urllib3.request(method, root + path, headers=headers, timeout=10,
                               body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def make_key(base_url: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    status, answer = call(base_url, "POST", "/admin/keys", ADMIN, fields)
    assert status == 201, answer
    return answer["secret"], answer["key"]


def sdk(base_url: str, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key or "none", max_retries=0)


def test_no_key_or_a_wrong_key_is_401_in_openai_shape(secured: str) -> None:
    status, answer = call(secured, "POST", "/v1/chat/completions", None,
                          {"model": "sim", "messages": HELLO})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    with sdk(secured, "sg-wrong0000000000000000000000000000") as client, \
            pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="sim", messages=HELLO)
    assert "0000000000000" not in refused.value.message  # only a short prefix is echoed


def test_a_client_key_calls_its_models_and_is_attributed(secured: str, tmp_path: Path) -> None:
    secret, key = make_key(secured, tenant="acme", name="web", role="client", scopes=["sim"],
                           feature="search")
    assert secret.startswith("sg-") and key["prefix"] == secret[:11]
    with sdk(secured, secret) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sim", messages=HELLO, max_tokens=2, user="u-42",
            extra_headers={"x-switchgear-feature": "checkout", "x-switchgear-priority": "batch"})
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="other", messages=HELLO)
    row = wait_for_record(f"sqlite:///{tmp_path}/records.db", raw.headers["x-request-id"])
    assert (row.tenant, row.key_id, row.user_id, row.feature, row.priority) == (
        "acme", key["id"], "u-42", "checkout", "batch")


def test_revoked_and_expired_keys_stop_working(secured: str) -> None:
    revoked, key = make_key(secured, tenant="acme", name="old")
    expiring, _ = make_key(secured, tenant="acme", name="brief", expires_in_s=0.5)
    with sdk(secured, revoked) as client:
        assert client.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
    assert call(secured, "DELETE", f"/admin/keys/{key['id']}", ADMIN)[0] == 200
    assert call(secured, "DELETE", f"/admin/keys/{key['id']}", ADMIN)[0] == 404
    time.sleep(0.6)
    for token in (revoked, expiring):
        with sdk(secured, token) as client, pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)


#: Every inference endpoint, with a body naming the model: (path, body, error shape). Messages
#: answer in Anthropic's shape ({"type": "error", "error": {...}}), the rest in OpenAI's.
INFERENCE = [
    ("/v1/chat/completions", lambda model: {"model": model, "messages": HELLO, "max_tokens": 1},
     "openai"),
    ("/v1/chat/completions", lambda model: {"model": model, "messages": HELLO, "max_tokens": 1,
                                            "stream": True}, "openai"),
    ("/v1/completions", lambda model: {"model": model, "prompt": "hi", "max_tokens": 1}, "openai"),
    ("/v1/embeddings", lambda model: {"model": model, "input": "hi"}, "openai"),
    ("/v1/responses", lambda model: {"model": model, "input": "hi", "max_output_tokens": 16},
     "openai"),
    ("/v1/responses", lambda model: {"model": model, "input": "hi", "max_output_tokens": 16,
                                     "stream": True, "store": False}, "openai"),
    ("/v1/messages", lambda model: {"model": model, "messages": HELLO, "max_tokens": 1},
     "anthropic"),
    ("/v1/messages", lambda model: {"model": model, "messages": HELLO, "max_tokens": 1,
                                    "stream": True}, "anthropic"),
    ("/v1/messages/count_tokens", lambda model: {"model": model, "messages": HELLO}, "anthropic"),
]


#: A refused key's error in each shape: OpenAI says invalid_api_key, Anthropic authentication_error.
UNAUTHENTICATED = {"openai": (401, "invalid_request_error", "invalid_api_key"),
                   "anthropic": (401, "authentication_error", None)}


def refused(base_url: str, path: str, token: str, body: Any,
            shape: str) -> tuple[int, str, str | None]:
    """POST a request that must be refused (a streamed one is refused before its stream): its
    status, error type and code, read from the error shape its API answers in."""
    status, answer = call(base_url, "POST", path, token, body)
    assert (answer.get("type") == "error") == (shape == "anthropic"), (path, answer)
    return status, answer["error"]["type"], answer["error"].get("code")


def test_scoped_and_non_calling_keys_are_refused_on_every_inference_endpoint(
        secured: str) -> None:
    scoped, _ = make_key(secured, tenant="acme", name="scoped", role="client", scopes=["sim"])
    viewer, _ = make_key(secured, tenant="acme", name="looker", role="viewer")
    for path, body, shape in INFERENCE:
        allowed = body("sim")
        if not allowed.get("stream"):
            status, answer = call(secured, "POST", path, scoped, allowed)
            assert status == 200, (path, answer)
        for token, model in ((scoped, "other"), (viewer, "sim")):
            status, kind, _code = refused(secured, path, token, body(model), shape)
            assert (status, kind) == (403, "permission_error"), (path, model)
    status, models = call(secured, "GET", "/v1/models", scoped)
    assert status == 200 and [m["id"] for m in models["data"]] == ["sim"]


def test_a_revoked_key_is_401_on_every_endpoint_that_takes_a_key(secured: str) -> None:
    token, key = make_key(secured, tenant="acme", name="gone", role="operator")
    status, created = call(secured, "POST", "/v1/responses", token,
                           {"model": "sim", "input": "hi", "max_output_tokens": 16})
    assert status == 200, created
    assert call(secured, "DELETE", f"/admin/keys/{key['id']}", ADMIN)[0] == 200
    for path, body, shape in INFERENCE:
        assert refused(secured, path, token, body("sim"), shape) == UNAUTHENTICATED[shape], path
    for path in ("/v1/models", f"/v1/responses/{created['id']}", "/v1/files", "/v1/batches",
                 "/admin/records", "/admin/keys"):
        status, answer = call(secured, "GET", path, token)
        error = answer["error"]
        assert (status, error["type"], error.get("code")) == UNAUTHENTICATED["openai"], path


def test_roles_on_every_admin_endpoint(secured: str) -> None:
    tokens = {role: make_key(secured, tenant="acme", name=role, role=role)[0]
              for role in ("operator", "approver", "viewer", "client")}
    tokens["admin"] = ADMIN
    endpoints = [("GET", "/admin/routing"), ("GET", "/admin/keys"), ("GET", "/admin/records"),
                 ("POST", "/admin/keys"), ("DELETE", "/admin/keys/key_nonexistent"),
                 ("GET", "/admin/cache"), ("DELETE", "/admin/cache"), ("GET", "/admin/latency")]
    allowed = {
        "admin": {0, 1, 2, 3, 4, 5, 6, 7},
        "operator": {0, 1, 2, 5, 6, 7},
        "viewer": {0, 1, 2, 5, 7},
        "approver": set(),
        "client": set(),
    }
    body = {"tenant": "acme", "name": "made-by-test"}
    for role, token in tokens.items():
        for index, (method, path) in enumerate(endpoints):
            status, answer = call(secured, method, path, token, body if method == "POST" else None)
            if index in allowed[role]:
                assert status in (200, 201, 404), (role, path, answer)  # 404: no such key
            else:
                assert status == 403, (role, path, answer)
                assert answer["error"]["type"] == "permission_error"
        status, _ = call(secured, "GET", "/admin/routing", None)
        assert status == 401


def test_a_tenant_viewer_sees_only_its_own_tenant(secured: str) -> None:
    acme_client, _ = make_key(secured, tenant="acme", name="acme-app")
    globex_client, _ = make_key(secured, tenant="globex", name="globex-app")
    viewer, _ = make_key(secured, tenant="acme", name="acme-viewer", role="viewer")
    for token in (acme_client, globex_client):
        with sdk(secured, token) as client:
            client.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
    time.sleep(0.2)  # the batched writer flushes every 20 ms in tests
    status, records = call(secured, "GET", "/admin/records", viewer)
    assert status == 200 and {r["tenant"] for r in records["data"]} == {"acme"}
    status, keys = call(secured, "GET", "/admin/keys", viewer)
    assert status == 200 and {k["tenant"] for k in keys["data"]} == {"acme"}
    assert all("digest" not in k and "secret" not in k for k in keys["data"])
    status, latency = call(secured, "GET", "/admin/latency?group_by=tenant", viewer)
    assert status == 200 and [g["tenant"] for g in latency["data"]] == ["acme"]
    for path in ("/admin/records?tenant=globex", "/admin/keys?tenant=globex",
                 "/admin/latency?tenant=globex"):
        status, answer = call(secured, "GET", path, viewer)
        assert status == 403 and answer["error"]["param"] == "tenant"
    status, everything = call(secured, "GET", "/admin/records", ADMIN)
    assert {r["tenant"] for r in everything["data"]} == {"acme", "globex"}
    status, latency = call(secured, "GET", "/admin/latency?group_by=tenant", ADMIN)
    assert [g["tenant"] for g in latency["data"]] == ["acme", "globex"]


def test_bad_key_requests_are_400(secured: str) -> None:
    for body in ({"tenant": "", "name": "x"}, {"tenant": "a", "name": "x", "role": "god"},
                 {"tenant": "a", "name": "x", "scopes": ["nope"]},
                 {"tenant": "a", "name": "x", "expires_in_s": -1}, [1, 2]):
        status, answer = call(secured, "POST", "/admin/keys", ADMIN, body)
        assert status == 400 and answer["error"]["type"] == "invalid_request_error"


def test_keys_are_stored_only_as_digests_and_survive_a_restart(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    config = make_config({"sim": SIM})
    with gateway(config) as base_url:
        secret, _ = make_key(base_url, tenant="acme", name="kept")
    with sqlite3.connect(tmp_path / "records.db") as db:
        stored = repr(db.execute("select * from api_keys").fetchall())
    assert secret not in stored and secret[11:] not in stored
    monkeypatch.delenv("SWITCHGEAR_ADMIN_KEY")  # keys exist: still required without the admin key
    with gateway(config) as base_url, sdk(base_url, secret) as client, \
            sdk(base_url, "sg-not-a-real-key-at-all-00000000") as stranger:
        assert client.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
        with pytest.raises(openai.AuthenticationError):
            stranger.chat.completions.create(model="sim", messages=HELLO)


class _DownStore:
    """A store whose database is unreachable (a fake: an outage cannot be made on demand)."""

    dialect = "sqlite"

    async def rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        raise StoreUnavailable("down")


async def test_an_unreachable_key_store_is_503_never_401() -> None:
    keys = KeyRing(_DownStore())  # type: ignore[arg-type]
    with pytest.raises(Overloaded) as error:
        await Authenticator(keys).verify("sg-abcdefgh-some-secret-value")
    assert error.value.status == 503 and error.value.retry_after


def test_the_keys_and_routes_commands_drive_the_admin_api(secured: str) -> None:
    from click.testing import CliRunner

    from switchgear.cli.main import main

    root = secured.removesuffix("/v1")
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--url", root, "--admin-key", ADMIN,
                                   "--tenant", "acme", "--name", "cli", "--scope", "sim"])
    assert created.exit_code == 0, created.output
    secret = created.output.split("store it now): ")[1].strip()
    key_id = created.output.split()[1]
    listed = runner.invoke(main, ["keys", "list", "--url", root, "--admin-key", ADMIN])
    assert key_id in listed.output and "active" in listed.output and secret not in listed.output
    with sdk(secured, secret) as client:
        assert client.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
    table = runner.invoke(main, ["routes", "--url", root, "--admin-key", ADMIN])
    assert table.exit_code == 0 and "local" in table.output and "healthy" in table.output
    revoked = runner.invoke(main, ["keys", "revoke", key_id, "--url", root, "--admin-key", ADMIN])
    assert revoked.exit_code == 0
    refused = runner.invoke(main, ["keys", "list", "--url", root, "--admin-key", secret])
    assert refused.exit_code == 1 and "401" in refused.output
