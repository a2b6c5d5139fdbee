"""Token counting by estimate, and the deterministic filler text simulated models answer with."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle

#: Words the simulated model "generates", one token each, in this order.
FILLER_WORDS = (
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    " Simulated", " tokens", " flow", " at", " a", " steady", " pace", ",", " one", " by",
    " one", ",", " until", " the", " answer", " is", " complete", ".",
)

#: What a simulated model says when it refuses (the ``refusal_rate`` fault), one token a word.
REFUSAL_WORDS = ("I'm", " sorry", ",", " but", " I", " can't", " help", " with", " that", ".")


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the usual rule of thumb (four characters each), at least one."""
    return max(1, (len(text) + 3) // 4)


def filler_words() -> Iterator[str]:
    """An endless, always identical sequence of one-token words."""
    return cycle(FILLER_WORDS)
