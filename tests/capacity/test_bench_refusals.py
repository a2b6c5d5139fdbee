"""bench refuses a target that will not serve the model before any level, and stops a level
(and the run) whose every answer is the same client error; load answers (429, 503) never stop it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from switchgear.capacity.bench.load import CONCURRENCY, POISSON, STOP_AFTER_ANSWERS, Level
from switchgear.cli.main import main
from switchgear.config import Config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, aiohttp_server, gateway_process

FAST = ModelOptions(ttft_ms=2, tpot_ms=0.5, mean_output_tokens=1000, slots=16, seed=3,
                    load_factor=0)
Simulators = Callable[..., RunningSimulator]
RunLevels = Callable[..., dict[str, Any]]
SHORT = ["--duration", "0.3", "--warmup", "0", "--output-tokens", "4"]


def _bench(url: str, model: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["bench", "--url", url, "--model", model, *args])


def test_a_model_the_gateway_does_not_serve_is_refused_before_any_level(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    config = make_config({"sim": {"deployments": [{
        "name": "d", "backend": "simulated",
        "simulated": {"ttft_ms": 1, "tpot_ms": 1, "mean_output_tokens": 4, "seed": 1}}]}})
    with gateway_process(config, tmp_path) as url:
        result = _bench(url, "nope", "-c", "4", "--duration", "30", "--json",
                        str(tmp_path / "p.json"))
        assert result.exit_code == 2, result.output
        assert (f"the target at {url} does not serve model 'nope'; it serves: sim"
                in result.output)
        assert "HTTP 404" in result.output  # the one test request's answer
        assert not (tmp_path / "p.json").exists()  # no level ran
        served = _bench(url, "sim", "-c", "1", *SHORT)
        assert served.exit_code == 0, served.output


def test_a_refused_key_is_reported_with_the_servers_message(simulators: Simulators) -> None:
    sim = simulators(FAST, api_key="sekret")
    result = _bench(sim.base_url, "sim", "-c", "2", "--duration", "30")
    assert result.exit_code == 2, result.output
    assert ("refused a test request for model 'sim': HTTP 401: Incorrect API key provided."
            in result.output)


def test_a_server_that_answers_any_model_name_is_benched_with_a_warning(
        simulators: Simulators) -> None:
    sim = simulators(FAST)  # lists "sim", answers whatever model is asked for
    result = _bench(sim.base_url, "other", "-c", "1", *SHORT)
    assert result.exit_code == 0, result.output
    assert "does not list model 'other' (it lists: sim), but it answered" in result.output


def test_nobody_listening_is_refused(refused_url: Callable[..., str]) -> None:
    url = refused_url() + "/v1"
    result = _bench(url, "sim", "-c", "8", "--duration", "30")
    assert result.exit_code == 2
    assert f"cannot connect to the target at {url}" in result.output


def test_a_level_of_one_client_error_stops_and_so_does_the_run(
        simulators: Simulators, run_levels: RunLevels) -> None:
    sim = simulators(FAST, api_key="sekret")
    levels = [Level(CONCURRENCY, 30.0, 1.0, concurrency=2), Level(CONCURRENCY, 30.0, concurrency=4)]
    profile = run_levels(sim.base_url, levels)
    [level] = profile["levels"]  # the second level never ran
    assert level["stopped"] == "every answer was HTTP 401: Incorrect API key provided."
    # Counted whole, warm-up included: every request it sent, all refused.
    assert STOP_AFTER_ANSWERS <= level["sent"] <= STOP_AFTER_ANSWERS + 2
    assert level["errors"] == {"http_401": level["sent"]} and level["error_rate"] == 1.0
    opened = run_levels(sim.base_url, [Level(POISSON, 30.0, rate=200.0)])["levels"][0]
    assert opened["stopped"] and opened["sent"] < 2 * STOP_AFTER_ANSWERS


@pytest.mark.parametrize("status", [429, 503])
def test_load_answers_never_stop_a_level(status: int, simulators: Simulators,
                                         run_levels: RunLevels) -> None:
    sim = simulators(FAST, Faults(error_rate=1.0, error_status=status))
    level = run_levels(sim.base_url, [Level(CONCURRENCY, 0.5, concurrency=2)])["levels"][0]
    assert level["stopped"] is None
    assert level["errors"] == {f"http_{status}": level["sent"]}
    assert level["sent"] > STOP_AFTER_ANSWERS


@pytest.fixture
def forbidding_server(background: BackgroundLoop) -> Iterator[str]:
    """Lists model "m", and answers every completion 403 with an OpenAI-shaped error."""
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "monthly budget exhausted",
                                            "type": "insufficient_quota"}}, status=403)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    with aiohttp_server(app, background) as url:
        yield url + "/v1"


def test_the_cli_reports_the_stopped_level_and_keeps_its_profile(
        forbidding_server: str, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = _bench(forbidding_server, "m", "-c", "2", "-c", "8", "--duration", "30",
                    "--json", str(out))
    assert result.exit_code == 1, result.output
    message = "every answer was HTTP 403: monthly budget exhausted"
    assert f"c=2 stopped early, and the run with it: {message}" in result.output
    assert f"stopped at c=2, the levels after it not run: {message}" in result.output
    profile = json.loads(out.read_text())
    assert [level["stopped"] for level in profile["levels"]] == [message]
