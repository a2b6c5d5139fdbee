"""GET /admin/records (filters, keyset pages) and /admin/records/{id} (one whole record) on a real
gateway with real traffic, over SQLite and PostgreSQL: what the console's Requests page reads."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import parse_config

from servers import POSTGRES_URL, create_key, drop_schema, gateway

ADMIN = "sg-test-admin-records-0123456789abcdef"
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
SAID = [{"role": "user", "content": "hello there"}]
FLAGGED = [{"role": "user", "content": "tell me about project zeus"}]


@dataclass
class Traffic:
    """A gateway that served known requests: its root URL, the keys and the request ids."""

    root: str
    acme_key: dict[str, Any]
    viewer: str
    ids: dict[str, str]


def call(root: str, path: str, token: str | None = ADMIN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = urllib3.request("GET", root + path, headers=headers, timeout=10)
    return response.status, json.loads(response.data)


def page(root: str, token: str | None = ADMIN, **query: Any) -> dict[str, Any]:
    status, answer = call(root, "/admin/records?" + urllib.parse.urlencode(query), token)
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


def ids_of(answer: dict[str, Any]) -> set[str]:
    return {row["request_id"] for row in answer["data"]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def traffic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Traffic]:
    """A gateway (keys required, content logged, an input guard that flags, the exact cache)
    that served: acme's plain request, the same deterministic request twice (a miss, then a
    hit), a flagged one and one for an unknown model; and globex's plain request."""
    schema = f"sg_test_{uuid.uuid4().hex}"
    url = (f"sqlite:///{tmp_path_factory.mktemp('records')}/records.db"
           if request.param == "sqlite" else f"{POSTGRES_URL}?schema={schema}")
    config = parse_config({
        "models": {"sim": SIM},
        "store": {"url": url, "flush_interval_ms": 20, "log_content": True},
        "guards": {"input": [{"check": "patterns", "terms": ["project zeus"],
                              "action": "flag"}]},
    })
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    try:
        with gateway(config) as base_url:
            root = base_url.removesuffix("/v1")
            acme = create_key(base_url, ADMIN, tenant="acme", name="acme-app")
            globex = create_key(base_url, ADMIN, tenant="globex", name="globex-app")
            viewer = create_key(base_url, ADMIN, tenant="acme", name="acme-viewer",
                                role="viewer")
            ids: dict[str, str] = {}
            with openai.OpenAI(base_url=base_url, api_key=acme["secret"],
                               max_retries=0) as client:
                def send(name: str, **body: Any) -> None:
                    raw = client.chat.completions.with_raw_response.create(max_tokens=3, **body)
                    ids[name] = raw.headers["x-request-id"]

                send("plain", model="sim", messages=SAID)
                send("miss", model="sim", messages=SAID, temperature=0)
                send("hit", model="sim", messages=SAID, temperature=0)
                send("flagged", model="sim", messages=FLAGGED)
                with pytest.raises(openai.NotFoundError) as missing:
                    client.chat.completions.create(model="nope", messages=SAID)
                ids["unknown"] = missing.value.response.headers["x-request-id"]
            with openai.OpenAI(base_url=base_url, api_key=globex["secret"],
                               max_retries=0) as client:
                raw = client.chat.completions.with_raw_response.create(
                    model="sim", messages=SAID, max_tokens=3)
                ids["globex"] = raw.headers["x-request-id"]
            deadline = time.monotonic() + 10
            while ids_of(page(root)) != set(ids.values()):
                assert time.monotonic() < deadline, "the records were not written"
                time.sleep(0.05)
            yield Traffic(root, acme["key"], viewer["secret"], ids)
    finally:
        monkeypatch.undo()
        if request.param == "postgresql":
            asyncio.run(drop_schema(schema))


