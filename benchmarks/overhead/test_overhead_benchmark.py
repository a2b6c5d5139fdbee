"""Tests of the overhead benchmark's parts: wrk output, Lua script, nginx upstream, processes,
report. The load and upstream tests use the real nginx and wrk (installed by setup.sh)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from load import LoadResult, WrkLoad, parse_wrk_output, wrk_binary, wrk_script
from processes import (
    BenchmarkError,
    Endpoint,
    ServiceProcess,
    free_port,
    post,
    wait_until_answers,
)
from report import (
    CACHE_HIT,
    MESSAGES,
    RESPONSES,
    Measurement,
    TargetOutcome,
    api_checks,
    cache_checks,
    problems,
    table,
    target_checks,
)
from upstream import FIXED_COMPLETION, NginxUpstream, nginx_binary

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/v1/chat/completions
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   450.12us  120.00us   1.20s    90.00%
    Req/Sec    17.00k     1.00k   19.00k    70.00%
  Latency Distribution
     50%  412.00us
     75%  500.00us
     90%  600.00us
     99%    1.25ms
  340000 requests in 10.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  34000.50
Transfer/sec:     12.00MB
"""

REQUEST = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_parse_wrk_output_reads_rate_percentiles_in_ms_and_errors() -> None:
    result = parse_wrk_output(WRK_OUTPUT)
    assert (result.requests, result.requests_per_s) == (340_000, 34000.5)
    assert result.p50_ms == pytest.approx(0.412)
    assert result.p99_ms == pytest.approx(1.25)
    assert (result.non_2xx, result.socket_errors) == (7, 3)
    assert result.errors == 10


def test_parse_wrk_output_converts_seconds() -> None:
    text = WRK_OUTPUT.replace("412.00us", "1.50s").replace("  Non-2xx or 3xx responses: 7\n", "")
    result = parse_wrk_output(text)
    assert result.p50_ms == 1500.0
    assert result.non_2xx == 0


def test_parse_wrk_output_without_latency_distribution_is_an_error() -> None:
    with pytest.raises(BenchmarkError, match="--latency"):
        parse_wrk_output("Requests/sec:  10.0\n")


def test_wrk_script_posts_the_body_with_the_endpoint_model_and_headers() -> None:
    endpoint = Endpoint("http://h/v1/chat/completions", "bench]]", {"x-a": "b]", "x-b": "c"})
    script = wrk_script(endpoint, REQUEST).splitlines()
    assert script[0] == 'wrk.method = "POST"'
    # Long brackets get "=" where the text holds "]]" or ends in "]", so it cannot close early.
    assert script[1].startswith("wrk.body = [=[") and script[1].endswith("]=]")
    assert json.loads(script[1].removeprefix("wrk.body = [=[").removesuffix("]=]")) == {
        **REQUEST, "model": "bench]]"}
    assert script[2:] == ["wrk.headers[ [[x-a]] ] = [=[b]]=]", "wrk.headers[ [[x-b]] ] = [[c]]"]


needs_nginx_and_wrk = pytest.mark.skipif(
    nginx_binary() is None or wrk_binary() is None,
    reason="nginx and wrk come from benchmarks/overhead/setup.sh",
)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[NginxUpstream]:
    """The real nginx upstream on a free port, stopped after the test."""
    nginx = NginxUpstream(tmp_path / "nginx", free_port(), core=0)
    with nginx.process() as process:
        body = json.dumps(nginx.endpoint().body(REQUEST)).encode()
        wait_until_answers(nginx.endpoint(), body, process, timeout_s=10)
        yield nginx


@needs_nginx_and_wrk
def test_upstream_answers_the_fixed_completion(upstream: NginxUpstream) -> None:
    endpoint = upstream.endpoint()
    answer = post(endpoint.url, json.dumps(REQUEST).encode(), endpoint.headers, timeout_s=5)
    assert answer.status == 200
    assert json.loads(answer.body) == FIXED_COMPLETION


@needs_nginx_and_wrk
def test_wrk_load_counts_requests_without_errors(upstream: NginxUpstream, tmp_path: Path) -> None:
    load = WrkLoad(tmp_path, core=0, request_body=REQUEST)
    result = load.run(upstream.endpoint(), concurrency=2, seconds=1)
    assert result.requests > 0
    assert result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms


