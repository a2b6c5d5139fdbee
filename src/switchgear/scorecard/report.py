"""The scorecard as text (a terminal), JSON (a machine) or Markdown (a review or a wiki page)."""

from __future__ import annotations

import json
from typing import Any, Literal

from switchgear.scorecard.categories import CATEGORY_MAX, RISK_BELOW, RISK_LABEL, Scorecard
from switchgear.scorecard.evidence import Evidence

Format = Literal["text", "json", "markdown"]


def verdict(card: Scorecard) -> str:
    """The one-line result: the total and whether it flags spending risk."""
    flag = (f"{RISK_LABEL} (below {RISK_BELOW})" if card.at_risk
            else f"no {RISK_LABEL} flag ({RISK_BELOW} or more)")
    return f"total {card.total}/{card.maximum}: {flag}"


def sources(evidence: Evidence) -> list[str]:
    """Where the evidence came from, and what could not be read."""
    window_days = evidence.records.window_s / 86400
    lines = [f"config: {evidence.config.source}",
             f"records: {evidence.records.requests} requests over the last {window_days:g} days",
             f"plan: {evidence.plan.source if evidence.plan else 'none'}"]
    return lines + [f"note: {note}" for note in evidence.notes]


def as_json(card: Scorecard, evidence: Evidence) -> dict[str, Any]:
    """The scorecard as a JSON-ready dict."""
    return {
        "total": card.total, "max": card.maximum, "at_risk": card.at_risk,
        "risk_below": RISK_BELOW, "verdict": verdict(card), "sources": sources(evidence),
        "categories": [{"key": s.key, "title": s.title, "score": s.score, "max": CATEGORY_MAX,
                        "evidence": list(s.evidence), "to_raise": list(s.to_raise)}
                       for s in card.scores],
    }


def render_text(card: Scorecard, evidence: Evidence) -> str:
    """Plain text: each category's score, its evidence and what would raise it; the total."""
    width = max(len(score.title) for score in card.scores)
    lines = ["AI infrastructure scorecard", *(f"  {line}" for line in sources(evidence)), ""]
    for score in card.scores:
        lines.append(f"{score.title.ljust(width)}  {score.score}/{CATEGORY_MAX}")
        lines += [f"    {line}" for line in score.evidence]
        lines += [f"    to raise: {fix}" for fix in score.to_raise]
    return "\n".join([*lines, "", verdict(card)])


def render_markdown(card: Scorecard, evidence: Evidence) -> str:
    """Markdown: a summary table, then each category's evidence and what would raise it."""
    lines = ["# AI infrastructure scorecard", "", f"**{verdict(card)}**", "",
             *(f"- {line}" for line in sources(evidence)), "",
             "| category | score |", "|---|---|",
             *(f"| {s.title} | {s.score}/{CATEGORY_MAX} |" for s in card.scores),
             f"| **total** | **{card.total}/{card.maximum}** |"]
    for score in card.scores:
        lines += ["", f"## {score.title}: {score.score}/{CATEGORY_MAX}", "",
                  *(f"- {line}" for line in score.evidence)]
        if score.to_raise:
            lines += ["", "To raise it:", "", *(f"- {fix}" for fix in score.to_raise)]
    return "\n".join(lines) + "\n"


def render(card: Scorecard, evidence: Evidence, output: Format) -> str:
    """The scorecard in ``output`` format."""
    if output == "json":
        return json.dumps(as_json(card, evidence), indent=2)
    if output == "markdown":
        return render_markdown(card, evidence)
    return render_text(card, evidence)
