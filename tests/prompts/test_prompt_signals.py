"""Quality signals are kept per managed prompt template too, beside route and deployment."""

from __future__ import annotations

from switchgear.config import QualityConfig
from switchgear.exchange import Exchange, Operation
from switchgear.quality.signals import QualitySignals


def answered(prompt: str | None, refused: bool) -> Exchange:
    exchange = Exchange("r", Operation.CHAT, {}, "chat", done=1000.0, deployment="d",
                        served_alias="chat", finish_reason="stop", refused=refused,
                        prompt_name=prompt, cache_status="miss")
    exchange.usage.completion_tokens = 5
    exchange.completion_text.append("ok")
    return exchange


def test_answers_to_a_template_are_counted_under_its_name() -> None:
    signals = QualitySignals(QualityConfig(recent_s=10, baseline_s=60, bucket_s=1))
    for prompt, refused in (("support", True), ("support", False), (None, False)):
        signals.observe(answered(prompt, refused))
    assert signals.groups() == [("route", "chat"), ("served", "chat"), ("deployment", "chat/d"),
                                ("prompt", "support")]
    recent, _ = signals.windows(("prompt", "support"), 1001.0)
    assert (recent.answers, recent.refused) == (2, 1)
    route, _ = signals.windows(("route", "chat"), 1001.0)
    assert route.answers == 3
