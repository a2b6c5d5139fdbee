"""Quality signals kept per combination of names sum, per key, to what counting every answer
in each of its keys gives."""

from __future__ import annotations

import random

from switchgear.config import QualityConfig
from switchgear.exchange import Exchange, Operation
from switchgear.quality.signals import DIMENSIONS, QualitySignals, Tally

CONFIG = QualityConfig(recent_s=20, baseline_s=60, bucket_s=5)


def answer(chooser: random.Random, done: float) -> Exchange:
    exchange = Exchange("r", Operation.CHAT, {}, chooser.choice(["chat", "code"]), done=done,
                        deployment=chooser.choice(["a", "b"]),
                        served_alias=chooser.choice([None, "chat", "fallback"]),
                        finish_reason=chooser.choice(["stop", "length", None]),
                        refused=chooser.choice([True, False, None]),
                        schema_valid=chooser.choice([True, False, None]),
                        guard_action=chooser.choice([None, "flag"]),
                        prompt_name=chooser.choice([None, "support"]), cache_status="miss")
    exchange.usage.completion_tokens = chooser.randrange(50)
    exchange.completion_text.append(chooser.choice(["ok", " ", ""]))
    return exchange


def per_key(answers: list[Exchange], key: tuple[str, str], low: int, high: int) -> Tally:
    """Every answer named ``key`` whose bucket is in (low, high], counted one by one."""
    namer = dict(DIMENSIONS)[key[0]]
    tally = Tally()
    for exchange in answers:
        assert exchange.done is not None
        if namer(exchange) == key[1] and low < exchange.done // CONFIG.bucket_s <= high:
            tally.add(exchange, not any(part.strip() for part in exchange.completion_text))
    return tally


def test_windows_sum_every_answer_of_each_key() -> None:
    chooser = random.Random(7)
    signals = QualitySignals(CONFIG)
    answers = [answer(chooser, 1000.0 + second * 0.5) for second in range(400)]
    for exchange in answers:
        signals.observe(exchange)
    now = 1199.0
    current = int(now // CONFIG.bucket_s)
    recent_from, baseline_from = current - 4, current - 16
    keys = signals.groups()
    assert keys == sorted({(dimension, name) for exchange in answers
                           for dimension, namer in DIMENSIONS
                           if (name := namer(exchange)) is not None},
                          key=lambda key: ([d for d, _ in DIMENSIONS].index(key[0]), key[1]))
    for key in keys:
        recent, baseline = signals.windows(key, now)
        assert recent == per_key(answers, key, recent_from, current)
        assert baseline == per_key(answers, key, baseline_from, recent_from)
    assert signals.windows(("unknown", "chat"), now) == (Tally(), Tally())
