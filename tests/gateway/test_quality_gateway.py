"""Quality signals through the real gateway: two simulators over HTTP behind routes a and b, the
official openai client as the load, the change detector in its background task. One simulator
starts answering shorter and refusing more; the detector must fire on exactly that route."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
from click.testing import CliRunner

from switchgear.cli.admin_client import admin_call
from switchgear.cli.main import main
from switchgear.config import Config, parse_config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, fetch_records, gateway, wait_for_version

REFUSAL = "I'm sorry, but I can't help with that."
#: Short windows so that a test sees both fill: answers land in quarter-second buckets. A window
#: needs 60 answers per group: 15 a second, which even a busy test machine gives.
QUALITY = {"recent_s": 4, "baseline_s": 8, "bucket_s": 0.25, "min_samples": 60,
           "evaluate_every_s": 0.2}


def configure(tmp_path: Path, sims: dict[str, RunningSimulator], **quality: Any) -> Config:
    models = {alias: {"deployments": [{"name": f"sim-{alias}", "backend": "openai_http",
                                       "url": sim.base_url, "model": "sim"}]}
              for alias, sim in sims.items()}
    return parse_config({"models": models, "quality": {**QUALITY, **quality},
                         "store": {"url": f"sqlite:///{tmp_path}/records.db",
                                   "flush_interval_ms": 20}})


def admin(base_url: str, path: str) -> Any:
    response = urllib3.request("GET", base_url.removesuffix("/v1") + path, timeout=5)
    assert response.status == 200, response.data
    return json.loads(response.data)


class Clients:
    """Concurrent openai clients asking ``aliases`` in turn, some streamed; they keep the
    answers' texts by route."""

    def __init__(self, base_url: str, aliases: tuple[str, ...] = ("a", "b"),
                 workers: int = 12) -> None:
        self.base_url = base_url
        self.workers = workers
        self.aliases = aliases
        self.answers: dict[str, list[str]] = {alias: [] for alias in aliases}

    async def run(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Ask for ``seconds``, or until ``until()`` holds (checked twice a second)."""
        deadline = time.monotonic() + seconds
        done = False
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key="x",
                                      max_retries=0) as sdk:
            async def worker(index: int) -> None:
                count = 0
                while not done and time.monotonic() < deadline:
                    count += 1
                    alias = self.aliases[(index + count) % len(self.aliases)]
                    messages = [{"role": "user", "content": f"question {index}-{count}"}]
                    if count % 4 == 0:
                        stream = await sdk.chat.completions.create(
                            model=alias, messages=messages, temperature=0.7, stream=True)
                        text = "".join([chunk.choices[0].delta.content or ""
                                        async for chunk in stream if chunk.choices])
                    else:
                        answer = await sdk.chat.completions.create(
                            model=alias, messages=messages, temperature=0.7)
                        text = answer.choices[0].message.content or ""
                    self.answers[alias].append(text)

            tasks = [asyncio.create_task(worker(i)) for i in range(self.workers)]
            while until is not None and not done and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                done = await asyncio.to_thread(until)
            await asyncio.gather(*tasks)


def alerts(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(a["dimension"], a["name"], a["signal"]) for a in report["alerts"]}


def group(report: dict[str, Any], dimension: str, name: str) -> dict[str, Any]:
    return next(g for g in report["signals"]
                if g["dimension"] == dimension and g["name"] == name)


async def _set_faults(sim: RunningSimulator, faults: dict[str, Any]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, \
            session.post(sim.url + "/admin/faults", json=faults) as response:
        assert response.status == 200


def test_the_detector_fires_on_exactly_the_route_that_answers_worse(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path
) -> None:
    sims = {"a": simulators(ModelOptions(ttft_ms=2, tpot_ms=0.2, mean_output_tokens=20, seed=3)),
            "b": simulators(ModelOptions(ttft_ms=2, tpot_ms=0.2, mean_output_tokens=20, seed=4))}
    with gateway(configure(tmp_path, sims)) as base_url:
        clients = Clients(base_url)
        # Baseline: long enough for both windows to fill and many evaluations to pass.
        asyncio.run(clients.run(10.0))
        report = admin(base_url, "/admin/quality")
        for alias in ("a", "b"):
            route = group(report, "route", alias)
            assert route["baseline"]["answers"] >= QUALITY["min_samples"]
            assert route["recent"]["answers"] >= QUALITY["min_samples"]
            assert route["recent"]["refusal_rate"] == 0.0
        assert report["evaluated_at"] is not None
        assert report["alerts"] == [] and report["alerts_fired"] == 0

        # Route a's model server starts refusing a third of its answers and halves the rest.
        background.run(_set_faults(sims["a"], {"refusal_rate": 0.35, "output_factor": 0.5}))
        asyncio.run(clients.run(30.0, until=lambda: {
            ("route", "a", "refusal_rate"), ("route", "a", "output_tokens")} <= alerts(
                admin(base_url, "/admin/quality"))))
        report = admin(base_url, "/admin/quality")
        metrics = urllib3.request("GET", base_url.removesuffix("/v1") + "/metrics").data.decode()
        table = CliRunner().invoke(main, ["quality", "--url", base_url.removesuffix("/v1")])
        as_json = CliRunner().invoke(main, ["quality", "--url", base_url.removesuffix("/v1"),
                                            "--format", "json"])

    fired = alerts(report)
    assert {("route", "a", "refusal_rate"), ("route", "a", "output_tokens")} <= fired
    assert {name for _, name, _ in fired} <= {"a", "a/sim-a"}  # nothing about b
    assert report["alerts_fired"] == len(fired)
    route_a = group(report, "route", "a")
    assert route_a["recent"]["refusal_rate"] > route_a["baseline"]["refusal_rate"] + 0.05
    assert route_a["recent"]["output_tokens"] < route_a["baseline"]["output_tokens"] * 0.75
    assert group(report, "route", "b")["shifts"] == []
    assert REFUSAL in clients.answers["a"] and REFUSAL not in clients.answers["b"]
    assert ('switchgear_quality_alerts_total{dimension="route",name="a",signal="refusal_rate"} '
            '1.0') in metrics
    assert 'name="b",signal="refusal_rate"} 1.0' not in metrics

    # The records say which answers were refusals (the heuristic ran as a Recorder step).
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert {r.refused for r in records if r.model == "b"} == {False}
    assert {r.refused for r in records if r.model == "a"} == {False, True}

    # `switchgear quality` shows both windows and the shift, as a table and as JSON.
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["dimension", "name", "window", "answers"]
    assert any(line.split()[:3] == ["route", "a", "recent"] for line in lines)
    assert any(line.split()[:3] == ["route", "b", "baseline"] for line in lines)
    assert any(line.startswith("shift: route a: refusal_rate") for line in lines)
    assert not any(line.startswith("shift: route b") for line in lines)
    assert as_json.exit_code == 0, as_json.output
    assert ("route", "a", "refusal_rate") in alerts(json.loads(as_json.output))


SIMULATED = {"deployments": [{"name": "local", "backend": "simulated",
                              "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
ADMIN = "sg-test-admin-secret-quality-0123456789"


def test_quality_is_for_readers_only(make_config: Callable[..., Config],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"m": SIMULATED})) as base_url:
        root = base_url.removesuffix("/v1")
        keys = {role: admin_call(root, "POST", "/admin/keys", ADMIN,
                                 {"tenant": "t", "name": role, "role": role})["secret"]
                for role in ("client", "viewer")}
        with openai.OpenAI(base_url=base_url, api_key=keys["client"], max_retries=0) as sdk:
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        refused = CliRunner().invoke(main, ["quality", "--url", root, "--admin-key",
                                            keys["client"]])
        anonymous = CliRunner().invoke(main, ["quality", "--url", root],
                                       env={"SWITCHGEAR_ADMIN_KEY": None})
        viewer = CliRunner().invoke(main, ["quality", "--url", root, "--admin-key",
                                           keys["viewer"], "--format", "json"])
    assert refused.exit_code == 1 and "403" in refused.output
    assert anonymous.exit_code == 1 and "401" in anonymous.output
    assert viewer.exit_code == 0, viewer.output
    report = json.loads(viewer.output)
    assert group(report, "route", "m")["recent"]["answers"] == 1


def test_quality_switched_off_says_so(make_config: Callable[..., Config], tmp_path: Path) -> None:
    config = make_config({"m": SIMULATED})
    config = config.model_copy(update={"quality": config.quality.model_copy(
        update={"enabled": False})})
    with gateway(config) as base_url:
        result = CliRunner().invoke(main, ["quality", "--url", base_url.removesuffix("/v1")])
    assert result.exit_code == 1
    assert "404: Quality signals are off" in result.output


def test_a_canary_that_refuses_more_than_its_baseline_is_rolled_back(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    options = ModelOptions(ttft_ms=2, tpot_ms=0.2, mean_output_tokens=20, seed=5)
    base, new = simulators(options), simulators(options)
    background.run(_set_faults(new, {"refusal_rate": 0.4}))
    config = configure(tmp_path, {"base": base, "new": new})
    models = {**config.model_dump()["models"],
              "a": {"variants": [{"model": "base", "weight": 1},
                                 {"model": "new", "weight": 1, "canary": True}],
                    "sticky": "none",
                    # Both arms are equally fast: only a busy machine's noise could make the
                    # canary's p95 look worse, and this test is about the quality detector.
                    "canary_guard": {"p95_margin": 100}}}
    config = parse_config({**config.model_dump(mode="json"), "models": models})
    with caplog.at_level(logging.WARNING, "switchgear"), gateway(config) as base_url:
        asyncio.run(Clients(base_url, ("a",)).run(30.0, until=lambda: admin(
            base_url, "/admin/routing")["models"]["a"]["canary"]["rolled_back"] is not None))
        # The rollback is a config version every replica adopts; the detector carries on in it.
        wait_for_version(base_url, 2)
        routing = admin(base_url, "/admin/routing")["models"]["a"]
        report = admin(base_url, "/admin/quality")
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
            for i in range(20):
                sdk.chat.completions.create(model="a", messages=[
                    {"role": "user", "content": f"after {i}"}], temperature=0.7)
    assert routing["canary"]["rolled_back"].startswith("quality: refusal_rate")
    assert routing["variants"] == {"base": 1.0, "new": 0.0}
    # The alert went with the comparison (no canary left to compare); the rollback stays.
    assert report["alerts_fired"] >= 1
    assert any(r.getMessage().startswith("quality shift on canary a:new: refusal_rate")
               for r in caplog.records)
    answered = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert {r.variant for r in answered if r.model == "a"} == {"base", "new"}
    # All traffic back on the baseline arm: the twenty requests sent after the rollback.
    last = sorted((r for r in answered if r.model == "a"), key=lambda r: r.received_at)[-20:]
    assert {r.variant for r in last} == {"base"}
