"""Key changes reach every replica: two `switchgear serve` processes share one store (a SQLite
file, and PostgreSQL); a key made on one soon works on the other, and once revoked on one, the other
refuses it (401 in OpenAI's shape) within a few polls, not only at its next restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config

from servers import create_key, gateway_process

ADMIN = "sg-replica-admin-0123456789abcdef01234567"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
HELLO = [{"role": "user", "content": "hi"}]
#: How long the other replica may take to see a revocation: a few of its 1 s polls.
PICKUP_LIMIT = 5.0


def chat(base_url: str, token: str) -> tuple[int, dict[str, Any]]:
    """One chat on the gateway at ``base_url`` with ``token``: status and JSON answer."""
    with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk:
        try:
            raw = sdk.chat.completions.with_raw_response.create(model="sim", messages=HELLO,
                                                                max_tokens=1)
        except openai.APIStatusError as error:
            return error.status_code, error.response.json()
    return raw.status_code, raw.http_response.json()


def listed(base_url: str, key_id: str) -> dict[str, Any] | None:
    """The key ``key_id`` as GET /admin/keys of the gateway at ``base_url`` shows it."""
    response = urllib3.request("GET", base_url.removesuffix("/v1") + "/admin/keys", timeout=10,
                               headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status == 200, response.data
    return next((k for k in response.json()["data"] if k["id"] == key_id), None)


def test_a_key_revoked_on_one_replica_is_refused_by_the_other(
        make_config: Callable[..., Config], store_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", "replica-audit-secret-0123456789abcdef")
    config = make_config({"sim": SIM}, store_url)
    with gateway_process(config, tmp_path) as a, gateway_process(config, tmp_path) as b:
        made = create_key(a, ADMIN, tenant="acme", name="web")
        secret, key_id = made["secret"], made["key"]["id"]
        assert chat(a, secret)[0] == 200
        made_at = time.monotonic()
        while (answer := chat(b, secret))[0] == 401:  # made on A, soon works on B
            assert time.monotonic() - made_at < PICKUP_LIMIT, "B does not take A's new key"
            time.sleep(0.05)
        assert answer[0] == 200, answer
        revoked = urllib3.request("DELETE", a.removesuffix("/v1") + f"/admin/keys/{key_id}",
                                  headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert revoked.status == 200, revoked.data
        assert chat(a, secret)[0] == 401  # on the replica that revoked it: at once
        revoked_at = time.monotonic()
        while (answer := chat(b, secret))[0] == 200:
            assert time.monotonic() - revoked_at < PICKUP_LIMIT, "B still takes a revoked key"
            time.sleep(0.05)
        pickup = time.monotonic() - revoked_at
        status, body = answer
        assert status == 401
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert (body["error"]["type"], body["error"]["code"]) == ("invalid_request_error",
                                                                  "invalid_api_key")
        with openai.OpenAI(base_url=b, api_key=secret, max_retries=0) as sdk, \
                pytest.raises(openai.AuthenticationError):
            sdk.models.list()
        shown = listed(b, key_id)  # B's admin API shows it revoked too
        assert shown is not None and shown["revoked_at"] is not None
    print(f"\nB refused the key {pickup:.2f}s after A revoked it")


def test_a_key_made_on_one_replica_is_listed_by_the_other(
        make_config: Callable[..., Config], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody used the key on B, so only following the store can show it there."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", "replica-audit-secret-0123456789abcdef")
    config = make_config({"sim": SIM})
    with gateway_process(config, tmp_path) as a, gateway_process(config, tmp_path) as b:
        key_id = create_key(a, ADMIN, tenant="acme", name="batch")["key"]["id"]
        made_at = time.monotonic()
        while listed(b, key_id) is None:
            assert time.monotonic() - made_at < PICKUP_LIMIT, "B does not list A's key"
            time.sleep(0.05)
