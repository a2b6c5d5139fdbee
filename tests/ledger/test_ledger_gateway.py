"""Ledger exactness through the real gateway: two tenants (keys), priced models (an API with a
prompt cache, a self-hosted box), exact-cache hits, failures injected by a simulator and a request
shed by the priority gate. The ledger's sum equals an independent computation from the recorded
usage and the price book; failed and shed requests cost nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator
from switchgear.store.records import RequestRecord

from servers import fetch_records, gateway

ADMIN = "sg-test-admin-secret-0123456789abcdef"
#: Prices large enough that a token priced wrong moves the total by more than a cent.
API_PRICE = {"input_per_million": 20_000, "cached_input_per_million": 5_000,
             "output_per_million": 80_000}
BOX_PRICE = {"input_per_million": 1_000, "output_per_million": 1_000,
             "instance_per_hour": 36_000, "instances": 2, "concurrency": 4}
PRICES = {("chat", "api"): API_PRICE, ("local", "box"): BOX_PRICE,
          ("broken", "flaky"): API_PRICE, ("slow", "lag"): API_PRICE}
CACHING = ModelOptions(ttft_ms=1, tpot_ms=0.2, mean_output_tokens=6, seed=3,
                       cached_prompt_share=0.5)


def configure(store_url: str, api: RunningSimulator, box: RunningSimulator,
              flaky: RunningSimulator, slow: RunningSimulator) -> Config:
    def deployment(name: str, sim: RunningSimulator, model: str) -> dict[str, Any]:
        return {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim",
                "price": PRICES[(model, name)]}

    return parse_config({
        "models": {"chat": {"deployments": [deployment("api", api, "chat")]},
                   "local": {"deployments": [deployment("box", box, "local")]},
                   "broken": {"deployments": [deployment("flaky", flaky, "broken")]},
                   "slow": {"deployments": [deployment("lag", slow, "slow")]}},
        "store": {"url": store_url, "flush_interval_ms": 20},
        # one running place and no queue for the standard tier: a second request is shed
        "tiers": {"capacity": 1, "standard": {"max_queue": 0, "wait_target_ms": 100}},
        "cache": {"enabled": True},
        "routing": {"health_check_interval_s": None},
    })


def admin(base_url: str, path: str, token: str = ADMIN, body: Any = None,
          method: str = "GET") -> tuple[int, Any]:
    response = urllib3.request(method, base_url.removesuffix("/v1") + path, timeout=10,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/json"},
                               body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def expected_cost(record: RequestRecord) -> float:
    """What the price book says ``record`` costs, computed here from its usage alone."""
    if record.status >= 400 or record.cache_status in ("hit", "coalesced"):
        return 0.0
    price = PRICES[(record.served_alias or "", record.deployment or "")]
    cached = record.cached_tokens or 0
    tokens = ((record.prompt_tokens - cached) * price["input_per_million"]
              + cached * price.get("cached_input_per_million", price["input_per_million"])
              + record.completion_tokens * price["output_per_million"]) / 1e6
    hourly = price.get("instance_per_hour", 0)
    return tokens + (record.busy_s or 0) * hourly / 3600 / price.get("concurrency", 1)


def run_traffic(base_url: str, tokens: dict[str, str]) -> int:
    """Send each tenant's mix of requests; the number sent."""
    sent = 0
    for tenant, token in tokens.items():
        with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk:
            for index in range(3):
                question = [{"role": "user", "content": f"{tenant} asks question {index} "
                                                          "about the weather today"}]
                for model in ("chat", "local"):
                    sdk.chat.completions.create(model=model, messages=question, max_tokens=8,
                                                temperature=1)
                    list(sdk.chat.completions.create(
                        model=model, messages=question, max_tokens=8, temperature=1,
                        stream=True, stream_options={"include_usage": True}))
                    sent += 2
            repeat = [{"role": "user", "content": f"{tenant} repeats itself"}]
            for _ in range(3):  # a miss, then two exact-cache hits
                sdk.chat.completions.create(model="chat", messages=repeat, max_tokens=8,
                                            temperature=0)
                sent += 1
            for _ in range(2):
                with pytest.raises(openai.APIStatusError):
                    sdk.chat.completions.create(model="broken", messages=repeat, max_tokens=8)
                sent += 1
    return sent


def shed_one(base_url: str, token: str) -> None:
    """Hold the only running place with a slow request, and have another one shed meanwhile."""
    with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk, \
            ThreadPoolExecutor(1) as pool:
        held = pool.submit(sdk.chat.completions.create, model="slow", max_tokens=4,
                           messages=[{"role": "user", "content": "take your time"}])
        deadline = time.monotonic() + 10
        while admin(base_url, "/admin/routing")[1]["priority"]["in_use"] == 0:
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        with pytest.raises(openai.APIStatusError) as shed:
            sdk.chat.completions.create(model="chat", max_tokens=4,
                                        messages=[{"role": "user", "content": "me too"}])
        assert shed.value.status_code == 503
        held.result(timeout=30)


