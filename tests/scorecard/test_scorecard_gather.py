"""Evidence gathered end to end: a real `switchgear serve` process fills a SQLite store (requests
from the official openai client, a key made over the admin API), then the scorecard reads it;
and the same queries against a real PostgreSQL store."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from switchgear.config import Config, parse_config
from switchgear.scorecard.categories import score
from switchgear.scorecard.gather import EvidenceError, gather
from switchgear.sections.scorecard import ScorecardSection
from switchgear.store import open_store
from switchgear.store.records import RequestRecord

from servers import POSTGRES_URL, create_key, drop_schema, gateway_process

ADMIN = "sg-scorecard-admin-0123456789abcdef0123456"
HELLO = [{"role": "user", "content": "Say hello"}]
DAY = 86400.0


def served_config(store_url: str) -> Config:
    """A priced, simulated model with an owned latency SLO and scorecard facts."""
    return parse_config({
        "models": {"chat": {"deployments": [{
            "name": "sim", "backend": "simulated",
            "simulated": {"ttft_ms": 1, "tpot_ms": 0.1, "mean_output_tokens": 4},
            "price": {"input_per_million": 1.0, "output_per_million": 2.0}}]}},
        "store": {"url": store_url, "flush_interval_ms": 20},
        "slo": {"objectives": [{"name": "chat-latency", "owner": "search-team",
                                "sli": {"kind": "latency", "threshold": 1.0},
                                "target": 0.99}]},
        "scorecard": {"incident_owner": "sre-rota",
                      "workloads": {"real_time": 0.8, "batch": 0.2}},
    })


def test_evidence_from_a_store_a_real_gateway_filled(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    config = served_config(f"sqlite:///{tmp_path}/records.db")
    with gateway_process(config, tmp_path) as base_url:
        created = create_key(base_url, ADMIN, tenant="shop", role="client", feature="search",
                             tier="batch")
        client = openai.OpenAI(base_url=base_url, api_key=created["secret"], max_retries=0)
        for _ in range(2):  # the second, identical and deterministic, is a cache hit
            client.chat.completions.create(model="chat", messages=HELLO, temperature=0)
        client.chat.completions.create(model="chat", messages=HELLO, temperature=0.5)
    # The gateway flushed its records on SIGTERM; the scorecard reads the file it left.

    evidence = gather(config, DAY, time.time(), "the test's config")

    assert evidence.config.source == "config version 1 (live, from the store)"
    assert evidence.config.incident_owner == "sre-rota"
    assert evidence.config.latency_targets == 1
    records = evidence.records
    assert (records.requests, records.succeeded, records.with_feature, records.versioned) == (
        3, 3, 3, 3)
    assert records.costed == 3  # two charged, one hit with the cost it saved
    assert (records.cache_judged, records.cache_hits) == (3, 1)
    assert records.by_tier == (("batch", 3),)
    assert [(f.feature, f.requests) for f in records.feature_costs] == [("search", 3)]
    assert records.feature_costs[0].cost > 0
    governance = evidence.governance
    assert governance.keys_by_role == (("client", 1),)
    assert governance.config_versions == 1
    assert governance.audit_entries >= 1 and governance.audit_intact is True
    assert evidence.notes == ()

    # The live version is scored, and an edited file's scorecard section is pointed out.
    edited = config.model_copy(update={"scorecard": ScorecardSection()})
    again = gather(edited, DAY, time.time(), "the edited file")
    assert again.config.incident_owner == "sre-rota"
    assert again.notes == ("the scorecard section of the edited file differs from the live "
                           "one's; the live one is scored (propose the change to score yours)",)

    scores = {s.key: s.score for s in score(evidence).scores}
    assert scores["workload_clarity"] == 2  # declared mix, a latency SLO, measured tiers
    assert scores["cost_model"] == 2  # priced, costed and tagged by feature
    assert scores["reliability"] == 1  # the SLO's alerts go nowhere yet

    # Another key than the trail's tells nothing about the trail: not checked, never TAMPERED.
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", "another-audit-key-" + "x" * 32)
    foreign = gather(config, DAY, time.time(), "the test's config")
    assert foreign.governance.audit_intact is None


def test_a_missing_sqlite_file_is_no_evidence_not_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    evidence = gather(served_config(f"sqlite:///{path}"), DAY, time.time(), "test")
    assert evidence.records.requests == 0
    assert evidence.notes == (f"no record store at {path}: no records or governance",)
    assert not path.exists()


def test_a_plan_is_read_leniently_and_a_broken_one_refused(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"instances": 3, "utilization": "high",
                                "power": {"kw": 9.5, "pue": 1.2}, "pipeline": None}))
    config = served_config(f"sqlite:///{tmp_path}/none.db")
    facts = gather(config, DAY, time.time(), "test", plan).plan
    assert facts is not None
    assert (facts.instances, facts.utilization, facts.power_kw, facts.pue, facts.feed_share) == (
        3.0, None, 9.5, 1.2, None)
    plan.write_text("{not json")
    with pytest.raises(EvidenceError, match="not JSON"):
        gather(config, DAY, time.time(), "test", plan)


def _record(number: int, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{number}", "tenant": "shop", "model": "chat", "deployment": "sim",
        "operation": "chat", "stream": False, "received_at": time.time() - 60,
        "first_token_at": None, "done_at": None, "prompt_tokens": 5, "completion_tokens": 4,
        "status": 200, "error_type": None, "truncated": False, "attempts": 1, "cost": 0.01,
        "priority": "interactive", "config_version": 1}
    return RequestRecord(**(values | fields))


def test_evidence_from_postgresql(tmp_path: Path) -> None:
    schema = f"sg_test_{uuid.uuid4().hex}"
    url = f"{POSTGRES_URL}?schema={schema}"
    now = time.time()

    async def fill() -> None:
        store = open_store(url)
        await store.open()
        try:
            await store.write([
                _record(1, feature="search"), _record(2, feature="search", cost=0.03),
                _record(3, status=502, cost=0.0, priority="batch"),
                _record(5, status=401, cost=0.0, priority=""),  # refused before admission
                _record(4, received_at=now - 3 * DAY),  # outside the window
                # arrived after the window's end (while the report ran): no query counts it,
                # so the tiers cannot add up to more than the total
                _record(6, received_at=now + 1, priority="batch", feature="search")])
        finally:
            await store.close()

    try:
        asyncio.run(fill())
        evidence = gather(served_config(url), DAY, now, "test")
    finally:
        asyncio.run(drop_schema(schema))
    records = evidence.records
    assert (records.requests, records.succeeded, records.costed, records.with_feature) == (
        4, 2, 2, 2)
    assert records.by_tier == (("interactive", 2), ("batch", 1))
    assert [(f.feature, f.requests, round(f.cost, 4)) for f in records.feature_costs] == [
        ("search", 2, 0.04)]
    assert evidence.governance.config_versions == 0
