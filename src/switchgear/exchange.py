"""The Exchange: one request's journey through the pipeline, filled in stage by stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Operation(StrEnum):
    """What the client asked for; each maps to one OpenAI endpoint."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


@dataclass(slots=True)
class Principal:
    """Who sent the request. Until API keys exist every request is the ``default`` tenant."""

    tenant: str = "default"
    key_id: str | None = None
    user: str | None = None
    feature: str | None = None
    role: str = "user"


@dataclass(slots=True)
class Usage:
    """Tokens counted for the request (as the backend reported them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Of the prompt tokens, those read from the upstream's prompt cache, and those written to
    #: it (Anthropic's cache_creation_input_tokens, priced as input with a premium).
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Charges:
    """What a request cost, by what it paid for: uncached input, cached input and output tokens,
    and its share of a self-hosted instance's time (``busy_s`` seconds of it)."""

    input: float = 0.0
    cached: float = 0.0
    output: float = 0.0
    instance: float = 0.0
    busy_s: float = 0.0

    @property
    def total(self) -> float:
        """All of it."""
        return self.input + self.cached + self.output + self.instance


@dataclass(slots=True)
class Attempt:
    """One try of the request against one deployment."""

    deployment: str
    started: float
    latency: float = 0.0
    outcome: str = "pending"  # ok | error
    error: str | None = None
    #: The model name the deployment was asked for (its upstream name).
    model: str = ""
    #: The attempt's span id: the parent of the upstream's spans (in its ``traceparent``).
    span_id: str = ""


@dataclass(slots=True)
class Exchange:
    """One request from arrival to record: what was asked, by whom, what happened, what it cost.

    Times are seconds since the epoch (``time.time()``); ``None`` means "not reached" (for a
    time, and for what a stage decides: ``resolved_alias``, ``priority``, ``cache_status``).
    """

    request_id: str
    operation: Operation
    body: dict[str, Any]
    model: str
    stream: bool = False
    #: The API the request came in through (its body is translated to ``operation``'s OpenAI
    #: shape for the pipeline, and the answer back): ``openai``, ``anthropic.messages``,
    #: ``openai.responses``, or ``openai.batch`` for a line of a batch (batch/runner.py).
    api: str = "openai"
    include_usage: bool = False
    #: W3C trace context: the trace (the client's, or a new one), the gateway's own span, the
    #: client's span (its parent) and whether the trace is sampled (exported).
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str | None = None
    sampled: bool = False
    principal: Principal = field(default_factory=Principal)
    #: The priority tier the request runs at: its key's, or the one it asked for in the
    #: ``x-switchgear-priority`` header (``requested_priority``) where allowed.
    priority: str | None = None
    requested_priority: str | None = None
    received: float = field(default_factory=time.time)
    admitted: float | None = None
    #: When the request reached the Prioritize stage, and when the Route stage began.
    queued_at: float | None = None
    routed: float | None = None
    #: Seconds spent waiting for a running place (priority gate) and a deployment slot.
    queue_wait: float | None = None
    #: Shed by the priority gate (a 503 for want of capacity, not a failure of the model).
    shed: bool = False
    first_token: float | None = None
    done: float | None = None
    #: ``time.monotonic()`` of each streamed chunk that carries choices (inter-token latency).
    chunk_times: list[float] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    deployment: str | None = None
    #: The alias whose deployment answered (a variant or a fallback may differ from ``model``).
    served_alias: str | None = None
    #: The alias that serves the request (the Resolve stage): ``model``, or the variant its
    #: experiment chose (also in ``variant``); fallbacks may still serve from another.
    resolved_alias: str | None = None
    #: The experiment variant (an alias) chosen for this request, if its alias splits traffic.
    variant: str | None = None
    #: The applied config version whose parts served this request (governance/).
    config_version: int | None = None
    #: The prompt template the request named, and the version of it that was rendered.
    prompt_name: str | None = None
    prompt_version: int | None = None
    #: hit, miss, coalesced or bypass (asked not to, or not cacheable).
    cache_status: str | None = None
    usage: Usage = field(default_factory=Usage)
    status: int = 200
    error_type: str | None = None
    truncated: bool = False
    cost: float = 0.0
    cost_basis: str = ""
    #: ``cost`` by what it paid for; None until priced (never, when nothing served it).
    charges: Charges | None = None
    #: What a cache hit or a coalesced answer saved (the cost of producing it).
    saved_cost: float = 0.0
    #: Tokens held in rate-limit buckets until the request is settled (admission's business).
    reservation: Any = None
    #: The answer's text as it was sent (guards, quality signals and the content log read it).
    completion_text: list[str] = field(default_factory=list)
    #: How the answer ended (its first choice's finish_reason), once it did.
    finish_reason: str | None = None
    #: Whether the answer was a refusal (a quality signal; None: not judged).
    refused: bool | None = None
    #: Whether the answer matched the JSON schema the request asked for (None: none asked).
    schema_valid: bool | None = None
    #: Whether the answer passed every output check (None: no output check ran).
    output_passed: bool | None = None
    #: The strongest guard action taken: flag, redact or block (None: no check objected).
    guard_action: str | None = None
    #: The guard checks that ran: check, stage, verdict, action and reason of each.
    checks: list[dict[str, str]] = field(default_factory=list)
    #: Redacted prompt and completion for the record (content logging only).
    stored_prompt: str | None = None
    stored_completion: str | None = None
    #: Extra response headers (e.g. ``x-ratelimit-*``) the stages want the client to see.
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def waited(self, seconds: float) -> None:
        """Add ``seconds`` of queueing to the request's queue wait."""
        self.queue_wait = (self.queue_wait or 0.0) + seconds

    @property
    def latency(self) -> float | None:
        """End-to-end seconds, once done."""
        return None if self.done is None else self.done - self.received

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from arrival to the first token (or the whole answer when not streamed)."""
        return None if self.first_token is None else self.first_token - self.received
