"""A key's own limits over real HTTP: given at creation (admin API and CLI), stored with the key,
listed, and applied instead of the config's per-key limits; what a key cannot take is a 400 in
OpenAI's shape, never accepted and dropped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import urllib3
from click.testing import CliRunner

from switchgear.cli.admin_client import admin_call
from switchgear.cli.main import main
from switchgear.config import Config, parse_config

from servers import create_key, gateway

ADMIN = "sg-limits-admin-0123456789abcdef0123456789"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def limited(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway requiring keys where every key may send 3 requests a minute."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    data = make_config({"sim": SIM}).model_dump(mode="json")
    data["limits"] = {"per_key": {"rpm": 3}}
    with gateway(parse_config(data)) as base_url:
        yield base_url


def accepted(base_url: str, token: str, count: int) -> list[int]:
    """Statuses of ``count`` chats sent one after another with ``token``."""
    statuses = []
    with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk:
        for _ in range(count):
            try:
                sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
                statuses.append(200)
            except openai.APIStatusError as error:
                statuses.append(error.status_code)
                assert set(error.response.json()["error"]) == {"message", "type", "param",
                                                               "code"}
    return statuses


def test_a_keys_own_limits_replace_the_config_per_key_limits(limited: str) -> None:
    tight = create_key(limited, ADMIN, tenant="acme", limits={"rpm": 2})
    loose = create_key(limited, ADMIN, tenant="acme", limits={"rpm": 5, "tpm": None})
    plain = create_key(limited, ADMIN, tenant="acme")
    assert tight["key"]["limits"] == {"rpm": 2, "tpm": None}
    assert accepted(limited, tight["secret"], 3) == [200, 200, 429]
    assert accepted(limited, plain["secret"], 4) == [200, 200, 200, 429]  # the config's 3
    assert accepted(limited, loose["secret"], 5) == [200] * 5  # more than the config's 3
    listed = {k["id"]: k for k in _admin_keys(limited)}
    assert listed[tight["key"]["id"]]["limits"] == {"rpm": 2, "tpm": None}
    assert listed[loose["key"]["id"]]["limits"] == {"rpm": 5, "tpm": None}
    assert listed[plain["key"]["id"]]["limits"] == {"rpm": None, "tpm": None}


def test_a_keys_own_budget_applies(make_config: Callable[..., Config],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"sim": SIM})) as base_url:
        broke = create_key(base_url, ADMIN, tenant="acme", budget={"daily": 0, "monthly": 10})
        funded = create_key(base_url, ADMIN, tenant="acme")
        assert broke["key"]["budget"] == {"daily": 0, "monthly": 10}
        assert accepted(base_url, broke["secret"], 1) == [429]
        assert accepted(base_url, funded["secret"], 2) == [200, 200]


def test_limits_a_key_cannot_take_are_refused_not_dropped(limited: str) -> None:
    refused = [
        ({"rpm": 2}, "rpm"),                                 # limits go in "limits"
        ({"limits": {"rpm": 0}}, "limits.rpm"),
        ({"limits": {"rpm": 1.5}}, "limits.rpm"),
        ({"limits": {"rpm": True}}, "limits.rpm"),
        ({"limits": {"rpd": 10}}, "limits.rpd"),
        ({"limits": [2]}, "limits"),
        ({"budget": {"daily": -1}}, "budget.daily"),
        ({"budget": {"daily": 5, "soft": 0.5}}, "budget.soft"),  # the config's, for every key
    ]
    root = limited.removesuffix("/v1")
    for extra, param in refused:
        response = urllib3.request("POST", root + "/admin/keys", timeout=10,
                                   headers={"Authorization": f"Bearer {ADMIN}"},
                                   json={"tenant": "acme", "name": "x", **extra})
        error = json.loads(response.data)["error"]
        assert response.status == 400, (extra, error)
        assert (error["type"], error["param"]) == ("invalid_request_error", param), extra
    assert [k["name"] for k in _admin_keys(limited)] == []  # nothing was made


def test_the_keys_command_sets_and_lists_a_keys_limits(limited: str) -> None:
    root = limited.removesuffix("/v1")
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--url", root, "--admin-key", ADMIN,
                                   "--tenant", "acme", "--name", "cli", "--rpm", "2",
                                   "--tpm", "500", "--daily-budget", "1.5"])
    assert created.exit_code == 0, created.output
    secret = created.output.split("store it now): ")[1].strip()
    assert accepted(limited, secret, 3) == [200, 200, 429]
    listed = runner.invoke(main, ["keys", "list", "--url", root, "--admin-key", ADMIN])
    assert "rpm=2  tpm=500  daily=1.5" in listed.output, listed.output


def _admin_keys(base_url: str) -> list[dict[str, Any]]:
    answer: dict[str, Any] = admin_call(base_url.removesuffix("/v1"), "GET", "/admin/keys", ADMIN)
    return list(answer["data"])
