"""The OpenAI surface end to end: real gateway, real simulator over HTTP, the official client."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, gateway

HELLO = [{"role": "user", "content": "Say hello"}]


def http_deployment(name: str, sim: RunningSimulator, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim", **extra}


def rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("select * from request_log")]


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def test_chat_plain_and_streamed_through_openai_http(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = simulators()
    config = make_config({"chat": {"deployments": [http_deployment(
        "sim-a", sim, price={"input_per_million": 1.0, "output_per_million": 2.0})]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="chat", messages=HELLO,
                                                            max_tokens=5)
        answer = raw.parse()
        request_id = raw.headers["x-request-id"]
        assert answer.choices[0].message.content
        assert answer.usage is not None
        assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 5

        chunks = list(sdk.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=6, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        streamed_tokens = chunks[-1].usage.completion_tokens

        plain_stream = list(sdk.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=4, stream=True))
        assert all(c.usage is None for c in plain_stream)  # not asked for, not sent
        assert all(c.choices for c in plain_stream)

    records = {r["request_id"]: r for r in rows(tmp_path / "records.db")}
    assert len(records) == 3
    first = records[request_id]
    assert first["model"] == "chat" and first["deployment"] == "sim-a"
    assert first["status"] == 200 and first["stream"] == 0 and first["error_type"] is None
    assert first["prompt_tokens"] == answer.usage.prompt_tokens
    assert first["completion_tokens"] == answer.usage.completion_tokens
    assert first["cost"] == pytest.approx(
        (answer.usage.prompt_tokens * 1.0 + answer.usage.completion_tokens * 2.0) / 1e6)
    assert first["received_at"] <= first["first_token_at"] <= first["done_at"]
    streamed = [r for r in records.values() if r["stream"]]
    assert len(streamed) == 2
    assert any(r["completion_tokens"] == streamed_tokens for r in streamed)
    assert all(r["completion_tokens"] > 0 and r["truncated"] == 0 for r in streamed)
    assert first["finish_reason"] == answer.choices[0].finish_reason
    assert chunks[-2].choices[0].finish_reason in {r["finish_reason"] for r in streamed}
    assert {r["finish_reason"] for r in streamed} <= {"stop", "length"}


def test_completions_embeddings_and_models_via_simulated_backend(
    make_config: Callable[..., Config]
) -> None:
    config = make_config({"sim": {"deployments": [
        {"name": "local", "backend": "simulated", "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        completion = sdk.completions.create(model="sim", prompt="Once upon a time", max_tokens=4)
        assert completion.choices[0].text and completion.usage is not None
        streamed = list(sdk.completions.create(model="sim", prompt="Once", max_tokens=4,
                                               stream=True))
        assert "".join(c.choices[0].text for c in streamed if c.choices)
        embedding = sdk.embeddings.create(model="sim", input=["a", "b"])
        assert len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0
        models = sdk.models.list()
        assert [m.id for m in models.data] == ["sim"]


def test_upstream_errors_reach_the_sdk_as_the_right_exception(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    limited = simulators(faults=Faults(error_rate=1.0, error_status=429))
    broken = simulators(faults=Faults(error_rate=1.0, error_status=500))
    config = make_config({
        "limited": {"deployments": [http_deployment("l", limited)]},
        "broken": {"deployments": [http_deployment("b", broken)]},
    })
    with gateway(config) as base_url, client(base_url) as sdk:
        with pytest.raises(openai.RateLimitError) as limited_error:
            sdk.chat.completions.create(model="limited", messages=HELLO)
        assert limited_error.value.response.headers.get("retry-after")
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="broken", messages=HELLO)
        with pytest.raises(openai.InternalServerError):
            list(sdk.chat.completions.create(model="broken", messages=HELLO, stream=True))


def test_a_failure_before_the_first_byte_is_retried_on_another_deployment(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    healthy = simulators()
    resetting = simulators(faults=Faults(reset_rate=1.0))
    config = make_config({"chat": {"deployments": [
        http_deployment("healthy", healthy), http_deployment("resetting", resetting, weight=100)]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        for stream in (False, True) * 10:
            if stream:
                assert list(sdk.chat.completions.create(model="chat", messages=HELLO,
                                                        max_tokens=3, stream=True))
            else:
                assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3)
    records = rows(tmp_path / "records.db")
    assert len(records) == 20
    assert all(r["status"] == 200 and r["deployment"] == "healthy" for r in records)
    assert any(r["attempts"] == 2 for r in records)  # the resetting one was tried first, mostly


def test_a_dead_deployment_alone_gives_a_503_with_retry_after(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config({"chat": {"deployments": [
        {"name": "dead", "backend": "openai_http", "url": "http://127.0.0.1:9/v1"}]}})
    with gateway(config) as base_url:
        with client(base_url) as sdk, pytest.raises(openai.InternalServerError) as error:
            sdk.chat.completions.create(model="chat", messages=HELLO)
        assert error.value.status_code == 503
        assert error.value.response.headers["retry-after"]
    (record,) = rows(tmp_path / "records.db")
    assert record["status"] == 503 and record["error_type"] == "UpstreamConnectError"


def test_weights_spread_the_load(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    heavy, light = simulators(), simulators()
    config = make_config({"chat": {"deployments": [
        http_deployment("heavy", heavy, weight=3), http_deployment("light", light, weight=1)]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        for _ in range(200):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=1)
    served = [r["deployment"] for r in rows(tmp_path / "records.db")]
    # 200 draws at p=3/4: the heavy one serves between 120 and 180 with overwhelming probability.
    assert 120 <= served.count("heavy") <= 180
    assert served.count("heavy") + served.count("light") == 200


def test_a_stream_cut_in_the_middle_ends_with_an_error_event(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    cutting = simulators(ModelOptions(ttft_ms=1, tpot_ms=1, mean_output_tokens=40, seed=1),
                        Faults(disconnect_rate=1.0))
    config = make_config({"chat": {"deployments": [http_deployment("cut", cutting)]}})
    with gateway(config) as base_url:
        sdk = client(base_url)
        stream = sdk.chat.completions.create(model="chat", messages=HELLO,
                                                          max_tokens=40, stream=True)
        received = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                received.append(chunk)
        assert received  # the failure came after the first byte: no retry, an error event
        sdk.close()
    (record,) = rows(tmp_path / "records.db")
    assert record["truncated"] == 1 and record["status"] == 502 and record["attempts"] == 1


def test_health_readiness_and_metrics(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    background: BackgroundLoop
) -> None:
    sim = simulators()
    config = make_config({"chat": {"deployments": [http_deployment("sim-a", sim)]}})
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        assert urllib3.request("GET", root + "/healthz").status == 200
        ready = urllib3.request("GET", root + "/readyz")
        assert ready.status == 200 and json.loads(ready.data)["status"] == "ready"
        with client(base_url) as sdk:
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        metrics = urllib3.request("GET", root + "/metrics").data.decode()
        assert ('switchgear_requests_total{deployment="sim-a",feature="",model="chat",status="200",'
                'tenant="default"} 1.0') in metrics
        assert "switchgear_time_to_first_token_seconds_bucket" in metrics
        assert 'switchgear_tokens_total{deployment="sim-a",direction="output",model="chat"}' in metrics
        assert "switchgear_in_flight_requests 0.0" in metrics
        background.run(sim.stop())
        unready = urllib3.request("GET", root + "/readyz")
        assert unready.status == 503
        assert json.loads(unready.data)["deployments"]["chat/sim-a"] != "ok"


def test_the_api_key_is_read_from_the_environment_and_forwarded(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulators(api_key="upstream-secret")
    monkeypatch.setenv("SG_TEST_UPSTREAM_KEY", "upstream-secret")
    config = make_config({
        "keyed": {"deployments": [http_deployment("k", sim, api_key_env="SG_TEST_UPSTREAM_KEY")]},
        "keyless": {"deployments": [http_deployment("n", sim)]},
    })
    with gateway(config) as base_url, client(base_url) as sdk:
        assert sdk.chat.completions.create(model="keyed", messages=HELLO, max_tokens=2)
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.chat.completions.create(model="keyless", messages=HELLO, max_tokens=2)
        assert refused.value.status_code == 502  # the gateway's credentials, not the client's
        assert "upstream-secret" not in refused.value.message
