"""Cost, SLO and routing series on /metrics: bounded labels under hostile tenants and feature
tags, cost that adds up to the request log's, SLO gauges that agree with the records and
/admin/slo, and deployment gauges that agree with /admin/routing."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import openai
import pytest
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from switchgear.config import Config, parse_config
from switchgear.exchange import Exchange, Operation, Principal
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator
from switchgear.store.records import RequestRecord
from switchgear.store.text import safe_line
from switchgear.telemetry.metrics import LABEL_LIMIT, OTHER, GatewayMetrics

from servers import break_glass, create_key, fetch_records, gateway

ADMIN = "sg-cost-admin-0123456789abcdef0123456789"
HELLO = [{"role": "user", "content": "Say hello"}]
PRICE = {"input_per_million": 1.5, "output_per_million": 6.0}
#: Tenants a key's creator may name: quotes, a backslash, a line break that would forge a
#: sample if it reached the exposition unescaped, a NUL, plus plain ones past the cap.
HOSTILE_TENANTS = ('acme "quoted" \\ back', 'evil\nswitchgear_cost_total{tenant="x"} 1e9',
                   "nul\x00tenant", "plain-4", "plain-5")
#: 1h becomes 7.2s, 30d 86 minutes: every request of a test stays inside the SLO's window.
TIME_SCALE = 0.002


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of an exposition by sample name: (labels, value)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    """The samples' values summed by one label's value."""
    sums: dict[str, float] = defaultdict(float)
    for labels, value in samples:
        sums[labels[label]] += value
    return dict(sums)


def scrape_text(base_url: str) -> str:
    return urllib3.request("GET", base_url.removesuffix("/v1") + "/metrics").data.decode()


def assert_matches_rows(shown: dict[str, float], rows: list[RequestRecord],
                        key: Callable[[RequestRecord], str], cap: int,
                        value: Callable[[RequestRecord], float]) -> None:
    """Each label value kept shows its rows' sum; 'other' shows every other row's."""
    kept = set(shown) - {OTHER}
    assert len(kept) <= cap
    expected: dict[str, float] = defaultdict(float)
    for row in rows:
        label = safe_line(key(row)[:LABEL_LIMIT], LABEL_LIMIT)
        expected[label if label in kept else OTHER] += value(row)
    assert shown.keys() <= expected.keys() | {OTHER}
    for label, amount in expected.items():
        assert shown.get(label, 0.0) == pytest.approx(amount, rel=1e-9, abs=1e-15), label


def test_thousands_of_hostile_tenants_and_features_keep_the_series_bounded() -> None:
    metrics = GatewayMetrics(max_label_values=20)
    spent: dict[tuple[str, str], float] = defaultdict(float)
    for number in range(3000):
        tenant = f'tenant "{number}"\\\n\x00' + "t" * (number % 3) * 500
        feature = f"feature\r\n{number}\x1b[2J" if number % 2 else None
        exchange = Exchange(request_id=f"r{number}", operation=Operation.CHAT, body={},
                            model="chat",
                            principal=Principal(tenant=tenant, feature=feature))
        exchange.deployment = "sim"
        if number % 5:
            exchange.cost = 0.001 * (number % 7 + 1)
        else:
            exchange.saved_cost = 0.002
        metrics.observe(exchange, models={"chat"})
        spent[tenant, feature or ""] += exchange.cost
    text = metrics.render().decode()
    samples = parse(text)
    cost = samples["switchgear_cost_total"]
    assert len({labels["tenant"] for labels, _ in cost}) == 21  # 20 kept and 'other'
    assert len({labels["feature"] for labels, _ in cost}) <= 21
    assert len(cost) <= 21 * 21
    assert sum(value for _, value in cost) == pytest.approx(sum(spent.values()))
    assert sum(value for _, value in samples["switchgear_cost_saved_total"]) == \
        pytest.approx(600 * 0.002)
    for labels, _ in cost:
        assert len(labels["tenant"]) <= LABEL_LIMIT and "\x00" not in labels["tenant"]
        assert "\n" not in labels["tenant"] and "\x1b" not in labels["feature"]
    assert all(name.startswith("switchgear_") for name in samples)
    assert len(text) < 1_000_000


@pytest.fixture
def priced(make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
           monkeypatch: pytest.MonkeyPatch) -> Config:
    """A gateway config requiring keys, one priced simulated deployment, the cache on and three
    values kept per label."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    sim = simulators()
    data = make_config({"chat": {"deployments": [
        {"name": "sim", "backend": "openai_http", "url": sim.base_url, "model": "sim",
         "price": PRICE}]}}).model_dump(mode="json")
    data["cache"] = {"enabled": True}
    data["telemetry"] = {"max_label_values": 3}
    return parse_config(data)


