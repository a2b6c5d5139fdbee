"""Routing under real faults: simulators over real HTTP, many concurrent clients."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import urllib3
from aiohttp import web

from switchgear.config import Config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, aiohttp_server, fetch_records, gateway

HELLO = [{"role": "user", "content": "Say hello"}]
ROUTING = {"health_check_interval_s": 0.5,
           "outlier": {"base_ejection_s": 1.0, "max_ejection_s": 5.0}}


def deployment(name: str, sim: RunningSimulator | str, **extra: Any) -> dict[str, Any]:
    """A deployment of a simulator, or of ``sim`` as a URL."""
    url = sim if isinstance(sim, str) else sim.base_url
    return {"name": name, "backend": "openai_http", "url": url, "model": "sim",
            "timeouts": {"connect": 1, "ttft": 5, "idle": 5, "total": 10}, **extra}


def answered(sdk: openai.OpenAI, model: str, messages: Any, stream: bool) -> bool:
    """Whether ``model`` answered ``messages`` (a streamed answer: with at least one chunk)."""
    if stream:
        return bool(list(sdk.chat.completions.create(model=model, messages=messages,
                                                     max_tokens=4, stream=True)))
    return bool(sdk.chat.completions.create(model=model, messages=messages, max_tokens=4))


def configure(tmp_path: Path, models: dict[str, Any], routing: dict[str, Any] | None = None
              ) -> Config:
    from switchgear.config import parse_config

    return parse_config({"models": models, "routing": {**ROUTING, **(routing or {})},
                         "store": {"url": f"sqlite:///{tmp_path}/records.db",
                                   "flush_interval_ms": 20}})


def routing_state(base_url: str) -> dict[str, Any]:
    response = urllib3.request("GET", base_url.removesuffix("/v1") + "/admin/routing", timeout=5)
    state: dict[str, Any] = json.loads(response.data)
    return state


def deployment_state(base_url: str, alias: str, name: str) -> dict[str, Any]:
    entry = routing_state(base_url)["models"][alias]["deployments"]
    return next(d for d in entry if d["name"] == name)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


class Load:
    """Many concurrent clients sending chat requests for a while; counts what they got."""

    def __init__(self, base_url: str, model: str = "chat", workers: int = 32) -> None:
        self.url = base_url + "/chat/completions"
        self.model = model
        self.workers = workers
        self.statuses: list[int] = []
        self.retry_after: list[str | None] = []
        self.errors: Counter[str] = Counter()
        #: Seconds each request took, as its client saw it.
        self.latencies: list[float] = []
        #: The gateway's /admin/routing once the load was over (when the test keeps it).
        self.routing: dict[str, Any] = {}

    async def burst(self) -> None:
        """Each of the ``workers`` clients sends one request, all at once."""
        await self.run(0.0, once=True)

    async def run(self, seconds: float, body: dict[str, Any] | None = None,
                  during: Callable[[], Any] | None = None, at: float = 0.0,
                  once: bool = False) -> None:
        """Send requests from ``workers`` clients for ``seconds``; call ``during`` at ``at`` s."""
        payload = body or {"model": self.model, "messages": HELLO, "max_tokens": 4}
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def worker(index: int) -> None:
                sent = 0
                while time.monotonic() < deadline or (once and not sent):
                    sent += 1
                    data = {**payload, "user": f"user-{index}-{len(self.statuses)}"}
                    started = time.monotonic()
                    try:
                        async with session.post(self.url, json=data) as response:
                            answer = await response.read()
                            self.statuses.append(response.status)
                            if response.status != 200:
                                self.errors[answer.decode(errors="replace")[:300]] += 1
                            self.retry_after.append(response.headers.get("retry-after"))
                    except aiohttp.ClientError:
                        self.statuses.append(0)
                    self.latencies.append(time.monotonic() - started)

            tasks = [asyncio.create_task(worker(i)) for i in range(self.workers)]
            if during is not None:
                await asyncio.sleep(at)
                await asyncio.to_thread(during)
            await asyncio.gather(*tasks)

    @property
    def success_ratio(self) -> float:
        return self.statuses.count(200) / len(self.statuses)

    def percentile(self, share: float) -> float:
        """The nearest-rank ``share`` percentile of the latencies, in seconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    def figures(self) -> str:
        """Requests, success and latency percentiles, for the test's output."""
        return (f"{len(self.statuses)} requests, {self.success_ratio:.4%} succeeded "
                f"({self.failures()}); p50 {self.percentile(0.5) * 1000:.1f} ms, "
                f"p99 {self.percentile(0.99) * 1000:.1f} ms, max {max(self.latencies):.2f} s")

    def failures(self) -> str:
        """How many of the requests failed, and with which statuses (0: no answer)."""
        failed = Counter(status for status in self.statuses if status != 200)
        return (f"{sum(failed.values())} of {len(self.statuses)} failed: {dict(failed)}; "
                f"answers: {dict(self.errors.most_common(3))}")


