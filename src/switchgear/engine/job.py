"""What the engine is asked to do (requests, jobs) and what it answers (events)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from switchgear.exchange import Usage
from switchgear.sections.tiers import TIERS


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to generate: ``max_tokens=None`` means until end of text or a full context window."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Generate the assistant's next message after ``messages`` (the model's chat template)."""

    messages: list[dict[str, Any]]
    sampling: SamplingParams = SamplingParams()


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """Continue the raw text ``prompt``."""

    prompt: str
    sampling: SamplingParams = SamplingParams()


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Embed each of ``inputs`` as one vector."""

    inputs: tuple[str, ...]


EngineRequest = ChatRequest | CompletionRequest | EmbeddingRequest


@dataclass(eq=False, slots=True)
class Job:
    """One request waiting for or running on the engine, and whether its client still wants it.

    ``cancelled`` is set from the event loop and read by the engine between steps.
    """

    request: EngineRequest
    tier: str = "standard"
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; expected one of {', '.join(TIERS)}")

    def cancel(self) -> None:
        """Ask the engine to stop this job before its next step."""
        self.cancelled.set()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Text of newly generated tokens (normally one token; a held-back stop prefix may be more)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a job: why it ended, the tokens it counted and, for embeddings, the vectors.

    ``finish_reason`` is ``"stop"`` (end of text, a stop sequence, or cancelled) or ``"length"``
    (``max_tokens`` or the context window reached).
    """

    finish_reason: str
    usage: Usage
    embeddings: list[list[float]] | None = None


EngineEvent = TokenDelta | Finished
