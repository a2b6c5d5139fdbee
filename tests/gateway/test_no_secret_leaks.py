"""Known secrets sent through every path never show up in logs, records or error bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from switchgear.config import Config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import start_simulator

from servers import BackgroundLoop, gateway

ADMIN = "sg-leaktest-admin-SECRET-aaaaaaaaaaaaaaaa"
PROVIDER = "provider-SECRET-bbbbbbbbbbbbbbbbbbbb"
STRANGER = "sg-leaktest-stranger-SECRET-cccccccccccc"
NOT_OURS = "sk-proj-SECRET-dddddddddddddddddddddddd"


def test_secrets_never_leak(make_config: Callable[..., Config], background: BackgroundLoop,
                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    good = background.run(start_simulator(ModelOptions(ttft_ms=1, tpot_ms=0.1, seed=1),
                                          api_key=PROVIDER))
    failing = background.run(start_simulator(ModelOptions(ttft_ms=1, tpot_ms=0.1, seed=1),
                                             Faults(error_rate=1.0, error_status=500),
                                             api_key=PROVIDER))
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SG_LEAK_PROVIDER_KEY", PROVIDER)
    upstream = {"backend": "openai_http", "model": "sim", "api_key_env": "SG_LEAK_PROVIDER_KEY"}
    config = make_config({
        "good": {"deployments": [{"name": "g", "url": good.base_url, **upstream}]},
        "failing": {"deployments": [{"name": "f", "url": failing.base_url, **upstream}]},
        "wrongkey": {"deployments": [{"name": "w", "url": good.base_url, "backend": "openai_http",
                                      "model": "sim"}]},
        "dead": {"deployments": [{"name": "d", "url": "http://127.0.0.1:9/v1", **upstream}]},
    })
    bodies: list[str] = []
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    try:
        with caplog.at_level(logging.DEBUG), gateway(config) as base_url:
            root = base_url.removesuffix("/v1")

            def send(method: str, path: str, token: str | None, body: object = None,
                     raw: bytes | None = None) -> int:
                headers = {"Content-Type": "application/json"}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
                response = urllib3.request(method, root + path, headers=headers, body=data,
                                           timeout=10, retries=False)
                bodies.append(response.data.decode("utf-8", "replace"))
                bodies.append(json.dumps(dict(response.headers)))
                return response.status

            status = send("POST", "/admin/keys", ADMIN, {"tenant": "t", "name": "n"})
            client_key = json.loads(bodies[-2])["secret"]
            bodies.pop(-2)  # the one answer that must carry a secret: its creation
            for token in (client_key, STRANGER, NOT_OURS, None):
                for model in ("good", "failing", "wrongkey", "dead", "missing"):
                    for stream in (False, True):
                        send("POST", "/v1/chat/completions", token,
                             {**chat, "model": model, "stream": stream})
                send("POST", "/v1/chat/completions", token, raw=b"{broken " + ADMIN.encode())
                send("POST", "/v1/completions", token, {"model": "good", "prompt": NOT_OURS})
                for path in ("/admin/keys", "/admin/records", "/admin/routing", "/readyz",
                             "/metrics"):
                    send("GET", path, token)
            assert status == 201
    finally:
        background.run(good.stop())
        background.run(failing.stop())
    secrets = {"admin": ADMIN, "provider": PROVIDER, "stranger": STRANGER, "not ours": NOT_OURS,
               "client key": client_key}
    logs = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("records.db*"))
    for name, secret in secrets.items():
        tail = secret[11:]  # everything after the public prefix
        assert tail not in logs, f"the {name} secret is in a log line"
        assert tail.encode() not in stored, f"the {name} secret is in the database"
        for body in bodies:
            assert tail not in body, f"the {name} secret is in an answer: {body[:200]}"
