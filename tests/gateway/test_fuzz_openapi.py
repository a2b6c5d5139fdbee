"""Fuzz the OpenAI surface and the admin API from the app's own OpenAPI schema (schemathesis):
whatever the input, no 5xx, and every error in OpenAI's shape."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis

from switchgear.config import parse_config
from switchgear.gateway.openapi import openapi_spec

from servers import gateway

ADMIN = "sg-fuzz-admin-0123456789abcdef0123456789"
SCHEMA = schemathesis.openapi.from_dict(openapi_spec())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway that requires keys, with one in-process simulated model."""
    directory = tmp_path_factory.mktemp("fuzz")
    previous = os.environ.get("SWITCHGEAR_ADMIN_KEY")
    os.environ["SWITCHGEAR_ADMIN_KEY"] = ADMIN
    config = parse_config({
        "models": {"sim": {"deployments": [{"name": "local", "backend": "simulated",
                                            "simulated": {"ttft_ms": 0, "tpot_ms": 0}}]}},
        "store": {"url": f"sqlite:///{directory}/records.db"},
    })
    try:
        with gateway(config) as base_url:
            yield base_url.removesuffix("/v1")
    finally:
        if previous is None:
            os.environ.pop("SWITCHGEAR_ADMIN_KEY", None)
        else:
            os.environ["SWITCHGEAR_ADMIN_KEY"] = previous


@SCHEMA.parametrize()
@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@pytest.mark.parametrize("token", [ADMIN, None, "sg-not-a-key-0000000000000000"],
                         ids=["admin", "no-key", "bad-key"])
def test_no_input_breaks_the_api(case: schemathesis.Case, root: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=root, headers=headers, timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and case.path != "/readyz":
        body = json.loads(response.text)
        assert set(body) == {"error"}, body
        assert {"message", "type", "param", "code"} <= set(body["error"]), body
