"""Managed prompt templates end to end: the official openai client names a template (in
``extra_body``, as OpenAI's Responses API does), the real gateway renders it, and a scripted
upstream shows exactly what it received; the records carry template and config versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from prompted import ADMIN, FILLED, QUESTION, SUPPORT, ask, prompted_config, records_of
from scripted import Script, scripted_upstream
from switchgear.cli.admin_client import admin_call

from servers import BackgroundLoop, break_glass, gateway


@pytest.fixture
def upstream(background: BackgroundLoop) -> Iterator[tuple[Script, str]]:
    script = Script()
    with scripted_upstream(script, background) as url:
        yield script, url


@pytest.fixture
def running(upstream: tuple[Script, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[str, Script, str]]:
    """A gateway (SQLite) with a bootstrap admin key; its /v1 URL, the script, the store."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    store = f"sqlite:///{tmp_path}/records.db"
    with gateway(prompted_config(upstream[1], store)) as base_url:
        yield base_url, upstream[0], store


def test_a_request_naming_a_template_reaches_the_upstream_rendered(
        running: tuple[str, Script, str]) -> None:
    base_url, script, store = running
    ask(base_url, {"id": "support", "variables": {"product": "Acme {{language}}",
                                                  "language": "French"}})
    rendered = {"role": "system", "content": "You support Acme {{language}}. Answer in French."}
    assert script.received[-1]["messages"] == [rendered, *QUESTION]
    assert "prompt" not in script.received[-1]
    # the template alone, streamed, with the SDK's typed variables and a pinned version
    with openai.OpenAI(base_url=base_url, api_key=ADMIN, max_retries=0) as sdk:
        chunks = list(sdk.chat.completions.create(
            model="chat", messages=[], stream=True, extra_body={"prompt": {
                "id": "support", "version": "1",
                "variables": {"product": {"type": "input_text", "text": "Acme"},
                              "language": "French"}}}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello there."
    assert script.received[-1]["messages"] == [
        {"role": "system", "content": "You support Acme. Answer in French."}]
    records = records_of(store, 2)
    assert [(r.prompt_name, r.prompt_version, r.config_version, r.status) for r in records] == \
        [("support", 1, 1, 200)] * 2
    listed = admin_call(base_url.removesuffix("/v1"), "GET", "/admin/prompts", ADMIN)
    assert listed["data"] == [{"name": "support", "version": 1, "description":
                               "first-line support", "variables": ["product", "language"],
                               "messages": 1}]


@pytest.mark.parametrize(("prompt", "error", "param", "text"), [
    ({"id": "nope"}, openai.NotFoundError, "prompt.id", "Prompt with id 'nope' not found."),
    ({"id": "support", "variables": {"product": "Acme"}}, openai.BadRequestError,
     "prompt.variables.language", "Missing prompt variable 'language'"),
    ({"id": "support", "variables": {**FILLED, "tone": "warm"}}, openai.BadRequestError,
     "prompt.variables.tone", "Unknown prompt variable 'tone'"),
    ({"id": "support", "variables": {**FILLED, "product": 7}}, openai.BadRequestError,
     "prompt.variables.product", "must be a string"),
    ({"id": "support", "version": 2, "variables": FILLED}, openai.BadRequestError,
     "prompt.version", "version 2 is not served: version 1 is"),
    ({"name": "support"}, openai.BadRequestError, "prompt", "prompt must be an object with id"),
])
def test_a_bad_reference_gets_an_openai_shaped_error_and_reaches_no_model(
        running: tuple[str, Script, str], prompt: dict[str, Any],
        error: type[openai.APIStatusError], param: str, text: str) -> None:
    base_url, script, store = running
    with pytest.raises(error) as raised:
        ask(base_url, prompt)
    body: Any = raised.value.body
    assert body["param"] == param and text in body["message"]
    assert body["type"] == "invalid_request_error"
    assert script.received == []
    (record,) = records_of(store, 1)
    assert record.status == raised.value.status_code
    assert record.prompt_name == prompt.get("id")
    assert record.prompt_version == (None if prompt.get("id") != "support" else 1)


def test_a_template_change_is_a_cache_miss(running: tuple[str, Script, str]) -> None:
    base_url, script, store = running
    reference = {"id": "support", "variables": FILLED}
    for _ in range(2):
        ask(base_url, reference, temperature=0)
    assert len(script.received) == 1  # the second was a hit
    changed = {**SUPPORT, "messages": [{"role": "system", "content": "You support {{product}} "
                                                                     "in {{language}}, briefly."}]}
    assert break_glass(base_url, ADMIN, {"prompts": {"support": changed}}) == 2
    ask(base_url, reference, temperature=0)
    assert len(script.received) == 2
    assert script.received[-1]["messages"][0]["content"] == "You support Acme in French, briefly."
    records = records_of(store, 3)
    assert [(r.cache_status, r.prompt_version, r.config_version) for r in records] == \
        [("miss", 1, 1), ("hit", 1, 1), ("miss", 2, 2)]
