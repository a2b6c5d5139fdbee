"""What a simulated model server is like: its capacity, speed, output lengths and context window."""

from __future__ import annotations

from dataclasses import dataclass

from switchgear.config import SimulatedOptions

DEFAULT_CONTEXT_WINDOW = 8192
DEFAULT_EMBEDDING_DIMENSION = 64


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Settings of one simulated model.

    ``load_factor`` says how much slower each step gets when every slot is busy: with ``b`` other
    sequences running in ``s`` slots a step takes ``base * (1 + load_factor * b / s)``.
    ``output_spread`` is the sigma of the lognormal output-length distribution.
    ``seed`` seeds the output-length draws; ``None`` draws a fresh seed.
    ``cached_prompt_share`` is the share of each prompt's tokens reported as read from a prompt
    cache (``usage.prompt_tokens_details.cached_tokens``), as providers with prefix caching do.
    """

    model: str = "sim"
    slots: int = 8
    ttft_ms: float = 20.0
    tpot_ms: float = 2.0
    mean_output_tokens: int = 32
    output_spread: float = 0.5
    load_factor: float = 1.0
    context_window: int = DEFAULT_CONTEXT_WINDOW
    embedding_dimension: int = DEFAULT_EMBEDDING_DIMENSION
    seed: int | None = None
    cached_prompt_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("slots", "mean_output_tokens", "context_window", "embedding_dimension"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("ttft_ms", "tpot_ms", "output_spread", "load_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 <= self.cached_prompt_share <= 1:
            raise ValueError("cached_prompt_share must be between 0 and 1")

    @classmethod
    def of_deployment(
        cls, simulated: SimulatedOptions, model: str, context_window: int | None
    ) -> ModelOptions:
        """The options a deployment's ``simulated`` section describes."""
        return cls(
            model=model,
            slots=simulated.slots,
            ttft_ms=simulated.ttft_ms,
            tpot_ms=simulated.tpot_ms,
            mean_output_tokens=simulated.mean_output_tokens,
            context_window=context_window or DEFAULT_CONTEXT_WINDOW,
            seed=simulated.seed,
        )
