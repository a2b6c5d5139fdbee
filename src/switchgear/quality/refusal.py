"""A refusal heuristic: does an answer decline to help?

It is a heuristic, not a classifier: it looks for the stock phrasings models use to decline
("I'm sorry, but I can't", "I cannot help with", "As an AI", ...) near the start of the answer,
where refusals put them. It misses refusals worded otherwise and can mistake an answer that
quotes such a phrase for one. Good enough to notice a *shift* in the refusal rate, which is what
the quality signals use it for; not good enough to judge a single answer with certainty.
"""

from __future__ import annotations

import re

from switchgear.exchange import Exchange, Operation

#: Only the answer's first characters are read: refusals open with their excuse, and the cost of
#: the check stays bounded however long the answer is.
HEAD_CHARS = 300

#: "I cannot" in its usual spellings (apostrophes are normalised to ' first).
_I_CANNOT = (r"\bi(?: can'?t| cannot| can not| won'?t| will not|'?m unable to| am unable to"
             r"|'?m not able to| am not able to)")
_PHRASES = (
    rf"\bsorry,? (?:but )?{_I_CANNOT}",
    rf"{_I_CANNOT} (?:help|assist|comply|provide|do that|fulfil|support|answer|engage|create"
    r"|generate|write|share|give)",
    r"\bas an ai(?: language model| assistant|,)",
    r"\bi apologi[sz]e,? but i (?:can|am|will|won)",
    r"\b(?:sorry|unfortunately),? (?:but )?(?:that'?s|this is) not something i can",
    r"\bi must (?:decline|refuse)",
)
#: Every phrase starts with s, i, a or u: the lookahead lets the search skip other positions
#: without trying each phrase there (four times faster on ordinary text).
_REFUSAL = re.compile("(?=[siau])(?:" + "|".join(f"(?:{phrase})" for phrase in _PHRASES) + ")",
                      re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Whether ``text`` reads like a refusal (a heuristic, see the module's docstring)."""
    return _REFUSAL.search(text[:HEAD_CHARS].replace("\u2019", "'")) is not None


def judge_refusal(exchange: Exchange) -> None:
    """A Recorder step: set ``exchange.refused`` for a successful chat or completions answer
    that nobody judged yet; other exchanges are left unjudged (None)."""
    if (exchange.refused is not None or exchange.status != 200
            or exchange.operation is Operation.EMBEDDINGS or exchange.truncated):
        return
    parts, length = [], 0
    for part in exchange.completion_text:
        parts.append(part)
        length += len(part)
        if length >= HEAD_CHARS:
            break
    exchange.refused = is_refusal("".join(parts))
