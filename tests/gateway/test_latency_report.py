"""`switchgear latency report` over real traffic: its percentiles equal an independent
computation (numpy's inverted-CDF percentile) from the raw records, in SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy
import openai
import urllib3
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import Config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway, wait_for_record

HELLO = [{"role": "user", "content": "Say hello"}]


def independent(records: list[Any]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per (model, deployment): the successful requests' e2e, TTFT and TPOT, computed here."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
        lambda: {"e2e_s": [], "ttft_s": [], "tpot_s": []})
    for record in records:
        if record.status != 200:
            continue
        group = groups[(record.model, record.deployment)]
        group["e2e_s"].append(record.done_at - record.received_at)
        group["ttft_s"].append(record.first_token_at - record.received_at)
        if record.stream and record.completion_tokens > 1:
            group["tpot_s"].append((record.done_at - record.first_token_at)
                                   / (record.completion_tokens - 1))
    return groups


def test_report_percentiles_equal_an_independent_computation(
    simulators: Callable[..., RunningSimulator], make_config: Callable[..., Config],
    store_url: str
) -> None:
    fast = simulators(ModelOptions(ttft_ms=2, tpot_ms=0.5, mean_output_tokens=8, seed=2))
    slow = simulators(ModelOptions(ttft_ms=15, tpot_ms=3, mean_output_tokens=8, seed=4))
    config = make_config({alias: {"deployments": [
        {"name": f"{alias}-1", "backend": "openai_http", "url": sim.base_url, "model": "sim"}]}
        for alias, sim in (("fast", fast), ("slow", slow))}, store_url=store_url)
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        root = base_url.removesuffix("/v1")
        for alias in ("fast", "slow"):
            for number in range(12):
                stream = sdk.chat.completions.create(
                    model=alias, messages=[{"role": "user", "content": f"story {number}"}],
                    max_tokens=1 + number % 6, stream=True)
                with stream:
                    list(stream)
            for _ in range(5):
                sdk.chat.completions.create(model=alias, messages=HELLO, max_tokens=3)
        last = sdk.chat.completions.with_raw_response.create(model="fast", messages=HELLO)
        wait_for_record(store_url, last.headers["x-request-id"])
        result = CliRunner().invoke(main, ["latency", "report", "--url", root, "--format",
                                           "json", "--window", "1h"])
        table = CliRunner().invoke(main, ["latency", "report", "--url", root, "--by", "model"])
        refused = urllib3.request("GET", root + "/admin/latency?group_by=colour")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "nearest-rank" and report["group_by"] == ["model", "deployment"]
    expected = independent(fetch_records(store_url))
    assert {(e["model"], e["deployment"]) for e in report["data"]} == set(expected) == {
        ("fast", "fast-1"), ("slow", "slow-1")}
    for entry in report["data"]:
        values = expected[(entry["model"], entry["deployment"])]
        assert entry["requests"] == len(values["e2e_s"])
        for measure, observed in values.items():
            assert entry[measure]["count"] == len(observed) > 0
            for p in (50, 95, 99):
                assert entry[measure][f"p{p}"] == numpy.percentile(
                    observed, p, method="inverted_cdf"), (entry["model"], measure, p)
    assert table.exit_code == 0, table.output
    header, *lines = table.output.splitlines()
    assert header.split()[:5] == ["model", "requests", "e2e", "p50", "e2e"]
    assert lines[0].split()[:2] == ["fast", "18"] and lines[1].split()[:2] == ["slow", "17"]
    assert "nearest-rank" in table.output
    assert refused.status == 400
    assert json.loads(refused.data)["error"]["param"] == "group_by"
