"""Tests of the overhead benchmark's parts: wrk output, Lua script, nginx upstream, processes,
report, the featureless proxy, issue 28's goals, the stage profile and the RSS run. The load,
upstream and proxy tests use the real nginx and wrk (installed by setup.sh)."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
import yaml
from cpu_profile import (
    JSON,
    OTHER,
    RESIDUAL,
    Entry,
    Function,
    Hotspot,
    StageProfile,
    attribute,
    hotspots,
)
from gateways import PythonProxy, switchgear_config
from load import LoadResult, WrkLoad, parse_wrk_output, wrk_binary, wrk_script
from processes import (
    BenchmarkError,
    Endpoint,
    ServiceProcess,
    free_port,
    post,
    thread_cpu_seconds,
    wait_until_answers,
)
from report import (
    CACHE_HIT,
    FULL,
    FULL_STREAM,
    MESSAGES,
    PROXY,
    RECORDS,
    REDIS_CACHE_HIT,
    RESPONSES,
    STREAM_BASELINE,
    SWITCHGEAR,
    Goal,
    Measurement,
    Round,
    TargetOutcome,
    api_checks,
    cache_checks,
    chat_levels,
    goal_checks,
    goal_levels,
    problems,
    table,
    target_checks,
)
from rss import CHUNK_S, MIB, chunk_seconds, rss_run
from run import GUARDS, full_path, parse_arguments, switchgear_rows
from run import REQUEST_BODY as REQUEST_BODY_OF_RUN
from upstream import (
    FIXED_COMPLETION,
    STREAM_DELTAS,
    STREAM_PREFIX,
    NginxUpstream,
    nginx_binary,
    nginx_config,
    stream_body,
)

from switchgear.config import parse_config

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


def _in_rounds(name: str, rate: float, p50: float, rounds: tuple[Round, ...]) -> TargetOutcome:
    """``name``'s outcome at concurrency 1, its level measured in ``rounds``."""
    return TargetOutcome(name, measurements=[replace(_measured(name, 1, rate, p50),
                                                     rounds=rounds)])


def test_cache_checks_over_rounds_take_the_median_share_of_the_miss_path_beside() -> None:
    """Each hit round is held to the miss path's overhead in the chat run just before it (p50
    minus the upstream's 0.05 ms), not to the chat row's own run minutes earlier."""
    upstream = TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)])
    miss = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.25)])
    rounds = (Round(_result(3_000.0, p50=0.30), _result(1_400.0, p50=0.35)),
              Round(_result(3_000.0, p50=0.40), _result(1_400.0, p50=0.30)),
              Round(_result(3_000.0, p50=0.27), _result(1_400.0, p50=0.35)))
    hit = _in_rounds(REDIS_CACHE_HIT, 3_000, 0.30, rounds)
    assert cache_checks([upstream, miss, hit]) == [
        f"{REDIS_CACHE_HIT} at concurrency 1: p50 0.300 ms, p99 0.600 ms, 3,000 req/s; its p50"
        " a median 100% of the miss path's overhead p50, run just before each of 3 rounds (100%,"
        " 160%, 90%) (target <= 100%): met"]
    slower = (*rounds[:2], Round(_result(3_000.0, p50=0.33), _result(1_400.0, p50=0.35)))
    hit = _in_rounds(REDIS_CACHE_HIT, 3_000, 0.30, slower)
    assert cache_checks([upstream, hit])[0].endswith("(100%, 160%, 110%) (target <= 100%): MISSED")


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