#: The gateway's defaults for routing (5 s health checks, 2 s first ejection), not ROUTING's.
DEFAULT_ROUTING = {"health_check_interval_s": 5.0,
                   "outlier": {"base_ejection_s": 2.0, "max_ejection_s": 60.0}}
#: The issue's load for partial failures: 16 clients for 20 s.
CLIENTS, SECONDS = 16, 20.0


def one_of_three(simulators: Callable[..., RunningSimulator], tmp_path: Path,
                 faulty: RunningSimulator, during: Callable[[], Any] | None = None
                 ) -> tuple[Load, dict[str, Any]]:
    """``faulty`` and two healthy simulators behind the default routing, loaded by ``CLIENTS``
    clients for ``SECONDS`` (``during`` called at 3 s); the load (its ``routing`` the gateway's
    routing state at the end) and the faulty deployment's state."""
    config = configure(tmp_path, {"chat": {"deployments": [
        deployment("faulty", faulty), deployment("a", simulators()),
        deployment("b", simulators())]}}, routing=DEFAULT_ROUTING)
    with gateway(config) as base_url:
        load = Load(base_url, workers=CLIENTS)
        asyncio.run(load.run(SECONDS, during=during, at=3.0))
        load.routing = routing_state(base_url)
    faulty_state = next(d for d in load.routing["models"]["chat"]["deployments"]
                        if d["name"] == "faulty")
    return load, faulty_state


def test_a_hung_upstream_that_still_lists_its_models_costs_almost_nothing(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    """One of three upstreams accepts inference requests and never answers them, while it
    answers GET /models."""
    load, hung = one_of_three(simulators, tmp_path, simulators(faults=Faults(hang_rate=1.0)))
    print(f"hung upstream: {load.figures()}; hung: {hung['attempts']} attempts, {hung['state']}")
    assert load.success_ratio >= 0.999, load.failures()
    assert load.percentile(0.99) <= 2 * 5.0
    assert hung["state"] != "healthy"  # its passing health checks did not readmit it
    # The first pile-up (each client's request that landed there before it was ejected), then
    # only one probe per ejection (2 s, 4 s, 8 s ... apart): no new pile-up after a health
    # check that GET /models passes.
    assert hung["attempts"] <= CLIENTS + 4


def test_a_health_check_that_is_not_2xx_ejects(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path
) -> None:
    """A wrong base URL behind a proxy answers 404: that is no healthy deployment."""
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such route"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    with aiohttp_server(app, background) as proxy, gateway(configure(tmp_path, {"chat": {
            "deployments": [deployment("wrong", proxy + "/v1"),
                            deployment("a", simulators())]}})) as base_url:
        assert wait_until(lambda: deployment_state(base_url, "chat", "wrong")["state"] == "ejected",
                          5)
        assert "health check failed" in deployment_state(base_url, "chat", "wrong")["reason"]


def test_an_alias_with_one_deployment_retries_it(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path
) -> None:
    """Every other request to the lone upstream fails with a 503: each is retried there, after
    a backoff, and the client sees none of them."""
    sim = simulators()
    answered = Counter[str]()

    async def every_other(request: web.Request) -> web.Response:
        answered["requests"] += 1
        if answered["requests"] % 2:
            return web.json_response({"error": {"message": "busy", "type": "server_error"}},
                                     status=503)
        async with aiohttp.ClientSession() as session, session.post(
                sim.base_url + "/chat/completions", data=await request.read(),
                headers={"Content-Type": "application/json"}) as upstream:
            return web.json_response(await upstream.json())

    app = web.Application()
    app.router.add_post("/v1/chat/completions", every_other)
    with aiohttp_server(app, background) as flaky, gateway(configure(tmp_path, {"chat": {
            "deployments": [deployment("only", flaky + "/v1")]}},
            routing={"health_check_interval_s": None})) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        for _ in range(10):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
    assert answered["requests"] == 20
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert [r.attempts for r in records] == [2] * 10