@needs_nginx_and_wrk
def test_wrk_load_reports_error_answers(upstream: NginxUpstream, tmp_path: Path) -> None:
    wrong_path = Endpoint(upstream.base_url + "/nowhere", "m", {})  # nginx answers 404 here
    result = WrkLoad(tmp_path, core=0, request_body=REQUEST).run(wrong_path, 1, 1)
    assert result.non_2xx == result.requests > 0


def test_wait_until_answers_fails_when_the_process_exits(tmp_path: Path) -> None:
    process = ServiceProcess("quits", [sys.executable, "-c", "print('bye')"], tmp_path / "q.log")
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}/v1/chat/completions", "m", {})
    with process, pytest.raises(BenchmarkError, match="exited with status 0"):
        wait_until_answers(endpoint, b"{}", process, timeout_s=20)


def test_service_process_measures_cpu_and_stops(tmp_path: Path) -> None:
    burn = (
        "import time\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print('burnt', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = ServiceProcess("burner", [sys.executable, "-c", burn], tmp_path / "b.log")
    with process:
        deadline = time.monotonic() + 20.0
        while "burnt" not in process.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.cpu_seconds() >= 0.25
    assert process.exit_code() is not None


def _measured(name: str, concurrency: int, rate: float, p50: float) -> Measurement:
    result = LoadResult(requests=int(rate) * 10, requests_per_s=rate, p50_ms=p50,
                        p99_ms=p50 * 2, non_2xx=0, socket_errors=0)
    return Measurement(name, concurrency, result, result, cpu_ms_per_request=0.5)


def test_table_shows_added_p50_over_the_upstream_at_the_same_concurrency() -> None:
    outcomes = [
        TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)]),
        TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.35)]),
        TargetOutcome("litellm", status="skipped", reason="not installed"),
    ]
    text = table(outcomes)
    switchgear_row = next(line for line in text.splitlines() if line.startswith("switchgear"))
    assert "+0.300" in switchgear_row
    assert "1,500" in switchgear_row
    assert "skipped" in next(line for line in text.splitlines() if line.startswith("litellm"))
    assert problems(outcomes) == ["litellm: skipped: not installed"]


def test_target_checks_say_met_or_missed() -> None:
    upstream = TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)])
    fast = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.35)])
    slow = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 900, 0.75)])
    assert [line.rsplit(" ", 1)[1] for line in target_checks([upstream, fast])] == ["met", "met"]
    assert [line.rsplit(" ", 1)[1] for line in target_checks([upstream, slow])] == [
        "MISSED", "MISSED"]


def test_cache_checks_hold_a_hit_to_the_miss_paths_overhead() -> None:
    upstream = TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)])
    miss = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.35)])
    fast = TargetOutcome(CACHE_HIT, measurements=[_measured(CACHE_HIT, 1, 3_000, 0.25)])
    slow = TargetOutcome(CACHE_HIT, measurements=[_measured(CACHE_HIT, 1, 1_000, 0.40)])
    assert cache_checks([upstream, miss, fast])[0].endswith("overhead p50 0.300 ms: met")
    assert cache_checks([upstream, miss, slow])[0].endswith("MISSED")
    assert "not checked" in cache_checks([miss, fast])[0]


def test_api_checks_hold_messages_and_responses_within_a_fifth_of_the_chat_path() -> None:
    upstream = TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)])
    chat = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.35)])
    close = TargetOutcome(MESSAGES, measurements=[_measured(MESSAGES, 1, 1_400, 0.40)])
    far = TargetOutcome(RESPONSES, measurements=[_measured(RESPONSES, 1, 1_000, 0.45)])
    lines = api_checks([upstream, chat, close, far])
    assert lines[0].startswith(f"{MESSAGES} at concurrency 1: added p50 0.350 ms, 117% of the "
                               "chat path's 0.300 ms")
    assert lines[0].endswith("met") and lines[1].endswith("MISSED")  # 0.400 is 133%
    assert "not checked" in api_checks([chat, close])[0]
