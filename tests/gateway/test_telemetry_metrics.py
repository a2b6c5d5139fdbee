"""/metrics after real traffic: the official openai client, the gateway and simulators on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway, scrape, total

HELLO = [{"role": "user", "content": "Say hello"}]
ADMIN = "sg-telemetry-admin-0123456789abcdef0123"


def sim_deployment(name: str, sim: RunningSimulator) -> dict[str, Any]:
    return {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim"}


def configure(tmp_path: Path, models: dict[str, Any], **sections: Any) -> Config:
    return parse_config({"models": models, "routing": {"health_check_interval_s": None},
                         "store": {"url": f"sqlite:///{tmp_path}/records.db",
                                   "flush_interval_ms": 20}, **sections})


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def test_latency_histograms_count_what_the_client_saw(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = simulators(ModelOptions(ttft_ms=5, tpot_ms=1, mean_output_tokens=6, seed=5))
    config = configure(tmp_path, {"sim": {"deployments": [sim_deployment("a", sim)]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        multi_token_streams = chunks_with_choices = output_tokens = 0
        for number in range(6):
            stream = sdk.chat.completions.create(
                model="sim", messages=[{"role": "user", "content": f"count to {number}"}],
                max_tokens=1 + number, stream=True, stream_options={"include_usage": True})
            with stream:
                seen = list(stream)
            chunks = sum(1 for chunk in seen if chunk.choices)
            chunks_with_choices += chunks
            usage = seen[-1].usage
            assert usage is not None
            multi_token_streams += usage.completion_tokens > 1
            output_tokens += usage.completion_tokens
        for _ in range(3):
            answer = sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=4)
            assert answer.usage is not None
            output_tokens += answer.usage.completion_tokens
        samples = scrape(base_url)
    series = {"model": "sim", "deployment": "a", "tenant": "default", "feature": ""}
    assert total(samples, "switchgear_requests_total", status="200", **series) == 9
    assert total(samples, "switchgear_request_duration_seconds_count", **series) == 9
    assert total(samples, "switchgear_time_to_first_token_seconds_count", **series) == 9
    assert 0 < multi_token_streams < 6  # one-token streams exist and have no TPOT
    assert total(samples, "switchgear_time_per_output_token_seconds_count",
                 **series) == multi_token_streams
    # one gap between each two consecutive chunks of a stream
    assert total(samples, "switchgear_inter_token_latency_seconds_count",
                 **series) == chunks_with_choices - 6
    assert total(samples, "switchgear_inter_token_latency_seconds_bucket", le="+Inf",
                 **series) == chunks_with_choices - 6
    assert total(samples, "switchgear_output_tokens_per_second_count", **series) == 9
    assert total(samples, "switchgear_tokens_total", direction="output") == output_tokens
    assert total(samples, "switchgear_queue_wait_seconds_count", priority="standard") == 9
    assert total(samples, "switchgear_retries_total") == 0
    assert total(samples, "switchgear_shed_requests_total") == 0


def test_retries_are_counted_per_deployment_retried_on(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    broken = simulators(faults=Faults(error_rate=1.0, error_status=500))
    healthy = simulators()
    config = configure(tmp_path, {"sim": {"policy": "priority", "deployments": [
        sim_deployment("broken", broken), sim_deployment("healthy", healthy)]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        for _ in range(3):
            sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=2)
        samples = scrape(base_url)
    records = fetch_records(config.store.url)
    retried = sum(record.attempts - 1 for record in records)
    assert retried == 3
    assert total(samples, "switchgear_retries_total", model="sim", deployment="healthy") == 3
    assert total(samples, "switchgear_retries_total", deployment="broken") == 0
    assert total(samples, "switchgear_upstream_errors_total", deployment="broken") == 3
    assert total(samples, "switchgear_requests_total", status="200", deployment="healthy") == 3


def test_a_shed_request_is_counted_and_a_served_one_is_not(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = simulators(ModelOptions(ttft_ms=5, tpot_ms=20, mean_output_tokens=20, seed=1))
    no_queue = {"max_queue": 0, "wait_target_ms": 100}
    config = configure(tmp_path, {"sim": {"deployments": [sim_deployment("a", sim)]}},
                       tiers={"capacity": 1, "max_waiting": None, "interactive": no_queue,
                              "standard": no_queue, "batch": no_queue})
    with gateway(config) as base_url, client(base_url) as sdk:
        stream = sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=20,
                                             stream=True)
        with stream:
            next(iter(stream))  # the only running place is held until the stream ends
            with pytest.raises(openai.InternalServerError) as shed:
                sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=2)
            assert shed.value.status_code == 503
            list(stream)
        samples = scrape(base_url)
    labels = {"model": "sim", "tenant": "default", "priority": "standard"}
    assert total(samples, "switchgear_shed_requests_total", **labels) == 1
    assert total(samples, "switchgear_requests_total", status="503") == 1
    assert total(samples, "switchgear_requests_total", status="200") == 1
    assert total(samples, "switchgear_queue_wait_seconds_count", **labels) == 2


def test_tenants_and_features_beyond_the_cap_read_other(
    simulators: Callable[..., RunningSimulator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    sim = simulators()
    config = configure(tmp_path, {"sim": {"deployments": [sim_deployment("a", sim)]}},
                       telemetry={"max_label_values": 2})
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        for tenant in ("acme", "globex", "initech"):
            made = urllib3.request("POST", root + "/admin/keys", json={
                "tenant": tenant, "name": "telemetry"}, headers={"Authorization": f"Bearer {ADMIN}"})
            assert made.status == 201
            with client(base_url, json.loads(made.data)["secret"]) as sdk:
                for feature in ("search", "chat", "summaries"):
                    sdk.chat.completions.create(model="sim", messages=HELLO, max_tokens=2,
                                                extra_headers={"x-switchgear-feature": feature})
        samples = scrape(base_url)
    count = "switchgear_request_duration_seconds_count"
    assert total(samples, count, tenant="acme") == 3
    assert total(samples, count, tenant="globex") == 3
    assert total(samples, count, tenant="other") == 3
    assert total(samples, count, tenant="initech") == 0
    assert total(samples, count, feature="search") == 3
    assert total(samples, count, feature="chat") == 3
    assert total(samples, count, feature="other") == 3
    assert total(samples, "switchgear_requests_total", tenant="other", feature="other") == 1


def test_the_gates_queue_depth_per_tier_is_on_metrics(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    """What an autoscaler reads as queue depth: with one running place, three requests leave
    one running and two waiting in the standard queue, then none."""
    sim = simulators(ModelOptions(ttft_ms=1500, tpot_ms=1, mean_output_tokens=2, seed=1))
    config = configure(tmp_path, {"sim": {"deployments": [sim_deployment("a", sim)]}},
                       tiers={"capacity": 1, "standard": {"max_queue": 10,
                                                          "wait_target_ms": 30_000}})
    with gateway(config) as base_url, client(base_url) as sdk, \
            ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(sdk.chat.completions.create, model="sim", messages=HELLO,
                               max_tokens=2) for _ in range(3)]
        deadline = time.monotonic() + 30
        while total(scrape(base_url), "switchgear_tier_waiting", tier="standard") < 2:
            assert time.monotonic() < deadline, "two requests never waited"
            time.sleep(0.02)
        during = scrape(base_url)
        for answer in answers:
            answer.result(60)
        after = scrape(base_url)
    assert total(during, "switchgear_tier_running", tier="standard") == 1
    assert total(during, "switchgear_tier_waiting", tier="interactive") == 0
    assert total(after, "switchgear_tier_waiting") == total(after, "switchgear_tier_running") == 0
