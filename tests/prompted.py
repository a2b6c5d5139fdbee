"""A gateway with managed prompt templates, for tests: its config over an upstream, and a chat
request naming a template sent with the official openai client."""

from __future__ import annotations

import time
from typing import Any

import openai

from switchgear.config import Config, parse_config
from switchgear.store.records import RequestRecord

from servers import fetch_records

ADMIN = "sg-prompt-admin-0123456789abcdef012345678"
SUPPORT = {"description": "first-line support",
           "messages": [{"role": "system", "content": "You support {{product}}. Answer in "
                                                      "{{language}}."}]}
QUESTION = [{"role": "user", "content": "My order is late."}]
FILLED = {"product": "Acme", "language": "French"}


def prompted_config(upstream: str, store_url: str) -> Config:
    """Alias chat over the scripted upstream, priced, with the template ``support``."""
    return parse_config({
        "models": {"chat": {"deployments": [{
            "name": "s", "backend": "openai_http", "url": upstream, "model": "scripted",
            "price": {"input_per_million": 1000.0, "output_per_million": 3000.0}}]}},
        "prompts": {"support": SUPPORT},
        "store": {"url": store_url, "flush_interval_ms": 20}})


def ask(base_url: str, prompt: dict[str, Any], messages: list[dict[str, str]] | None = None,
        **extra: Any) -> str:
    """Send one chat request naming ``prompt``; its request id."""
    with openai.OpenAI(base_url=base_url, api_key=ADMIN, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="chat", messages=QUESTION if messages is None else messages,  # type: ignore[arg-type]
            extra_body={"prompt": prompt}, **extra)
        raw.parse()
        return str(raw.headers["x-request-id"])


def records_of(store_url: str, count: int) -> list[RequestRecord]:
    """Every record, once there are ``count`` of them, oldest first."""
    deadline = time.monotonic() + 10
    while True:
        found = sorted(fetch_records(store_url), key=lambda r: r.received_at)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