def wait_for_report(base_url: str, requests: int) -> dict[str, Any]:
    """The report once all ``requests`` are written (asked again then: its queries are not one
    snapshot, so the one that saw the last row may have lines from before it)."""
    deadline = time.monotonic() + 20
    while True:
        status, report = admin(base_url, "/admin/cost?since=0&by=tenant")
        assert status == 200, report
        if report["total"]["requests"] >= requests or time.monotonic() > deadline:
            return dict(admin(base_url, "/admin/cost?since=0&by=tenant")[1])
        time.sleep(0.05)


def test_the_ledger_equals_usage_times_the_price_book_to_the_cent(
    store_url: str, simulators: Callable[..., RunningSimulator],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    api, box = simulators(CACHING), simulators()
    flaky = simulators(faults=Faults(error_rate=1.0, error_status=500))
    slow = simulators(ModelOptions(ttft_ms=1500, tpot_ms=1, mean_output_tokens=4, seed=5))
    with gateway(configure(store_url, api, box, flaky, slow)) as base_url:
        tokens = {}
        for tenant, feature in (("acme", "search"), ("globex", "support")):
            status, made = admin(base_url, "/admin/keys", body={
                "tenant": tenant, "name": "app", "feature": feature}, method="POST")
            assert status == 201, made
            tokens[tenant] = made["secret"]
        sent = run_traffic(base_url, tokens)
        shed_one(base_url, tokens["acme"])
        sent += 2
        report = wait_for_report(base_url, sent)
        status, viewer = admin(base_url, "/admin/keys", body={
            "tenant": "acme", "name": "finance", "role": "viewer"}, method="POST")
        status, acme_only = admin(base_url, "/admin/cost?since=0", viewer["secret"])
        status_other, refused = admin(base_url, "/admin/cost?since=0&tenant=globex",
                                      viewer["secret"])
        status_client, _ = admin(base_url, "/admin/cost/focus", tokens["acme"])
    records = fetch_records(store_url)
    assert len(records) == sent == report["total"]["requests"]

    # the usage was captured, from whole bodies and from streams, cached tokens included
    served = [r for r in records if r.status == 200 and r.cache_status != "hit"]
    assert {r.stream for r in served if (r.cached_tokens or 0) > 0} == {False, True}
    assert all(r.cached_tokens == 0 for r in served if r.served_alias == "local")
    assert all(0 < (r.busy_s or 0) <= (r.done_at or 0) - r.received_at
               for r in served if r.served_alias == "local")

    # each row is priced as the book says; failures and hits cost nothing, hits record savings
    for record in records:
        assert record.cost == pytest.approx(expected_cost(record), abs=1e-9), record
    failed = [r for r in records if r.status >= 400]
    assert len(failed) == 5 and all(r.cost == 0 for r in failed)
    unrouted = [r for r in failed if r.deployment is None and r.attempts == 0]
    # the one shed, and "broken" ones refused while its lone deployment was ejected (retried
    # there, it fails fast enough to be ejected within the run)
    assert [r.model for r in unrouted if r.model != "broken"] == ["chat"]
    assert all(r.status == 503 for r in unrouted)
    hits = [r for r in records if r.cache_status == "hit"]
    misses = {r.tenant: r for r in records if r.cache_status == "miss"}
    assert len(hits) == 4
    assert all(h.saved_cost == pytest.approx(misses[h.tenant].cost) for h in hits)

    # the sum of the ledger, by tenant and in all, equals the independent sum to the cent
    independent = sum(expected_cost(r) for r in records)
    assert independent > 5  # dollars: a mispriced token would show
    assert round(report["total"]["cost"], 2) == round(independent, 2)
    for line in report["lines"]:
        mine = [r for r in records if r.tenant == line["key"]]
        assert round(line["cost"], 2) == round(sum(map(expected_cost, mine)), 2)
        assert line["requests"] == len(mine)
        assert line["saved_cost"] == pytest.approx(sum(r.saved_cost or 0 for r in mine))
    assert {line["key"] for line in report["lines"]} == {"acme", "globex"}

    # a tenant's viewer sees its own tenant only, and no platform-wide instance time
    assert status == 200 and [line["key"] for line in acme_only["lines"]] == ["acme"]
    assert acme_only["deployments"] is None and acme_only["doubling"] is None
    assert status_other == 403 and refused["error"]["type"]
    assert status_client == 403  # a client key reads no costs