def test_cost_by_tenant_and_feature_adds_up_to_the_request_log(priced: Config) -> None:
    features = [None, 'say "hi"', "back\\slash", "tab\there", "f" * 200, "late-1", "late-2"]
    sent = 0
    with gateway(priced) as base_url:
        for tenant in HOSTILE_TENANTS:
            secret = create_key(base_url, ADMIN, tenant=tenant)["secret"]
            with openai.OpenAI(base_url=base_url, api_key=secret, max_retries=0) as sdk:
                for number, feature in enumerate(features):
                    headers = {} if feature is None else {"x-switchgear-feature": feature}
                    for _ in range(2):  # the second is a cache hit: saved, not spent
                        sdk.chat.completions.create(
                            model="chat", messages=[{"role": "user", "content": f"hi {number}"}],
                            temperature=0, max_tokens=4, extra_headers=headers)
                        sent += 1
        deadline = time.monotonic() + 30
        while len(rows := fetch_records(priced.store.url)) < sent:
            assert time.monotonic() < deadline, f"{len(rows)} of {sent} records written"
            time.sleep(0.05)
        text = scrape_text(base_url)
    samples = parse(text)
    assert all(name.startswith("switchgear_") for name in samples)
    assert all(labels["tenant"] != "x" for labels, _ in samples["switchgear_cost_total"])
    assert sum(row.cost for row in rows) > 0 and sum(row.saved_cost or 0 for row in rows) > 0
    for name, value in (("switchgear_cost_total", lambda row: row.cost),
                        ("switchgear_cost_saved_total", lambda row: row.saved_cost or 0.0)):
        series = samples[name]
        assert sum(v for _, v in series) == pytest.approx(sum(value(row) for row in rows))
        assert_matches_rows(by_label(series, "tenant"), rows, lambda row: row.tenant, 3, value)
        assert_matches_rows(by_label(series, "feature"), rows, lambda row: row.feature or "", 3,
                            value)
    tenants = {labels["tenant"] for labels, _ in samples["switchgear_cost_total"]}
    assert OTHER in tenants and len(tenants) == 4


def availability(objective: str) -> dict[str, Any]:
    return {"name": objective, "owner": "team-chat", "sli": {"kind": "availability"},
            "scope": {"model": "chat"}, "target": 0.995}


def slo_gauges(text: str, slo: str) -> dict[str, Any]:
    """The SLO's gauges: figures by name, burn rates by window, alerts by severity."""
    samples = parse(text)
    figures: dict[str, Any] = {"burn_rates": {}, "alerts": {}}
    for name, found in samples.items():
        for labels, value in found:
            if labels.get("slo") != slo:
                continue
            short = name.removeprefix("switchgear_slo_")
            if "window" in labels:
                figures["burn_rates"][labels["window"]] = value
            elif "severity" in labels:
                figures["alerts"][labels["severity"]] = value
            else:
                figures[short] = value
    return figures


def test_slo_gauges_agree_with_the_records_and_the_admin_api(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]) -> None:
    sim = simulators(faults=Faults(error_rate=0.5))
    data = make_config({"chat": {"deployments": [
        {"name": "sim", "backend": "openai_http", "url": sim.base_url, "model": "sim"}]}}
    ).model_dump(mode="json")
    data["routing"] = {"outlier": {"consecutive_failures": 1_000_000, "min_requests": 1_000_000},
                       "health_check_interval_s": None, "retry": {"max_attempts": 1}}
    data["cache"] = {"enabled": False}
    data["slo"] = {"objectives": [availability("chat-availability")], "evaluate_every": 0.1,
                   "time_scale": TIME_SCALE}
    http = urllib3.PoolManager(retries=False)
    with gateway(parse_config(data)) as base_url:
        sent, page = 0, 0.0
        with openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as sdk:
            deadline = time.monotonic() + 30
            while not page and time.monotonic() < deadline:  # half fail: the page fires
                for _ in range(10):
                    with contextlib.suppress(openai.InternalServerError):
                        sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
                    sent += 1
                alerts = slo_gauges(scrape_text(base_url), "chat-availability")["alerts"]
                page = alerts.get("page", 0.0)
        assert page == 1.0
        deadline = time.monotonic() + 30
        while True:  # every record counted, and /metrics and /admin/slo from one evaluation
            gauges = slo_gauges(scrape_text(base_url), "chat-availability")
            report = http.request("GET", base_url.removesuffix("/v1") + "/admin/slo").json()
            figures = report["data"][0]
            if gauges["requests"] == sent and figures["evaluated_at"] == \
                    gauges["evaluated_timestamp_seconds"]:
                break
            assert time.monotonic() < deadline, (gauges, figures, sent)
            time.sleep(0.05)
    rows = fetch_records(data["store"]["url"])
    bad = sum(row.status >= 500 for row in rows)
    assert len(rows) == sent and 0 < bad < sent
    assert gauges["bad_requests"] == bad == figures["bad"]
    assert gauges["objective"] == 0.995
    assert gauges["sli"] == pytest.approx((sent - bad) / sent) == figures["sli"]
    assert gauges["error_budget_remaining"] == pytest.approx(1 - bad / sent / 0.005)
    assert gauges["error_budget_remaining"] == figures["error_budget_remaining"]
    assert gauges["burn_rates"] == figures["burn_rates"]
    assert set(gauges["burn_rates"]) == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    assert gauges["burn_rates"]["3d"] == pytest.approx(bad / sent / 0.005)
    assert gauges["alerts"] == {severity: 1.0 if state["state"] == "firing" else 0.0
                                for severity, state in figures["alerts"].items()}


