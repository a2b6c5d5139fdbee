"""The refusal heuristic on answers that refuse and answers that do not, and its Recorder step."""

from __future__ import annotations

import pytest

from switchgear.exchange import Exchange, Operation
from switchgear.quality.refusal import HEAD_CHARS, is_refusal, judge_refusal

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I\u2019m sorry, but I can\u2019t assist with this request.",  # typographic apostrophes
    "I am sorry, but I cannot provide instructions for that.",
    "Sorry, I can't do that.",
    "I cannot help with creating malware.",
    "I can't assist with that request.",
    "As an AI language model, I do not have personal opinions.",
    "As an AI, I don't browse the web.",
    "I apologize, but I am not able to share that information.",
    "I'm unable to help with this.",
    "Unfortunately, that's not something I can help with.",
    "I must decline to answer that.",
    "I won't provide that information.",
    "I'M SORRY, BUT I CANNOT COMPLY.",
]

ANSWERS = [
    "The capital of France is Paris.",
    "Sure! Here is a haiku:\nautumn moonlight / a worm digs silently / into the chestnut",
    "You can't divide by zero: the result is undefined.",
    "If the test fails, I cannot tell why without the log; please paste it.",
    "The quick brown fox jumps over the lazy dog.",
    "Hi can't wait to see you",  # 'i can't' inside another word
    "Sorry for the delay: the answer is 42.",
    "Brainstorming as an aid to memory works well.",
    "",
    "def f():\n    return 'I cannot'  # a string in code, not a refusal of help",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_recognised(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", ANSWERS)
def test_ordinary_answers_are_not_refusals(text: str) -> None:
    assert not is_refusal(text)


def test_only_the_head_of_the_answer_is_read() -> None:
    assert is_refusal("x" * (HEAD_CHARS - 40) + "I'm sorry, but I can't")
    assert not is_refusal("x" * HEAD_CHARS + "I'm sorry, but I can't help with that.")


def answered(*parts: str, status: int = 200, operation: Operation = Operation.CHAT) -> Exchange:
    exchange = Exchange("r", operation, {}, "m", status=status)
    exchange.completion_text.extend(parts)
    return exchange


def test_the_step_judges_a_streamed_answer_from_its_pieces() -> None:
    exchange = answered("I'm", " sorry", ", but I", " can't help with that.")
    judge_refusal(exchange)
    assert exchange.refused is True
    exchange = answered("Paris", " is the capital.")
    judge_refusal(exchange)
    assert exchange.refused is False


@pytest.mark.parametrize("exchange", [
    answered("I'm sorry, but I can't", status=500),
    answered("I'm sorry, but I can't", operation=Operation.EMBEDDINGS),
])
def test_failed_and_embedding_requests_stay_unjudged(exchange: Exchange) -> None:
    judge_refusal(exchange)
    assert exchange.refused is None


def test_a_verdict_already_given_is_kept() -> None:
    exchange = answered("I'm sorry, but I can't help with that.")
    exchange.refused = False  # e.g. an output guard's classifier judged it first
    judge_refusal(exchange)
    assert exchange.refused is False