@pytest.mark.parametrize("stream", [False, True])
def test_a_hedge_answers_when_the_first_deployment_is_slow(
    simulators: Callable[..., RunningSimulator], tmp_path: Path, stream: bool
) -> None:
    """The first deployment (by priority) takes 2 s to its first token; 50 ms after the first
    attempt a hedge goes to the second, which answers; the slow attempt is cancelled."""
    slow = simulators(faults=Faults(spike_rate=1.0, spike_ms=2000))
    config = configure(tmp_path, {"chat": {"policy": "priority", "hedge": {"after_ms": 50},
                                           "deployments": [deployment("slow", slow),
                                                           deployment("fast", simulators())]}})
    with gateway(config) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        if stream:
            chunks = list(sdk.chat.completions.create(model="chat", messages=HELLO,
                                                      max_tokens=4, stream=True))
            assert chunks
        else:
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=4)
        slow_state = deployment_state(base_url, "chat", "slow")
    (record,) = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert record.status == 200 and record.deployment == "fast" and record.attempts == 2
    assert slow_state["in_flight"] == 0  # the losing attempt gave its slot back
    assert slow_state["state"] == "healthy"  # a cancelled attempt is no failure


def test_one_of_three_killed_mid_load_is_ejected_then_readmitted(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path
) -> None:
    a, b, c = simulators(), simulators(), simulators()
    port_b = b.port
    config = configure(tmp_path, {"chat": {"deployments": [
        deployment("a", a), deployment("b", b), deployment("c", c)]}})
    with gateway(config) as base_url:
        load = Load(base_url)
        asyncio.run(load.run(4.0, during=lambda: background.run(b.stop()), at=1.0))
        assert len(load.statuses) > 500
        assert load.success_ratio >= 0.999, load.failures()
        assert wait_until(lambda: deployment_state(base_url, "chat", "b")["state"] != "healthy", 5)

        simulators(port=port_b)  # it comes back on the same address
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
            def readmitted() -> bool:
                """A passed health check only makes a probe due: a real request readmits b."""
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
                return bool(deployment_state(base_url, "chat", "b")["state"] == "healthy")

            assert wait_until(readmitted, 10)
            for _ in range(30):
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        assert deployment_state(base_url, "chat", "b")["state"] == "healthy"
    served_by_b_after = [r for r in fetch_records(f"sqlite:///{tmp_path}/records.db")
                         if r.deployment == "b"]
    assert served_by_b_after  # b served requests again once readmitted (and before it died)