def test_each_filter_finds_the_requests_it_names(traffic: Traffic) -> None:
    root, ids = traffic.root, traffic.ids
    acme = {ids[name] for name in ("plain", "miss", "hit", "flagged", "unknown")}
    assert ids_of(page(root, tenant="acme")) == acme
    assert ids_of(page(root, key=traffic.acme_key["prefix"])) == acme
    assert ids_of(page(root, key=traffic.acme_key["id"])) == acme
    assert ids_of(page(root, model="nope")) == {ids["unknown"]}
    assert ids_of(page(root, status="404")) == {ids["unknown"]}
    assert ids_of(page(root, status="4xx")) == ids_of(page(root, status="error")) == {
        ids["unknown"]}
    assert ids_of(page(root, status="2xx")) == set(ids.values()) - {ids["unknown"]}
    assert ids_of(page(root, cache="hit")) == {ids["hit"]}
    assert ids["miss"] in ids_of(page(root, cache="miss"))
    assert ids_of(page(root, guard="flag")) == {ids["flagged"]}
    assert ids_of(page(root, tenant="globex", cache="hit")) == set()
    everything = page(root)["data"]
    times = {row["request_id"]: row["received_at"] for row in everything}
    middle = times[ids["hit"]]
    later = {rid for rid, at in times.items() if at >= middle}
    assert ids_of(page(root, since=repr(middle))) == later
    assert ids_of(page(root, until=repr(middle))) == set(times) - later
    assert ids_of(page(root, since="2000-01-01T00:00:00Z", until="2000-01-02")) == set()


def test_pages_follow_each_other_newest_first_without_gaps(traffic: Traffic) -> None:
    whole = page(traffic.root)
    assert whole["next"] is None
    order = [(row["received_at"], row["request_id"]) for row in whole["data"]]
    assert order == sorted(order, reverse=True)
    seen: list[str] = []
    answer = page(traffic.root, limit=2)
    while True:
        assert len(answer["data"]) <= 2
        seen += [row["request_id"] for row in answer["data"]]
        if answer["next"] is None:
            break
        answer = page(traffic.root, limit=2, after=answer["next"])
    assert seen == [request_id for _, request_id in order]
    assert "prompt" not in whole["data"][0] and "completion" not in whole["data"][0]


def test_one_record_has_its_trace_versions_checks_and_stored_content(traffic: Traffic) -> None:
    status, record = call(traffic.root, f"/admin/records/{traffic.ids['flagged']}")
    assert status == 200, record
    assert record["request_id"] == traffic.ids["flagged"] and record["status"] == 200
    assert len(record["trace_id"]) == 32 and record["config_version"] >= 1
    assert record["guard_action"] == "flag"
    assert [check["action"] for check in record["checks"]] == ["flag"]
    assert record["content_stored"] and "project zeus" in record["prompt"]
    assert record["e2e_s"] >= record["ttft_s"] >= 0
    status, missing = call(traffic.root, "/admin/records/req_not_there")
    assert status == 404 and missing["error"]["param"] == "request_id"


def test_a_viewer_sees_its_own_tenant_only(traffic: Traffic) -> None:
    mine = page(traffic.root, traffic.viewer)
    assert {row["tenant"] for row in mine["data"]} == {"acme"}
    status, refused = call(traffic.root, "/admin/records?tenant=globex", traffic.viewer)
    assert status == 403 and refused["error"]["type"] == "permission_error"
    status, hidden = call(traffic.root, f"/admin/records/{traffic.ids['globex']}", traffic.viewer)
    assert status == 404, hidden
    status, own = call(traffic.root, f"/admin/records/{traffic.ids['plain']}", traffic.viewer)
    assert status == 200 and own["tenant"] == "acme"
    status, _ = call(traffic.root, "/admin/records", None)
    assert status == 401


@pytest.mark.parametrize("query", [
    "statuss=200", "status=abc", "status=600", "status=%C2%B200", "cache=sometimes",
    "guard=shout", "since=yesterday", "since=nan", "until=inf", "limit=-1", "after=bm90IGEgY3Vyc29y",
    "after=%00%01", "model=" + "m" * 300, "after=" + "A" * 400, "since=20&until=10",
])
def test_junk_filters_are_400_in_openai_shape(traffic: Traffic, query: str) -> None:
    status, answer = call(traffic.root, "/admin/records?" + query)
    assert status == 400, (query, answer)
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["param"]


def test_hostile_values_are_only_values(traffic: Traffic) -> None:
    for hostile in ("sim' OR '1'='1", "sim\"; DROP TABLE request_log; --", "%", "_"):
        assert page(traffic.root, model=hostile)["data"] == []
        assert page(traffic.root, key=hostile)["data"] == []
    status, answer = call(traffic.root, "/admin/records/"
                          + urllib.parse.quote("x' OR '1'='1", safe=""))
    assert status == 404, answer
    assert len(page(traffic.root)["data"]) == len(traffic.ids)


def test_the_page_size_is_bounded(traffic: Traffic) -> None:
    answer = page(traffic.root, limit=10**9)
    assert answer["limit"] == 1000 and len(answer["data"]) == len(traffic.ids)
