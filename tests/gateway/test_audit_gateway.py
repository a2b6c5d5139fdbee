"""The audit trail through the real gateway: key creation and revocation, admin access, refusals
and failed logins are recorded with who, when, from where and what; inference is not."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
import yaml
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import Config

from servers import gateway

ADMIN = "sg-test-admin-secret-0123456789abcdef"
AUDIT_SECRET = "gateway-audit-secret-0123456789abcdef"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
HELLO = [{"role": "user", "content": "hi"}]


def call(root: str, method: str, path: str, token: str | None = None,
         body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = urllib3.request(method, root + path, headers=headers, timeout=10,
                               body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def trail(root: str, **query: Any) -> list[dict[str, Any]]:
    """The audit entries, oldest first (GET /admin/audit as the bootstrap admin)."""
    path = "/admin/audit?" + "&".join(f"{k}={v}" for k, v in query.items())
    status, answer = call(root, "GET", path, ADMIN)
    assert status == 200, answer
    return list(reversed(answer["data"]))


@pytest.fixture
def audited(make_config: Callable[..., Config], store_url: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A gateway requiring keys, with the audit key set, on each kind of store: (root, url)."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", AUDIT_SECRET)
    with gateway(make_config({"sim": SIM}, store_url)) as base_url:
        yield base_url.removesuffix("/v1"), store_url


def test_key_changes_and_admin_access_are_in_the_trail(audited: tuple[str, str],
                                                       tmp_path: Path) -> None:
    root, store_url = audited
    before = time.time()
    status, made = call(root, "POST", "/admin/keys", ADMIN,
                        {"tenant": "acme", "name": "ops", "role": "admin"})
    assert status == 201
    ops_secret, ops = made["secret"], made["key"]
    status, client = call(root, "POST", "/admin/keys", ops_secret,
                          {"tenant": "acme", "name": "web", "scopes": ["sim"]})
    assert status == 201
    for _ in range(3):  # one access entry per key and address per interval, not one per call
        assert call(root, "GET", "/admin/routing", ops_secret)[0] == 200
    with openai.OpenAI(base_url=root + "/v1", api_key=client["secret"], max_retries=0) as sdk:
        for _ in range(3):  # inference is never audited
            sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
    assert call(root, "DELETE", f"/admin/keys/{client['key']['id']}", ops_secret)[0] == 200

    entries = trail(root)
    seen = [(e["action"], e["actor"], e["target"]) for e in entries]
    assert seen == [
        ("admin.access", "bootstrap", "/admin/keys"),
        ("key.create", "bootstrap", ops["id"]),
        ("admin.access", ops["id"], "/admin/keys"),
        ("key.create", ops["id"], client["key"]["id"]),
        ("key.revoke", ops["id"], client["key"]["id"]),
    ]  # the bootstrap key's later reads of /admin/audit fall in its first access's interval
    create = entries[3]
    assert (create["role"], create["tenant"], create["source"]) == ("admin", "acme", "127.0.0.1")
    assert before <= create["at"] <= time.time()
    assert create["details"] == {"prefix": client["key"]["prefix"], "tenant": "acme",
                                 "role": "client", "name": "web", "scopes": ["sim"],
                                 "feature": None, "tier": "standard", "expires_at": None}
    assert entries[2]["details"] == {"method": "POST", "path": "/admin/keys", "repeats": 0}
    assert [e["seq"] for e in entries] == list(range(1, 6))
    assert all(e["prev_hash"] == p["hash"] for p, e in pairwise(entries))
    text = json.dumps(entries)
    assert ops_secret not in text and client["secret"] not in text and ADMIN not in text

    config = tmp_path / "verify.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": store_url}}))
    verified = CliRunner().invoke(main, ["audit", "verify", "--config", str(config)])
    assert verified.exit_code == 0 and "intact: 5 entries" in verified.output, verified.output


def test_failed_logins_and_refusals_are_recorded_once_per_interval(
        audited: tuple[str, str]) -> None:
    root, _ = audited
    wrong = "sg-WRONGKEY-not-a-real-secret-000000000"
    for _ in range(3):
        assert call(root, "GET", "/admin/keys", wrong)[0] == 401
    assert call(root, "GET", "/admin/keys")[0] == 401
    status, made = call(root, "POST", "/admin/keys", ADMIN,
                        {"tenant": "acme", "name": "watcher", "role": "viewer"})
    for _ in range(2):
        status, answer = call(root, "GET", "/admin/audit", made["secret"])
        assert status == 403 and answer["error"]["type"] == "permission_error"
    failed = trail(root, action="admin.auth_failed")
    assert len(failed) == 1 and failed[0]["actor"] == "anonymous"
    assert failed[0]["source"] == "127.0.0.1" and failed[0]["target"] == "/admin/keys"
    assert failed[0]["details"] == {"method": "GET", "path": "/admin/keys", "repeats": 0,
                                    "presented": "sg-WRON****"}
    assert "WRONGKEY-not" not in json.dumps(trail(root))
    denied = trail(root, action="admin.denied")
    assert [(e["actor"], e["role"], e["target"]) for e in denied] == [
        (made["key"]["id"], "viewer", "/admin/audit")]


def test_the_audit_list_command_shows_the_trail(audited: tuple[str, str]) -> None:
    root, _ = audited
    call(root, "POST", "/admin/keys", ADMIN, {"tenant": "globex", "name": "batch-job"})
    runner = CliRunner()
    listed = runner.invoke(main, ["audit", "list", "--url", root, "--admin-key", ADMIN])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["seq", "time", "(UTC)"]
    assert "key.create" in lines[1] and "bootstrap" in lines[1] and "batch-job" in lines[1]
    only = runner.invoke(main, ["audit", "list", "--url", root, "--admin-key", ADMIN,
                                "--action", "key.create", "--json"])
    assert [e["action"] for e in json.loads(only.output)["data"]] == ["key.create"]
    assert call(root, "GET", "/admin/audit?limit=x", ADMIN)[0] == 400


def test_an_unwritable_trail_refuses_admin_calls(make_config: Callable[..., Config],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", AUDIT_SECRET)
    with gateway(make_config({"sim": SIM})) as base_url:
        root = base_url.removesuffix("/v1")
        lock = sqlite3.connect(tmp_path / "records.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database: writes time out
        try:
            status, answer = call(root, "GET", "/admin/routing", ADMIN)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert status == 503 and "audit trail" in answer["error"]["message"]
        assert call(root, "GET", "/admin/routing", ADMIN)[0] == 200  # recorded now


def test_open_mode_records_key_creation_as_anonymous(make_config: Callable[..., Config],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.delenv("SWITCHGEAR_ADMIN_KEY", raising=False)
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    with gateway(make_config({"sim": SIM})) as base_url:
        root = base_url.removesuffix("/v1")
        assert call(root, "GET", "/admin/routing")[0] == 200  # no login: nothing to record
        status, made = call(root, "POST", "/admin/keys", None, {"tenant": "t", "name": "n"})
        assert status == 201
        status, answer = call(root, "GET", "/admin/audit")
    assert [(e["action"], e["actor"], e["target"]) for e in answer["data"]] == [
        ("key.create", "anonymous", made["key"]["id"])]
    assert (tmp_path / "records.db.audit-key").exists()  # the loopback dev key


def test_a_forwarded_for_header_cannot_forge_the_source_or_dodge_the_interval(
        audited: tuple[str, str]) -> None:
    """The source is the connection's peer: X-Forwarded-For from a loopback client (which
    uvicorn trusts by default) neither forges it nor makes each forged address a new entry."""
    root, _ = audited
    wrong = "sg-WRONGKEY-not-a-real-secret-000000000"
    for forged in ("203.0.113.9", "203.0.113.10", "198.51.100.1"):
        answer = urllib3.request("GET", root + "/admin/keys", timeout=10, headers={
            "Authorization": f"Bearer {wrong}", "X-Forwarded-For": forged})
        assert answer.status == 401
    failed = trail(root, action="admin.auth_failed")
    assert [e["source"] for e in failed] == ["127.0.0.1"]
