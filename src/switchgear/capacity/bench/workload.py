"""What bench sends: synthetic prompts with input and output length distributions, or prompts
from a JSONL file, encoded once into ready-to-send requests."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from switchgear.capacity.bench.client import Endpoint, Request
from switchgear.simulator.text import estimate_tokens

CHAT = "chat"
COMPLETIONS = "completions"
OPERATION_PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions"}
DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal")

#: Common English words of three letters: with their leading space four characters, one token
#: in BPE vocabularies and by the four-characters-a-token estimate alike.
_WORDS = ("the", "and", "for", "you", "not", "are", "all", "new", "was", "can", "has", "but",
          "our", "one", "may", "out", "use", "any", "see", "his", "who", "now", "get", "how",
          "day", "way", "two", "man", "old", "big", "end", "why", "let", "put", "say", "she")


@dataclass(frozen=True, slots=True)
class Lengths:
    """A token-length distribution: ``fixed``, ``uniform`` (mean ± spread·mean), ``normal``
    (standard deviation spread·mean) or ``lognormal`` (sigma = spread), never below 1."""

    mean: int
    dist: str = "fixed"
    spread: float = 0.0

    def __post_init__(self) -> None:
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        if self.mean < 1 or self.spread < 0:
            raise ValueError("a length needs a mean of at least 1 and a spread not negative")

    @classmethod
    def parse(cls, text: str) -> Lengths:
        """``128`` (fixed) or ``DIST:MEAN[:SPREAD]``, e.g. ``lognormal:128:0.5``."""
        parts = text.split(":")
        try:
            if len(parts) == 1:
                return cls(int(parts[0]))
            spread = float(parts[2]) if len(parts) > 2 else 0.25
            return cls(int(parts[1]), parts[0], spread)
        except (IndexError, ValueError) as error:
            raise ValueError(f"{text!r}: expected MEAN or DIST:MEAN[:SPREAD] ({error})") from None

    def draw(self, rng: random.Random) -> int:
        """One length."""
        if self.dist == "uniform":
            half = self.spread * self.mean
            value = rng.uniform(self.mean - half, self.mean + half)
        elif self.dist == "normal":
            value = rng.gauss(self.mean, self.spread * self.mean)
        elif self.dist == "lognormal":
            mu = math.log(self.mean) - self.spread * self.spread / 2
            value = rng.lognormvariate(mu, self.spread)
        else:
            value = self.mean
        return max(1, round(value))

    def describe(self) -> dict[str, Any]:
        """The profile's description: mean, distribution, spread."""
        return {"mean": self.mean, "dist": self.dist, "spread": self.spread}


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt: chat messages or completion text, its estimated tokens, and the output
    tokens to ask for (None: the server decides)."""

    text: str | None
    messages: list[dict[str, Any]] | None
    input_tokens: int
    max_tokens: int | None


@dataclass(frozen=True, slots=True)
class Workload:
    """The prompts, how they are sent, and its profile description."""

    prompts: list[Prompt]
    description: dict[str, Any]

    def requests(self, endpoint: Endpoint, operation: str, model: str, *, stream: bool,
                 ignore_eos: bool, headers: dict[str, str]) -> list[Request]:
        """Every prompt as a ready-to-send request."""
        return [Request(endpoint.request_bytes(_body(prompt, operation, model, stream,
                                                     ignore_eos), headers),
                        stream, prompt.input_tokens)
                for prompt in self.prompts]


def synthetic(input_lengths: Lengths, output_lengths: Lengths, count: int,
              seed: int | None) -> Workload:
    """``count`` distinct prompts of drawn lengths (seeded: the same seed, the same prompts)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        tokens = input_lengths.draw(rng)
        text = " ".join(rng.choice(_WORDS) for _ in range(tokens))
        prompts.append(Prompt(text, None, tokens, output_lengths.draw(rng)))
    return Workload(prompts, {"kind": "synthetic", "input_tokens": input_lengths.describe(),
                              "output_tokens": output_lengths.describe(), "file": None})


def from_jsonl(path: Path, output_lengths: Lengths | None, seed: int | None) -> Workload:
    """Prompts from a JSONL file, one object a line: ``{"prompt": "..."}`` or
    ``{"messages": [...]}``, optionally ``"max_tokens"``; lines without one take a length drawn
    from ``output_lengths`` (None: the server decides)."""
    rng = random.Random(seed)
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompts.append(_jsonl_prompt(item, output_lengths, rng))
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return Workload(prompts, {
        "kind": "file", "file": str(path), "prompts": len(prompts),
        "input_tokens": {"mean": round(sum(p.input_tokens for p in prompts) / len(prompts), 1),
                         "dist": "file"},
        "output_tokens": output_lengths.describe() if output_lengths else None})


def _jsonl_prompt(item: Any, output_lengths: Lengths | None, rng: random.Random) -> Prompt:
    if not isinstance(item, dict):
        raise TypeError("each line must be a JSON object")
    max_tokens = item.get("max_tokens")
    if max_tokens is None and output_lengths is not None:
        max_tokens = output_lengths.draw(rng)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError("max_tokens must be a positive integer")
    if isinstance(item.get("messages"), list):
        text = " ".join(str(message.get("content", "")) for message in item["messages"])
        return Prompt(None, item["messages"], estimate_tokens(text), max_tokens)
    if isinstance(item.get("prompt"), str):
        return Prompt(item["prompt"], None, estimate_tokens(item["prompt"]), max_tokens)
    raise KeyError("each line needs a 'prompt' string or a 'messages' array")


def _body(prompt: Prompt, operation: str, model: str, stream: bool, ignore_eos: bool) -> bytes:
    body: dict[str, Any] = {"model": model}
    if operation == CHAT:
        body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text or ""}]
    else:
        body["prompt"] = prompt.text if prompt.text is not None else " ".join(
            str(message.get("content", "")) for message in prompt.messages or [])
    if prompt.max_tokens is not None:
        body["max_tokens"] = prompt.max_tokens
        if ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = prompt.max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)
