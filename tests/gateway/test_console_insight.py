"""The console's read endpoints against a real gateway with traffic from the official client:
/admin/overview's counts and exact percentiles per bucket equal an independent computation from
the raw records (SQLite and PostgreSQL); /admin/budgets' spending equals the records' costs;
/admin/scorecard equals what `switchgear scorecard` computes; roles, tenant scoping and bad
parameters (400 in OpenAI's shape)."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy
import openai
import pytest
import urllib3

from switchgear.config import Config
from switchgear.scorecard.categories import score
from switchgear.scorecard.gather import gather
from switchgear.scorecard.report import as_json
from switchgear.store.records import RequestRecord

from servers import create_key, fetch_records, gateway, wait_for_record

ADMIN = "sg-insight-admin-0123456789abcdef0123456"
HELLO = [{"role": "user", "content": "Say hello"}]
PRICE = {"input_per_million": 1000.0, "output_per_million": 2000.0}


def simulated(name: str, ttft_ms: float, tpot_ms: float) -> dict[str, Any]:
    return {"deployments": [{"name": name, "backend": "simulated", "price": PRICE,
                             "simulated": {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms,
                                           "mean_output_tokens": 6, "seed": 5}}]}


MODELS = {"fast": simulated("fast-1", 1, 0.2), "slow": simulated("slow-1", 6, 1)}


def get(root: str, path: str, token: str | None = ADMIN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = urllib3.request("GET", root + path, headers=headers, timeout=30)
    return response.status, json.loads(response.data)


def send_traffic(base_url: str, token: str, count: int) -> str:
    """``count`` requests to each model (streamed and not), one to an unknown model and one
    refused as invalid; the id of the last."""
    with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk:
        for number in range(count):
            for model in MODELS:
                if number % 2:
                    with sdk.chat.completions.create(model=model, messages=HELLO, stream=True,
                                                     max_tokens=1 + number % 5) as stream:
                        list(stream)
                else:
                    sdk.chat.completions.create(model=model, messages=HELLO, max_tokens=3)
            time.sleep(0.07)  # 16 rounds span more than a second: two buckets at least
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="nope", messages=HELLO)
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="fast", messages=HELLO, temperature=7)
        last = sdk.chat.completions.with_raw_response.create(model="fast", messages=HELLO,
                                                             max_tokens=2)
    return last.headers["x-request-id"]


def expected_overview(records: list[RequestRecord], report: dict[str, Any]
                      ) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (group, bucket number): requests, errors, tokens and the successes' e2e and TTFT."""
    group, bucket_s = report["group_by"], report["bucket_s"]
    cells: dict[tuple[str, int], dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                 "cost": 0.0, "e2e_s": [], "ttft_s": []})
    for record in records:
        if not report["since"] <= record.received_at < report["until"]:
            continue
        key = getattr(record, group)
        name = {None: "(none)", "": "(empty)"}.get(key, str(key))
        cell = cells[(name, math.floor(record.received_at / bucket_s))]
        cell["requests"] += 1
        cell["errors"] += record.status >= 400
        cell["prompt_tokens"] += record.prompt_tokens or 0
        cell["completion_tokens"] += record.completion_tokens or 0
        cell["cost"] += record.cost or 0
        if record.status == 200:
            cell["e2e_s"].append(record.done_at - record.received_at)
            cell["ttft_s"].append(record.first_token_at - record.received_at)
    return cells


def nearest_rank(values: list[float], p: int) -> float | None:
    return float(numpy.percentile(values, p, method="inverted_cdf")) if values else None


