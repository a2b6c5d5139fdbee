"""bench end to end: the sweep's knee on a server of known capacity, a JSONL workload, the CLI's
JSON/CSV/HTML outputs (the HTML rendered in headless Chromium), and a real `switchgear serve`."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from switchgear.capacity.bench.figures import SLO
from switchgear.capacity.bench.load import CONCURRENCY, CONSTANT, Level
from switchgear.capacity.bench.runner import Sweep
from switchgear.capacity.bench.workload import Lengths, from_jsonl, synthetic
from switchgear.cli.main import main
from switchgear.config import Config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import gateway_process

Simulators = Callable[..., RunningSimulator]
RunLevels = Callable[..., dict[str, Any]]
FAST = ModelOptions(ttft_ms=2, tpot_ms=0.5, mean_output_tokens=1000, slots=16, seed=3,
                    load_factor=0)
#: The profile's contract with `switchgear plan` (shared brief): these keys, these names.
LEVEL_KEYS = {"mode", "concurrency", "rate", "duration_s", "sent", "completed", "errors",
              "request_rate", "input_tokens_per_s", "output_tokens_per_s", "goodput",
              "latency_s", "samples", "client"}
CLIENT_KEYS = {"cpu_share", "loop_lag_p99_s", "late_p99_s", "saturated", "reasons"}


def test_sweep_finds_the_knee_of_a_server_with_known_capacity(
        simulators: Simulators, run_levels: RunLevels) -> None:
    # 4 slots, each request (5 tokens) 20 ms + 4 x 5 ms = 40 ms: at most 4 / 0.04 = 100 requests/s.
    sim = simulators(ModelOptions(slots=4, ttft_ms=20, tpot_ms=5, mean_output_tokens=1000,
                                  load_factor=0, seed=1))
    profile = run_levels(sim.base_url, Sweep(concurrency=8, rates=4, arrival=CONSTANT, refine=1,
                                             duration_s=1.5, warmup_s=0.3),
                         synthetic(Lengths(16), Lengths(5), 8, 1), SLO(e2e_p95_s=0.08),
                         ignore_eos=True)
    sweep = profile["sweep"]
    assert 70 <= sweep["saturation_rate"] <= 101
    # Closed loop from concurrency 1, doubling up to 8 (what `switchgear plan` needs), then
    # four rates and at most one bisection step.
    closed, levels = profile["levels"][:4], profile["levels"][4:]
    assert [level["concurrency"] for level in closed] == [1, 2, 4, 8]
    assert sweep["saturation_concurrency"] in (4, 8)
    assert [level["mode"] for level in levels] == ["constant"] * len(levels)
    assert len(levels) in (4, 5)
    best = sweep["max_rate_within_slo"]
    assert best is not None
    # Within the server's capacity (100/s); whether the rate at the measured saturation itself
    # still meets the SLO in a 1.5 s level depends on how close that measure came to 100.
    assert 0.4 * sweep["saturation_rate"] <= best <= min(round(sweep["saturation_rate"], 3), 101)
    # Every rate at or below the answer met the SLO; every rate that missed it lies above it.
    assert all(level["meets_slo"] for level in levels if level["rate"] <= best)
    assert all(level["rate"] > best for level in levels if not level["meets_slo"])


def test_a_jsonl_workload_sends_its_prompts(tmp_path: Path, simulators: Simulators,
                                            run_levels: RunLevels) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "' + "word " * 40 + '", "max_tokens": 3}\n\n'
                    '{"messages": [{"role": "user", "content": "hello there"}], '
                    '"max_tokens": 5}\n')
    workload = from_jsonl(path, None, seed=1)
    assert [prompt.max_tokens for prompt in workload.prompts] == [3, 5]
    sim = simulators(FAST)
    for operation in ("chat", "completions"):
        profile = run_levels(sim.base_url, [Level(CONCURRENCY, 0.3, concurrency=1)], workload,
                             operation=operation, ignore_eos=True)
        level = profile["levels"][0]
        assert level["errors"] == {} and level["completed"] > 2
        assert set(level["samples"]["output_tokens"]) == {3, 5}
        assert len(set(level["samples"]["input_tokens"])) == 2  # the server's own counts
        assert profile["workload"]["kind"] == "file"


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*'prompt'"):
        from_jsonl(path, Lengths(4), seed=1)


def test_length_distributions_are_seeded_and_centred() -> None:
    import random

    for text in ("100", "uniform:100:0.5", "normal:100:0.2", "lognormal:100:0.5"):
        lengths = Lengths.parse(text)
        draws = [lengths.draw(random.Random(3)) for _ in range(3)]
        assert len(set(draws)) == 1  # the same seed, the same draw
        rng = random.Random(4)
        many = [lengths.draw(rng) for _ in range(4000)]
        assert sum(many) / len(many) == pytest.approx(100, rel=0.05)
        assert min(many) >= 1
    with pytest.raises(ValueError, match="DIST:MEAN"):
        Lengths.parse("zipf:10")


def _bench(args: list[str]) -> Any:
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_the_cli_writes_json_csv_and_html(tmp_path: Path, simulators: Simulators) -> None:
    sim = simulators(FAST)
    result = _bench(["--url", sim.base_url, "--model", "sim", "-c", "2", "-r", "40",
                     "--arrival", "constant", "--duration", "0.5", "--warmup", "0.1",
                     "--output-tokens", "4", "--ignore-eos", "--slo-e2e-p95", "2",
                     "--json", str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"),
                     "--html", str(tmp_path / "p.html")])
    assert result.exit_code == 0, result.output
    assert re.search(r"^c=2 .* met +\d+% +ok$", result.output, re.MULTILINE)
    assert "percentiles: nearest-rank" in result.output
    profile = json.loads((tmp_path / "p.json").read_text())
    assert (profile["tool"], profile["format"], profile["sweep"]) == ("switchgear bench", 1, None)
    assert profile["target"] == {"url": sim.base_url, "model": "sim", "endpoint": "chat"}
    assert profile["slo"]["e2e_p95_s"] == 2.0
    assert profile["workload"]["output_tokens"]["mean"] == 4
    assert profile["percentile_method"] == "nearest-rank"
    assert [level["mode"] for level in profile["levels"]] == ["concurrency", "constant"]
    for level in profile["levels"]:
        assert level.keys() >= LEVEL_KEYS
        assert set(level["latency_s"]) == {"e2e", "ttft", "itl", "tpot"}
        assert len(level["samples"]["e2e"]) == level["completed"] == len(
            level["samples"]["scheduled_at"])
        assert level["client"].keys() >= CLIENT_KEYS
    assert profile["levels"][0]["client"]["late_p99_s"] is None  # closed loop
    assert profile["levels"][1]["client"]["late_p99_s"] >= 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert [row["label"] for row in rows] == ["c=2", "constant 40/s"]
    assert float(rows[1]["e2e_p95"]) == pytest.approx(
        profile["levels"][1]["latency_s"]["e2e"]["p95"])
    assert rows[0]["errors"] == ""
    assert rows[0]["percentile_method"] == "nearest-rank"
    assert rows[0]["client_saturated"] in ("True", "False")
    assert float(rows[0]["client_cpu_share"]) == profile["levels"][0]["client"]["cpu_share"]
    page = (tmp_path / "p.html").read_text()
    assert page.count("<svg") == 3
    # Markers carry their values: latency against rate draws the open-loop level's p95 (ms).
    p95_ms = profile["levels"][1]["latency_s"]["e2e"]["p95"] * 1000
    marker = re.search(r'<circle class="point" data-series="e2e p95" data-x="[^"]+" '
                       r'data-y="([^"]+)"', page)
    assert marker is not None and float(marker.group(1)) == pytest.approx(p95_ms, rel=1e-4)


def test_the_cli_needs_a_load_and_explains_itself() -> None:
    result = CliRunner().invoke(main, ["bench", "--url", "http://x/v1", "--model", "m"])
    assert result.exit_code == 2 and "--concurrency, --rate or --sweep" in result.output
    both = CliRunner().invoke(main, ["bench", "--url", "http://x/v1", "--model", "m", "--sweep",
                                     "-c", "4"])
    assert both.exit_code == 2 and "--sweep chooses its own levels" in both.output
    help_text = CliRunner().invoke(main, ["bench", "--help"]).output
    for option in ("--sweep", "--rate", "--concurrency", "--slo-e2e-p95", "--jsonl", "--json"):
        assert option in help_text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium comes from scripts/setup (Debian)")
def test_the_html_report_renders_its_plots_in_headless_chromium(
        tmp_path: Path, simulators: Simulators) -> None:
    sim = simulators(FAST)
    report = tmp_path / "report.html"
    result = _bench(["--url", sim.base_url, "--model", "sim", "-r", "30", "-r", "60",
                     "--duration", "0.5", "--warmup", "0", "--ignore-eos",
                     "--html", str(report)])
    assert result.exit_code == 0, result.output
    assert CHROMIUM is not None
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for figure in ("latency-vs-rate", "ttft-distribution", "throughput"):
        chart = re.search(rf'<figure id="{figure}">(.*?)</figure>', dom, re.DOTALL)
        assert chart is not None, figure
        assert "<svg" in chart.group(1) and 'class="series"' in chart.group(1)
        points = re.findall(r'<circle class="point"[^>]*data-y="([\d.e+-]+)"', chart.group(1))
        assert len(points) >= 2 and any(float(y) > 0 for y in points)
    throughput = re.search(r'<figure id="throughput">(.*?)</figure>', dom, re.DOTALL)
    assert throughput is not None
    assert throughput.group(1).count('data-series="request rate"') == 2  # one per level


def test_bench_against_a_real_switchgear_gateway(
        make_config: Callable[..., Config], tmp_path: Path, run_levels: RunLevels) -> None:
    config = make_config({"sim": {"deployments": [{
        "name": "d", "backend": "simulated",
        "simulated": {"ttft_ms": 5, "tpot_ms": 1, "mean_output_tokens": 8, "seed": 1}}]}})
    with gateway_process(config, tmp_path) as url:
        profile = run_levels(url, [Level(CONCURRENCY, 0.8, 0.2, concurrency=2),
                                   Level(CONSTANT, 0.8, rate=20)])
    closed, opened = profile["levels"]
    assert closed["errors"] == {} and closed["completed"] > 10
    assert closed["latency_s"]["ttft"]["p50"] >= 0.005  # streamed through the gateway
    assert opened["sent"] == opened["completed"] == 16
