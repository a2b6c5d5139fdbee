"""`switchgear changes` against a real gateway: a prompt-template change proposed, approved by
another person and applied shows in the records (template and config versions move) and in the
report, beside p95 latency, error rate and cost per request that match the records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from prompted import ADMIN, FILLED, SUPPORT, ask, prompted_config, records_of
from scripted import Script, scripted_upstream
from switchgear.cli.admin_client import AdminError, admin_call
from switchgear.cli.main import main
from switchgear.percentiles import nearest_rank
from switchgear.store.records import RequestRecord

from servers import BackgroundLoop, break_glass, gateway, wait_for_version

CHANGED = {**SUPPORT, "messages": [{"role": "system",
                                    "content": "You support {{product}}; reply in {{language}}."}]}


@pytest.fixture
def running(background: BackgroundLoop, store_url: str, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[str, Script]]:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    script = Script()
    with scripted_upstream(script, background) as upstream, \
            gateway(prompted_config(upstream, store_url)) as base_url:
        yield base_url, script


def expected_side(records: list[RequestRecord]) -> dict[str, Any]:
    """What the report should say of ``records``, computed here from the rows themselves."""
    latencies = sorted(r.done_at - r.received_at for r in records
                       if r.status == 200 and r.done_at is not None)
    errors = sum(r.status >= 400 for r in records)
    return {"requests": len(records), "errors": errors,
            "error_rate": pytest.approx(errors / len(records)),
            "p95_s": nearest_rank(latencies, 95),
            "cost_per_request": pytest.approx(sum(r.cost for r in records) / len(records))}


def open_ended(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``changes`` without the end of the newest one's after side (now, when asked)."""
    return [{**change, "after": {**change["after"], "until": None}} for change in changes]


def test_a_reviewed_template_change_shows_in_the_records_and_beside_its_metrics(
        running: tuple[str, Script], store_url: str) -> None:
    base_url, script = running
    root = base_url.removesuffix("/v1")
    approver = admin_call(root, "POST", "/admin/keys", ADMIN,
                          {"tenant": "ops", "name": "bob", "role": "approver"})
    for _ in range(5):
        ask(base_url, {"id": "support", "variables": FILLED})
    for _ in range(2):  # callers that forgot a variable: errors before the change
        with pytest.raises(openai.BadRequestError):
            ask(base_url, {"id": "support", "variables": {"product": "Acme"}})
    before = records_of(store_url, 7)

    change = admin_call(root, "POST", "/admin/config/changes", ADMIN,
                        {"sections": {"prompts": {"support": CHANGED}}, "message": "shorter"})
    assert change["needs_approval"] and change["sections"] == ["prompts"]
    admin_call(root, "POST", f"/admin/config/changes/{change['change_id']}/review",
               approver["secret"], {"approve": True, "comment": "ok"})
    applied = admin_call(root, "POST", f"/admin/config/changes/{change['change_id']}/apply",
                         ADMIN, {})
    assert applied["applied_version"] == 2
    wait_for_version(base_url, 2, ADMIN)
    for _ in range(3):
        ask(base_url, {"id": "support", "variables": FILLED})
    assert script.received[-1]["messages"][0]["content"] == "You support Acme; reply in French."
    records = records_of(store_url, 10)
    after = records[7:]
    assert {(r.prompt_version, r.config_version) for r in before} == {(1, 1)}
    assert {(r.prompt_version, r.config_version) for r in after} == {(2, 2)}

    report = admin_call(root, "GET", "/admin/changes?window_s=3600", ADMIN)
    (entry,) = report["data"]
    assert {name: entry[name] for name in ("version", "kind", "applied_by", "author",
                                           "reviewer", "sections", "prompts", "message")} == {
        "version": 2, "kind": "apply", "applied_by": "bootstrap", "author": "bootstrap",
        "reviewer": approver["key"]["id"], "sections": ["prompts"], "prompts": {"support": 2},
        "message": "shorter"}
    for side, rows in (("before", before), ("after", after)):
        assert {name: entry[side][name] for name in expected_side(rows)} == expected_side(rows)
    assert entry["before"]["errors"] == 2 and entry["after"]["errors"] == 0
    other = admin_call(root, "GET", "/admin/changes?window_s=3600&tenant=nobody", ADMIN)
    assert [(c["before"]["requests"], c["before"]["p95_s"], c["after"]["cost_per_request"])
            for c in other["data"]] == [(0, None, None)]
    with pytest.raises(AdminError, match="400: window_s must be seconds"):
        admin_call(root, "GET", "/admin/changes?window_s=0", ADMIN)

    shown = admin_call(root, "GET", "/admin/prompts/support", ADMIN)
    assert (shown["version"], shown["messages"]) == (2, CHANGED["messages"])
    assert [(h["version"], h["config_version"]) for h in shown["history"]] == [(2, 2), (1, 1)]

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--url", root, "--admin-key", ADMIN])
        assert result.exit_code == 0, result.output
        return result.output

    table = run("changes", "--since", "1h", "--window", "1h")
    line = next(row for row in table.splitlines() if row.startswith("v2 "))
    cost = expected_side(before)["cost_per_request"].expected
    assert "apply" in line and "prompts (support v2)" in line and "7 -> 3" in line
    assert "28.6% -> 0.0%" in line and f"{cost:.6g} -> " in line
    as_json = json.loads(run("changes", "--since", "1h", "--window", "1h", "--json"))
    assert open_ended(as_json["data"]) == open_ended(report["data"])
    assert "support  v2" in run("prompts", "list")
    assert "system: You support {{product}}; reply in {{language}}." in \
        run("prompts", "show", "support")


def test_break_glass_and_rollback_are_listed_each_side_cut_at_its_neighbour(
        running: tuple[str, Script], store_url: str) -> None:
    base_url, script = running
    root = base_url.removesuffix("/v1")
    reference = {"id": "support", "variables": FILLED}
    ask(base_url, reference)
    assert break_glass(base_url, ADMIN, {"prompts": {"support": CHANGED}}) == 2
    for _ in range(2):
        ask(base_url, reference)
    back = admin_call(root, "POST", "/admin/config/rollback", ADMIN,
                      {"version": 1, "break_glass": True})
    wait_for_version(base_url, back["applied_version"], ADMIN)
    ask(base_url, reference)
    assert script.received[-1]["messages"][0]["content"] == \
        "You support Acme. Answer in French."  # version 1's text, as version 3 of the template
    records = records_of(store_url, 4)
    assert [(r.prompt_version, r.config_version) for r in records] == \
        [(1, 1), (2, 2), (2, 2), (3, 3)]

    glass, rollback = admin_call(root, "GET", "/admin/changes?window_s=3600", ADMIN)["data"]
    assert (glass["version"], glass["kind"], glass["prompts"]) == (2, "break-glass",
                                                                   {"support": 2})
    assert (rollback["version"], rollback["kind"], rollback["prompts"]) == (3, "rollback",
                                                                            {"support": 3})
    assert glass["after"]["until"] == rollback["applied_at"] == rollback["after"]["since"]
    assert rollback["before"]["since"] == glass["applied_at"]
    assert [glass["before"]["requests"], glass["after"]["requests"],
            rollback["before"]["requests"], rollback["after"]["requests"]] == [1, 2, 2, 1]
