"""Each console page in headless Chromium shows the numbers the admin API answers the same key
with, after real traffic through the gateway; a tenant's operator sees only its tenant's rows.
A screenshot of each page is saved."""

from __future__ import annotations

import time

import pytest
from console_page import Console
from console_site import KEYS, OTHER_TENANT, TENANT, Site

#: The pages read this module's records from PostgreSQL (where the exact percentiles are
#: computed by the database); the other modules' from SQLite.
STORE = "postgresql"
#: The console's default window (1 hour) and its chart bucket, as the pages ask the API.
WINDOW_S, BUCKET_S = 3600, 60


def test_overview_shows_the_windows_counts_and_exact_percentiles(
        console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("overview") == "ready"
    overview = site.admin(f"/admin/overview?window_s={WINDOW_S}&bucket_s={BUCKET_S}"
                          "&group_by=model")
    total = overview["total"]
    assert total["requests"] == sum(len(ids) for ids in site.sent.values())
    assert console.stat("requests") == total["requests"]
    # a quiet hour reads per hour, not "0/s" (to the 2 decimals shown; the tile's raw rate is
    # the one it rendered, so no second fetch or rounding rule can differ)
    shown = console.browser.find("[data-stat='requests_per_s'] .stat-value").text
    assert shown.endswith("/h")
    rate = console.stat("requests_per_s")
    assert rate is not None and float(shown.removesuffix("/h")) == pytest.approx(
        rate * 3600, abs=0.005 + 1e-9)
    assert console.stat("error_rate") == total["error_rate"] == 0
    for percentile in ("p50", "p95", "p99"):
        assert console.stat(f"e2e_{percentile}") == total["e2e_s"][percentile]
        assert console.stat(f"ttft_{percentile}") == total["ttft_s"][percentile]
    # the same exact nearest-rank figure the latency report gives for the model
    latency = site.admin(f"/admin/latency?group_by=model&window_s={WINDOW_S}")["data"]
    chat = next(group for group in latency if group["model"] == "chat")
    assert console.values("e2e_p95", "tr[data-key=chat]") == [chat["e2e_s"]["p95"]]
    assert console.values("requests", "tr[data-key=chat]") == [chat["requests"]]
    assert console.browser.find_all("main#page figure.chart svg path.line")
    console.screenshot("overview")


def test_a_tenants_operator_sees_its_tenants_overview(console: Console, site: Site) -> None:
    console.sign_in("operator")
    assert console.open("overview") == "ready"
    total = site.admin(f"/admin/overview?window_s={WINDOW_S}&bucket_s={BUCKET_S}"
                       "&group_by=model", "operator")["total"]
    assert total["requests"] == len(site.sent["client"])
    assert console.stat("requests") == total["requests"]
    assert console.stat("e2e_p99") == total["e2e_s"]["p99"]


@pytest.mark.parametrize("key", ["admin", "other-operator"])
def test_slos_show_each_objectives_budget_left_and_alerts(
        console: Console, site: Site, key: str) -> None:
    console.sign_in(key)
    assert console.open("slo") == "ready"
    objectives = site.admin("/admin/slo", key)["data"]
    assert [row.attribute("data-slo") for row in console.browser.find_all("tr[data-slo]")] == [
        objective["name"] for objective in objectives]
    for objective in objectives:
        row = f"tr[data-slo='{objective['name']}']"
        assert console.values("error_budget_remaining", row) == [
            objective["error_budget_remaining"]]
        assert console.values("requests", row) == [objective["requests"]]
        assert console.values("bad", row) == [objective["bad"]]
    spent = next(o for o in objectives if o["name"] == f"{OTHER_TENANT}-latency")
    assert spent["error_budget_remaining"] < 0  # no request is under 1 ms
    firing = sum(alert["state"] == "firing"
                 for objective in objectives for alert in objective["alerts"].values())
    assert firing and console.stat("alerts_firing") == firing
    assert console.stat("lowest_budget") == spent["error_budget_remaining"]
    console.screenshot("slo" if key == "admin" else f"slo-{key}")


@pytest.mark.parametrize(("key", "tenants"), [("admin", {TENANT, OTHER_TENANT}),
                                              ("operator", {TENANT})])
def test_cost_shows_the_ledgers_totals_and_unit_costs_per_tenant(
        console: Console, site: Site, key: str, tenants: set[str]) -> None:
    console.sign_in(key)
    assert console.open("cost") == "ready"
    until = int(time.time())
    report = site.admin(f"/admin/cost?since={until - WINDOW_S}&until={until}&by=tenant", key)
    total = report["total"]
    assert total["requests"] == sum(len(site.sent[name]) for name, (tenant, _) in KEYS.items()
                                    if tenant in tenants and name in site.sent)
    assert total["cost"] > 0
    for name in ("cost", "requests", "cost_per_1k_requests", "cost_per_million_tokens"):
        assert console.stat(name) == total[name], name
    for line in report["lines"]:
        row = f"tr[data-key='{line['key']}']"
        assert console.values("cost", row) == [line["cost"]]
        assert console.values("cost_per_1k_requests", row) == [line["cost_per_1k_requests"]]
    assert {line["key"] for line in report["lines"]} == tenants
    assert len(console.browser.find_all("main#page tr[data-key]")) == len(tenants)
    doubling = report.get("doubling") or []  # twice the peak: whole-platform, for admins
    assert console.values("added_cost") == [row["added_cost"] for row in doubling]
    assert bool(doubling) == (key == "admin")
    budgets = site.admin("/admin/budgets", key)["data"]
    assert budgets, "the client key's daily budget"
    assert console.values("spent", "tr[data-scope]") == [b["spent"] for b in budgets]
    assert console.values("limit", "tr[data-scope]") == [b["limit"] for b in budgets]
    assert console.values("used", "tr[data-scope]") == [b["used"] for b in budgets]
    console.screenshot("cost" if key == "admin" else f"cost-{key}")


def test_the_scorecard_shows_its_total_and_each_categorys_score(
        console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("scorecard") == "ready"
    card = site.admin("/admin/scorecard")
    assert console.stat("total") == card["total"]
    assert console.values("score", "tr[data-category]") == [
        category["score"] for category in card["categories"]]
    console.screenshot("scorecard")


def test_routing_shows_each_deployments_state_share_and_attempts(
        console: Console, site: Site) -> None:
    console.sign_in("operator")
    assert console.open("routing") == "ready"
    routing = site.admin("/admin/routing", "operator")
    deployments = routing["models"]["chat"]["deployments"]
    assert console.stat("deployments") == len(deployments)
    for deployment in deployments:
        row = f"tr[data-deployment='chat/{deployment['name']}']"
        assert console.column("state", row) == [deployment["state"]]
        assert console.values("attempts", row) == [deployment["attempts"]]
        assert console.values("traffic_share", row) == [deployment["traffic_share"]]
    assert sum(d["attempts"] for d in deployments) == sum(len(ids) for ids in site.sent.values())
    console.screenshot("routing")


def test_requests_lists_every_request_and_opens_one_record(
        console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("requests") == "ready"
    listed = site.admin("/admin/records?limit=100")["data"]
    shown = console.request_ids()
    assert shown == [record["request_id"] for record in listed]
    assert sorted(shown) == sorted(i for ids in site.sent.values() for i in ids)
    console.screenshot("requests")

    chosen = site.sent["client"][-1]  # a streamed one: it has a time to first token
    console.browser.find(f"main#page tr[data-request-id='{chosen}']").click()
    assert console.settled("requests") == "ready"
    record = site.admin(f"/admin/records/{chosen}")
    assert console.column("request_id") == [chosen]
    assert console.column("trace_id") == [record["trace_id"]]
    assert console.column("deployment") == [record["deployment"]]
    assert console.column("config_version") == [str(record["config_version"])]
    assert console.column("prompt_tokens") == [str(record["prompt_tokens"])]
    assert console.column("completion_tokens") == [str(record["completion_tokens"])]
    assert console.column("operation") == [f"{record['operation']} (streamed)"]
    console.screenshot("request-record")


def test_a_tenants_operator_sees_only_its_tenants_requests(
        console: Console, site: Site) -> None:
    console.sign_in("other-operator")
    assert console.open("requests") == "ready"
    assert set(console.column("tenant")) == {OTHER_TENANT}
    shown = set(console.request_ids())
    api = {record["request_id"]
           for record in site.admin("/admin/records?limit=100", "other-operator")["data"]}
    assert shown == api == set(site.sent["other-client"])
    console.screenshot("requests-tenant-operator")


def test_the_request_logs_filters_ask_the_api_for_the_same_rows(
        console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("requests") == "ready"
    form = console.browser.find("form#records-filters")
    form.find("#filter-tenant").type(OTHER_TENANT)
    form.find("#filter-key").type(site.key_ids["other-client"])
    form.find("#filter-apply").click()
    expected = site.admin(f"/admin/records?tenant={OTHER_TENANT}"
                          f"&key={site.key_ids['other-client']}&limit=100")["data"]
    wanted = [record["request_id"] for record in expected]
    console.browser.wait(lambda: console.request_ids() == wanted,
                         "the filtered request log")
    assert sorted(wanted) == sorted(site.sent["other-client"])


def test_the_window_selector_reloads_the_page_for_that_window(
        console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("overview") == "ready"
    console.browser.find("select#window option[value='15m']").click()
    assert console.settled("overview") == "ready"
    overview = site.admin("/admin/overview?window_s=900&bucket_s=30&group_by=model")
    assert console.stat("requests") == overview["total"]["requests"]
    assert console.browser.run("return sessionStorage.getItem('switchgear.console.window')"
                               ) == "15m"
    points = console.browser.find_all("main#page figure.chart circle")
    assert points  # the charts are drawn over the 30 s buckets of the shorter window
