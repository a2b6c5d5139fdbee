"""Rate limits through the gateway: RPM, TPM reserve-and-settle, and one limit shared by two
gateway processes through a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
import yaml

from switchgear.config import Config

from servers import free_port, gateway

SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0, "mean_output_tokens": 4}}]}
HELLO = [{"role": "user", "content": "hi"}]


def limited(make_config: Callable[..., Config], limits: dict[str, Any]) -> Config:
    config = make_config({"sim": SIM})
    return config.model_validate({**config.model_dump(), "limits": limits})


def test_requests_per_minute_refuse_with_retry_after_and_headers(
    make_config: Callable[..., Config]
) -> None:
    config = limited(make_config, {"tenants": {"default": {"rpm": 5}}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        for _ in range(5):
            raw = sdk.chat.completions.with_raw_response.create(model="sim", messages=HELLO,
                                                                max_tokens=1)
            assert raw.headers["x-ratelimit-limit-requests"] == "5"
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=1)
    headers = refused.value.response.headers
    assert float(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "tenant:default" in refused.value.message


def test_tokens_are_reserved_then_settled_with_the_real_usage(
    make_config: Callable[..., Config]
) -> None:
    config = limited(make_config, {"models": {"sim": {"tpm": 200}}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        # Each reserves ~160 tokens; only settling back to the ~10 really used lets the next in.
        for _ in range(3):
            answer = sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=150)
            assert answer.usage is not None and answer.usage.total_tokens < 40
            time.sleep(0.05)  # settlement runs right after the answer, in the background
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=195)
        assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "200"
        with pytest.raises(openai.RateLimitError) as too_large:
            sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=5000)
        assert too_large.value.code == "request_too_large"


@contextmanager
def two_gateways(tmp_path: Path, models: dict[str, Any], limits: dict[str, Any]
                 ) -> Iterator[list[str]]:
    """Two `switchgear serve` processes sharing one real Redis under a fresh key prefix;
    yields their /v1 base URLs."""
    ports = [free_port(), free_port()]
    shared = {"state_url": "redis://127.0.0.1:6379/0",
              "state_prefix": f"switchgear-test-{uuid.uuid4().hex[:8]}:", **limits}
    servers = []
    for index, port in enumerate(ports):
        config_file = tmp_path / f"gateway-{index}.yaml"
        config_file.write_text(yaml.safe_dump({
            "server": {"port": port, "drain_grace_s": 0}, "models": models, "limits": shared,
            "store": {"url": f"sqlite:///{tmp_path}/records-{index}.db"}}))
        servers.append(subprocess.Popen([sys.executable, "-m", "switchgear", "serve", "--config",
                                         str(config_file), "--log-level", "warning"]))
    try:
        for port in ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib3.request("GET", f"http://127.0.0.1:{port}/healthz", retries=False,
                                       timeout=1).status == 200:
                        break
                except urllib3.exceptions.HTTPError:
                    pass
                assert time.monotonic() < deadline, "a gateway did not start"
                time.sleep(0.1)
        yield [f"http://127.0.0.1:{port}/v1" for port in ports]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(30)


def alternate(urls: list[str], count: int, max_tokens: int, pause: float = 0.0
              ) -> list[tuple[int, dict[str, Any]]]:
    """``count`` requests sent in turn to each gateway; (status, body) of each."""
    answers = []
    for attempt in range(count):
        response = urllib3.request("POST", urls[attempt % 2] + "/chat/completions", timeout=10,
                                   json={"model": "sim", "messages": HELLO,
                                         "max_tokens": max_tokens})
        answers.append((response.status, json.loads(response.data)))
        time.sleep(pause)  # lets the previous request's tokens and cost settle
    return answers


def test_two_processes_sharing_redis_admit_n_requests_per_minute_not_2n(tmp_path: Path) -> None:
    with two_gateways(tmp_path, {"sim": SIM}, {"models": {"sim": {"rpm": 10}}}) as urls:
        statuses = [status for status, _ in alternate(urls, 30, 1)]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20


def test_two_processes_sharing_redis_share_tokens_per_minute(tmp_path: Path) -> None:
    limit = 250
    reserve = len(str(HELLO)) // 4 + 200  # what admission reserves: prompt estimate + max_tokens
    with two_gateways(tmp_path, {"sim": SIM}, {"models": {"sim": {"tpm": limit}}}) as urls:
        answers = alternate(urls, 16, 200, pause=0.1)
    refused = next(index for index, (status, _) in enumerate(answers) if status == 429)
    used = sum(body["usage"]["total_tokens"] for status, body in answers[:refused])
    biggest = max(body["usage"]["total_tokens"] for status, body in answers[:refused])
    # Refused once the tokens used by both processes together left no room for a reservation
    # (give or take the refill, about 4 tokens a second); a counter per process would have let
    # each process use that much before refusing.
    assert limit - reserve - 15 <= used <= limit - reserve + biggest + 15
    assert refused >= 2 and answers[refused][1]["error"]["type"] == "rate_limit_error"


def test_two_processes_sharing_redis_share_a_budget(tmp_path: Path) -> None:
    priced = {"deployments": [{**SIM["deployments"][0],  # type: ignore[index]
                               "price": {"input_per_million": 1000, "output_per_million": 1000}}]}
    budget = 0.05
    with two_gateways(tmp_path, {"sim": priced}, {
            "budgets": {"tenants": {"default": {"daily": budget}}}}) as urls:
        answers = alternate(urls, 30, 4, pause=0.1)
    refused = next(index for index, (status, _) in enumerate(answers) if status == 429)
    spent = [body["usage"]["total_tokens"] * 1000 / 1e6 for _, body in answers[:refused]]
    # the first refusal follows the total both processes spent (float sums: a hair of slack)
    assert sum(spent) >= budget - 1e-9 and sum(spent[:-1]) < budget - 1e-9
    assert answers[refused][1]["error"]["code"] == "insufficient_quota"


def test_a_tenant_budget_stops_spending_and_warns_first(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    priced = {"deployments": [{**SIM["deployments"][0],  # type: ignore[index]
                               "price": {"input_per_million": 1000, "output_per_million": 1000}}]}
    config = make_config({"sim": priced})
    config = config.model_validate({**config.model_dump(), "limits": {
        "budgets": {"tenants": {"default": {"daily": 0.025, "soft": 0.5}}}}})
    spent = 0.0
    with caplog.at_level("WARNING"), gateway(config) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk, \
            pytest.raises(openai.RateLimitError) as refused:
        for _ in range(10):
            answer = sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=4)
            assert answer.usage is not None
            spent += answer.usage.total_tokens * 1000 / 1e6
            time.sleep(0.05)  # the cost is added right after the answer, in the background
    assert refused.value.code == "insufficient_quota"
    assert float(refused.value.response.headers["retry-after"]) > 0
    assert 0.025 <= spent < 0.025 + 0.02  # refused on the first request after the limit
    assert any("soft" in m.lower() for m in caplog.messages)