def test_five_percent_errors_are_absorbed_within_the_retry_budget(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    flaky = simulators(faults=Faults(error_rate=0.05, error_status=500))
    load, _ = one_of_three(simulators, tmp_path, flaky)
    budget = load.routing["retry_budget"]
    print(f"5% of 500s on one: {load.figures()}; retries {budget['retries']}")
    assert len(load.statuses) > 10_000
    assert load.success_ratio >= 0.9999, load.failures()
    assert load.percentile(0.99) <= 2 * 5.0
    assert budget["retries"] > 0
    # the ratio, the reserve (at least one per request being routed) and the per-second refill
    assert budget["retries"] <= 0.2 * budget["requests"] + CLIENTS + 5 * (SECONDS + 2)


def test_an_upstream_failing_every_request_from_the_third_second_costs_almost_nothing(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    failing = simulators()

    def break_it() -> None:
        failing.state.faults = Faults(error_rate=1.0, error_status=500)

    load, state = one_of_three(simulators, tmp_path, failing, during=break_it)
    print(f"failing from 3 s: {load.figures()}; failing: {state['attempts']} attempts, "
          f"{state['state']}")
    assert load.success_ratio >= 0.999, load.failures()
    assert load.percentile(0.99) <= 2 * 5.0


def test_latency_aware_policy_moves_traffic_off_a_slowed_deployment(
    simulators: Callable[..., RunningSimulator], background: BackgroundLoop, tmp_path: Path
) -> None:
    options = ModelOptions(ttft_ms=10, tpot_ms=0.1, mean_output_tokens=4, seed=5)
    slow = simulators(options)
    config = configure(tmp_path, {"chat": {"policy": "latency", "deployments": [
        deployment("slow", slow), deployment("b", simulators(options)),
        deployment("c", simulators(options))]}})
    with gateway(config) as base_url:
        asyncio.run(Load(base_url, workers=8).run(1.5))  # everyone measured while equal
        assert attempts(base_url)[0] > 0  # it had its share before it slowed down
        # Forty times slower: the policy weighs latency by load (Finagle's cost), so on a busy
        # machine, where the others' answers take longer too, a merely ten times slower one
        # still wins some picks against a deployment with several requests in flight.
        background.run(_set_faults(slow, {"spike_rate": 1.0, "spike_ms": 500}))
        noticing = Load(base_url, workers=8)  # what was sent before the first slow answer
        asyncio.run(noticing.run(1.0))        # came back is not what this test is about
        slow_before, total_before = attempts(base_url)
        load = Load(base_url, workers=8)
        asyncio.run(load.run(3.0))
        slow_after, total_after = attempts(base_url)
    share = (slow_after - slow_before) / (total_after - total_before)
    assert total_after - total_before >= 100, "too few requests to measure a share"
    assert share <= 0.10, f"the slow deployment still got {share:.1%} of the traffic"
    assert noticing.success_ratio == load.success_ratio == 1.0


def attempts(base_url: str) -> tuple[int, int]:
    """Attempts so far on the deployment named "slow", and on all of the alias's deployments."""
    deployments = routing_state(base_url)["models"]["chat"]["deployments"]
    slow = next(d["attempts"] for d in deployments if d["name"] == "slow")
    return slow, sum(d["attempts"] for d in deployments)


async def _set_faults(sim: RunningSimulator, faults: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(sim.url + "/admin/faults", json=faults) as response:
        assert response.status == 200


def test_a_stream_cut_mid_way_ends_in_an_error_event_without_fallback(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    cutting = simulators(ModelOptions(ttft_ms=1, tpot_ms=1, mean_output_tokens=40, seed=1),
                         Faults(disconnect_rate=1.0))
    config = configure(tmp_path, {"chat": {"policy": "priority", "deployments": [
        deployment("cutting", cutting), deployment("healthy", simulators())]}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        chunks = []
        with pytest.raises(openai.APIError) as error:
            for chunk in sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=40,
                                                     stream=True):
                chunks.append(chunk)
        assert chunks, "the failure came after the first byte"
        assert "mid-stream" in str(error.value) or "broke" in str(error.value)
    (record,) = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert record.truncated and record.attempts == 1 and record.deployment == "cutting"
    assert record.status >= 500


def test_every_deployment_down_gives_fast_503s_with_bounded_attempts(
        tmp_path: Path, refused_url: Callable[..., str]) -> None:
    config = configure(tmp_path, {"chat": {"deployments": [
        deployment(name, refused_url() + "/v1") for name in "abc"]}},
        routing={"retry": {"budget_ratio": 0.2, "budget_min_per_second": 5}})
    with gateway(config) as base_url:
        load = Load(base_url, workers=16)
        asyncio.run(load.run(2.0))
        state = routing_state(base_url)
    requests = len(load.statuses)
    assert requests > 100
    assert set(load.statuses) == {503}
    assert all(value is not None and float(value) >= 1 for value in load.retry_after)
    assert all(d["state"] != "healthy" for d in state["models"]["chat"]["deployments"])
    attempts = sum(r.attempts for r in fetch_records(f"sqlite:///{tmp_path}/records.db"))
    # every first attempt, plus retries the budget allowed (share, reserve of at least one per
    # client, per-second refill)
    assert attempts <= requests + 0.2 * requests + 16 + 5 * 3


def test_a_failing_canary_is_rolled_back_and_the_log_says_why(
    simulators: Callable[..., RunningSimulator], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = configure(tmp_path, {
        "chat": {"variants": [{"model": "stable", "weight": 70},
                              {"model": "candidate", "weight": 30, "canary": True}],
                 # p95 margin wide: this test is about errors, not a busy machine's latency noise
                 "canary_guard": {"min_samples": 40, "error_rate_margin": 0.05,
                                  "p95_margin": 100}},
        "stable": {"deployments": [deployment("stable-1", simulators())]},
        "candidate": {"deployments": [deployment("candidate-1", simulators(
            faults=Faults(error_rate=0.2, error_status=500)))]},
    }, routing={"outlier": {"error_ratio": 0.9, "consecutive_failures": 50}})
    with caplog.at_level(logging.WARNING, logger="switchgear.routing"), \
            gateway(config) as base_url:
        asyncio.run(Load(base_url, workers=16).run(3.0))
        canary = routing_state(base_url)["models"]["chat"]["canary"]
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
            for index in range(20):
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2,
                                            user=f"after-{index}")
    assert canary["rolled_back"] and "error rate" in canary["rolled_back"]
    assert any("rolled back" in m and "error rate" in m for m in caplog.messages)
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert {r.variant for r in records} == {"stable", "candidate"}
    assert all(r.model == "chat" for r in records)
    assert [r.variant for r in records[-20:]] == ["stable"] * 20  # no traffic after rollback


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("declared", [False, True], ids=["upstream-refuses", "window-declared"])
def test_a_request_too_long_for_the_primary_goes_to_the_long_context_fallback(
    simulators: Callable[..., RunningSimulator], tmp_path: Path, stream: bool, declared: bool
) -> None:
    short = simulators(ModelOptions(ttft_ms=1, tpot_ms=0.1, mean_output_tokens=4,
                                    context_window=256, seed=2))
    long = simulators(ModelOptions(ttft_ms=1, tpot_ms=0.1, mean_output_tokens=4,
                                   context_window=32_768, seed=2))
    window = {"context_window": 256} if declared else {}
    config = configure(tmp_path, {
        "short": {"fallbacks": ["long"], "deployments": [deployment("short-1", short, **window)]},
        "long": {"deployments": [deployment("long-1", long)]},
    })
    prompt = [{"role": "user", "content": "tell me about this: " + "lorem ipsum " * 400}]
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        assert answered(sdk, "short", prompt, stream)
        small = sdk.chat.completions.create(model="short", messages=HELLO, max_tokens=4)
        assert small.choices[0].message.content
    records = {r.deployment: r for r in fetch_records(f"sqlite:///{tmp_path}/records.db")}
    assert set(records) == {"long-1", "short-1"}
    assert records["long-1"].model == "short" and records["long-1"].status == 200
    assert records["long-1"].attempts == (1 if declared else 2)


@pytest.mark.parametrize("stream", [False, True])
def test_an_alias_whose_only_deployment_is_down_is_served_by_its_fallback(
    simulators: Callable[..., RunningSimulator], refused_url: Callable[..., str],
    tmp_path: Path, stream: bool
) -> None:
    # Its lone deployment is retried, but never with the attempts its fallback needs.
    config = configure(tmp_path, {
        "primary": {"fallbacks": ["backup"],
                    "deployments": [deployment("down", refused_url() + "/v1")]},
        "backup": {"deployments": [deployment("up", simulators())]},
    }, routing={"health_check_interval_s": None})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        assert answered(sdk, "primary", HELLO, stream)
    [record] = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert record.status == 200 and record.deployment == "up" and record.model == "primary"
    assert record.attempts == 3  # "down" twice (max_attempts 3 less one for "backup"), "up"


def test_a_hanging_deployment_times_out_before_the_first_token_and_fails_over(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    hanging = simulators(faults=Faults(hang_rate=1.0))
    config = configure(tmp_path, {"chat": {"policy": "priority", "deployments": [
        deployment("hanging", hanging, timeouts={"connect": 1, "ttft": 0.3, "idle": 1, "total": 1}),
        deployment("healthy", simulators())]}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        assert list(sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3,
                                                stream=True))
        assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3)
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert all(r.status == 200 and r.deployment == "healthy" for r in records)
    assert records[0].attempts == 2


def test_a_full_deployment_spills_to_the_next_or_queues_briefly(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    slow = ModelOptions(ttft_ms=300, tpot_ms=0.1, mean_output_tokens=2, seed=4)
    config = configure(tmp_path, {
        "chat": {"policy": "priority", "deployments": [
            deployment("small", simulators(slow), max_concurrency=2),
            deployment("spare", simulators(slow))]},
        "single": {"deployments": [deployment("only", simulators(slow), max_concurrency=1)]},
    }, routing={"queue_timeout_ms": 50})
    with gateway(config) as base_url:
        spill = Load(base_url, workers=6)
        asyncio.run(spill.burst())
        single = Load(base_url, model="single", workers=4)
        asyncio.run(single.burst())
    assert spill.statuses == [200] * 6
    served = [r.deployment for r in fetch_records(f"sqlite:///{tmp_path}/records.db")
              if r.model == "chat"]
    assert served.count("small") == 2 and served.count("spare") == 4
    assert sorted(single.statuses) == [200, 503, 503, 503]
    assert all(float(value) >= 1 for status, value in zip(single.statuses, single.retry_after,
                                                           strict=True) if status == 503)