def test_the_slo_gauges_follow_a_config_change(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An SLO the new config version drops leaves /metrics; the one it adds appears."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    sim = simulators()
    data = make_config({"chat": {"deployments": [
        {"name": "sim", "backend": "openai_http", "url": sim.base_url, "model": "sim"}]}}
    ).model_dump(mode="json")
    slo = {"evaluate_every": 0.1, "time_scale": TIME_SCALE}
    data["slo"] = {**slo, "objectives": [availability("before")]}

    def shown(base_url: str) -> set[str]:
        targets = parse(scrape_text(base_url))["switchgear_slo_objective"]
        return {labels["slo"] for labels, _ in targets}

    with gateway(parse_config(data)) as base_url:
        deadline = time.monotonic() + 30
        while shown(base_url) != {"before"}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        break_glass(base_url, ADMIN, {"slo": {**slo, "objectives": [availability("after")]}})
        while shown(base_url) != {"after"}:
            assert time.monotonic() < deadline, shown(base_url)
            time.sleep(0.05)


def test_routing_gauges_show_the_routers_state_as_admin_routing_does(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]) -> None:
    """A deployment that always fails is ejected (its requests retried on the other); /metrics
    shows each deployment's state, load, failures and EWMA latencies as /admin/routing does."""
    broken, steady = simulators(faults=Faults(error_rate=1.0)), simulators()
    data = make_config({"chat": {"deployments": [
        {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim"}
        for name, sim in (("broken", broken), ("steady", steady))]}}).model_dump(mode="json")
    data["cache"] = {"enabled": False}
    with gateway(parse_config(data)) as base_url:
        with openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as sdk:
            for _ in range(20):
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        samples = parse(scrape_text(base_url))
        routing = urllib3.request("GET", base_url.removesuffix("/v1") + "/admin/routing").json()
    shown = {name: {labels["deployment"]: value for labels, value in found
                    if labels["model"] == "chat"}
             for name, found in samples.items() if name.startswith("switchgear_deployment_")}
    states = {labels["deployment"]: labels["state"]
              for labels, value in samples["switchgear_deployment_state"] if value == 1.0}
    deployments = {d["name"]: d for d in routing["models"]["chat"]["deployments"]}
    assert states == {name: d["state"] for name, d in deployments.items()}
    assert states == {"broken": "ejected", "steady": "healthy"}
    for name, deployment in deployments.items():
        for gauge, key in (("in_flight", "in_flight"), ("ejections", "ejections"),
                           ("consecutive_failures", "consecutive_failures")):
            assert shown[f"switchgear_deployment_{gauge}"][name] == deployment[key]
        for gauge, key in (("ewma_ttft_seconds", "ewma_ttft_ms"),
                           ("ewma_latency_seconds", "ewma_total_ms")):
            if deployment[key] is None:
                assert name not in shown.get(f"switchgear_deployment_{gauge}", {})
            else:
                assert shown[f"switchgear_deployment_{gauge}"][name] == \
                    pytest.approx(deployment[key] / 1000)
    assert shown["switchgear_deployment_ejections"]["broken"] >= 1
    assert shown["switchgear_deployment_error_ratio"]["broken"] > 0.5
    assert shown["switchgear_deployment_error_ratio"]["steady"] == 0.0
