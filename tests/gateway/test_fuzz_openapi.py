"""Fuzz the OpenAI surface and the admin API from the app's own OpenAPI schema (schemathesis):
every operation with a valid key, with none and with a wrong one; the configured model names in
the generated bodies and queries; whatever the input, no 5xx, and every error in OpenAI's shape.
A fixed budget per operation keeps the file under a minute; the requests sent are counted and
printed in the terminal summary."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st

from switchgear.config import parse_config
from switchgear.gateway.openapi import openapi_spec

from servers import gateway

ADMIN = "sg-fuzz-admin-0123456789abcdef0123456789"
#: The configured model names (aliases): a generated "model" is one of them half the time, so the
#: fuzz reaches the pipeline and the backend, not only the unknown-model 404.
MODELS = ["sim", "sim-fallback"]
SCHEMA = schemathesis.openapi.from_dict(openapi_spec())
#: The same examples every run, so the test command cannot turn red on a new random draw;
#: SWITCHGEAR_FUZZ_RANDOM=1 draws new ones (explore with it, then pin what it finds in a test).
FIXED = os.environ.get("SWITCHGEAR_FUZZ_RANDOM") is None
#: Requests sent, by the key's label and the answer's status class; read by the summary.
SENT: Counter[tuple[str, str]] = Counter()
#: Operations fuzzed (their labels, "METHOD /path"), and the requests that named a configured model.
OPERATIONS: set[str] = set()
REAL_MODEL: Counter[str] = Counter()
SIMULATED = {"ttft_ms": 0, "tpot_ms": 0}


@SCHEMA.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """The generated body as it is, or with its ``model`` one of the configured names."""
    if isinstance(body, dict) and "model" in body:
        return st.one_of(st.just(body), st.sampled_from(MODELS).map(
            lambda model: {**body, "model": model}))
    return st.just(body)


@SCHEMA.hook
def flatmap_query(context: schemathesis.HookContext,
                  query: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """The generated query as it is, or with its ``model`` one of the configured names."""
    if isinstance(query, dict) and "model" in query:
        return st.one_of(st.just(query), st.sampled_from(MODELS).map(
            lambda model: {**query, "model": model}))
    return st.just(query)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    """A gateway that requires keys, with two in-process simulated models (one falls back)."""
    directory = tmp_path_factory.mktemp("fuzz")
    config = parse_config({
        "models": {
            "sim": {"deployments": [{"name": "local", "backend": "simulated",
                                     "simulated": SIMULATED}]},
            "sim-fallback": {"deployments": [{"name": "other", "backend": "simulated",
                                              "simulated": SIMULATED}],
                             "fallbacks": ["sim"]},
        },
        "store": {"url": f"sqlite:///{directory}/records.db"},
    })
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
            with gateway(config) as base_url:
                yield base_url.removesuffix("/v1")
    finally:
        summary = (f"fuzz_openapi: {sum(SENT.values())} requests sent to "
                   f"{len(OPERATIONS)} operations ({sum(REAL_MODEL.values())} naming a configured "
                   f"model, {REAL_MODEL['2xx']} of them answered 2xx); by key and status: "
                   + ", ".join(f"{label} {status}: {count}"
                               for (label, status), count in sorted(SENT.items())))
        plugins = request.config.pluginmanager
        reporter = plugins.getplugin("terminalreporter")
        capture = plugins.getplugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # past the capture, to the terminal
                reporter.write_line(summary)
        else:
            print(summary)


def check(case: schemathesis.Case, root: str, label: str, token: str | None) -> None:
    """Send ``case``; no 5xx, and an error (but /readyz's own body) is in OpenAI's shape (in
    Anthropic's on /v1/messages)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=root, headers=headers, timeout=10)
    status = f"{response.status_code // 100}xx"
    SENT[label, status] += 1
    OPERATIONS.add(case.operation.label)
    for part in (case.body, case.query):
        if isinstance(part, dict) and part.get("model") in MODELS:
            REAL_MODEL[status] += 1
            break
    sent = sum(SENT.values())
    assert response.status_code < 500, (
        f"server error after {sent} requests: {case.method} {case.formatted_path} "
        f"{response.status_code} {response.text}")
    if response.status_code >= 400 and case.path.startswith("/v1/messages"):
        body = json.loads(response.text)  # Anthropic's Messages API answers in its own shape
        assert set(body) == {"type", "error", "request_id"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, (sent, body)
    elif response.status_code >= 400 and case.path != "/readyz":
        body = json.loads(response.text)
        assert set(body) == {"error"}, (sent, body)
        assert {"message", "type", "param", "code"} <= set(body["error"]), (sent, body)


@SCHEMA.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, derandomize=FIXED,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_input_breaks_the_api_with_a_valid_key(case: schemathesis.Case, root: str) -> None:
    check(case, root, "admin", ADMIN)


@SCHEMA.parametrize()
@hypothesis.settings(max_examples=12, deadline=None, derandomize=FIXED,
                     suppress_health_check=list(hypothesis.HealthCheck))
@pytest.mark.parametrize("token", [None, "sg-not-a-key-0000000000000000"],
                         ids=["no-key", "bad-key"])
def test_no_input_breaks_the_api_without_a_valid_key(case: schemathesis.Case, root: str,
                                                     token: str | None) -> None:
    check(case, root, "no-key" if token is None else "bad-key", token)
