"""The scorecard as text, JSON and Markdown."""

from __future__ import annotations

import json
from dataclasses import replace

from scorecard_examples import FULL, NOTHING

from switchgear.scorecard.categories import score
from switchgear.scorecard.report import render

EMPTY = replace(NOTHING, notes=("no record store at x.db: no records or governance",))


def test_text_shows_each_score_its_evidence_how_to_raise_it_and_the_flag() -> None:
    text = render(score(EMPTY), EMPTY, "text")
    assert "Reliability targets           0/2" in text
    assert "    missing: no SLOs defined" in text
    assert "    to raise: define slo.objectives (each with its target, window and owner)" in text
    assert "  note: no record store at x.db: no records or governance" in text
    assert text.endswith("total 0/16: AI spending risk (below 10)")


def test_json_carries_scores_evidence_and_the_risk_flag() -> None:
    data = json.loads(render(score(FULL), FULL, "json"))
    assert (data["total"], data["max"], data["at_risk"], data["risk_below"]) == (16, 16, False, 10)
    assert [c["key"] for c in data["categories"]] == [
        "workload_clarity", "reliability", "cost_model", "utilization", "data_pipeline",
        "serving_maturity", "security", "facilities"]
    facilities = data["categories"][-1]
    assert facilities["score"] == 2 and facilities["to_raise"] == []
    assert "met: 12 kW planned against a 20 kW budget" in facilities["evidence"]
    assert "plan: plan.json" in data["sources"]


def test_markdown_has_a_summary_table_and_a_section_per_category() -> None:
    markdown = render(score(EMPTY), EMPTY, "markdown")
    assert markdown.startswith("# AI infrastructure scorecard\n\n**total 0/16: AI spending risk")
    assert "| Cost model | 0/2 |" in markdown
    assert "| **total** | **0/16** |" in markdown
    assert "## Security and access controls: 0/2" in markdown
    assert "- add input guards (pii, injection, patterns)" in markdown
    assert markdown.count("\n## ") == 8
