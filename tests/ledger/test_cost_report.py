"""`switchgear cost report` and `cost export` against a running gateway over a filled ledger:
the table, the JSON and the HTML page (with its chart) say what the records say."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import urllib3
from click.testing import CliRunner
from ledger_support import ledger_config, record, write

from switchgear.cli.main import main

from servers import gateway

SINCE, UNTIL = "2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z"


@pytest.fixture
def root(tmp_path: Path) -> str:
    """The base URL of a gateway (open mode, loopback) over a ledger of two tenants."""
    url = f"sqlite:///{tmp_path}/records.db"
    config = ledger_config(url, capacity={"requests_per_s": 5})
    write(url, [
        record(config, 1, "2026-03-01T09:00:00", "acme", "chat", feature="search"),
        record(config, 2, "2026-03-01T10:00:00", "acme", "chat", feature="search", cached=500),
        record(config, 3, "2026-03-02T09:00:00", "globex", "local", busy_s=120),
        record(config, 4, "2026-03-02T09:30:00", "globex", "chat", status=503),
    ])
    with gateway(config) as base_url:
        yield base_url.removesuffix("/v1")


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["cost", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_json_table_and_html_say_what_the_records_say(root: str, tmp_path: Path) -> None:
    config = ledger_config("sqlite:///unused.db")
    acme = sum(record(config, n, "2026-03-01T09:00:00", "acme", "chat", cached=c).cost
               for n, c in ((1, 0), (2, 500)))
    globex = record(config, 3, "2026-03-02T09:00:00", "globex", "local", busy_s=120).cost

    report = json.loads(cli("report", "--url", root, "--since", SINCE, "--until", UNTIL,
                            "--format", "json"))
    lines = {line["key"]: line for line in report["lines"]}
    assert lines["acme"]["cost"] == pytest.approx(acme)
    assert lines["acme"]["cost_per_1k_requests"] == pytest.approx(acme / 2 * 1000)
    assert lines["acme"]["cost_per_million_tokens"] == pytest.approx(acme / 2400 * 1e6)
    assert lines["globex"]["requests"] == 2 and lines["globex"]["failed"] == 1
    assert lines["globex"]["cost"] == pytest.approx(globex)
    box = next(d for d in report["deployments"] if d["deployment"] == "box")
    assert box["instance_time_cost"] == pytest.approx(2 * 48 * 4.0)
    assert box["idle_cost"] == pytest.approx(2 * 48 * 4.0 - globex)
    assert report["total"]["cost_with_idle"] == pytest.approx(acme + 2 * 48 * 4.0)

    table = cli("report", "--url", root, "--since", SINCE, "--until", UNTIL, "--by", "day")
    assert "2026-03-01" in table and "2026-03-02" in table
    assert f"{acme:.4f}" in table and "local/box" in table and "headroom" in table

    page = tmp_path / "cost.html"
    cli("report", "--url", root, "--since", SINCE, "--until", UNTIL, "--chart", "feature",
        "--html", str(page))
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
    assert not re.search(r"(src|href)=", html)  # self-contained: nothing fetched
    assert set(re.findall(r'data-name="([^"]+)"', html)) == {"search", "(none)"}
    # two days are charted by the hour: 48 points on each line
    assert [len(p.split()) for p in re.findall(r'points="([^"]+)"', html)] == [48, 48]
    assert "Cost per hour by feature (USD)" in html and "globex" in html


def test_focus_export_writes_a_csv(root: str, tmp_path: Path) -> None:
    path = tmp_path / "focus.csv"
    output = cli("export", "--url", root, "--since", SINCE, "--until", UNTIL, "--focus",
                 str(path))
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert f"{len(rows)} rows" in output
    assert {r["SubAccountId"] for r in rows if r["SkuMeter"] != "Idle Instance Hours"} == {
        "acme", "globex"}


def test_bad_parameters_are_400_in_openai_shape(root: str) -> None:
    for query in ("by=colour", "since=yesterday", f"since={UNTIL}&until={SINCE}"):
        response = urllib3.request("GET", f"{root}/admin/cost?{query}", timeout=10)
        body = json.loads(response.data)
        assert response.status == 400 and body["error"]["type"] == "invalid_request_error", query
    result = CliRunner().invoke(main, ["cost", "report", "--url", root, "--since", "tomorrow"])
    assert result.exit_code == 2 and "400" in result.output  # invalid input, as click exits
