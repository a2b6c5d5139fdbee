"""What the console's Governance page calls, on a real gateway that requires keys: the audit
trail's verification state (GET /admin/audit/verify, intact, then tampered in the store), the
two-person rule on a change's review, config diffs, and keys shown once and revoked."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from switchgear.config import parse_config

from servers import gateway

ADMIN = "sg-test-admin-governance-0123456789abcdef"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}


def call(root: str, method: str, path: str, token: str | None = ADMIN,
         body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = urllib3.request(method, root + path, headers=headers, json=body, timeout=10)
    return response.status, json.loads(response.data)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway with an admin key, over a SQLite file in ``tmp_path``."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    config = parse_config({"models": {"sim": SIM}, "store": {
        "url": f"sqlite:///{tmp_path}/records.db", "flush_interval_ms": 20}})
    with gateway(config) as base_url:
        yield base_url.removesuffix("/v1")


def key(root: str, role: str, tenant: str = "ops") -> tuple[str, dict[str, Any]]:
    status, made = call(root, "POST", "/admin/keys", body={"tenant": tenant, "name": role,
                                                           "role": role})
    assert status == 201, made
    return made["secret"], made["key"]


def test_audit_verify_says_intact_then_names_the_altered_entry(root: str,
                                                               tmp_path: Path) -> None:
    key(root, "viewer")
    status, intact = call(root, "GET", "/admin/audit/verify")
    assert status == 200, intact
    assert intact["checked"] and intact["intact"] and intact["tampering"] is None
    assert intact["entries"] >= 2 and intact["verdict"].startswith("intact")
    anchor = intact["anchor"]
    assert anchor == f"{intact['head']['seq']}:{intact['head']['hash']}"
    status, again = call(root, "GET", f"/admin/audit/verify?anchor={anchor}")
    assert status == 200 and again["intact"], again
    with sqlite3.connect(tmp_path / "records.db") as db:  # as the database's owner could
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    status, tampered = call(root, "GET", "/admin/audit/verify")
    assert status == 200 and not tampered["intact"] and tampered["anchor"] is None
    assert tampered["tampering"]["seq"] == 2 and tampered["tampering"]["kind"] == "altered"
    assert tampered["verdict"].startswith("TAMPERED: entry 2 was altered")


def test_audit_verify_is_for_admins_and_refuses_a_junk_anchor(root: str) -> None:
    viewer, _ = key(root, "viewer")
    operator, _ = key(root, "operator")
    for token in (viewer, operator):
        status, refused = call(root, "GET", "/admin/audit/verify", token)
        assert status == 403 and refused["error"]["type"] == "permission_error"
    assert call(root, "GET", "/admin/audit/verify", None)[0] == 401
    for junk in ("1", "x:y", "0:" + "a" * 64, "%C2%B2:" + "a" * 64):
        status, answer = call(root, "GET", f"/admin/audit/verify?anchor={junk}")
        assert status == 400 and answer["error"]["param"] == "anchor", (junk, answer)


def test_a_change_is_approved_only_by_a_second_person_and_its_diff_is_shown(root: str) -> None:
    approver, _ = key(root, "approver")
    status, change = call(root, "POST", "/admin/config/changes", body={
        "sections": {"cache": {"ttl_s": 42}}, "message": "shorter cache"})
    assert status == 201, change
    review = f"/admin/config/changes/{change['change_id']}/review"
    status, own = call(root, "POST", review, body={"approve": True})
    assert status == 403 and "author of a change cannot review it" in own["error"]["message"]
    status, approved = call(root, "POST", review, approver, {"approve": True, "comment": "ok"})
    assert status == 200 and approved["status"] == "approved", approved
    status, applied = call(root, "POST", f"/admin/config/changes/{change['change_id']}/apply",
                           body={})
    assert status == 200, applied
    version = applied["applied_version"]
    status, diff = call(root, "GET", f"/admin/config/diff?from={version - 1}&to={version}")
    assert status == 200 and "+  ttl_s: 42.0" in diff["diff"].splitlines(), diff["diff"]
    status, history = call(root, "GET", "/admin/config/history", approver)
    assert status == 200 and history["versions"][0]["version"] == version


def test_a_key_secret_is_shown_once_and_revoking_stops_it(root: str) -> None:
    secret, made = key(root, "viewer", tenant="acme")
    status, listed = call(root, "GET", "/admin/keys")
    assert status == 200 and secret not in json.dumps(listed)
    assert call(root, "GET", "/admin/routing", secret)[0] == 200
    status, revoked = call(root, "DELETE", f"/admin/keys/{made['id']}")
    assert status == 200 and revoked["key"]["revoked_at"] is not None
    assert call(root, "GET", "/admin/routing", secret)[0] == 401