def test_overview_equals_an_independent_computation(make_config: Callable[..., Config],
                                                    store_url: str) -> None:
    with gateway(make_config(MODELS, store_url=store_url)) as base_url:
        root = base_url.removesuffix("/v1")
        wait_for_record(store_url, send_traffic(base_url, "x", 16))
        reports = {group: get(root, f"/admin/overview?window_s=120&bucket_s=1&group_by={group}")
                   for group in ("model", "deployment")}
    records = fetch_records(store_url)
    for group, (status, report) in reports.items():
        assert status == 200, report
        assert (report["method"], report["exact"], report["bucket_s"]) == ("nearest-rank", True, 1)
        assert report["buckets"] == list(range(int(report["since"]), int(report["until"]) + 1))
        cells = expected_overview(records, report)
        keys = {key for key, _ in cells}
        assert [line["key"] for line in report["series"]] == sorted(keys)
        if group == "model":  # the invalid request was refused before its model was read
            assert keys == {"fast", "slow", "nope", "(empty)"}
        busy = 0
        for line in report["series"]:
            for index, start in enumerate(report["buckets"]):
                cell = cells.get((line["key"], start))
                if cell is None:
                    assert line["requests"][index] == 0 and line["e2e_s"]["p50"][index] is None
                    continue
                busy += 1
                for name in ("requests", "errors", "prompt_tokens", "completion_tokens"):
                    assert line[name][index] == cell[name], (line["key"], start, name)
                assert line["cost"][index] == pytest.approx(cell["cost"])
                for measure in ("e2e_s", "ttft_s"):
                    for p in (50, 95, 99):
                        assert line[measure][f"p{p}"][index] == nearest_rank(cell[measure], p)
        assert busy >= 3  # the traffic spread over several one-second buckets
        for entry in report["groups"]:
            mine = [cell for (key, _), cell in cells.items() if key == entry["key"]]
            assert entry["requests"] == sum(cell["requests"] for cell in mine)
            assert entry["errors"] == sum(cell["errors"] for cell in mine)
            e2e = [value for cell in mine for value in cell["e2e_s"]]
            if e2e:
                assert entry["e2e_s"]["count"] == len(e2e)
                assert entry["e2e_s"]["p99"] == nearest_rank(e2e, 99)
            else:
                assert entry["e2e_s"] is None
        total = report["total"]
        assert total["requests"] == sum(cell["requests"] for cell in cells.values())
        assert total["errors"] == 2 and total["error_rate"] == 2 / total["requests"]
        every = [value for cell in cells.values() for value in cell["ttft_s"]]
        assert total["ttft_s"]["p95"] == nearest_rank(every, 95)
        assert total["requests_per_s"] == total["requests"] / (report["until"] - report["since"])


