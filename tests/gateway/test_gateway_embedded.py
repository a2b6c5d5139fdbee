"""The zero-setup default: the gateway serving the embedded SmolLM2 model through llama.cpp."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchgear.config import DEFAULT_ALIAS, Config, StoreConfig

from servers import fetch_records, gateway, wait_for_record

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The default config (embedded model as 'smollm2') with records in a temporary SQLite file."""
    store_url = f"sqlite:///{tmp_path_factory.mktemp('embedded')}/records.db"
    config = Config(store=StoreConfig(url=store_url, flush_interval_ms=20))
    with gateway(config) as base_url:
        yield base_url, store_url


def test_the_default_config_serves_smollm2(embedded: tuple[str, str]) -> None:
    base_url, _ = embedded
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as sdk:
        assert [model.id for model in sdk.models.list().data] == [DEFAULT_ALIAS]


def test_chat_with_real_tokens_and_counted_usage(embedded: tuple[str, str]) -> None:
    base_url, store_url = embedded
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model=DEFAULT_ALIAS, max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        answer = raw.parse()
    text = answer.choices[0].message.content
    assert text and text.strip()
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5  # the chat template wraps the question
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.choices[0].finish_reason in ("stop", "length")
    row = wait_for_record(store_url, raw.headers["x-request-id"])
    assert (row.prompt_tokens, row.completion_tokens) == (answer.usage.prompt_tokens,
                                                          answer.usage.completion_tokens)
    assert row.deployment == "embedded" and row.status == 200


def test_streamed_chat_token_by_token_with_usage(embedded: tuple[str, str]) -> None:
    base_url, _ = embedded
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as sdk:
        chunks = list(sdk.chat.completions.create(
            model=DEFAULT_ALIAS, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Count from one to ten."}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= len(deltas) - 1
    assert usage.prompt_tokens > 0


def test_a_prompt_beyond_the_context_window_is_a_400(embedded: tuple[str, str]) -> None:
    base_url, _ = embedded
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as sdk, \
            pytest.raises(openai.BadRequestError) as error:
        sdk.chat.completions.create(model=DEFAULT_ALIAS, max_tokens=4, messages=[
            {"role": "user", "content": "lorem ipsum " * 2000}])
    assert error.value.code == "context_length_exceeded"


def test_the_engine_reports_its_slots_tokens_and_utilization_on_metrics(
    embedded: tuple[str, str],
) -> None:
    base_url, _ = embedded
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as sdk:
        sdk.chat.completions.create(model=DEFAULT_ALIAS, max_tokens=4, temperature=0,
                                    messages=[{"role": "user", "content": "Hello!"}])
    text = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics").read().decode()
    figures = {family.name: family.samples[0].value
               for family in text_string_to_metric_families(text)
               if family.name.startswith("switchgear_engine_")}
    assert figures["switchgear_engine_slots"] == 8
    assert figures["switchgear_engine_generated_tokens"] >= 4
    assert figures["switchgear_engine_busy_slots"] == 0
    assert 0 < figures["switchgear_engine_utilization_ratio"] <= 1


def _engine_figures(base_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics").read().decode()
    return {family.name: family.samples[0].value for family in text_string_to_metric_families(text)
            if family.name.startswith("switchgear_engine_")}


def test_a_client_leaving_a_plain_request_frees_its_slot(embedded: tuple[str, str]) -> None:
    base_url, store_url = embedded
    before = _engine_figures(base_url)["switchgear_engine_generated_tokens"]
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=0.5) as sdk, \
            pytest.raises(openai.APITimeoutError):
        sdk.chat.completions.create(
            model=DEFAULT_ALIAS, max_tokens=400, temperature=0,
            extra_headers={"x-switchgear-feature": "left-early"},
            messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}])
    deadline = time.monotonic() + 10
    while _engine_figures(base_url)["switchgear_engine_busy_slots"] and time.monotonic() < deadline:
        time.sleep(0.05)
    figures = _engine_figures(base_url)
    assert figures["switchgear_engine_busy_slots"] == 0
    assert figures["switchgear_engine_generated_tokens"] - before < 400  # withdrawn, not run out
    deadline = time.monotonic() + 10
    while not (rows := [r for r in fetch_records(store_url) if r.feature == "left-early"]):
        assert time.monotonic() < deadline, "the request that was left has no record"
        time.sleep(0.05)
    assert (rows[0].status, rows[0].error_type) == (499, "ClientClosed")