def test_api_checks_over_rounds_take_the_median_share_of_the_chat_run_beside() -> None:
    """The chat row ran minutes before at 0.35 ms; beside each Responses round it ran slower
    and faster as the machine drifted: each round is held to the chat run just before it, and
    the median round decides."""
    upstream = TargetOutcome("upstream", measurements=[_measured("upstream", 1, 20_000, 0.05)])
    chat = TargetOutcome("switchgear", measurements=[_measured("switchgear", 1, 1_500, 0.35)])
    rounds = (Round(_result(1_000.0, p50=0.45), _result(1_100.0, p50=0.42), 0.40, 0.36),
              Round(_result(1_000.0, p50=0.61), _result(1_400.0, p50=0.35), 0.55, 0.30),
              Round(_result(1_000.0, p50=0.40), _result(1_400.0, p50=0.36), 0.35, 0.31))
    responses = _in_rounds(RESPONSES, 1_000, 0.45, rounds)
    assert api_checks([upstream, chat, responses]) == [
        f"{RESPONSES} at concurrency 1: added p50 a median 113% of the chat path's, run just"
        " before each of 3 rounds (108%, 187%, 113%); cpu a median 113% of chat's (111%, 183%,"
        " 113%) (target <= 120%): met"]
    # Without the chat row's own run, the rounds still compare; without rounds, nothing does.
    assert api_checks([upstream, responses])[0].endswith("met")
    alone = TargetOutcome(RESPONSES, measurements=[_measured(RESPONSES, 1, 1_000, 0.45)])
    assert "not checked" in api_checks([upstream, alone])[0]
    assert chat_levels({SWITCHGEAR, RESPONSES, REDIS_CACHE_HIT, "upstream"}, [1, 16]) == {
        (RESPONSES, 1): SWITCHGEAR, (RESPONSES, 16): SWITCHGEAR,
        (REDIS_CACHE_HIT, 1): SWITCHGEAR, (REDIS_CACHE_HIT, 16): SWITCHGEAR}
    assert chat_levels({MESSAGES, RESPONSES}, [1]) == {}


# Issue 28: the streamed upstream, the featureless proxy, the goals, the profile, the RSS run.