@pytest.fixture
def keyed(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[str, Config]]:
    """A gateway requiring keys, with budgets for tenant acme and for every key: (root, config)."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    config = make_config(MODELS)
    config = config.model_validate({**config.model_dump(), "limits": {"budgets": {
        "per_key": {"daily": 50.0, "soft": 0.5},
        "tenants": {"acme": {"daily": 100.0, "monthly": 1000.0, "soft": 0.8}}}}})
    with gateway(config) as base_url:
        yield base_url.removesuffix("/v1"), config


def test_roles_tenants_and_bad_parameters(keyed: tuple[str, Config]) -> None:
    root, store_url = keyed[0], keyed[1].store.url
    secrets = {(tenant, role): create_key(root, ADMIN, tenant=tenant, role=role)["secret"]
               for tenant in ("acme", "beta") for role in ("client", "viewer", "operator")}
    for tenant in ("acme", "beta"):
        wait_for_record(store_url, send_traffic(root + "/v1", secrets[(tenant, "client")],
                                                2 if tenant == "acme" else 3))
    paths = ("/admin/overview?window_s=600&bucket_s=60", "/admin/budgets")
    for path in (*paths, "/admin/scorecard"):
        status, answer = get(root, path, secrets[("acme", "client")])
        assert status == 403 and answer["error"]["type"] == "permission_error", path
        assert get(root, path, None)[0] == 401
    status, mine = get(root, paths[0], secrets[("acme", "viewer")])
    assert status == 200 and mine["tenant"] == "acme"
    status, everyone = get(root, paths[0])
    assert status == 200 and everyone["tenant"] is None
    status, beta = get(root, paths[0] + "&tenant=beta")
    assert beta["tenant"] == "beta"
    window = [r for r in fetch_records(store_url) if r.received_at >= mine["since"]]
    for report, tenant in ((mine, "acme"), (beta, "beta"), (everyone, None)):
        assert report["total"]["requests"] == sum(tenant in (None, r.tenant) for r in window)
    assert 0 < mine["total"]["requests"] < beta["total"]["requests"]
    status, refused = get(root, paths[0] + "&tenant=beta", secrets[("acme", "viewer")])
    assert status == 403 and refused["error"]["param"] == "tenant"
    for role in ("viewer", "operator"):
        assert get(root, "/admin/scorecard", secrets[("acme", role)])[0] == 403

    for query, param in (("group_by=colour", "group_by"), ("window_s=-5", "window_s"),
                         ("window_s=abc", "window_s"), ("window_s=nan", "window_s"),
                         ("window_s=inf", "window_s"), ("bucket_s=0", "bucket_s"),
                         ("bucket_s=1.5", "bucket_s"), ("bucket_s=%C2%B2", "bucket_s"),
                         ("window_s=86400&bucket_s=1", "bucket_s")):
        status, answer = get(root, "/admin/overview?" + query)
        assert status == 400, query
        assert answer["error"]["param"] == param and answer["error"]["message"], query
    for query in ("window_s=0", "window_s=1e12"):
        status, answer = get(root, "/admin/scorecard?" + query)
        assert status == 400 and answer["error"]["param"] == "window_s"


def test_budgets_show_what_was_spent(keyed: tuple[str, Config]) -> None:
    root, store_url = keyed[0], keyed[1].store.url
    made = {tenant: create_key(root, ADMIN, tenant=tenant, role="client",
                               budget={"daily": 20.0} if tenant == "beta" else None)
            for tenant in ("acme", "beta")}
    viewer = create_key(root, ADMIN, tenant="acme", role="viewer")["secret"]
    for key in made.values():
        wait_for_record(store_url, send_traffic(root + "/v1", key["secret"], 2))
    records = fetch_records(store_url)
    cost = {tenant: sum(r.cost or 0 for r in records if r.tenant == tenant) for tenant in made}
    assert all(cost.values())
    deadline = time.monotonic() + 10
    while True:  # each request's cost is added to the budgets just after its answer
        status, report = get(root, "/admin/budgets")
        spent = {(b["scope"], b["period"]): b for b in report["data"]}
        if spent[("tenant:acme", "day")]["spent"] >= cost["acme"] - 1e-9 \
                or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and report["currency"] == "USD"
    acme, beta = made["acme"]["key"]["id"], made["beta"]["key"]["id"]
    assert spent[("tenant:acme", "day")]["spent"] == pytest.approx(cost["acme"])
    assert spent[("tenant:acme", "month")]["limit"] == 1000.0
    assert spent[(f"key:{acme}", "day")]["spent"] == pytest.approx(cost["acme"])
    assert spent[(f"key:{acme}", "day")]["limit"] == 50.0  # the config's, for every key
    assert spent[(f"key:{beta}", "day")]["limit"] == 20.0  # the key's own
    assert spent[(f"key:{beta}", "day")]["spent"] == pytest.approx(cost["beta"])
    assert ("tenant:beta", "day") not in spent  # no budget configured for beta
    line = spent[("tenant:acme", "day")]
    assert line["used"] == pytest.approx(line["spent"] / 100.0) and line["state"] == "ok"
    assert line["period_id"] == time.strftime("%Y-%m-%d", time.gmtime())
    status, scoped = get(root, "/admin/budgets", viewer)
    assert status == 200 and {b["tenant"] for b in scoped["data"]} == {"acme"}


def test_scorecard_equals_the_cli_computation(keyed: tuple[str, Config]) -> None:
    root, config = keyed
    wait_for_record(config.store.url, send_traffic(root + "/v1", ADMIN, 2))
    status, card = get(root, "/admin/scorecard?window_s=86400")
    assert status == 200, card
    evidence = gather(config, 86400, time.time(), "the test's config")
    expected = as_json(score(evidence), evidence)
    assert card["object"] == "scorecard" and card["window_s"] == 86400
    assert (card["total"], card["max"], card["at_risk"]) == (
        expected["total"], expected["max"], expected["at_risk"])
    assert [(c["key"], c["score"]) for c in card["categories"]] == [
        (c["key"], c["score"]) for c in expected["categories"]]
    assert all(c["evidence"] for c in card["categories"])
    assert any(c["to_raise"] for c in card["categories"] if c["score"] < c["max"])
