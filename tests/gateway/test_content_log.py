"""Prompts and completions are stored only when configured, and then redacted."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from switchgear.config import Config
from switchgear.guards.redact import redact

from servers import gateway, wait_for_record

SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
PRIVATE = ("Write to jane.roe@example.org, call +44 20 7946 0958, card 4111 1111 1111 1111, "
           "key sk-live-abcdefghijklmnopqrstuv")


@pytest.mark.parametrize("log_content", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_content_is_stored_only_when_asked_and_then_redacted(
    make_config: Callable[..., Config], tmp_path: object, log_content: bool, stream: bool
) -> None:
    config = make_config({"sim": SIM})
    config = config.model_validate({**config.model_dump(),
                                    "store": {**config.store.model_dump(),
                                              "log_content": log_content}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": PRIVATE}], max_tokens=5,
            stream=stream)
        answer = raw.parse()
        text = ("".join(c.choices[0].delta.content or "" for c in answer if c.choices)
                if stream else answer.choices[0].message.content)
        row = wait_for_record(config.store.url, raw.headers["x-request-id"])
    if not log_content:
        assert row.prompt is None and row.completion is None
        return
    assert row.prompt is not None and row.completion == text
    for secret in ("jane.roe@example.org", "7946 0958", "4111 1111 1111 1111", "sk-live-abc"):
        assert secret not in row.prompt
    for marker in ("email", "phone", "card", "api_key"):
        assert f"[REDACTED:{marker}]" in row.prompt


@pytest.mark.parametrize(("text", "kept"), [
    ("order 2024-11-26, 12 items at 3.50", True),
    ("card 4111 1111 1111 1112 fails Luhn", False),  # looks like a number run: phone-redacted
    ("plain words only", True),
])
def test_redaction_leaves_ordinary_text_alone(text: str, kept: bool) -> None:
    assert (redact(text) == text) is kept