def test_stream_body_is_eleven_chunk_events_ending_in_usage_and_done() -> None:
    events = [line.removeprefix("data: ") for line in stream_body().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) == 11
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == FIXED_COMPLETION["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks[:-1])
    assert text == "".join(STREAM_DELTAS)


def test_nginx_config_serves_the_stream_under_its_prefix_with_escaped_newlines() -> None:
    config = nginx_config(Path("/tmp/x"), 8080)
    assert "location = /stream/v1/chat/completions" in config
    assert "location = /stream/v1/models" in config
    stream_line = next(line for line in config.splitlines() if "data: [DONE]" in line)
    assert stream_line.strip().startswith("return 200 'data: {")
    assert stream_line.count("\\n") == 2 * 12  # every event's blank line, escaped for nginx


def _by_name(*rows: tuple[str, int, float, float, float]) -> list[TargetOutcome]:
    """Outcomes from (name, concurrency, req/s, p50, p99) rows."""
    outcomes: dict[str, TargetOutcome] = {}
    for name, concurrency, rate, p50, p99 in rows:
        result = LoadResult(requests=int(rate), requests_per_s=rate, p50_ms=p50, p99_ms=p99,
                            non_2xx=0, socket_errors=0)
        outcomes.setdefault(name, TargetOutcome(name)).measurements.append(
            Measurement(name, concurrency, result, result))
    return list(outcomes.values())


def _verdicts(lines: list[str]) -> list[str]:
    return [line.rsplit(" ", 1)[1] for line in lines]


def test_goal_checks_hold_the_full_path_to_the_proxy_of_the_same_run() -> None:
    proxy = [(PROXY, 1, 2_500.0, 0.40, 1.0), (PROXY, 16, 7_000.0, 2.0, 3.8)]
    good = _by_name(*proxy, (FULL, 1, 2_000.0, 0.55, 1.0), (FULL, 16, 3_850.0, 4.0, 9.9),
                    (RECORDS, 16, 4_900.0, 3.0, 8.0), (FULL_STREAM, 1, 1_800.0, 0.7, 2.0),
                    (FULL_STREAM, 16, 2_000.0, 7.0, 12.0))
    lines = goal_checks(good)
    assert _verdicts(lines) == ["met"] * 6
    assert lines[0] == (f"{FULL} req/s at concurrency 16: 3,850, 55% of proxy's 7,000"
                        " (target >= 55%): met")
    assert lines[1] == (f"{FULL} p50 at concurrency 1: 0.550 ms, +0.150 ms over proxy's"
                        " 0.400 ms (target <= +0.15 ms): met")
    assert lines[4] == f"{FULL_STREAM} req/s at concurrency 16: 2,000 (target >= 2,000): met"
    bad = _by_name(*proxy, (FULL, 1, 2_000.0, 0.60, 1.0), (FULL, 16, 2_362.0, 8.0, 17.9),
                   (RECORDS, 16, 3_850.0, 3.0, 10.7), (FULL_STREAM, 1, 1_200.0, 0.8, 2.0),
                   (FULL_STREAM, 16, 1_216.0, 9.0, 20.0))
    assert _verdicts(goal_checks(bad)) == ["MISSED"] * 6
    assert problems(bad) == []  # a missed goal is reported, not a problem: the exit status is 0


def _result(rate: float, p50: float = 1.0, p99: float = 4.0) -> LoadResult:
    return LoadResult(requests=int(rate), requests_per_s=rate, p50_ms=p50, p99_ms=p99,
                      non_2xx=0, socket_errors=0)


def test_relative_goals_compare_with_the_proxy_measured_beside_the_row() -> None:
    """The proxy row ran minutes earlier at 7,000 req/s; measured just before the full row it
    answered 6,000 (the machine slowed): the goal compares with the run beside it."""
    outcomes = _by_name((PROXY, 16, 7_000.0, 2.0, 3.8), (FULL, 16, 3_400.0, 4.0, 9.0))
    full = outcomes[1].measurements
    full[0] = replace(full[0], rounds=(Round(full[0].measured, _result(6_000.0)),))
    assert goal_checks(outcomes)[0] == (f"{FULL} req/s at concurrency 16: 3,400, 57% of proxy"
                                        " (beside it)'s 6,000 (target >= 55%): met")
    assert goal_levels() == {(FULL, 16): PROXY, (FULL, 1): PROXY, (RECORDS, 16): PROXY,
                             (FULL_STREAM, 16): None, (FULL_STREAM, 1): None}


def test_goals_over_rounds_take_the_median_round() -> None:
    """Three rounds, one caught in a slow spell of the machine: the median decides, and every
    round's figure is shown; errors in any round, the row's or the proxy's, are problems."""
    rounds = (Round(_result(4_400.0, p50=0.30), _result(8_000.0, p50=0.20)),
              Round(_result(3_000.0, p50=0.60), _result(7_900.0, p50=0.25)),
              Round(_result(4_600.0, p50=0.32), _result(8_200.0, p50=0.21)))
    share = Goal(FULL, 16, "req/s", 0.55, PROXY).check({}, rounds)
    assert share == (f"{FULL} req/s at concurrency 16: median of 3 rounds 55% of proxy (beside"
                     " it)'s req/s (55%, 38%, 56%) (target >= 55%): met")
    margin = Goal(FULL, 1, "p50", 0.10, PROXY).check({}, rounds)
    assert margin == (f"{FULL} p50 at concurrency 1: median of 3 rounds +0.110 ms over proxy"
                      " (beside it)'s p50 (+0.100 ms, +0.350 ms, +0.110 ms) (target <= +0.1 ms):"
                      " MISSED")
    ceiling = Goal(FULL_STREAM, 1, "p50", 0.5).check({}, [Round(r.measured) for r in rounds])
    assert ceiling == (f"{FULL_STREAM} p50 at concurrency 1: median of 3 rounds 0.320 ms (0.300"
                       " ms, 0.600 ms, 0.320 ms) (target <= 0.5 ms): met")
    outcomes = _by_name((FULL, 16, 4_400.0, 4.0, 9.0))
    failing = LoadResult(requests=10, requests_per_s=1.0, p50_ms=1.0, p99_ms=1.0, non_2xx=3,
                         socket_errors=0)
    outcomes[0].measurements[0] = replace(outcomes[0].measurements[0], rounds=(
        rounds[0], Round(failing, rounds[1].beside), Round(rounds[2].measured, failing)))
    assert problems(outcomes) == [f"{FULL} at concurrency 16: 3 errors in round 2",
                                  f"the row beside {FULL} at concurrency 16: 3 errors in round 3"]
    assert Goal(FULL, 16, "req/s", 0.55, PROXY).check({}, [Round(_result(1.0))]).endswith(
        "not checked (needs switchgear-full and proxy at concurrency 16).")


def test_goal_checks_say_what_they_need_and_skip_rows_not_selected() -> None:
    lines = goal_checks(_by_name((FULL, 16, 2_000.0, 4.0, 9.0)))
    assert lines == [
        f"{FULL} req/s at concurrency 16: not checked (needs {FULL} and proxy at concurrency 16).",
        f"{FULL} p50 at concurrency 1: not checked (needs {FULL} and proxy at concurrency 1).",
        f"{FULL} p99 at concurrency 16: 9.000 ms (target <= 10.0 ms): met",
    ]
    assert goal_checks(_by_name((PROXY, 16, 7_000.0, 2.0, 3.8))) == []
    assert Goal(FULL, 64, "p99", 10.0).check({}).endswith("not checked (needs "
                                                          f"{FULL} at concurrency 64).")


def test_streamed_rows_add_over_the_streamed_upstream_when_it_was_measured() -> None:
    rows = [("upstream", 1, 20_000.0, 0.05, 0.1), ("switchgear-stream", 1, 1_000.0, 0.8, 2.0)]
    text = table(_by_name(*rows))
    assert "+0.750" in next(line for line in text.splitlines() if line.startswith("switchgear-"))
    text = table(_by_name(*rows, (STREAM_BASELINE, 1, 30_000.0, 0.03, 0.1)))
    assert "+0.770" in next(line for line in text.splitlines() if line.startswith("switchgear-"))
    assert " - " in next(line for line in text.splitlines() if line.startswith(STREAM_BASELINE))


def test_full_path_rows_add_the_guards_and_stream_from_the_stream_location(
        tmp_path: Path) -> None:
    upstream = NginxUpstream(tmp_path, 8080, core=0)
    plain, streamed = full_path(FULL, streamed=False), full_path(FULL_STREAM, streamed=True)
    assert (plain.extra, streamed.extra) == (GUARDS, GUARDS)
    launch = streamed.launch(upstream, 9000, 1, tmp_path)
    config = (tmp_path / "switchgear" / "switchgear.yaml").read_text()
    assert f"url: http://127.0.0.1:8080{STREAM_PREFIX}/v1\n" in config
    assert "check: pii, action: redact" in config and "auth: {mode: required}" in config
    assert launch.endpoint.body(REQUEST_BODY_OF_RUN)["stream"] is True
    assert launch.endpoint.body(REQUEST_BODY_OF_RUN)["stream_options"] == {"include_usage": True}
    assert "temperature" not in launch.endpoint.body(REQUEST_BODY_OF_RUN)  # the cache bypasses
    plain.launch(upstream, 9000, 1, tmp_path)
    assert "url: http://127.0.0.1:8080/v1\n" in (tmp_path / "switchgear" / "switchgear.yaml"
                                                 ).read_text()


def test_the_redis_hit_row_runs_its_own_redis_on_the_upstreams_core(tmp_path: Path) -> None:
    upstream = NginxUpstream(tmp_path, 8080, core=0)
    launch = switchgear_rows()[REDIS_CACHE_HIT].launch(upstream, 9000, 1, tmp_path)
    (redis,) = launch.services
    config = yaml.safe_load((tmp_path / "switchgear" / "switchgear.yaml").read_text())
    assert config["cache"]["url"] == f"redis://127.0.0.1:{redis.port}/0"
    assert list(redis.process.argv[:3]) == ["taskset", "-c", "0"]
    assert launch.process is not None and list(launch.process.argv[:3]) == ["taskset", "-c", "1"]
    redis.start()
    try:
        with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as connection:
            connection.sendall(b"PING\r\n")
            assert connection.recv(64) == b"+PONG\r\n"
    finally:
        redis.process.stop()
    assert redis.process.exit_code() is not None
    assert switchgear_rows()[SWITCHGEAR].launch(upstream, 9000, 1, tmp_path).services == ()


def test_arguments_for_the_profile_and_the_rss_run() -> None:
    cores = ["--load-core", "0", "--gateway-core", "0"]  # usable on any machine
    arguments = parse_arguments([*cores, "--only", "", "--profile", "--rss-requests", "50000"])
    assert (arguments.only, arguments.profile, arguments.rss_requests) == ([], FULL, 50_000)
    default = parse_arguments(cores)
    assert (default.profile, default.rss_requests, default.rss_row) == (None, 0, FULL)
    assert parse_arguments([*cores, "--profile", FULL_STREAM]).profile == FULL_STREAM
    with pytest.raises(SystemExit):
        parse_arguments([*cores, "--rss-requests", "-1"])
    with pytest.raises(SystemExit):
        parse_arguments([*cores, "--profile", "proxy"])  # only Switchgear rows are profiled


def _stats(*entries: tuple[Function, float, dict[Function, float]]) -> dict[Function, Entry]:
    """pstats-like raw stats from (function, own seconds, {caller: own seconds of the calls})."""
    return {function: (1, 1, own, own, {c: (1, 1, t, t) for c, t in callers.items()})
            for function, own, callers in entries}


GUARD_CHECK = ("/x/src/switchgear/guards/pii.py", 10, "scan")
ADMIT = ("/x/src/switchgear/pipeline/admit.py", 5, "admit")
SEARCH = ("~", 0, "<method 'search' of 're.Pattern' objects>")
HELPER = ("/usr/lib/python3.11/copy.py", 1, "deepcopy")


def test_attribute_gives_a_functions_time_to_its_file_or_its_callers() -> None:
    stats = _stats(
        (GUARD_CHECK, 0.002, {}),
        (ADMIT, 0.001, {}),
        (SEARCH, 0.004, {GUARD_CHECK: 0.003, ADMIT: 0.001}),  # split by the calls' own time
        (HELPER, 0.002, {SEARCH: 0.002}),  # no part: its caller's callers', up the graph
        (("/usr/lib/python3.11/abc.py", 1, "orphan"), 0.0005, {}),
        (("~", 0, "<built-in method orjson.dumps>"), 0.001, {ADMIT: 0.001}),
    )
    seconds = attribute(stats)
    assert seconds["stage Guard (input and output)"] == pytest.approx(0.002 + 0.003 + 0.0015)
    assert seconds["stage Admit (key, limits, budget)"] == pytest.approx(0.001 + 0.001 + 0.0005)
    assert seconds[JSON] == pytest.approx(0.001)
    assert seconds[OTHER] == pytest.approx(0.0005)
    assert sum(seconds.values()) == pytest.approx(0.0105)
    assert hotspots(stats, count=2) == [
        Hotspot("<method 'search' of 're.Pattern' objects>", "(its callers')", 0.004, 1),
        Hotspot("switchgear/guards/pii.py:10:scan", "stage Guard (input and output)", 0.002, 1)]
    assert hotspots(stats)[2].function == "copy.py:1:deepcopy"


def test_stage_profile_shows_shares_the_unseen_rest_and_estimates() -> None:
    profile = StageProfile("switchgear-full", 16, {JSON: 0.3, "stage Route": 0.6},
                           requests=1_000, main_cpu_s=1.0, unprofiled_requests=2_000,
                           unprofiled_main_cpu_s=1.0, unprofiled_other_cpu_s=0.1)
    lines = profile.lines()
    rows = {line.split("  ")[0]: line.split() for line in lines[3:-1]}
    assert rows["stage Route"][-3:] == ["600.0", "60.0%", "300.0"]
    assert rows[JSON][-3:] == ["300.0", "30.0%", "150.0"]
    assert next(line for line in lines if line.startswith(RESIDUAL)).split()[-3:] == [
        "100.0", "10.0%", "50.0"]
    assert rows["main thread, all parts"][-3:] == ["1,000.0", "100.0%", "500.0"]
    assert rows["other threads (from /proc, not profiled)"][-1] == "50.0"
    assert "inflates these 2.0x" in lines[-1]
    listed = replace(profile, top=(Hotspot("send", "HTTP server", 0.5, 14_000),)).lines()
    assert listed[-2:] == ["The 1 functions with the most own time (profiled; a coroutine's"
                           " calls count each time it was resumed):",
                           "     500.0 us/req own,  14.0 calls/req  send  [HTTP server]"]


def test_chunk_seconds_aims_at_the_next_mark_in_runs_of_at_most_five_seconds() -> None:
    assert chunk_seconds(5_000, None) == 1
    assert chunk_seconds(5_000, 2_000.0) == 3
    assert chunk_seconds(100, 2_000.0) == 1
    assert chunk_seconds(1_000_000, 2_000.0) == CHUNK_S


class _CountingLoad:
    """A WrkLoad stand-in answering ``rate`` requests a second, and a server whose RSS grows by
    one MiB a run."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.runs: list[int] = []

    def run(self, endpoint: Endpoint, concurrency: int, seconds: int) -> LoadResult:
        self.runs.append(seconds)
        return LoadResult(self.rate * seconds, float(self.rate), 1.0, 2.0, 0, 0)

    def rss_bytes(self) -> int:
        return (100 + len(self.runs)) * MIB


def test_rss_run_reads_rss_after_the_first_tenth_and_at_the_end() -> None:
    fake = _CountingLoad(rate=1_000)
    said: list[str] = []
    found = rss_run("switchgear-full", Endpoint("http://h", "m", {}),
                    cast(ServiceProcess, fake), cast(WrkLoad, fake), 20_000, 16, said.append)
    assert fake.runs == [1, 1, 5, 5, 5, 3]  # 1 s to learn the rate, then to the tenth, ...
    assert (found.tenth_requests, found.tenth_rss) == (2_000, 102 * MIB)
    assert (found.end_requests, found.end_rss) == (20_000, 106 * MIB)
    assert len(said) == 6 and said[0].startswith("[rss] 1,000 of 20,000 requests, 1,000 req/s")
    assert "(+3.9%; target <= 1.05x the first tenth's): met;" in found.lines()[0]
    grown = replace(found, end_rss=108 * MIB).lines()[0]
    assert "(+5.9%; target <= 1.05x the first tenth's): MISSED;" in grown


def test_service_process_reads_its_rss_and_threads(tmp_path: Path) -> None:
    process = ServiceProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                             tmp_path / "s.log")
    with process:
        deadline = time.monotonic() + 10
        while process.rss_bytes() <= 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.01)  # just started, the child may not be running Python yet
        assert process.rss_bytes() > 1024 * 1024
        assert process.pid in thread_cpu_seconds(process.pid)
    assert thread_cpu_seconds(process.pid) == {}


@needs_nginx_and_wrk
@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(("server", "client"), [
    ("uvicorn", "aiohttp"), ("aiohttp", "aiohttp"), ("granian", "aiohttp"),
    ("uvicorn", "switchgear"), ("uvicorn", "httpx")])
def test_proxy_relays_the_upstreams_answer(upstream: NginxUpstream, tmp_path: Path,
                                           streamed: bool, server: str, client: str) -> None:
    """Every server and client the proxy rows compare relays the answer as it came."""
    proxy = PythonProxy(Path(sys.executable), streamed=streamed, server=server, client=client)
    if proxy.missing() is not None:
        pytest.skip(f"the proxy cannot run here: {proxy.missing()}")
    launch = proxy.launch(upstream, free_port(), 0, tmp_path)
    assert launch.process is not None
    with launch.process:
        body = json.dumps(launch.endpoint.body(REQUEST)).encode()
        answer = wait_until_answers(launch.endpoint, body, launch.process, timeout_s=30)
    expected = stream_body() if streamed else json.dumps(FIXED_COMPLETION, separators=(",", ":"))
    assert answer.body.decode() == expected


@pytest.mark.parametrize("admission", [True, False])
def test_switchgear_configs_load_with_admission_on_or_off(tmp_path: Path, admission: bool) -> None:
    text = switchgear_config(NginxUpstream(tmp_path, 8080, core=0), tmp_path / "bench.db",
                             GUARDS, admission=admission)
    config = parse_config(yaml.safe_load(text))
    assert config.guards.input and config.guards.output
    assert config.auth.mode == ("required" if admission else "open")
    assert config.cache.enabled is admission
    assert (config.tiers is not None) is admission
    assert (config.limits.per_key.rpm is not None) is admission
    assert (config.limits.budgets.per_key is not None) is admission
